package dataplane_test

// Transactions end to end on a cluster of the harness: a franz-go transactional
// producer against the control plane's transaction coordinator (InitProducerId,
// AddPartitionsToTxn, EndTxn, the markers) and the data-plane nodes' partitions (the
// verification of the first batch, the markers, the LSO, the aborted transactions in
// read_committed fetches), with the partitions replicated so that the markers must
// reach the followers before they are answered.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gregor-streaming/gregor/internal/testcluster"
)

func TestTxnEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{ControlPlanes: 1, DataPlanes: 2})
	const topic, perPartition = "txn-e2e", 4
	c.CreateTopic(t, topic, 3, 2)

	producer := c.Client(t, kgo.TransactionalID("e2e-producer"), kgo.TransactionTimeout(30*time.Second),
		kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	// transaction produces perPartition records to each partition, named after the
	// transaction, and commits or aborts it.
	transaction := func(name string, commit bool) []string {
		t.Helper()
		if err := producer.BeginTransaction(); err != nil {
			t.Fatalf("%s: BeginTransaction: %v", name, err)
		}
		var values []string
		var records []*kgo.Record
		for p := range int32(3) {
			for i := range perPartition {
				v := fmt.Sprintf("%s-%d-%d", name, p, i)
				values = append(values, v)
				records = append(records, &kgo.Record{Partition: p, Value: []byte(v)})
			}
		}
		if err := producer.ProduceSync(ctx, records...).FirstErr(); err != nil {
			t.Fatalf("%s: produce: %v", name, err)
		}
		if err := producer.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatalf("%s: EndTransaction(commit %v): %v", name, commit, err)
		}
		return values
	}
	committed := transaction("commit1", true)
	aborted := transaction("abort1", false)
	committed = append(committed, transaction("commit2", true)...)

	// An idempotent producer (no transactional id) still gets its producer id from the
	// node it asks.
	idem := c.Client(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := idem.ProduceSync(ctx, &kgo.Record{Partition: 1, Value: []byte("plain")}).FirstErr(); err != nil {
		t.Fatalf("idempotent produce: %v", err)
	}
	committed = append(committed, "plain")

	// consume reads the topic from the start at isolation until it has every value of
	// want (the last ones written to each partition, so nothing written before them is
	// still to come), and returns how many times it saw each value.
	consume := func(isolation kgo.IsolationLevel, want []string) map[string]int {
		t.Helper()
		cl := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchIsolationLevel(isolation), kgo.FetchMaxWait(200*time.Millisecond))
		seen := map[string]int{}
		missing := func() int {
			n := 0
			for _, v := range want {
				if seen[v] == 0 {
					n++
				}
			}
			return n
		}
		for missing() > 0 {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("consuming: %d of %d records still missing; seen %v", missing(), len(want), slices.Sorted(maps.Keys(seen)))
			}
			fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s-%d: %v", topic, p, err) })
			fs.EachRecord(func(r *kgo.Record) { seen[string(r.Value)]++ })
		}
		return seen
	}
	check := func(name string, seen map[string]int, want []string) {
		t.Helper()
		if got := slices.Sorted(maps.Keys(seen)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
			t.Errorf("%s consumer saw %v, want %v", name, got, slices.Sorted(slices.Values(want)))
		}
		for v, n := range seen {
			if n != 1 {
				t.Errorf("%s consumer saw %q %d times", name, v, n)
			}
		}
	}
	check("read_committed", consume(kgo.ReadCommitted(), committed), committed)
	all := append(slices.Clone(committed), aborted...)
	check("read_uncommitted", consume(kgo.ReadUncommitted(), all), all)

	// The partition side did its part: each transaction's first batches were verified
	// with the coordinator, and every partition of every transaction got its marker
	// (the read_committed consumer saw the last transaction: every marker before it is
	// written). At least: a marker the coordinator sent again counts twice.
	sum := func(name string) float64 {
		total := 0.0
		for _, d := range c.DPs {
			v, _ := c.Metric(t, d, name)
			total += v
		}
		return total
	}
	if n := sum("gregor_txn_verifications_total"); n < 3 {
		t.Errorf("%v verifications sent, want at least one per transaction", n)
	}
	if n := sum(`gregor_txn_markers_total{type="commit"}`); n < 6 {
		t.Errorf("%v commit markers written, want 6 at least", n)
	}
	if n := sum(`gregor_txn_markers_total{type="abort"}`); n < 3 {
		t.Errorf("%v abort markers written, want 3 at least", n)
	}
}
