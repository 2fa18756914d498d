package controller

import (
	"maps"
	"slices"
	"testing"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

func liveSet(ids ...int32) map[int32]cluster.Broker {
	m := map[int32]cluster.Broker{}
	for _, id := range ids {
		m[id] = cluster.Broker{ID: id}
	}
	return m
}

func TestElectLeader(t *testing.T) {
	st := func(leader int32, isr ...int32) cluster.PartitionState {
		return cluster.PartitionState{Replicas: []int32{1, 2, 3}, Leader: leader, LeaderEpoch: 5, ISR: isr, PartitionEpoch: 9}
	}
	tests := []struct {
		name        string
		in          cluster.PartitionState
		live        []int32
		unclean     bool
		changed     bool
		leader      int32
		leaderEpoch int32
		isr         []int32
	}{
		{"all live: nothing to do", st(1, 1, 2, 3), []int32{1, 2, 3}, false, false, 1, 5, []int32{1, 2, 3}},
		{"follower dies: leaves ISR, same leader epoch", st(1, 1, 2, 3), []int32{1, 2}, false, true, 1, 5, []int32{1, 2}},
		{"leader dies: next ISR member in replica order", st(1, 1, 3, 2), []int32{2, 3}, false, true, 2, 6, []int32{3, 2}},
		{"leader dies: out-of-sync replica not chosen", st(1, 1, 3), []int32{2, 3}, false, true, 3, 6, []int32{3}},
		{"no live ISR member: offline, ISR kept", st(1, 1), []int32{2, 3}, false, true, cluster.NoLeader, 6, []int32{1}},
		{"already offline: nothing to do", st(cluster.NoLeader, 1), []int32{2, 3}, false, false, cluster.NoLeader, 5, []int32{1}},
		{"unclean allowed: a live replica leads alone", st(1, 1), []int32{3}, true, true, 3, 6, []int32{3}},
		{"unclean allowed but nothing live: offline", st(1, 1), nil, true, true, cluster.NoLeader, 6, []int32{1}},
		{"offline ISR member returns: elected", st(cluster.NoLeader, 1), []int32{1}, false, true, 1, 6, []int32{1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.in.Clone()
			got, changed := ElectLeader(tc.in, liveSet(tc.live...), tc.unclean)
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
			if !slices.Equal(tc.in.ISR, before.ISR) {
				t.Fatalf("input modified: %v -> %v", before.ISR, tc.in.ISR)
			}
			if got.Leader != cluster.NoLeader && !slices.Contains(got.ISR, got.Leader) {
				t.Fatalf("invariant: leader %d not in ISR %v", got.Leader, got.ISR)
			}
		})
	}
}

// TestPlanElectionsRestartedNode: a node registered after a partition's state was
// written (broker epoch above the state's mod revision) counts as dead for that
// partition while the state names it leader or ISR member — the state was written for an
// earlier process of the node — so it loses its leaderships (leader epoch bumped) and ISR
// memberships; once the state is rewritten, a partition it left offline elects it again
// with another bump. An offline partition elects a returning ISR member at once.
func TestPlanElectionsRestartedNode(t *testing.T) {
	tp := func(p int32) cluster.TopicPartition { return cluster.TopicPartition{Topic: "t", Partition: p} }
	st := func(p, leader int32, isr ...int32) cluster.PartitionState {
		return cluster.PartitionState{Topic: "t", Partition: p, Replicas: []int32{1, 2}, Leader: leader, LeaderEpoch: 3,
			ISR: isr, PartitionEpoch: 7, ModRevision: 25}
	}
	snap := &client.Snapshot{
		Brokers: map[int32]cluster.Broker{1: {ID: 1, Epoch: 10}, 2: {ID: 2, Epoch: 20}},
		Topics:  map[string]cluster.Topic{"t": {Name: "t", Partitions: 4}},
		Partitions: map[cluster.TopicPartition]cluster.PartitionState{
			tp(0): st(0, 2, 2, 1),
			tp(1): st(1, 1, 1, 2),
			tp(2): st(2, 2, 2),
			tp(3): st(3, 1, 1),
		},
	}
	if olds, _, restarted := planElections(snap); len(olds) != 0 || restarted != nil {
		t.Fatalf("states newer than every registration: %d changes, restarted %v; want none", len(olds), restarted)
	}
	snap.Brokers = map[int32]cluster.Broker{1: {ID: 1, Epoch: 10}, 2: {ID: 2, Epoch: 30}} // node 2 took its registration over
	olds, nexts, restarted := planElections(snap)
	if !restarted[2] || len(restarted) != 1 {
		t.Fatalf("restarted %v, want node 2", restarted)
	}
	got := map[int32]cluster.PartitionState{}
	for i, o := range olds {
		got[o.Partition] = nexts[i]
	}
	want := map[int32]struct {
		leader, leaderEpoch int32
		isr                 []int32
	}{
		0: {1, 4, []int32{1}},
		1: {1, 3, []int32{1}},
		2: {cluster.NoLeader, 4, []int32{2}},
	}
	if len(got) != len(want) {
		t.Fatalf("changed partitions %v, want %d", got, len(want))
	}
	for p, w := range want {
		g := got[p]
		if g.Leader != w.leader || g.LeaderEpoch != w.leaderEpoch || !slices.Equal(g.ISR, w.isr) || g.PartitionEpoch != 8 {
			t.Fatalf("partition %d: %+v, want leader %d epoch %d isr %v", p, g, w.leader, w.leaderEpoch, w.isr)
		}
	}
	// The controller's writes land after the registration: the partition node 2 left
	// offline elects it, with another leader epoch; nothing else changes.
	next := maps.Clone(snap.Partitions)
	for p, g := range got {
		g.ModRevision = 31
		next[tp(p)] = g
	}
	snap.Partitions = next
	olds, nexts, restarted = planElections(snap)
	if len(olds) != 1 || olds[0].Partition != 2 || restarted != nil {
		t.Fatalf("second pass: changed %v, restarted %v; want partition 2 only", olds, restarted)
	}
	if n := nexts[0]; n.Leader != 2 || n.LeaderEpoch != 5 || !slices.Equal(n.ISR, []int32{2}) {
		t.Fatalf("second pass: partition 2 %+v, want leader 2 epoch 5", n)
	}
	// An offline partition written before the node's new registration elects it at once.
	snap.Partitions = map[cluster.TopicPartition]cluster.PartitionState{tp(0): st(0, cluster.NoLeader, 2)}
	olds, nexts, _ = planElections(snap)
	if len(olds) != 1 || nexts[0].Leader != 2 || nexts[0].LeaderEpoch != 4 {
		t.Fatalf("offline partition: %+v", nexts)
	}
}
