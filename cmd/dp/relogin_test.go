package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// TestRegistrationRevokedStartsAgain: a node whose registration lease is revoked — as a
// resumed etcd leader does with the leases it thinks expired while it was paused (etcd
// issues 12528 and 15247) — starts again in its process as a new epoch, on the same
// ports, and takes writes again, without anything restarting it.
func TestRegistrationRevokedStartsAgain(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{ControlPlanes: 1, DataPlanes: 1, Processes: true})
	dp := c.DP(1)
	c.CreateTopic(t, "r", 1, 1)
	cl := c.Client(t, kgo.RecordRetries(50), kgo.DefaultProduceTopic("r"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("before")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	before := c.Metadata(t).Brokers[1].Epoch
	ec := c.ControlPlaneClient(t).Etcd()
	resp, err := ec.Get(ctx, cluster.BrokerKey(1))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("registration of node 1: %v (%d keys)", err, len(resp.Kvs))
	}
	if _, err := ec.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	c.CheckFor(t, 30*time.Second, func() error {
		b, ok := c.Metadata(t).Brokers[1]
		if !ok || b.Epoch <= before {
			return fmt.Errorf("node 1 not registered again (epoch %d before)", before)
		}
		return nil
	})
	if !dp.Running() {
		t.Fatal("the node's process stopped")
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("after")}).FirstErr(); err != nil {
		t.Fatalf("produce after the registration came back: %v", err)
	}
	fetched := 0
	fc := c.Client(t, kgo.ConsumeTopics("r"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for fetched < 2 && ctx.Err() == nil {
		fs := fc.PollFetches(ctx)
		fetched += fs.NumRecords()
	}
	if fetched != 2 {
		t.Fatalf("read back %d of 2 records", fetched)
	}
}
