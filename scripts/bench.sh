#!/usr/bin/env bash
# Benchmarks ExactOnce against etcd on this machine (issue 5, `make bench`).
#   scripts/bench.sh                 # default sweep (~5-10 min): c=1,16,64,256, 4 s per run
#   scripts/bench.sh -million        # plus one million stored actions, RSS and restart
#   scripts/bench.sh -d 20s -pprof   # longer runs and a CPU profile of the leader
# Extra arguments go to cmd/exactonce-bench (see: go run ./cmd/exactonce-bench -h).
# It builds bin/exactonced and bin/exactonce-bench, installs Debian's
# etcd-server when etcd is missing (as root), starts and stops both clusters
# itself on loopback (ExactOnce 18081-18083/18301-18303/18401-18403, etcd
# 23791-23793/23801-23803) and writes bin/bench/{table.txt,results.jsonl,report.json} (and CPU profiles with -pprof).
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

mkdir -p bin
CGO_ENABLED=0 go build -o bin/exactonce-bench ./cmd/exactonce-bench
exec bin/exactonce-bench "$@"
