package controlplane

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/controller"
	"github.com/gregor-streaming/gregor/controlplane/groups"
	"github.com/gregor-streaming/gregor/controlplane/txn"
)

// metrics are one node's metrics. Each Server has its own set, so several nodes can run
// in one process (tests) without sharing counters.
type metrics struct {
	set *vm.Set

	// Data-plane sessions held by this member (session.go).
	sessionsOpen   atomic.Int64
	sessionsOpened *vm.Counter
	sessionsBroken *vm.Counter
	sessionsKept   *vm.Counter
	sessionRevokes *vm.Counter

	opMu sync.Mutex
	ops  map[string]*vm.Histogram
}

func newMetrics(s *Server) *metrics {
	set := vm.NewSet()
	m := &metrics{
		set: set,
		ops: map[string]*vm.Histogram{},
	}
	s.groupMetrics = groups.NewMetrics(set)
	s.txnMetrics = txn.NewMetrics(set)
	set.NewGauge("gregor_cp_sessions_open", func() float64 { return float64(m.sessionsOpen.Load()) })
	m.sessionsOpened = set.NewCounter("gregor_cp_sessions_opened_total")
	m.sessionsBroken = set.NewCounter("gregor_cp_sessions_broken_total")
	m.sessionsKept = set.NewCounter("gregor_cp_sessions_kept_total")
	m.sessionRevokes = set.NewCounter("gregor_cp_session_revocations_total")
	set.NewGauge("gregor_cp_groups", func() float64 {
		if rt := s.groupRT.Load(); rt != nil {
			return float64(rt.GroupCount())
		}
		return 0
	})
	set.RegisterMetricsWriter(s.writeGroupLag)
	set.NewGauge("gregor_cp_group_connections", func() float64 {
		s.groupConnsMu.Lock()
		defer s.groupConnsMu.Unlock()
		return float64(len(s.groupConns))
	})
	set.NewGauge("gregor_cp_is_controller", func() float64 {
		if s.IsController() {
			return 1
		}
		return 0
	})
	set.NewGauge("gregor_cp_live_dataplane_nodes", func() float64 {
		if snap := s.snapshot(); snap != nil {
			return float64(len(snap.Brokers))
		}
		return 0
	})
	set.NewGauge("gregor_cp_topics", func() float64 {
		if snap := s.snapshot(); snap != nil {
			return float64(len(snap.Topics))
		}
		return 0
	})
	// Partition health, as Kafka's controller reports it: from the active controller
	// only (0 on the other members), so that a sum over members counts each partition
	// once.
	health := func(count func(partitionCounts) int) func() float64 {
		return func() float64 {
			if !s.IsController() {
				return 0
			}
			return float64(count(partitionHealth(s.snapshot())))
		}
	}
	set.NewGauge("gregor_cp_offline_partitions", health(func(c partitionCounts) int { return c.offline }))
	set.NewGauge("gregor_cp_under_replicated_partitions", health(func(c partitionCounts) int { return c.underReplicated }))
	set.NewGauge("gregor_cp_preferred_replica_imbalance", health(func(c partitionCounts) int { return c.imbalanced }))
	// Replica movement, from the active controller only too.
	set.NewGauge("gregor_cp_reassignments_in_flight", health(func(c partitionCounts) int { return c.reassigning }))
	set.NewGauge("gregor_cp_reassignment_replicas_catching_up", health(func(c partitionCounts) int { return c.catchingUp }))
	set.RegisterMetricsWriter(s.writeDecommissionStates)
	set.NewGauge("gregor_cp_etcd_has_leader", func() float64 {
		if s.etcd != nil && s.etcd.Server.Leader() != 0 {
			return 1
		}
		return 0
	})
	set.NewGauge("gregor_cp_etcd_is_leader", func() float64 {
		if s.etcd != nil && s.etcd.Server.Leader() == s.etcd.Server.MemberID() {
			return 1
		}
		return 0
	})
	return m
}

