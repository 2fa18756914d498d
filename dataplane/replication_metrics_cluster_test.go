package dataplane_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/node"
)

// TestReplicationMetrics scrapes /metrics of a three-node cluster while one follower
// is cut off from its leader and healed: the leader's view of that follower's lag (in
// offsets and seconds), the ISR shrink and expand, the under-replicated and
// under-min-ISR counts on the leader and the controller, the replication bytes by
// path on both sides, the removal of a deleted topic's series, and offline partitions
// and the preferred-leader imbalance once a partition's only replica dies.
func TestReplicationMetrics(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{DataPlanes: 3, DataPlane: func(cfg *node.Config) {
		cfg.Server.ReplicaLagTimeMax = 2 * time.Second
	}})
	ctl := c.WaitController(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	minISR := "3"
	resp, err := c.Admin(t).CreateTopics(ctx, 1, 3, map[string]*string{"min.insync.replicas": &minISR}, "m")
	if err != nil || resp["m"].Err != nil {
		t.Fatalf("create m: %v %+v", err, resp["m"])
	}
	leader := c.WaitLeader(t, "m", 0)
	tp := cluster.TopicPartition{Topic: "m"}
	var followers []*testcluster.DP
	for _, id := range c.Metadata(t).Partitions[tp].Replicas {
		if id != leader.ID {
			followers = append(followers, c.DP(id))
		}
	}
	cut, other := followers[0], followers[1]
	// metric reads one sample of node n, failing the condition while it is absent.
	metric := func(n testcluster.Node, name string) (float64, error) {
		v, ok := c.Metric(t, n, name)
		if !ok {
			return 0, fmt.Errorf("%s: no %s", n.Name(), name)
		}
		return v, nil
	}
	// want waits until each sample holds its value.
	type sample struct {
		n     testcluster.Node
		name  string
		check func(float64) bool
		what  string
	}
	eq := func(n testcluster.Node, name string, v float64) sample {
		return sample{n, name, func(got float64) bool { return got == v }, fmt.Sprint(v)}
	}
	gt := func(n testcluster.Node, name string, v float64) sample {
		return sample{n, name, func(got float64) bool { return got > v }, fmt.Sprintf("> %v", v)}
	}
	want := func(step string, samples ...sample) {
		t.Helper()
		c.CheckFor(t, time.Minute, func() error {
			for _, s := range samples {
				got, err := metric(s.n, s.name)
				if err != nil {
					return fmt.Errorf("%s: %w", step, err)
				}
				if !s.check(got) {
					return fmt.Errorf("%s: %s's %s = %v, want %s", step, s.n.Name(), s.name, got, s.what)
				}
			}
			return nil
		})
	}
	lagOffsets := func(f *testcluster.DP) string {
		return fmt.Sprintf(`gregor_follower_lag_offsets{topic="m",partition="0",replica="%d"}`, f.ID)
	}
	lagSeconds := func(f *testcluster.DP) string {
		return fmt.Sprintf(`gregor_follower_lag_seconds{topic="m",partition="0",replica="%d"}`, f.ID)
	}
	const (
		underReplicated = "gregor_under_replicated_partitions"
		underMinISR     = "gregor_under_min_isr_partitions"
		cpUnder         = "gregor_cp_under_replicated_partitions"
		shrinks         = "gregor_isr_shrinks_total"
		expands         = "gregor_isr_expands_total"
		fetcherLag      = `gregor_replica_fetcher_lag_offsets{topic="m",partition="0"}`
	)
	produce := func(acks kgo.Acks, n int) {
		t.Helper()
		cl := c.Client(t, kgo.RequiredAcks(acks), kgo.DisableIdempotentWrite(), kgo.DefaultProduceTopic("m"))
		var recs []*kgo.Record
		for i := range n {
			recs = append(recs, &kgo.Record{Value: fmt.Appendf(nil, "v%d", i)})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	// All in sync, ten records committed on all three.
	want("in sync",
		eq(leader, underReplicated, 0), eq(leader, underMinISR, 0), eq(ctl, cpUnder, 0),
		eq(leader, lagOffsets(cut), 0), eq(leader, lagOffsets(other), 0))
	produce(kgo.AllISRAcks(), 10)
	want("replicated",
		gt(leader, `gregor_replication_bytes_out_total{path="sendfile"}`, 0),
		eq(leader, `gregor_replication_bytes_out_total{path="copy"}`, 0),
		gt(cut, `gregor_replication_bytes_in_total{path="copy"}`, 0),
		eq(cut, fetcherLag, 0), eq(other, fetcherLag, 0))
	shrinks0, _ := metric(leader, shrinks)
	expands0, _ := metric(leader, expands)

	// Cut one follower off: ten more records (acks=1: the ISR will be below
	// min.insync.replicas) leave it ten behind, lagging longer and longer, until it
	// leaves the ISR.
	if err := c.ReplicaLink(cut, leader).Cut(); err != nil {
		t.Fatal(err)
	}
	produce(kgo.LeaderAck(), 10)
	want("cut off",
		eq(leader, lagOffsets(cut), 10), gt(leader, lagSeconds(cut), 1),
		eq(leader, lagOffsets(other), 0),
		gt(leader, shrinks, shrinks0), eq(leader, underReplicated, 1), eq(leader, underMinISR, 1),
		eq(ctl, cpUnder, 1), eq(other, underReplicated, 0))
	first, _ := metric(leader, lagSeconds(cut))
	want("still cut off", gt(leader, lagSeconds(cut), first))

	// Healed, it catches up and rejoins.
	if err := c.ReplicaLink(cut, leader).Heal(); err != nil {
		t.Fatal(err)
	}
	want("healed",
		eq(leader, lagOffsets(cut), 0), eq(leader, lagSeconds(cut), 0),
		gt(leader, expands, expands0), eq(leader, underReplicated, 0), eq(leader, underMinISR, 0),
		eq(ctl, cpUnder, 0), eq(cut, fetcherLag, 0))

	// A deleted topic's series go with its replicas.
	if _, err := c.Admin(t).DeleteTopics(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	c.CheckFor(t, time.Minute, func() error {
		for _, dp := range c.DPs {
			for line := range strings.SplitSeq(c.Metrics(t, dp), "\n") {
				if strings.Contains(line, `topic="m"`) {
					return fmt.Errorf("%s still exports %s", dp.Name(), line)
				}
			}
		}
		return nil
	})

	// A partition whose only replica dies is offline, and led by another node than its
	// preferred one.
	resp, err = c.Admin(t).CreateTopics(ctx, 1, 1, nil, "o")
	if err != nil || resp["o"].Err != nil {
		t.Fatalf("create o: %v %+v", err, resp["o"])
	}
	only := c.WaitLeader(t, "o", 0)
	want("o online", eq(ctl, "gregor_cp_offline_partitions", 0), eq(ctl, "gregor_cp_preferred_replica_imbalance", 0))
	c.Kill(only)
	i := slices.IndexFunc(c.DPs, func(d *testcluster.DP) bool { return d != only })
	want("o offline",
		eq(c.DPs[i], "gregor_offline_partitions", 1),
		eq(ctl, "gregor_cp_offline_partitions", 1), eq(ctl, "gregor_cp_preferred_replica_imbalance", 1))
}
