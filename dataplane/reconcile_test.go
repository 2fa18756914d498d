package dataplane

import (
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"slices"
	"testing"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/replica"
	"github.com/twmb/franz-go/pkg/kerr"
)

// TestReconcileLeadsOnlyForItsRegistration: with a broker epoch configured, a node
// leads a partition only from a state written after its registration: not from one
// written for an earlier process of the node (a restart before the controller has moved
// that process's leadership), and no longer once the view shows a newer registration of
// its id (a later process took it over). Produce follows: refused, accepted, refused.
func TestReconcileLeadsOnlyForItsRegistration(t *testing.T) {
	s := startServer(t, Config{NodeID: 1, BrokerEpoch: 20})
	rev := int64(0)
	reconcile := func(brokerEpoch, stateRev int64, leaderEpoch int32) {
		t.Helper()
		rev++
		tp := cluster.TopicPartition{Topic: "r"}
		snap := &client.Snapshot{
			Revision: rev,
			Brokers:  map[int32]cluster.Broker{},
			Topics:   map[string]cluster.Topic{"r": {Name: "r", ID: "id", Partitions: 1, ReplicationFactor: 1}},
			Partitions: map[cluster.TopicPartition]cluster.PartitionState{tp: {Topic: "r", Replicas: []int32{1}, Leader: 1,
				LeaderEpoch: leaderEpoch, ISR: []int32{1}, ModRevision: stateRev}},
		}
		if brokerEpoch != 0 {
			snap.Brokers[1] = cluster.Broker{ID: 1, Host: "127.0.0.1", Port: 9092, Epoch: brokerEpoch}
		}
		if err := s.Reconcile(snap); err != nil {
			t.Fatal(err)
		}
	}
	c := dial(t, s)
	produceCode := func() int16 {
		t.Helper()
		return produce(t, c, 7, "r", 0, -1, batch(1, "x", -1, -1, -1)).ErrorCode
	}

	reconcile(20, 10, 3) // the state names the node's earlier process leader
	if p := s.replicas.Partition("r", 0); p != nil && p.IsLeader() {
		t.Fatal("led a partition from a state older than its registration")
	}
	if code := produceCode(); code == 0 {
		t.Fatal("produce accepted before the controller elected this process")
	}
	reconcile(20, 25, 5) // the controller elected this process, with a new leader epoch
	if p := s.replicas.Partition("r", 0); p == nil || p.LeaderEpoch() != 5 {
		t.Fatal("not leading at leader epoch 5 after the controller elected this process")
	}
	if code := produceCode(); code != 0 {
		t.Fatalf("produce refused while leading: %d", code)
	}
	reconcile(30, 25, 5) // a later process of the node took the registration over
	if s.replicas.Partition("r", 0).IsLeader() {
		t.Fatal("still leading after another process took the registration over")
	}
	if code := produceCode(); code != kerr.NotLeaderForPartition.Code {
		t.Fatalf("produce after the takeover: code %d, want NOT_LEADER_OR_FOLLOWER", code)
	}
	reconcile(0, 26, 6) // no registration of the node in the view (its lease expired)
	if s.replicas.Partition("r", 0).IsLeader() {
		t.Fatal("leading without a registration in the view")
	}
}

// TestReconcileFollowsPartitionsLedElsewhere: a replica this node has of a partition
// another node now leads becomes that leader's follower, with its epoch and ISR, and
// refuses produce; a partition assigned to it that it has no replica of is opened to
// follow.
func TestReconcileFollowsPartitionsLedElsewhere(t *testing.T) {
	s := startServer(t, Config{NodeID: 1})
	rev := int64(0)
	reconcile := func(leader, leaderEpoch int32) {
		t.Helper()
		rev++
		state := func(p int32) cluster.PartitionState {
			return cluster.PartitionState{Topic: "f", Partition: p, Replicas: []int32{1, 2}, Leader: leader,
				LeaderEpoch: leaderEpoch, ISR: []int32{1, 2}, PartitionEpoch: leaderEpoch}
		}
		snap := &client.Snapshot{
			Revision: rev,
			Topics:   map[string]cluster.Topic{"f": {Name: "f", ID: "id", Partitions: 2, ReplicationFactor: 2}},
			Partitions: map[cluster.TopicPartition]cluster.PartitionState{
				{Topic: "f", Partition: 0}: state(0),
				{Topic: "f", Partition: 1}: {Topic: "f", Partition: 1, Replicas: []int32{1, 2}, Leader: 2, LeaderEpoch: 1, ISR: []int32{2}},
			},
		}
		if err := s.Reconcile(snap); err != nil {
			t.Fatal(err)
		}
	}
	reconcile(1, 3)
	p := s.replicas.Partition("f", 0)
	if p == nil || p.Role() != replica.RoleLeader || p.LeaderEpoch() != 3 {
		t.Fatalf("not leading partition 0 at epoch 3: %v", p)
	}
	reconcile(2, 4)
	if p.Role() != replica.RoleFollower || p.LeaderEpoch() != 4 {
		t.Fatalf("partition 0: %v at epoch %d, want a follower at 4", p.Role(), p.LeaderEpoch())
	}
	if la := p.LeaderAndIsr(); la.Leader != 2 || !slices.Equal(la.ISR, []int32{1, 2}) || la.PartitionEpoch != 4 {
		t.Fatalf("partition 0's leadership: %+v", la)
	}
	if rp := produce(t, dial(t, s), 7, "f", 0, 1, batch(1, "x", -1, -1, -1)); rp.ErrorCode != kerr.NotLeaderForPartition.Code {
		t.Fatalf("produce to a follower: code %d", rp.ErrorCode)
	}
	// An assigned replica is opened to follow, whether or not this node ever led it.
	if p1 := s.replicas.Partition("f", 1); p1 == nil || p1.Role() != replica.RoleFollower || p1.LeaderEpoch() != 1 {
		t.Fatalf("partition 1: %v, want a follower at epoch 1", p1)
	}
}
