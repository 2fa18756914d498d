package controlplane_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// TestControlledShutdownAndPreferredLeader: a node that begins a controlled shutdown
// loses every leadership to another ISR member (leader epoch +1) and leaves every ISR,
// and may not be added back; once it has registered again and its leaders have added
// it to their ISRs, the controller gives it back the partitions it is the preferred
// replica of, no sooner than the rebalance delay.
func TestControlledShutdownAndPreferredLeader(t *testing.T) {
	const delay = 700 * time.Millisecond
	c := testcluster.New(t, testcluster.Options{ControlPlanes: 1, ControlPlaneOnly: true,
		ControlPlane: func(cfg *controlplane.Config) { cfg.LeaderRebalanceDelay = delay }})
	c.WaitController(t)
	dps := map[int32]*testcluster.FakeDP{}
	for id := int32(1); id <= 3; id++ {
		dps[id] = c.FakeDP(t, id, time.Second)
	}
	admin := c.ControlPlaneClient(t)
	ctx := testCtx(t)
	if _, _, err := admin.CreateTopic(ctx, client.TopicSpec{Name: "cs", Partitions: 6, ReplicationFactor: 3}); err != nil {
		t.Fatal(err)
	}
	tp := func(p int32) cluster.TopicPartition { return cluster.TopicPartition{Topic: "cs", Partition: p} }
	get := func(p int32) cluster.PartitionState {
		st, err := admin.GetPartition(ctx, tp(p))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	before := map[int32]cluster.PartitionState{}
	var preferred []int32
	for p := range int32(6) {
		before[p] = get(p)
		if before[p].Replicas[0] == 1 {
			preferred = append(preferred, p)
		}
		if before[p].Leader != before[p].Replicas[0] {
			t.Fatalf("partition %d starts led by %d, not its preferred replica", p, before[p].Leader)
		}
	}
	if len(preferred) == 0 {
		t.Fatal("node 1 is the preferred replica of nothing")
	}

	if err := dps[1].Registration.BeginControlledShutdown(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 10*time.Second, func() error {
		for p := range int32(6) {
			st, old := get(p), before[p]
			if st.Leader == 1 || slices.Contains(st.ISR, 1) {
				return fmt.Errorf("partition %d still has node 1: %+v", p, st)
			}
			wantEpoch := old.LeaderEpoch
			if old.Leader == 1 {
				wantEpoch++
			} else if st.Leader != old.Leader {
				return fmt.Errorf("partition %d: leader moved from %d to %d", p, old.Leader, st.Leader)
			}
			if st.LeaderEpoch != wantEpoch {
				return fmt.Errorf("partition %d: leader epoch %d, want %d", p, st.LeaderEpoch, wantEpoch)
			}
		}
		return nil
	})
	testutil.CheckFor(t, 10*time.Second, func() error {
		v, err := c.CPs[0].View()
		if err != nil || !slices.Equal(v.ControlledShutdown, []int32{1}) {
			return fmt.Errorf("/v1/cluster controlledShutdown: %v (%v), want [1]", v.ControlledShutdown, err)
		}
		return nil
	})
	// Its leaders may not take it back while it is stopping.
	st := get(preferred[0])
	_, err := dps[st.Leader].Registration.AlterISR(ctx, client.AlterISRRequest{TopicPartition: tp(preferred[0]),
		LeaderEpoch: st.LeaderEpoch, PartitionEpoch: st.PartitionEpoch, NewISR: append(slices.Clone(st.ISR), 1)})
	if code, _ := client.KafkaCode(err); code != kerr.IneligibleReplica.Code {
		t.Fatalf("AlterISR adding a stopping node: %v, want INELIGIBLE_REPLICA", err)
	}
	// Stopped (its lease gone, the shutdown key with it) and registered again, it is
	// taken back into the ISRs, then leads its preferred partitions again.
	dps[1].Crash()
	testutil.CheckFor(t, 10*time.Second, func() (err error) {
		dps[1], err = c.RegisterFakeDP(t, cluster.Broker{ID: 1, Host: "127.0.0.1", Port: 9001}, time.Second)
		return err
	})
	var inSync time.Time
	testutil.CheckFor(t, 10*time.Second, func() error {
		for p := range int32(6) {
			st := get(p)
			if slices.Contains(st.ISR, 1) {
				continue
			}
			if _, err := dps[st.Leader].Registration.AlterISR(ctx, client.AlterISRRequest{TopicPartition: tp(p),
				LeaderEpoch: st.LeaderEpoch, PartitionEpoch: st.PartitionEpoch, NewISR: append(slices.Clone(st.ISR), 1)}); err != nil {
				return fmt.Errorf("partition %d: add node 1: %w", p, err)
			}
		}
		inSync = time.Now()
		return nil
	})
	testutil.CheckFor(t, 10*time.Second, func() error {
		for p := range int32(6) {
			if st := get(p); st.Leader != st.Replicas[0] {
				return fmt.Errorf("partition %d led by %d, preferred %d", p, st.Leader, st.Replicas[0])
			}
		}
		return nil
	})
	if waited := time.Since(inSync); waited < delay {
		t.Fatalf("leaderships moved back %v after node 1 was in sync, before the %v delay", waited, delay)
	}
	for _, p := range preferred {
		if st := get(p); st.LeaderEpoch != before[p].LeaderEpoch+2 {
			t.Fatalf("partition %d: leader epoch %d, want %d (moved away, moved back)", p, st.LeaderEpoch, before[p].LeaderEpoch+2)
		}
	}
}
