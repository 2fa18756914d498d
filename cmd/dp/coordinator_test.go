package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// TestGroupCoordinatorNodeDies runs a franz-go group consumer against two data-plane
// processes, SIGKILLs the one FindCoordinator names for the group, and checks that the
// consumer finds the other, keeps consuming the partitions that node leads and commits
// its offsets through it.
func TestGroupCoordinatorNodeDies(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{DataPlanes: 2, Processes: true})
	dps := map[int32]*testcluster.DP{1: c.DP(1), 2: c.DP(2)}
	seeds := kgo.SeedBrokers(c.Brokers()...)
	const topic, group = "coord-dies", "coord-dies-group"
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	admCl, err := kgo.NewClient(seeds)
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	if _, err := adm.CreateTopic(ctx, 4, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	// Both nodes see both nodes before FindCoordinator is asked (else it hashes over one).
	testutil.CheckFor(t, 20*time.Second, func() error {
		for _, p := range dps {
			md, err := kadm.NewClient(mustClient(t, p.Addr())).BrokerMetadata(ctx)
			if err != nil || len(md.Brokers) != 2 {
				return fmt.Errorf("node at %s sees %d brokers (%v)", p.Addr(), len(md.Brokers), err)
			}
		}
		return nil
	})
	coordinator := func(cl *kgo.Client) (int32, error) {
		req := kmsg.NewPtrFindCoordinatorRequest()
		req.CoordinatorKey = group
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return -1, err
		}
		if resp.ErrorCode != 0 {
			return -1, fmt.Errorf("FindCoordinator: code %d", resp.ErrorCode)
		}
		return resp.NodeID, nil
	}
	victim, err := coordinator(admCl)
	if err != nil {
		t.Fatal(err)
	}
	survivor := 3 - victim
	// Every partition has a leader in the node's view (the other node's view may lag
	// the creation by a moment).
	var md kadm.Metadata
	testutil.CheckFor(t, 20*time.Second, func() (err error) {
		if md, err = adm.Metadata(ctx, topic); err != nil {
			return err
		}
		ps := md.Topics[topic].Partitions
		for _, p := range ps {
			if p.Leader < 0 {
				return fmt.Errorf("partition %d has no leader", p.Partition)
			}
		}
		if len(ps) != 4 {
			return fmt.Errorf("%d partitions in the metadata, want 4", len(ps))
		}
		return nil
	})
	var survivorParts []int32
	for _, p := range md.Topics[topic].Partitions {
		if p.Leader == survivor {
			survivorParts = append(survivorParts, p.Partition)
		}
	}
	if len(survivorParts) == 0 {
		t.Fatalf("node %d leads no partition of %s: %+v", survivor, topic, md.Topics[topic].Partitions)
	}

	// The consumer: short session and commit interval so the test moves quickly.
	consumer, err := kgo.NewClient(seeds, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.SessionTimeout(3*time.Second),
		kgo.HeartbeatInterval(300*time.Millisecond), kgo.AutoCommitInterval(200*time.Millisecond),
		kgo.RetryTimeout(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	var mu sync.Mutex
	seen := map[string]bool{}
	pollCtx, stopPolling := context.WithCancel(ctx)
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for pollCtx.Err() == nil {
			fs := consumer.PollFetches(pollCtx)
			fs.EachRecord(func(r *kgo.Record) {
				mu.Lock()
				seen[string(r.Value)] = true
				mu.Unlock()
			})
		}
	}()
	defer func() { stopPolling(); <-polled }()

	producer := mustClient(t, dps[survivor].Addr(), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce := func(tag string, n int) []string {
		var vals []string
		for i := range n {
			v := fmt.Sprintf("%s-%d", tag, i)
			vals = append(vals, v)
			r := &kgo.Record{Topic: topic, Partition: survivorParts[i%len(survivorParts)], Value: []byte(v)}
			if err := producer.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatalf("produce %s: %v", v, err)
			}
		}
		return vals
	}
	waitSeen := func(vals []string) {
		testutil.CheckFor(t, 60*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			for _, v := range vals {
				if !seen[v] {
					return fmt.Errorf("record %s not consumed yet", v)
				}
			}
			return nil
		})
	}
	waitSeen(produce("before", 20))

	c.Kill(dps[victim])
	waitSeen(produce("after", 20))

	// FindCoordinator now names the survivor, and the consumer's offsets for its
	// partitions reach their ends through it.
	survivorCl := mustClient(t, dps[survivor].Addr())
	testutil.CheckFor(t, 30*time.Second, func() error {
		id, err := coordinator(survivorCl)
		if err != nil {
			return err
		}
		if id != survivor {
			return fmt.Errorf("coordinator is %d, want %d", id, survivor)
		}
		return nil
	})
	sadm := kadm.NewClient(survivorCl)
	// The dead node's partitions have no leader: their shards fail, the rest answer.
	ends, _ := sadm.ListEndOffsets(ctx, topic)
	for _, p := range survivorParts {
		if end, ok := ends.Lookup(topic, p); !ok || end.Err != nil || end.Offset < 10 {
			t.Fatalf("end offset of partition %d: %+v", p, end)
		}
	}
	testutil.CheckFor(t, 30*time.Second, func() error {
		offs, err := sadm.FetchOffsets(ctx, group)
		if err != nil {
			return err
		}
		for _, p := range survivorParts {
			end, _ := ends.Lookup(topic, p)
			got, ok := offs.Lookup(topic, p)
			if !ok || got.At != end.Offset {
				return fmt.Errorf("partition %d: committed %+v, end %d", p, got, end.Offset)
			}
		}
		return nil
	})
}

// mustClient is a franz-go client of the node at addr alone, closed at cleanup.
func mustClient(t *testing.T, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}
