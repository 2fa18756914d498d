#!/usr/bin/env bash
# Starts a single-node Gregor cluster for `make run`: one gregor-cp and one gregor-dp,
# data under ./data, Kafka on 127.0.0.1:9092. Ctrl-C stops both cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
for b in gregor-cp gregor-dp; do
  if [ ! -x "bin/$b" ]; then
    echo "run: bin/$b is not built yet: its program has not landed (see cmd/*/doc.go)." >&2
    exit 1
  fi
done
mkdir -p data/cp1 data/dp1
chmod 700 data/cp1   # etcd warns about a data directory others can read
stop() {
  trap - INT TERM
  echo "stopping…"
  # The data plane first (it deregisters and closes its logs cleanly), then the control plane.
  kill -TERM "$dp" 2>/dev/null || true
  wait "$dp" 2>/dev/null || true
  kill -TERM "$cp" 2>/dev/null || true
  wait "$cp" 2>/dev/null || true
}
trap stop INT TERM
# Each process runs in a session of its own, so that Ctrl-C reaches only this script and
# stop() can take them down in order (a terminal's SIGINT would otherwise reach both at
# once, and the data plane would wait for a control plane already gone).
setsid bin/gregor-cp --name cp1 --data-dir data/cp1 --client-addr 127.0.0.1:2379 --peer-addr 127.0.0.1:2380 \
  --initial-cluster cp1=127.0.0.1:2380 --listen 127.0.0.1:9093 --http 127.0.0.1:9645 &
cp=$!
setsid bin/gregor-dp --id 1 --data-dir data/dp1 --listen 127.0.0.1:9092 --cp 127.0.0.1:2379 --http 127.0.0.1:9644 &
dp=$!
cat <<MSG
Gregor is starting: control plane on 127.0.0.1:2379 (HTTP 127.0.0.1:9645),
data plane (Kafka) on 127.0.0.1:9092 (HTTP 127.0.0.1:9644). Data under ./data.
Connect with any Kafka client, e.g.:  kcat -b 127.0.0.1:9092 -L
Metrics: curl 127.0.0.1:9644/metrics   Cluster view: curl 127.0.0.1:9645/v1/cluster
Ctrl-C stops both.
MSG
wait