// observeOp records one etcd call's latency under its operation name.
func (m *metrics) observeOp(op string, d time.Duration) {
	m.opMu.Lock()
	h, ok := m.ops[op]
	if !ok {
		h = m.set.GetOrCreateHistogram(fmt.Sprintf(`gregor_cp_etcd_op_duration_seconds{op=%q}`, op))
		m.ops[op] = h
	}
	m.opMu.Unlock()
	h.Update(d.Seconds())
}

// writeGroupLag writes the active coordinator's consumer lag per group and partition
// (committed offset behind the leader's last checkpointed high watermark) and per group.
func (s *Server) writeGroupLag(w io.Writer) {
	rt := s.groupRT.Load()
	if rt == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyCheckTimeout)
	defer cancel()
	for _, g := range rt.Views(s.highWatermarks(ctx)) {
		for _, o := range g.Offsets {
			if o.Lag >= 0 {
				vm.WriteGaugeUint64(w, fmt.Sprintf(`gregor_group_lag{group=%q,topic=%q,partition="%d"}`, g.Group, o.Topic, o.Partition), uint64(o.Lag))
			}
		}
		vm.WriteGaugeUint64(w, fmt.Sprintf(`gregor_group_members{group=%q}`, g.Group), uint64(len(g.Members)))
		vm.WriteGaugeUint64(w, fmt.Sprintf(`gregor_group_total_lag{group=%q}`, g.Group), uint64(g.TotalLag))
	}
}

// snapshot returns the current metadata view, or nil before the node is ready.
func (s *Server) snapshot() *client.Snapshot {
	if !s.ready.Load() {
		return nil
	}
	return s.view.Snapshot()
}

// partitionCounts are partitionHealth's counts.
type partitionCounts struct {
	// offline: no leader, or a leader not registered (Kafka's OfflinePartitionsCount).
	offline int
	// underReplicated: an ISR smaller than the replicas.
	underReplicated int
	// imbalanced: a leader other than the preferred one, replicas[0], offline ones
	// included (Kafka's PreferredReplicaImbalanceCount).
	imbalanced int
	// reassigning: a reassignment in progress (Kafka's ReassigningPartitions);
	// catchingUp: the adding replicas of those not in the ISR yet.
	reassigning, catchingUp int
}

// partitionHealth counts the partitions of snap by health.
func partitionHealth(snap *client.Snapshot) partitionCounts {
	var c partitionCounts
	if snap == nil {
		return c
	}
	for _, st := range snap.Partitions {
		if _, ok := snap.Brokers[st.Leader]; !ok {
			c.offline++
		}
		if len(st.ISR) < len(st.Replicas) {
			c.underReplicated++
		}
		if len(st.Replicas) == 0 || st.Leader != st.Replicas[0] {
			c.imbalanced++
		}
		if st.Reassigning() {
			c.reassigning++
			for _, id := range st.AddingReplicas {
				if !slices.Contains(st.ISR, id) {
					c.catchingUp++
				}
			}
		}
	}
	return c
}

// writeDecommissionStates writes, on the active controller, each node's decommission
// state (1 draining, 2 decommissioned; nodes not being decommissioned are left out) and
// whether its decommission is blocked (1: some replicas cannot move now, see
// /v1/nodes).
func (s *Server) writeDecommissionStates(w io.Writer) {
	if !s.IsController() {
		return
	}
	snap := s.snapshot()
	if snap == nil || len(snap.Decommissions) == 0 {
		return
	}
	blocked := controller.DecommissionBlocked(snap)
	ids := make([]int32, 0, len(snap.Decommissions))
	for id := range snap.Decommissions {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		state := uint64(1)
		if snap.Decommissions[id].State == cluster.DecommissionDone {
			state = 2
		}
		vm.WriteGaugeUint64(w, fmt.Sprintf(`gregor_cp_node_decommission_state{node="%d"}`, id), state)
		b := uint64(0)
		if len(blocked[id]) > 0 {
			b = 1
		}
		vm.WriteGaugeUint64(w, fmt.Sprintf(`gregor_cp_node_decommission_blocked{node="%d"}`, id), b)
	}
}
