package controlplane_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// TestLeaseExpiryMovesLeadership: a node that stops renewing its lease leaves the
// registry, and the controller moves leadership of every partition it led to a live ISR
// member with the leader epoch bumped by one, and removes it from every ISR.
func TestLeaseExpiryMovesLeadership(t *testing.T) {
	c := newControlPlane(t, 1)
	c.WaitController(t)
	dps := map[int32]*testcluster.FakeDP{}
	for id := int32(1); id <= 3; id++ {
		dps[id] = c.FakeDP(t, id, time.Second)
	}
	admin := c.ControlPlaneClient(t)
	ctx := testCtx(t)
	if _, _, err := admin.CreateTopic(ctx, client.TopicSpec{Name: "orders", Partitions: 6, ReplicationFactor: 3}); err != nil {
		t.Fatal(err)
	}
	before := map[int32]cluster.PartitionState{}
	var led []int32
	for p := int32(0); p < 6; p++ {
		st, err := admin.GetPartition(ctx, cluster.TopicPartition{Topic: "orders", Partition: p})
		if err != nil {
			t.Fatal(err)
		}
		before[p] = st
		if st.Leader == 2 {
			led = append(led, p)
		}
	}
	if len(led) != 2 {
		t.Fatalf("node 2 leads partitions %v; want 2 of 6 (even spread)", led)
	}
	start := time.Now()
	dps[2].Crash()
	safeUntil := dps[2].Registration.SafeUntil()
	var movedAt time.Time
	testutil.CheckFor(t, 10*time.Second, func() error {
		for p := int32(0); p < 6; p++ {
			st, err := admin.GetPartition(ctx, cluster.TopicPartition{Topic: "orders", Partition: p})
			if err != nil {
				return err
			}
			if slices.Contains(st.ISR, 2) || st.Leader == 2 {
				return fmt.Errorf("partition %d still has node 2: %+v", p, st)
			}
			old := before[p]
			wantEpoch := old.LeaderEpoch
			if old.Leader == 2 {
				wantEpoch++
				if !slices.Contains(old.ISR, st.Leader) {
					return fmt.Errorf("partition %d: new leader %d was not in the ISR %v", p, st.Leader, old.ISR)
				}
			} else if st.Leader != old.Leader {
				return fmt.Errorf("partition %d: leader moved from live node %d to %d", p, old.Leader, st.Leader)
			}
			if st.LeaderEpoch != wantEpoch {
				return fmt.Errorf("partition %d: leader epoch %d, want %d", p, st.LeaderEpoch, wantEpoch)
			}
			if st.PartitionEpoch != old.PartitionEpoch+1 {
				return fmt.Errorf("partition %d: partition epoch %d, want %d", p, st.PartitionEpoch, old.PartitionEpoch+1)
			}
		}
		movedAt = time.Now()
		return nil
	})
	// The dead node's own bound on its lease held: nothing moved before it.
	select {
	case <-dps[2].Registration.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the crashed node's registration was never lost")
	}
	if movedAt.Before(safeUntil) {
		t.Fatalf("leadership moved at %v, before the node's SafeUntil %v", movedAt, safeUntil)
	}
	t.Logf("leadership moved %v after the node stopped renewing (lease TTL 1s)", time.Since(start).Round(time.Millisecond))
}

