#!/usr/bin/env bash
# Starts (or stops) a three-node ExactOnce cluster on loopback for local use.
#   scripts/cluster.sh start   # builds bin/exactonced, starts nodes 1-3, prints URLs and a dev client
#   scripts/cluster.sh stop    # stops exactly the processes started here (pid files in .cluster/)
# Node N listens on 127.0.0.1: HTTP 808N, Raft 830N, gossip 840N; data in .cluster/nodeN.
# CLUSTER_HTTP_PORTS, CLUSTER_RAFT_PORTS and CLUSTER_GOSSIP_PORTS (three
# space-separated ports each) choose other ports, as the README test does.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.cluster
read -r -a http_ports <<<"${CLUSTER_HTTP_PORTS:-8081 8082 8083}"
read -r -a raft_ports <<<"${CLUSTER_RAFT_PORTS:-8301 8302 8303}"
read -r -a gossip_ports <<<"${CLUSTER_GOSSIP_PORTS:-8401 8402 8403}"
if [ "${#http_ports[@]}" != 3 ] || [ "${#raft_ports[@]}" != 3 ] || [ "${#gossip_ports[@]}" != 3 ]; then
  echo "CLUSTER_HTTP_PORTS, CLUSTER_RAFT_PORTS, CLUSTER_GOSSIP_PORTS: want three ports each" >&2
  exit 2
fi

stop() {
  local any=0
  for n in 1 2 3; do
    pidfile="$dir/node$n.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    # Only signal the process if it is still our exactonced.
    if kill -0 "$pid" 2>/dev/null && grep -q exactonced "/proc/$pid/cmdline" 2>/dev/null; then
      kill -TERM "$pid"
      any=1
    fi
    rm -f "$pidfile"
  done
  for n in 1 2 3; do
    for _ in $(seq 1 100); do
      pgrep -f "exactonced.*$dir/node$n( |$)" >/dev/null || break
      sleep 0.1
    done
  done
  [ "$any" = 1 ] && echo "cluster stopped" || echo "no cluster running"
}

start() {
  for n in 1 2 3; do
    if [ -f "$dir/node$n.pid" ] && kill -0 "$(cat "$dir/node$n.pid")" 2>/dev/null; then
      echo "node$n already running (pid $(cat "$dir/node$n.pid")); run: make cluster-stop" >&2
      exit 1
    fi
  done
  mkdir -p "$dir"
  CGO_ENABLED=0 go build -o bin/exactonced ./cmd/exactonced
  CGO_ENABLED=0 go build -o bin/exactonce ./cmd/exactonce
  # One cluster key and admin token shared by all three nodes, in files only
  # their owner can read (created so under umask 077): the nodes read them
  # with --*-file, so no secret is on a command line, which any local user
  # can see.
  (
    umask 077
    [ -f "$dir/cluster.key" ] || bin/exactonce keygen > "$dir/cluster.key"
    [ -f "$dir/admin.token" ] || head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' > "$dir/admin.token"
  )
  chmod 600 "$dir/cluster.key" "$dir/admin.token"
  for n in 1 2 3; do
    args=(--node-id "node$n" --data-dir "$dir/node$n"
      --http-addr "127.0.0.1:${http_ports[n-1]}" --raft-addr "127.0.0.1:${raft_ports[n-1]}" --gossip-addr "127.0.0.1:${gossip_ports[n-1]}"
      --bootstrap-expect 3 --cluster-key-file "$dir/cluster.key" --admin-token-file "$dir/admin.token")
    [ "$n" = 1 ] && args+=(--dev) || args+=(--join "127.0.0.1:${gossip_ports[0]}")
    # The nodes take every setting from the arguments above, not from
    # EXACTONCE_* variables of this shell (the walkthrough exports the dev
    # node's admin token, which would contradict --admin-token-file).
    unset_env=()
    for v in $(compgen -e | grep '^EXACTONCE_' || true); do unset_env+=(-u "$v"); done
    nohup env "${unset_env[@]}" bin/exactonced "${args[@]}" >"$dir/node$n.log" 2>&1 &
    echo $! > "$dir/node$n.pid"
  done
  for n in 1 2 3; do
    ok=0
    for _ in $(seq 1 300); do
      if curl -fsS "http://127.0.0.1:${http_ports[n-1]}/readyz" >/dev/null 2>&1; then ok=1; break; fi
      if ! kill -0 "$(cat "$dir/node$n.pid")" 2>/dev/null; then break; fi
      sleep 0.1
    done
    if [ "$ok" != 1 ]; then echo "node$n did not become ready; see $dir/node$n.log" >&2; tail -20 "$dir/node$n.log" >&2; stop; exit 1; fi
  done
  for _ in $(seq 1 100); do grep -q "^export SECRET=" "$dir/node1.log" && break; sleep 0.1; done
  echo "ExactOnce cluster is up:"
  for n in 1 2 3; do echo "  node$n  http://127.0.0.1:${http_ports[n-1]}  (log $dir/node$n.log)"; done
  echo "paste these lines into your shell:"
  grep -E "^export (API|ID|SECRET)=" "$dir/node1.log" | sed 's/^/  /'
  echo "  export EXACTONCE_ADMIN_TOKEN=\"\$(cat '$dir/admin.token')\""
  echo "stop it with: make cluster-stop"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
