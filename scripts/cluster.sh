#!/usr/bin/env bash
# Starts a Gregor cluster of three control-plane and three data-plane nodes on this
# machine for `make cluster`, data under ./data/cluster (one directory per node, kept
# apart from `make run`'s single-node data: a control-plane member's directory fixes the
# members of its cluster). The nodes listen on 127.0.0.1:
#   cp1, cp2, cp3  etcd client 2379, 2479, 2579; peer 2380, 2480, 2580;
#                  internal 9093, 9193, 9293; HTTP 9645, 9655, 9665
#   dp1, dp2, dp3  Kafka 9092, 9192, 9292; HTTP 9644, 9654, 9664
# (node 1's ports are `make run`'s).
# Ctrl-C stops them all (the data plane first); run it again to restart on the same data.
# Started in the background by another script, where SIGINT arrives ignored (and bash
# cannot trap it), stop it with SIGTERM instead.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/nodes.sh
dir=data/cluster
initial= clients= kafka=
for i in 1 2 3; do
  initial+="${initial:+,}cp$i=127.0.0.1:2$((i + 2))80"
  clients+="${clients:+,}127.0.0.1:2$((i + 2))79"
  kafka+="${kafka:+,}127.0.0.1:9$((i - 1))92"
done
for i in 1 2 3; do
  start_cp "cp$i" "$dir/cp$i" "127.0.0.1:2$((i + 2))79" "127.0.0.1:2$((i + 2))80" "$initial" \
    "127.0.0.1:9$((i - 1))93" "127.0.0.1:96$((i + 3))5"
done
for i in 1 2 3; do
  start_dp "$i" "$dir/dp$i" "127.0.0.1:9$((i - 1))92" "$clients" "127.0.0.1:96$((i + 3))4"
done
cat <<MSG
Gregor cluster is starting, data under ./$dir:
  control plane  cp1 127.0.0.1:2379  cp2 127.0.0.1:2479  cp3 127.0.0.1:2579  (etcd clients)
                 HTTP 127.0.0.1:9645, 9655, 9665 (/metrics, /readyz, /v1/cluster)
  data plane     dp1 127.0.0.1:9092  dp2 127.0.0.1:9192  dp3 127.0.0.1:9292  (Kafka)
                 HTTP 127.0.0.1:9644, 9654, 9664 (/metrics)
Try it with bin/gregor (docs/cli.md lists its commands):
  export GREGOR_BROKERS=$kafka GREGOR_CONTROL_PLANE=127.0.0.1:9645,127.0.0.1:9655,127.0.0.1:9665
  bin/gregor topic create rf3 -p 3 -r 3 -c min.insync.replicas=2
  seq 100 | bin/gregor topic produce rf3
  bin/gregor topic describe rf3      # leaders, replicas, ISRs
  bin/gregor cluster health --exit-when-healthy
Any Kafka client works too, e.g.:  kcat -b $kafka -L
Cluster view: curl 127.0.0.1:9645/v1/cluster
Ctrl-C stops all six.
MSG
wait_nodes
