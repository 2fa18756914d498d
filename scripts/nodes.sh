# Shared by scripts/run.sh (`make run`) and scripts/cluster.sh (`make cluster`): start
# gregor-cp and gregor-dp processes from bin/ on this machine, and stop them all, data
# plane first, when the script is interrupted or a node exits on its own. Source it from
# the repository's root, then call start_cp / start_dp for each node and wait_nodes.

for b in gregor-cp gregor-dp; do
  if [ ! -x "bin/$b" ]; then
    echo "bin/$b is not built yet: its program has not landed (see cmd/*/doc.go)." >&2
    exit 1
  fi
done

cps=() # pids of the control-plane members
dps=() # pids of the data-plane nodes

# start_cp NAME DIR CLIENT PEER INITIAL_CLUSTER LISTEN HTTP starts a control-plane member.
# Each process runs in a session of its own, so that Ctrl-C reaches only the script and
# stop_nodes takes them down in order (a terminal's SIGINT would otherwise reach them all
# at once, and the data plane would wait for a control plane already gone).
start_cp() {
  mkdir -p "$2"
  chmod 700 "$2" # etcd warns about a data directory others can read
  setsid bin/gregor-cp --name "$1" --data-dir "$2" --client-addr "$3" --peer-addr "$4" \
    --initial-cluster "$5" --listen "$6" --http "$7" &
  cps+=($!)
}

# start_dp ID DIR KAFKA CP_CLIENTS HTTP starts a data-plane node (CP_CLIENTS: the
# members' client addresses, comma-separated).
start_dp() {
  mkdir -p "$2"
  setsid bin/gregor-dp --id "$1" --data-dir "$2" --listen "$3" --cp "$4" --http "$5" &
  dps+=($!)
}

# stop_nodes stops the data plane (each node deregisters and closes its logs), then the
# control plane, each kind all at once, and waits for every process to end.
stop_nodes() {
  trap - INT TERM
  echo "stopping…"
  local pid
  for pid in "${dps[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${dps[@]}"; do wait "$pid" 2>/dev/null || true; done
  for pid in "${cps[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${cps[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# wait_nodes returns when interrupted (Ctrl-C, SIGTERM) or when a node exits on its own,
# in both cases after stopping every node; the second case exits 1.
wait_nodes() {
  trap 'stop_nodes; exit 130' INT TERM
  wait -n || true
  echo "a node exited on its own (its output is above); stopping the others" >&2
  stop_nodes
  exit 1
}
