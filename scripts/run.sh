#!/usr/bin/env bash
# Starts a single-node Gregor cluster for `make run`: one gregor-cp and one gregor-dp,
# data under ./data, Kafka on 127.0.0.1:9092. Ctrl-C stops both cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/nodes.sh
start_cp cp1 data/cp1 127.0.0.1:2379 127.0.0.1:2380 cp1=127.0.0.1:2380 127.0.0.1:9093 127.0.0.1:9645
start_dp 1 data/dp1 127.0.0.1:9092 127.0.0.1:2379 127.0.0.1:9644
cat <<MSG
Gregor is starting: control plane on 127.0.0.1:2379 (HTTP 127.0.0.1:9645),
data plane (Kafka) on 127.0.0.1:9092 (HTTP 127.0.0.1:9644). Data under ./data.
Connect with any Kafka client, e.g.:  kcat -b 127.0.0.1:9092 -L
Metrics: curl 127.0.0.1:9644/metrics   Cluster view: curl 127.0.0.1:9645/v1/cluster
Ctrl-C stops both.
MSG
wait_nodes