// TestOfflineAndUncleanElection: with the ISR shrunk to the leader, the leader's death
// takes the partition offline unless the topic allows unclean election; when the ISR
// member comes back the partition is elected cleanly again.
func TestOfflineAndUncleanElection(t *testing.T) {
	c := newControlPlane(t, 1)
	c.WaitController(t)
	dps := map[int32]*testcluster.FakeDP{}
	for id := int32(1); id <= 2; id++ {
		dps[id] = c.FakeDP(t, id, time.Second)
	}
	admin := c.ControlPlaneClient(t)
	ctx := testCtx(t)
	// Both topics must be led by the same node, so that crashing it affects both; the
	// assignment start is random, so re-create the second topic until it is (each try
	// matches with probability 1/2).
	create := func(name, unclean string) cluster.PartitionState {
		t.Helper()
		if _, _, err := admin.CreateTopic(ctx, client.TopicSpec{Name: name, Partitions: 1, ReplicationFactor: 2,
			Configs: map[string]string{cluster.ConfigUncleanLeaderElection: unclean}}); err != nil {
			t.Fatal(err)
		}
		st, err := admin.GetPartition(ctx, cluster.TopicPartition{Topic: name})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	clean := create("t-unclean-false", "false")
	unclean := create("t-unclean-true", "true")
	for try := 0; unclean.Leader != clean.Leader; try++ {
		if try == 40 {
			t.Fatal("assignment never chose the same leader for the second topic")
		}
		if _, err := admin.DeleteTopic(ctx, "t-unclean-true"); err != nil {
			t.Fatal(err)
		}
		unclean = create("t-unclean-true", "true")
	}
	// Shrink each ISR to its leader, as a leader whose follower lags would.
	leaderOf := map[string]int32{}
	for _, st := range []cluster.PartitionState{clean, unclean} {
		leaderOf[st.Topic] = st.Leader
		if _, err := dps[st.Leader].Registration.AlterISR(ctx, client.AlterISRRequest{TopicPartition: st.TopicPartition(),
			LeaderEpoch: st.LeaderEpoch, PartitionEpoch: st.PartitionEpoch, NewISR: []int32{st.Leader}}); err != nil {
			t.Fatal(err)
		}
	}
	dead := leaderOf["t-unclean-false"]
	other := 3 - dead
	dps[dead].Crash()
	testutil.CheckFor(t, 10*time.Second, func() error {
		off, err := admin.GetPartition(ctx, cluster.TopicPartition{Topic: "t-unclean-false"})
		if err != nil {
			return err
		}
		if off.Leader != cluster.NoLeader || !slices.Equal(off.ISR, []int32{dead}) || off.LeaderEpoch != 1 {
			return fmt.Errorf("clean topic: %+v; want offline with ISR [%d], leader epoch 1", off, dead)
		}
		un, err := admin.GetPartition(ctx, cluster.TopicPartition{Topic: "t-unclean-true"})
		if err != nil {
			return err
		}
		if un.Leader != other || !slices.Equal(un.ISR, []int32{other}) || un.LeaderEpoch != 1 {
			return fmt.Errorf("unclean topic: %+v; want leader %d alone, leader epoch 1", un, other)
		}
		return nil
	})
	// The ISR member comes back: the offline partition is elected cleanly.
	c.FakeDP(t, dead, time.Second)
	testutil.CheckFor(t, 10*time.Second, func() error {
		st, err := admin.GetPartition(ctx, cluster.TopicPartition{Topic: "t-unclean-false"})
		if err != nil {
			return err
		}
		if st.Leader != dead || st.LeaderEpoch != 2 {
			return fmt.Errorf("clean topic after return: %+v; want leader %d epoch 2", st, dead)
		}
		return nil
	})
}

// TestControllerFailover: three members, one controller; closing it elects another,
// which then does the controller's work; the closed member restarts on its data dir and
// rejoins as a follower of the new controller.
func TestControllerFailover(t *testing.T) {
	c := newControlPlane(t, 3)
	first := c.WaitController(t)
	start := time.Now()
	if err := c.Stop(first); err != nil {
		t.Fatal(err)
	}
	second := c.WaitController(t)
	if second == first {
		t.Fatalf("controller did not change")
	}
	t.Logf("controller moved from %s to %s in %v (including the old member's graceful Close)", first.Name(), second.Name(), time.Since(start).Round(time.Millisecond))
	if got, _ := c.Metric(t, second, "gregor_cp_controller_elections_won_total"); got < 1 {
		t.Fatalf("new controller won %v elections", got)
	}

	// The new controller acts on a lease expiry.
	dp1 := c.FakeDP(t, 1, time.Second)
	c.FakeDP(t, 2, time.Second)
	admin := c.ControlPlaneClient(t)
	ctx := testCtx(t)
	if _, _, err := admin.CreateTopic(ctx, client.TopicSpec{Name: "after-failover", Partitions: 2, ReplicationFactor: 2}); err != nil {
		t.Fatal(err)
	}
	dp1.Crash()
	testutil.CheckFor(t, 10*time.Second, func() error {
		for p := int32(0); p < 2; p++ {
			st, err := admin.GetPartition(ctx, cluster.TopicPartition{Topic: "after-failover", Partition: p})
			if err != nil {
				return err
			}
			if st.Leader != 2 || !slices.Equal(st.ISR, []int32{2}) {
				return fmt.Errorf("partition %d: %+v", p, st)
			}
		}
		return nil
	})

	c.Restart(first)
	testutil.CheckFor(t, 10*time.Second, func() error {
		v, err := first.View()
		if err != nil {
			return err
		}
		if v.IsController {
			return errors.New("restarted member took the controllership from a live controller")
		}
		if v.Controller != second.Name() {
			return fmt.Errorf("restarted member sees controller %q", v.Controller)
		}
		if n := len(v.Brokers); n != 1 {
			return fmt.Errorf("restarted member sees %d brokers, want 1", n)
		}
		return first.Ready()
	})
}

// TestClientSurvivesMemberLoss: a client given all three members keeps working — admin,
// watches, registration — when the member it may be using is stopped.
func TestClientSurvivesMemberLoss(t *testing.T) {
	c := newControlPlane(t, 3)
	c.WaitController(t)
	dp := c.FakeDP(t, 1, 5*time.Second)
	ctx := testCtx(t)
	view, err := dp.Client.WatchMetadata(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	for i, m := range c.CPs {
		if err := c.Stop(m); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("survive-%d", i)
		var rev int64
		testutil.CheckFor(t, 15*time.Second, func() error {
			var err error
			_, rev, err = dp.Client.CreateTopic(ctx, client.TopicSpec{Name: name, Partitions: 1, ReplicationFactor: 1})
			if errors.Is(err, kerr.TopicAlreadyExists) {
				return nil // an earlier attempt committed but its answer was lost
			}
			return err
		})
		if rev > 0 {
			if _, err := view.WaitRevision(ctx, rev); err != nil {
				t.Fatal(err)
			}
		}
		testutil.CheckFor(t, 15*time.Second, func() error {
			if _, ok := view.Snapshot().Topics[name]; !ok {
				return fmt.Errorf("view lacks topic %s", name)
			}
			return nil
		})
		select {
		case <-dp.Registration.Lost():
			t.Fatalf("registration lost with member %s stopped", m.Name())
		default:
		}
		c.Restart(m)
	}
}
