#!/usr/bin/env bash
# Benchmarks ExactOnce against PostgreSQL with a synchronous standby and
# against etcd on this machine (`make bench`).
#   scripts/bench.sh                 # default sweep (~5-10 min): c=1,16,64,256, 4 s per run
#   scripts/bench.sh -million        # plus one million stored actions, RSS and restart
#   scripts/bench.sh -d 20s -pprof   # longer runs and a CPU profile of the leader
# Extra arguments go to cmd/exactonce-bench (see: go run ./cmd/exactonce-bench -h).
# It builds bin/exactonced and bin/exactonce-bench, installs Debian's
# etcd-server when etcd is missing and Debian's postgresql when no
# PostgreSQL 15 or newer is (as root), starts and stops every cluster
# itself on loopback (ExactOnce 18081-18083/18301-18303/18401-18403, etcd
# 23791-23793/23801-23803, PostgreSQL 24321-24323) and writes bin/bench/{table.txt,results.jsonl,report.json} (and CPU profiles with -pprof).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v etcd >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "etcd not found: installing Debian's etcd-server" >&2
    # A fresh machine may have no package lists yet.
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server >&2
    # The package may start a system etcd on 2379/2380; the benchmark uses its own ports, but stop it if it runs.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
      systemctl stop etcd || true
    fi
  else
    echo "etcd not found; install etcd-server or pass -no-etcd" >&2
  fi
fi

# PostgreSQL's server binaries live off PATH on Debian
# (/usr/lib/postgresql/<major>/bin); the harness finds them there.
pg_found() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/postgres" ] && [ "$(basename "$(dirname "$d")")" -ge 15 ] 2>/dev/null && return 0
  done
  command -v initdb >/dev/null 2>&1
}
case " $* " in
  *" -no-postgres "*|*" -no-postgres=true "*|*" --no-postgres "*) ;;
  *)
    if ! pg_found; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "PostgreSQL not found: installing Debian's postgresql" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >&2
        # The package may start its own cluster on 5432; the benchmark runs its own on 24321-24323.
        if command -v pg_lsclusters >/dev/null 2>&1; then
          pg_lsclusters --no-header 2>/dev/null | while read -r ver name port status _; do
            if [ "$status" = online ]; then pg_ctlcluster "$ver" "$name" stop || true; fi
          done
        fi
      else
        echo "PostgreSQL 15+ not found; install postgresql or pass -no-postgres" >&2
      fi
    fi
    ;;
esac

mkdir -p bin
CGO_ENABLED=0 go build -o bin/exactonce-bench ./cmd/exactonce-bench
exec bin/exactonce-bench "$@"
