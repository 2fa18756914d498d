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
Try it with bin/gregor (these addresses are its defaults; docs/cli.md lists its commands):
  bin/gregor topic create demo -p 3
  printf 'k1:hello\nk2:world\n' | bin/gregor topic produce demo --key-delimiter :
  bin/gregor topic consume demo -n 2
  bin/gregor cluster info
Any Kafka client works too, e.g.:  kcat -b 127.0.0.1:9092 -L
Metrics: curl 127.0.0.1:9644/metrics   Cluster view: curl 127.0.0.1:9645/v1/cluster
Ctrl-C stops both.
MSG
wait_nodes
