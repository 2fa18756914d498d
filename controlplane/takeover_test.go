package controlplane_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// takeoverTTL is the lease of the registrations in the takeover tests: long enough
// that anything done "at once" is clearly not a wait for the old lease to expire.
const takeoverTTL = 6 * time.Second

// registerAs registers node id with incarnation on a client of its own, as one process
// of a data-plane node does; the registration is closed at cleanup.
func registerAs(t testing.TB, c *testcluster.Cluster, id int32, incarnation, host string) (*client.Registration, error) {
	t.Helper()
	dp, err := c.RegisterFakeDP(t, cluster.Broker{ID: id, Host: host, Port: 9000 + id, Incarnation: incarnation}, takeoverTTL)
	if err != nil {
		return nil, err
	}
	return dp.Registration, nil
}

// TestRegistrationTakeover: a later process of a node (same id, same incarnation)
// registers at once while the earlier process's lease is alive, with a higher broker
// epoch. The earlier process is fenced: its lease is revoked, so its keepalive fails and
// Lost closes with SafeUntil in the past, and its epoch-fenced writes (AlterISR, HW
// checkpoints, producer ids) are refused. The controller gives the node's partitions a
// new leader epoch; with a replication factor of one the node leads them again.
func TestRegistrationTakeover(t *testing.T) {
	c := newControlPlane(t, 1)
	c.WaitController(t)
	ctx := testCtx(t)
	old, err := registerAs(t, c, 1, "incarnation-a", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	admin := c.ControlPlaneClient(t)
	if _, _, err := admin.CreateTopic(ctx, client.TopicSpec{Name: "t", Partitions: 2, ReplicationFactor: 1}); err != nil {
		t.Fatal(err)
	}
	before := map[int32]cluster.PartitionState{}
	for p := int32(0); p < 2; p++ {
		st, err := admin.GetPartition(ctx, cluster.TopicPartition{Topic: "t", Partition: p})
		if err != nil || st.Leader != 1 {
			t.Fatalf("partition %d: %+v, %v", p, st, err)
		}
		before[p] = st
	}
	oldHW := old.NewHWCheckpointer(time.Hour) // flushed by hand below

	start := time.Now()
	reg, err := registerAs(t, c, 1, "incarnation-a", "127.0.0.2")
	if err != nil {
		t.Fatalf("same incarnation refused: %v", err)
	}
	took := time.Since(start)
	if took > takeoverTTL/2 {
		t.Fatalf("takeover took %v; the old lease (TTL %v) should not have been waited for", took, takeoverTTL)
	}
	if reg.Broker().Epoch <= old.Broker().Epoch {
		t.Fatalf("new broker epoch %d not above the old %d", reg.Broker().Epoch, old.Broker().Epoch)
	}
	brokers, _, err := admin.LiveBrokers(ctx)
	if err != nil || len(brokers) != 1 || brokers[0].Host != "127.0.0.2" || brokers[0].Epoch != reg.Broker().Epoch ||
		brokers[0].Incarnation != "incarnation-a" {
		t.Fatalf("live brokers %+v, %v", brokers, err)
	}

	// The old process's renewal is refused: its registration ends well before its lease
	// would have expired, and from then on it may not act on its last renewal.
	select {
	case <-old.Lost():
	case <-time.After(takeoverTTL - time.Second):
		t.Fatal("the old registration did not end after the takeover")
	}
	if s := old.SafeUntil(); s.After(time.Now()) {
		t.Fatalf("old registration lost but SafeUntil %v is in the future", s)
	}
	if !reg.SafeUntil().After(time.Now()) {
		t.Fatal("new registration's SafeUntil is not in the future")
	}

	// The controller moves the leaderships of the node's earlier process through a new
	// leader epoch (offline, then the node again: two bumps), written after the new
	// registration.
	after := map[int32]cluster.PartitionState{}
	testutil.CheckFor(t, 10*time.Second, func() error {
		for p := int32(0); p < 2; p++ {
			st, err := admin.GetPartition(ctx, cluster.TopicPartition{Topic: "t", Partition: p})
			if err != nil {
				return err
			}
			if st.Leader != 1 || st.LeaderEpoch <= before[p].LeaderEpoch || st.ModRevision < reg.Broker().Epoch {
				return fmt.Errorf("partition %d: %+v (before %+v)", p, st, before[p])
			}
			after[p] = st
		}
		return nil
	})
	t.Logf("takeover in %v; leader epochs %d -> %d", took.Round(time.Millisecond), before[0].LeaderEpoch, after[0].LeaderEpoch)

	// Everything the old process does as itself is refused with STALE_BROKER_EPOCH; the
	// new process's writes go through.
	tp := cluster.TopicPartition{Topic: "t", Partition: 0}
	alter := client.AlterISRRequest{TopicPartition: tp, LeaderEpoch: after[0].LeaderEpoch, PartitionEpoch: after[0].PartitionEpoch, NewISR: []int32{1}}
	if _, err := old.AlterISR(ctx, alter); !errors.Is(err, client.ErrRegistrationLost) || !errors.Is(err, kerr.StaleBrokerEpoch) {
		t.Fatalf("old process's AlterISR: %v", err)
	}
	oldHW.Record(tp, cluster.HWCheckpoint{TopicID: "x", LeaderEpoch: before[0].LeaderEpoch, HighWatermark: 99})
	if err := oldHW.Close(ctx); !errors.Is(err, client.ErrRegistrationLost) {
		t.Fatalf("old process's HW checkpoint: %v", err)
	}
	if _, err := old.AllocateProducerIDs(ctx); !errors.Is(err, client.ErrRegistrationLost) {
		t.Fatalf("old process's producer ids: %v", err)
	}
	if st, err := reg.AlterISR(ctx, alter); err != nil || st.PartitionEpoch != after[0].PartitionEpoch+1 {
		t.Fatalf("new process's AlterISR: %+v, %v", st, err)
	}
	hw := reg.NewHWCheckpointer(time.Hour)
	hw.Record(tp, cluster.HWCheckpoint{TopicID: "x", LeaderEpoch: after[0].LeaderEpoch, HighWatermark: 7})
	if err := hw.Close(ctx); err != nil {
		t.Fatalf("new process's HW checkpoint: %v", err)
	}
	if _, err := reg.AllocateProducerIDs(ctx); err != nil {
		t.Fatalf("new process's producer ids: %v", err)
	}
}

// TestRegistrationOtherIncarnationRefused: while a node's registration is live, a
// process presenting another incarnation (or none) for the same id — another machine or
// data directory — is refused with DUPLICATE_BROKER_REGISTRATION and changes nothing; so
// is a process with an incarnation when the live registration has none. Once the live
// registration ends, the other incarnation registers with a higher epoch.
func TestRegistrationOtherIncarnationRefused(t *testing.T) {
	c := newControlPlane(t, 1)
	ctx := testCtx(t)
	live, err := registerAs(t, c, 1, "incarnation-a", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	bare, err := registerAs(t, c, 2, "", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		id          int32
		incarnation string
	}{{1, "incarnation-b"}, {1, ""}, {2, "incarnation-a"}, {2, ""}}
	for _, tc := range refused {
		if _, err := registerAs(t, c, tc.id, tc.incarnation, "127.0.0.9"); !errors.Is(err, client.ErrBrokerIDInUse) ||
			!errors.Is(err, kerr.DuplicateBrokerRegistration) {
			t.Fatalf("node %d with incarnation %q: %v, want DUPLICATE_BROKER_REGISTRATION", tc.id, tc.incarnation, err)
		}
	}
	brokers, _, err := c.ControlPlaneClient(t).LiveBrokers(ctx)
	if err != nil || len(brokers) != 2 || brokers[0].Epoch != live.Broker().Epoch || brokers[0].Host != "127.0.0.1" ||
		brokers[1].Epoch != bare.Broker().Epoch {
		t.Fatalf("refused registrations changed the registry: %+v, %v", brokers, err)
	}
	select {
	case <-live.Lost():
		t.Fatal("a refused registration ended the live one")
	case <-time.After(100 * time.Millisecond):
	}
	if err := live.Close(); err != nil {
		t.Fatal(err)
	}
	next, err := registerAs(t, c, 1, "incarnation-b", "127.0.0.9")
	if err != nil {
		t.Fatalf("after the live registration ended: %v", err)
	}
	if next.Broker().Epoch <= live.Broker().Epoch {
		t.Fatalf("epoch %d not above %d", next.Broker().Epoch, live.Broker().Epoch)
	}
}
