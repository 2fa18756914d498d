package dataplane_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// TestHighWatermarkRestoredAfterRestart: a replica restarted without a checkpoint of
// its own (the file removed, as a node whose disk lost it) opens with the high
// watermark its leader checkpointed in the control plane, before it fetches anything
// (its link to the leader is cut); restarted with its own checkpoint, with that. Before
// either, a restarted replica started at 0 until it fetched — a leader with followers
// in its ISR until they fetched.
func TestHighWatermarkRestoredAfterRestart(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{DataPlanes: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := c.Admin(t).CreateTopics(ctx, 1, 2, nil, "h")
	if err != nil || resp["h"].Err != nil {
		t.Fatalf("create h: %v %+v", err, resp["h"])
	}
	leader := c.WaitLeader(t, "h", 0)
	follower := c.DPs[0]
	if follower == leader {
		follower = c.DPs[1]
	}
	cl := c.Client(t, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic("h"))
	for i := range 10 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: fmt.Appendf(nil, "v%d", i)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	const hw = `gregor_partition_high_watermark{topic="h",partition="0"}`
	cpc := c.ControlPlaneClient(t)
	c.CheckFor(t, time.Minute, func() error {
		cps, err := cpc.HighWatermarks(ctx, "h")
		if err != nil {
			return err
		}
		if got := cps[0].HighWatermark; got != 10 {
			return fmt.Errorf("checkpointed high watermark %d, want 10", got)
		}
		if got, _ := c.Metric(t, follower, hw); got != 10 {
			return fmt.Errorf("follower's high watermark %v, want 10", got)
		}
		return nil
	})
	if err := c.ReplicaLink(follower, leader).Cut(); err != nil {
		t.Fatal(err)
	}
	for _, own := range []bool{false, true} {
		c.Kill(follower)
		file := filepath.Join(follower.Dir(), "replication-offset-checkpoint")
		if _, err := os.Stat(file); err != nil {
			t.Fatalf("no checkpoint file after the stop: %v", err)
		}
		if !own {
			if err := os.Remove(file); err != nil {
				t.Fatal(err)
			}
		}
		c.Restart(follower)
		c.CheckFor(t, time.Minute, func() error {
			st := c.Metadata(t).Partitions[cluster.TopicPartition{Topic: "h"}]
			if st.Leader != leader.ID {
				return fmt.Errorf("leader %d, want %d", st.Leader, leader.ID)
			}
			got, ok := c.Metric(t, follower, hw)
			if !ok || got != 10 {
				return fmt.Errorf("own checkpoint %v: restarted replica's high watermark %v (%v), want 10", own, got, ok)
			}
			return nil
		})
	}
}
