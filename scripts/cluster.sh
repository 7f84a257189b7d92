#!/usr/bin/env bash
# make cluster: three hubs on this machine forming one JetStream cluster
# (configs/cluster-1.yaml .. -3.yaml). Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/hub ./cmd/hub
mkdir -p data
pids=()
cleanup() { trap - EXIT INT TERM; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for i in 1 2 3; do
  ./bin/hub serve -config "configs/cluster-$i.yaml" 2>&1 | sed -u "s/^/[hub-$i] /" &
  pids+=($!)
done
echo "three hubs: NATS nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224  HTTP :8080 :8081 :8082 (Ctrl-C stops)"
wait
