package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTransactionCommands runs the transaction commands against a cluster of real
// processes (1 gregor-cp, 2 gregor-dp): transactions held open, committed, found
// hanging, and one aborted on a partition by hand as a coordinator that lost it would
// need, checked through a read_committed consumer.
func TestTransactionCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 3 processes")
	}
	c := testcluster.New(t, testcluster.Options{DataPlanes: 2, Processes: true})
	g := newCLI(t, c)
	const topic = "txns"
	c.CreateTopic(t, topic, 2, 1)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// producer opens a transaction of id with one record on each partition, left open.
	producer := func(t *testing.T, id string) *kgo.Client {
		t.Helper()
		cl := c.Client(t, kgo.TransactionalID(id), kgo.DefaultProduceTopic(topic),
			kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionTimeout(30*time.Second))
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for p := range int32(2) {
			r := &kgo.Record{Partition: p, Value: fmt.Appendf(nil, "%s-%d", id, p)}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatalf("%s: produce to partition %d: %v", id, p, err)
			}
		}
		// A transaction left open is aborted at t's end, so that the cluster stops
		// with no transaction pending.
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = cl.EndTransaction(ctx, kgo.TryAbort)
		})
		return cl
	}
	describe := func(t *testing.T, id string) txnView {
		t.Helper()
		var vs []txnView
		g.okJSON(t, &vs, "transaction", "describe", id)
		if len(vs) != 1 || vs[0].TransactionalID != id {
			t.Fatalf("describe %s: %+v", id, vs)
		}
		return vs[0]
	}
	// producers is describe-producers' rows for producer id pid.
	producers := func(t *testing.T, pid int64, args ...string) map[int32]producerView {
		t.Helper()
		var rows []producerView
		g.okJSON(t, &rows, append([]string{"transaction", "describe-producers", "--topic", topic}, args...)...)
		out := map[int32]producerView{}
		for _, r := range rows {
			if r.ProducerID == pid {
				out[r.Partition] = r
			}
		}
		return out
	}

	a := producer(t, "cli-txn-a")
	var aPID int64
	t.Run("open", func(t *testing.T) {
		out := g.ok(t, "", "transaction", "list")
		if !containsRow(out, "cli-txn-a", "Ongoing") {
			t.Errorf("list does not show cli-txn-a Ongoing:\n%s", out)
		}
		out = g.ok(t, "", "transaction", "list", "--state", "completecommit")
		if strings.Contains(out, "cli-txn-a") {
			t.Errorf("list --state CompleteCommit shows the ongoing cli-txn-a:\n%s", out)
		}
		v := describe(t, "cli-txn-a")
		aPID = v.ProducerID
		if v.State != "Ongoing" || len(v.Partitions) != 1 || v.Partitions[0].Topic != topic || int32s(v.Partitions[0].Partitions) != "0,1" {
			t.Errorf("describe: %+v", v)
		}
		out = g.ok(t, "", "transaction", "describe", "cli-txn-a")
		if !containsRow(out, "STATE", "Ongoing") || !containsRow(out, topic, "0,1") || !strings.Contains(out, " ago)") {
			t.Errorf("describe:\n%s", out)
		}
		out = g.ok(t, "", "transaction", "list", "--producer-id", fmt.Sprint(aPID))
		if !containsRow(out, "cli-txn-a", fmt.Sprint(aPID), "Ongoing") {
			t.Errorf("list --producer-id %d:\n%s", aPID, out)
		}
		ps := producers(t, aPID)
		for p := range int32(2) {
			if pv, ok := ps[p]; !ok || pv.CurrentTxnStartOffset < 0 {
				t.Errorf("partition %d: producer %d: %+v, want an open transaction", p, aPID, pv)
			}
		}
		// The coordinator has it ongoing on both partitions: not hanging, unless it is
		// older than the longest timeout.
		out = g.ok(t, "", "transaction", "find-hanging", "--topic", topic)
		if !strings.Contains(out, "no hanging transaction") {
			t.Errorf("find-hanging:\n%s", out)
		}
		out = g.ok(t, "", "transaction", "find-hanging", "--max-transaction-timeout", "1ms")
		if !containsRow(out, topic, "0", fmt.Sprint(aPID)) || !containsRow(out, topic, "1", fmt.Sprint(aPID)) {
			t.Errorf("find-hanging --max-transaction-timeout 1ms does not report producer %d:\n%s", aPID, out)
		}
	})

	t.Run("commit", func(t *testing.T) {
		if err := a.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
		c.CheckFor(t, 10*time.Second, func() error {
			if v := describe(t, "cli-txn-a"); v.State != "CompleteCommit" {
				return fmt.Errorf("state %s", v.State)
			}
			return nil
		})
		ps := producers(t, aPID)
		if len(ps) != 2 {
			t.Errorf("producer %d is on partitions %v, want 0 and 1", aPID, ps)
		}
		for p, pv := range ps {
			if pv.CurrentTxnStartOffset != -1 {
				t.Errorf("partition %d: producer %d still has a transaction open at %d", p, aPID, pv.CurrentTxnStartOffset)
			}
		}
	})

	t.Run("abort", func(t *testing.T) {
		b := producer(t, "cli-txn-b")
		bPID := describe(t, "cli-txn-b").ProducerID
		pv, ok := producers(t, bPID, "--partition", "0")[0]
		if !ok || pv.CurrentTxnStartOffset < 0 {
			t.Fatalf("producer %d on partition 0: %+v", bPID, pv)
		}
		g.fails(t, exitFailed, "no producer of txns/0 has an open transaction starting at offset",
			"transaction", "abort", "--topic", topic, "--partition", "0", "--start-offset", fmt.Sprint(pv.CurrentTxnStartOffset+100))
		out := g.ok(t, "", "transaction", "abort", "--topic", topic, "--partition", "0", "--start-offset", fmt.Sprint(pv.CurrentTxnStartOffset))
		if !containsRow(out, topic, "0", fmt.Sprint(bPID)) || !strings.Contains(out, "aborted") {
			t.Errorf("abort:\n%s", out)
		}
		if pv, ok := producers(t, bPID, "--partition", "0")[0]; !ok || pv.CurrentTxnStartOffset != -1 {
			t.Errorf("after the abort, producer %d on partition 0: %+v (listed: %v), want no open transaction", bPID, pv, ok)
		}
		if pv := producers(t, bPID, "--partition", "1")[1]; pv.CurrentTxnStartOffset < 0 {
			t.Errorf("the abort of partition 0 closed producer %d's transaction on partition 1: %+v", bPID, pv)
		}
		// A record after the transaction's: a read_committed consumer reaches it only past
		// the aborted records, which it must not return.
		plain := c.Client(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err := plain.ProduceSync(ctx, &kgo.Record{Partition: 0, Value: []byte("after")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		got := readCommitted(t, c, topic, 0, "after")
		if strings.Join(got, ",") != "cli-txn-a-0,after" {
			t.Errorf("read_committed on partition 0: %q, want cli-txn-a-0 and after (not cli-txn-b-0)", got)
		}
		// The coordinator ends the transaction, abort marker and all, as if nothing happened.
		if err := b.EndTransaction(ctx, kgo.TryAbort); err != nil {
			t.Fatalf("producer's abort after the manual one: %v", err)
		}
		c.CheckFor(t, 10*time.Second, func() error {
			if v := describe(t, "cli-txn-b"); v.State != "CompleteAbort" {
				return fmt.Errorf("state %s", v.State)
			}
			return nil
		})
	})

	t.Run("errors", func(t *testing.T) {
		g.fails(t, exitFailed, "TRANSACTIONAL_ID_NOT_FOUND", "transaction", "describe", "no-such-id")
		g.fails(t, exitFailed, "UNKNOWN_TOPIC_OR_PARTITION", "transaction", "describe-producers", "--topic", topic, "--partition", "7")
	})
}

// containsRow reports whether a line of out holds cols, in order, as whole words.
func containsRow(out string, cols ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		fields, i := strings.Fields(line), 0
		for _, f := range fields {
			if i < len(cols) && f == cols[i] {
				i++
			}
		}
		if i == len(cols) {
			return true
		}
	}
	return false
}

// readCommitted consumes topic's partition from its start at read_committed until a
// record of value last, and returns the values read.
func readCommitted(t *testing.T, c *testcluster.Cluster, topic string, partition int32, last string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := c.Client(t, kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}}))
	var got []string
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read_committed consumer of %s/%d: no %q after %q", topic, partition, last, got)
		}
		for _, e := range fs.Errors() {
			t.Logf("fetch %s/%d: %v", e.Topic, e.Partition, e.Err)
		}
		for _, r := range fs.Records() {
			got = append(got, string(r.Value))
			if string(r.Value) == last {
				return got
			}
		}
	}
}
