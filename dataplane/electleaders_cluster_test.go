package dataplane_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// TestElectLeadersUnclean: an unclean election asked for with kadm through a node
// following a real control plane. A partition whose only in-sync replica died is
// offline (the topic does not allow unclean election); ElectLeaders UNCLEAN makes the
// live replica, this node, its leader, alone in the ISR, with a new leader epoch, and
// the node serves it. A partition with a leader needs no election.
func TestElectLeadersUnclean(t *testing.T) {
	c, dp := startNode(t, testcluster.Options{})
	other := c.FakeDP(t, 2, time.Second)
	admin := c.ControlPlaneClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, _, err := admin.CreateTopic(ctx, client.TopicSpec{Name: "u", Partitions: 4, ReplicationFactor: 2}); err != nil {
		t.Fatal(err)
	}
	tp := func(p int32) cluster.TopicPartition { return cluster.TopicPartition{Topic: "u", Partition: p} }
	var offline, led int32 = -1, -1
	for p := range int32(4) {
		st, err := admin.GetPartition(ctx, tp(p))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case st.Leader == other.Registration.Broker().ID && offline < 0:
			// Shrink its ISR to the other node alone, which then dies.
			if _, err := other.Registration.AlterISR(ctx, client.AlterISRRequest{TopicPartition: tp(p),
				LeaderEpoch: st.LeaderEpoch, PartitionEpoch: st.PartitionEpoch, NewISR: []int32{st.Leader}}); err != nil {
				t.Fatal(err)
			}
			offline = p
		case st.Leader == dp.ID:
			led = p
		}
	}
	if offline < 0 || led < 0 {
		t.Fatal("the two nodes do not each lead a partition")
	}
	other.Crash()
	var before cluster.PartitionState
	testutil.CheckFor(t, 10*time.Second, func() (err error) {
		if before, err = admin.GetPartition(ctx, tp(offline)); err == nil && before.Leader != cluster.NoLeader {
			err = fmt.Errorf("partition %d: %+v, want offline", offline, before)
		}
		return err
	})
	adm := c.Admin(t)
	rs, err := adm.ElectLeaders(ctx, kadm.ElectLiveReplica, kadm.TopicsSet{"u": {offline: {}, led: {}, 9: {}}})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[int32]error{offline: nil, led: kerr.ElectionNotNeeded, 9: kerr.UnknownTopicOrPartition} {
		if r := rs["u"][p]; !errors.Is(r.Err, want) && !(want == nil && r.Err == nil) {
			t.Fatalf("partition %d: %v (%s), want %v", p, r.Err, r.ErrMessage, want)
		}
	}
	after, err := admin.GetPartition(ctx, tp(offline))
	if err != nil {
		t.Fatal(err)
	}
	if after.Leader != dp.ID || !slices.Equal(after.ISR, []int32{dp.ID}) || after.LeaderEpoch != before.LeaderEpoch+1 {
		t.Fatalf("after the unclean election: %+v (before %+v)", after, before)
	}
	// The node answered once its own view showed the election: it leads the partition.
	ends, err := adm.ListEndOffsets(ctx, "u")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := ends.Lookup("u", offline); !ok || o.Err != nil {
		t.Fatalf("end offset of the elected partition: %+v", o)
	}
	// Asked again, the partition has a leader.
	rs, err = adm.ElectLeaders(ctx, kadm.ElectLiveReplica, kadm.TopicsSet{"u": {offline: {}}})
	if err != nil || !errors.Is(rs["u"][offline].Err, kerr.ElectionNotNeeded) {
		t.Fatalf("second unclean election: %v %+v", err, rs)
	}
}
