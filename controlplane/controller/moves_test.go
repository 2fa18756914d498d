package controller

import (
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

func stopping(ids ...int32) map[int32]bool {
	m := map[int32]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// TestElectControlledShutdown: a node in controlled shutdown leads nowhere and leaves
// every ISR that keeps another member, as KRaft's controller moves a stopping broker's
// partitions.
func TestElectControlledShutdown(t *testing.T) {
	st := func(leader int32, isr ...int32) cluster.PartitionState {
		return cluster.PartitionState{Replicas: []int32{1, 2, 3}, Leader: leader, LeaderEpoch: 5, ISR: isr, PartitionEpoch: 9}
	}
	tests := []struct {
		name        string
		in          cluster.PartitionState
		live        []int32
		stopping    []int32
		unclean     bool
		changed     bool
		leader      int32
		leaderEpoch int32
		isr         []int32
	}{
		{"stopping leader hands over to the next ISR member", st(1, 1, 2, 3), []int32{1, 2, 3}, []int32{1}, false, true, 2, 6, []int32{2, 3}},
		{"replica order, not ISR order", st(1, 1, 3, 2), []int32{1, 2, 3}, []int32{1}, false, true, 2, 6, []int32{3, 2}},
		{"stopping follower leaves the ISR, same leader epoch", st(1, 1, 2, 3), []int32{1, 2, 3}, []int32{3}, false, true, 1, 5, []int32{1, 2}},
		{"stopping follower out of the ISR already: nothing to do", st(1, 1, 2), []int32{1, 2, 3}, []int32{3}, false, false, 1, 5, []int32{1, 2}},
		{"stopping leader alone in sync: offline, ISR kept", st(1, 1), []int32{1, 2, 3}, []int32{1}, false, true, cluster.NoLeader, 6, []int32{1}},
		{"stopping leader alone in sync, unclean allowed: a live replica leads", st(1, 1), []int32{1, 2, 3}, []int32{1}, true, true, 2, 6, []int32{2}},
		{"every ISR member stopping: offline", st(1, 1, 2), []int32{1, 2, 3}, []int32{1, 2}, false, true, cluster.NoLeader, 6, []int32{1, 2}},
		{"stopping ISR member of an offline partition is not elected", st(cluster.NoLeader, 1), []int32{1, 2}, []int32{1}, false, false, cluster.NoLeader, 5, []int32{1}},
		{"dead leader, stopping first ISR member: the next leads", st(1, 1, 2, 3), []int32{2, 3}, []int32{2}, false, true, 3, 6, []int32{3}},
		{"dead follower and stopping follower both leave", st(1, 1, 2, 3), []int32{1, 3}, []int32{3}, false, true, 1, 5, []int32{1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.in.Clone()
			got, changed := Elect(tc.in, Nodes{Live: liveSet(tc.live...), ShuttingDown: stopping(tc.stopping...)}, tc.unclean)
			if changed != tc.changed {
				t.Fatalf("changed = %v, want %v", changed, tc.changed)
			}
			if got.Leader != tc.leader || got.LeaderEpoch != tc.leaderEpoch || !slices.Equal(got.ISR, tc.isr) {
				t.Fatalf("got leader %d epoch %d isr %v; want %d %d %v", got.Leader, got.LeaderEpoch, got.ISR, tc.leader, tc.leaderEpoch, tc.isr)
			}
			wantPE := before.PartitionEpoch
			if changed {
				wantPE++
			}
			if got.PartitionEpoch != wantPE {
				t.Fatalf("partition epoch %d, want %d", got.PartitionEpoch, wantPE)
			}
			if !slices.Equal(tc.in.ISR, before.ISR) || tc.in.Leader != before.Leader {
				t.Fatal("input modified")
			}
			if got.Leader != cluster.NoLeader && (!slices.Contains(got.ISR, got.Leader) || stopping(tc.stopping...)[got.Leader]) {
				t.Fatalf("leader %d: not in ISR %v, or stopping", got.Leader, got.ISR)
			}
		})
	}
}

// TestPreferredLeader: leadership goes back to replicas[0] only when it can lead.
func TestPreferredLeader(t *testing.T) {
	st := func(leader int32, isr ...int32) cluster.PartitionState {
		return cluster.PartitionState{Replicas: []int32{1, 2, 3}, Leader: leader, LeaderEpoch: 5, ISR: isr, PartitionEpoch: 9}
	}
	tests := []struct {
		name     string
		in       cluster.PartitionState
		live     []int32
		stopping []int32
		moved    bool
	}{
		{"preferred back in sync: moves", st(2, 2, 3, 1), []int32{1, 2, 3}, nil, true},
		{"preferred leads already", st(1, 1, 2, 3), []int32{1, 2, 3}, nil, false},
		{"preferred not in the ISR yet", st(2, 2, 3), []int32{1, 2, 3}, nil, false},
		{"preferred not live", st(2, 2, 3, 1), []int32{2, 3}, nil, false},
		{"preferred stopping", st(2, 2, 3, 1), []int32{1, 2, 3}, []int32{1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, moved := PreferredLeader(tc.in, Nodes{Live: liveSet(tc.live...), ShuttingDown: stopping(tc.stopping...)})
			if moved != tc.moved {
				t.Fatalf("moved = %v, want %v", moved, tc.moved)
			}
			if !moved {
				return
			}
			if got.Leader != 1 || got.LeaderEpoch != 6 || got.PartitionEpoch != 10 || !slices.Equal(got.ISR, tc.in.ISR) {
				t.Fatalf("got %+v", got)
			}
			if tc.in.Leader == 1 || tc.in.LeaderEpoch != 5 {
				t.Fatal("input modified")
			}
		})
	}
}

// TestElectOnRequest: ElectLeaders' per-partition answers are Kafka's.
func TestElectOnRequest(t *testing.T) {
	st := func(leader int32, isr ...int32) cluster.PartitionState {
		return cluster.PartitionState{Replicas: []int32{1, 2, 3}, Leader: leader, LeaderEpoch: 5, ISR: isr, PartitionEpoch: 9}
	}
	tests := []struct {
		name     string
		typ      ElectionType
		in       cluster.PartitionState
		live     []int32
		stopping []int32
		err      *kerr.Error
		leader   int32
		isr      []int32
	}{
		{"preferred: moves", ElectionPreferred, st(2, 2, 1), []int32{1, 2}, nil, nil, 1, []int32{2, 1}},
		{"preferred: leads already", ElectionPreferred, st(1, 1, 2), []int32{1, 2}, nil, kerr.ElectionNotNeeded, 1, nil},
		{"preferred: out of sync", ElectionPreferred, st(2, 2), []int32{1, 2}, nil, kerr.PreferredLeaderNotAvailable, 2, nil},
		{"preferred: dead", ElectionPreferred, st(2, 2, 1), []int32{2}, nil, kerr.PreferredLeaderNotAvailable, 2, nil},
		{"preferred: stopping", ElectionPreferred, st(2, 2, 1), []int32{1, 2}, []int32{1}, kerr.PreferredLeaderNotAvailable, 2, nil},
		{"unclean: has a leader", ElectionUnclean, st(2, 2), []int32{1, 2}, nil, kerr.ElectionNotNeeded, 2, nil},
		{"unclean: offline, a live replica leads alone", ElectionUnclean, st(cluster.NoLeader, 3), []int32{1, 2}, nil, nil, 1, []int32{1}},
		{"unclean: offline, only a stopping replica live", ElectionUnclean, st(cluster.NoLeader, 3), []int32{1}, []int32{1}, kerr.EligibleLeadersNotAvailable, cluster.NoLeader, nil},
		{"unclean: offline, nothing live", ElectionUnclean, st(cluster.NoLeader, 3), nil, nil, kerr.EligibleLeadersNotAvailable, cluster.NoLeader, nil},
		{"unknown type", ElectionType(7), st(2, 2, 1), []int32{1, 2}, nil, kerr.InvalidRequest, 2, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ElectOnRequest(tc.in, Nodes{Live: liveSet(tc.live...), ShuttingDown: stopping(tc.stopping...)}, tc.typ)
			if err != tc.err {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if got.Leader != tc.leader {
				t.Fatalf("leader %d, want %d", got.Leader, tc.leader)
			}
			if err == nil {
				if got.LeaderEpoch != 6 || got.PartitionEpoch != 10 || !slices.Equal(got.ISR, tc.isr) {
					t.Fatalf("got %+v, want isr %v and both epochs bumped", got, tc.isr)
				}
			}
		})
	}
}

// TestPlanShutdownAndPreferred: the reconcile pass reads controlled shutdowns from the
// view (only those of the current registration count), and a preferred move is planned
// only where no other change is due.
func TestPlanShutdownAndPreferred(t *testing.T) {
	tp := func(p int32) cluster.TopicPartition { return cluster.TopicPartition{Topic: "t", Partition: p} }
	st := func(p int32, replicas []int32, leader int32, isr ...int32) cluster.PartitionState {
		return cluster.PartitionState{Topic: "t", Partition: p, Replicas: replicas, Leader: leader, LeaderEpoch: 3,
			ISR: isr, PartitionEpoch: 7, ModRevision: 50}
	}
	snap := &client.Snapshot{
		Brokers: map[int32]cluster.Broker{1: {ID: 1, Epoch: 10}, 2: {ID: 2, Epoch: 20}, 3: {ID: 3, Epoch: 30}},
		Topics:  map[string]cluster.Topic{"t": {Name: "t", Partitions: 3}},
		Partitions: map[cluster.TopicPartition]cluster.PartitionState{
			tp(0): st(0, []int32{1, 2, 3}, 1, 1, 2, 3),
			tp(1): st(1, []int32{2, 3, 1}, 3, 3, 1, 2), // preferred 2 in sync, not leading
			tp(2): st(2, []int32{3, 1, 2}, 3, 3, 1),
		},
		ShuttingDown: map[int32]int64{1: 5}, // written by an earlier registration of node 1: void
	}
	if olds, _, _ := planElections(snap); len(olds) != 0 {
		t.Fatalf("a stale shutdown key changed %d partitions", len(olds))
	}
	if olds, nexts := planPreferred(snap); len(olds) != 1 || olds[0].Partition != 1 || nexts[0].Leader != 2 || nexts[0].LeaderEpoch != 4 {
		t.Fatalf("preferred moves %v -> %v; want partition 1 to node 2", olds, nexts)
	}
	snap.ShuttingDown = map[int32]int64{1: 10}
	olds, nexts, _ := planElections(snap)
	got := map[int32]cluster.PartitionState{}
	for i, o := range olds {
		got[o.Partition] = nexts[i]
	}
	if g := got[0]; len(got) != 3 || g.Leader != 2 || g.LeaderEpoch != 4 || !slices.Equal(g.ISR, []int32{2, 3}) {
		t.Fatalf("partition 0: %+v (changes %d); want node 2 leading, ISR [2 3]", g, len(got))
	}
	if g := got[1]; g.Leader != 3 || g.LeaderEpoch != 3 || !slices.Equal(g.ISR, []int32{3, 2}) {
		t.Fatalf("partition 1: %+v; want node 1 out of the ISR only", g)
	}
	if g := got[2]; g.Leader != 3 || !slices.Equal(g.ISR, []int32{3}) {
		t.Fatalf("partition 2: %+v", g)
	}
	// While other changes are due no preferred move is planned for those partitions.
	if olds, _ := planPreferred(snap); len(olds) != 0 {
		t.Fatalf("preferred moves planned beside pending changes: %v", olds)
	}
}
