package dataplane_test

// Transactions end to end on clusters of the harness: franz-go's transactional producer
// against the control plane's transaction coordinator (InitProducerId,
// AddPartitionsToTxn, EndTxn, the markers) and the data-plane nodes' partitions (the
// verification of a transaction's first batch, the markers, the LSO, the aborted
// transactions of read_committed fetches), with the partitions replicated so that a
// marker must reach the followers before it is answered.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// txnPartitions and txnPerPartition shape the transactions of these tests.
const txnPartitions, txnPerPartition = 3, 4

// txnProducer is a transactional franz-go client producing to topic.
func txnProducer(t *testing.T, c *testcluster.Cluster, topic, txnID string, timeout time.Duration) *kgo.Client {
	t.Helper()
	return c.Client(t, kgo.TransactionalID(txnID), kgo.TransactionTimeout(timeout),
		kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
}

// txnProduce begins a transaction on cl and produces txnPerPartition records to each
// partition, named after the transaction, and returns their values.
func txnProduce(ctx context.Context, t *testing.T, cl *kgo.Client, name string) []string {
	t.Helper()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatalf("%s: BeginTransaction: %v", name, err)
	}
	var values []string
	var records []*kgo.Record
	for p := range int32(txnPartitions) {
		for i := range txnPerPartition {
			v := fmt.Sprintf("%s-%d-%d", name, p, i)
			values = append(values, v)
			records = append(records, &kgo.Record{Partition: p, Value: []byte(v)})
		}
	}
	if err := cl.ProduceSync(ctx, records...).FirstErr(); err != nil {
		t.Fatalf("%s: produce: %v", name, err)
	}
	return values
}

// txnRun produces a transaction and commits or aborts it.
func txnRun(ctx context.Context, t *testing.T, cl *kgo.Client, name string, commit bool) []string {
	t.Helper()
	values := txnProduce(ctx, t, cl, name)
	if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		t.Fatalf("%s: EndTransaction(commit %v): %v", name, commit, err)
	}
	return values
}

// txnCommitOffset commits, in cl's ongoing transaction txnID, group's offset of a
// partition of topic (AddOffsetsToTxn, then TxnOffsetCommit as a producer outside the
// group: generation -1).
func txnCommitOffset(ctx context.Context, t *testing.T, cl *kgo.Client, txnID, group, topic string, partition int32, offset int64) {
	t.Helper()
	pid, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		t.Fatalf("ProducerID: %v", err)
	}
	ao := kmsg.NewPtrAddOffsetsToTxnRequest()
	ao.TransactionalID, ao.ProducerID, ao.ProducerEpoch, ao.Group = txnID, pid, epoch, group
	aresp, err := ao.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(aresp.ErrorCode)
	}
	if err != nil {
		t.Fatalf("AddOffsetsToTxn: %v", err)
	}
	tc := kmsg.NewPtrTxnOffsetCommitRequest()
	tc.TransactionalID, tc.Group, tc.ProducerID, tc.ProducerEpoch, tc.Generation = txnID, group, pid, epoch, -1
	tp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	tp.Partition, tp.Offset, tp.LeaderEpoch = partition, offset, -1
	tc.Topics = []kmsg.TxnOffsetCommitRequestTopic{{Topic: topic, Partitions: []kmsg.TxnOffsetCommitRequestTopicPartition{tp}}}
	tresp, err := tc.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(tresp.Topics[0].Partitions[0].ErrorCode)
	}
	if err != nil {
		t.Fatalf("TxnOffsetCommit: %v", err)
	}
}

// fetchTxnOffset asks group's coordinator for its offset of one partition with
// OffsetFetch v7, require_stable or not, and returns the partition's code and offset.
func fetchTxnOffset(ctx context.Context, t *testing.T, cl *kgo.Client, group, topic string, partition int32, stable bool) (int16, int64) {
	t.Helper()
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group, req.RequireStable = group, stable
	req.Topics = []kmsg.OffsetFetchRequestTopic{{Topic: topic, Partitions: []int32{partition}}}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("OffsetFetch: %v", err)
	}
	if resp.Version != 7 || resp.ErrorCode != 0 || len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		t.Fatalf("OffsetFetch v%d: code %d, %d topics, want v7 with the one partition", resp.Version, resp.ErrorCode, len(resp.Topics))
	}
	p := resp.Topics[0].Partitions[0]
	return p.ErrorCode, p.Offset
}

// consumeAll reads topic from the start at isolation until it has every value of want
// (the last ones written to each partition, so that nothing written before them is
// still to come), and returns how many times it saw each value.
func consumeAll(ctx context.Context, t *testing.T, c *testcluster.Cluster, topic string, isolation kgo.IsolationLevel, want []string) map[string]int {
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

// checkSeen checks that a consumer saw exactly the values of want, each once.
func checkSeen(t *testing.T, name string, seen map[string]int, want []string) {
	t.Helper()
	if got, w := slices.Sorted(maps.Keys(seen)), slices.Sorted(slices.Values(want)); !slices.Equal(got, w) {
		t.Errorf("%s consumer saw %v, want %v", name, got, w)
	}
	for v, n := range seen {
		if n != 1 {
			t.Errorf("%s consumer saw %q %d times", name, v, n)
		}
	}
}

// sumMetric adds metric up over the cluster's data-plane nodes.
func sumMetric(t *testing.T, c *testcluster.Cluster, name string) float64 {
	t.Helper()
	total := 0.0
	for _, d := range c.DPs {
		v, _ := c.Metric(t, d, name)
		total += v
	}
	return total
}

func TestTxnEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{ControlPlanes: 1, DataPlanes: 2})
	const topic = "txn-e2e"
	c.CreateTopic(t, topic, txnPartitions, 2)

	producer := txnProducer(t, c, topic, "e2e-producer", 30*time.Second)
	committed := txnRun(ctx, t, producer, "commit1", true)
	// A group's offsets go with the transactions: the aborted one's are dropped, the
	// committed one's become the group's.
	const group = "e2e-group"
	aborted := txnProduce(ctx, t, producer, "abort1")
	txnCommitOffset(ctx, t, producer, "e2e-producer", group, topic, 1, 99)
	if err := producer.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatalf("abort1: EndTransaction(abort): %v", err)
	}
	committed = append(committed, txnProduce(ctx, t, producer, "commit2")...)
	txnCommitOffset(ctx, t, producer, "e2e-producer", group, topic, 0, 7)
	// While the transaction is open, a consumer asking for stable offsets (OffsetFetch
	// v7, require_stable) is told to wait; one that does not gets the committed offset.
	admin := c.Client(t)
	if code, at := fetchTxnOffset(ctx, t, admin, group, topic, 0, true); code != kerr.UnstableOffsetCommit.Code {
		t.Fatalf("stable offset fetch during the transaction: code %d offset %d, want UNSTABLE_OFFSET_COMMIT", code, at)
	}
	if code, at := fetchTxnOffset(ctx, t, admin, group, topic, 0, false); code != 0 || at != -1 {
		t.Fatalf("offset fetch during the transaction: code %d offset %d, want none committed", code, at)
	}
	if err := producer.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("commit2: EndTransaction(commit): %v", err)
	}

	// An idempotent producer (no transactional id) still gets its producer id from the
	// node it asks.
	idem := c.Client(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := idem.ProduceSync(ctx, &kgo.Record{Partition: 1, Value: []byte("plain")}).FirstErr(); err != nil {
		t.Fatalf("idempotent produce: %v", err)
	}
	committed = append(committed, "plain")

	checkSeen(t, "read_committed", consumeAll(ctx, t, c, topic, kgo.ReadCommitted(), committed), committed)
	all := append(slices.Clone(committed), aborted...)
	checkSeen(t, "read_uncommitted", consumeAll(ctx, t, c, topic, kgo.ReadUncommitted(), all), all)

	// The transaction coordinator told the group coordinator of both ends.
	adm := kadm.NewClient(admin)
	testutil.CheckFor(t, 30*time.Second, func() error {
		offsets, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			return err
		}
		if o, ok := offsets.Lookup(topic, 0); !ok || o.At != 7 {
			return fmt.Errorf("group %s's offset of %s-0: %+v (found %v), want 7", group, topic, o, ok)
		}
		if o, ok := offsets.Lookup(topic, 1); ok && o.At >= 0 {
			t.Fatalf("group %s's offset of %s-1 is %d: the aborted transaction's", group, topic, o.At)
		}
		if code, at := fetchTxnOffset(ctx, t, admin, group, topic, 0, true); code != 0 || at != 7 {
			return fmt.Errorf("stable offset fetch after the commit: code %d offset %d, want 7", code, at)
		}
		return nil
	})

	// The partition side did its part: each transaction's first batches were verified
	// with the coordinator, and every partition of every transaction got its marker
	// (the read_committed consumer saw the last transaction: every marker before it is
	// written). At least: a marker the coordinator sent again counts twice.
	if n := sumMetric(t, c, "gregor_txn_verifications_total"); n < 3 {
		t.Errorf("%v verifications sent, want at least one per transaction", n)
	}
	if n := sumMetric(t, c, `gregor_txn_markers_total{type="commit"}`); n < 2*txnPartitions {
		t.Errorf("%v commit markers written, want %d at least", n, 2*txnPartitions)
	}
	if n := sumMetric(t, c, `gregor_txn_markers_total{type="abort"}`); n < txnPartitions {
		t.Errorf("%v abort markers written, want %d at least", n, txnPartitions)
	}
}

// TestTxnTimeoutAndCoordinatorFailover: the coordinator aborts a transaction left open
// past its timeout with the producer's epoch bumped, and the partitions take that
// marker, fence the producer, and let read_committed consumers past it; after the
// active controller stops, the next one's coordinator ends transactions with a higher
// coordinator epoch, which the partitions take and keep.
func TestTxnTimeoutAndCoordinatorFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{ControlPlanes: 3, DataPlanes: 2, ControllerTTL: time.Second,
		ControlPlane: func(cfg *controlplane.Config) { cfg.Transactions.AbortInterval = 200 * time.Millisecond }})
	const topic = "txn-failover"
	c.CreateTopic(t, topic, txnPartitions, 2)
	admin := kadm.NewClient(c.Client(t))
	// ended waits until txnID's transaction has ended (every marker written) in state.
	ended := func(txnID, state string) int64 {
		t.Helper()
		var pid int64
		testutil.CheckFor(t, 30*time.Second, func() error {
			txns, err := admin.DescribeTransactions(ctx, txnID)
			if err != nil {
				return err
			}
			d, err := txns.On(txnID, nil)
			if err != nil {
				return err
			}
			if d.State != state {
				return fmt.Errorf("transaction of %s in state %s, want %s", txnID, d.State, state)
			}
			pid = d.ProducerID
			return nil
		})
		return pid
	}
	// coordinatorEpochs returns the coordinator epoch each partition holds for the
	// producer of txnID, once its transaction has committed.
	coordinatorEpochs := func(txnID string) []int32 {
		t.Helper()
		pid := ended(txnID, "CompleteCommit")
		producers, err := admin.DescribeProducers(ctx, kadm.TopicsSet{topic: nil})
		if err != nil {
			t.Fatalf("DescribeProducers: %v", err)
		}
		var epochs []int32
		producers.EachProducer(func(p kadm.DescribedProducer) {
			if p.ProducerID == pid {
				epochs = append(epochs, p.CoordinatorEpoch)
			}
		})
		return epochs
	}

	// A transaction left open for longer than its timeout is aborted by the
	// coordinator; its producer is fenced.
	// On a slow run the coordinator may abort it before every record is in: those
	// the partitions refuse (the marker of the bumped epoch is there first) are not
	// in the log.
	stale := txnProducer(t, c, topic, "e2e-stale", 3*time.Second)
	if err := stale.BeginTransaction(); err != nil {
		t.Fatalf("BeginTransaction: %v", err)
	}
	var records []*kgo.Record
	for p := range int32(txnPartitions) {
		for i := range txnPerPartition {
			records = append(records, &kgo.Record{Partition: p, Value: fmt.Appendf(nil, "timedout-%d-%d", p, i)})
		}
	}
	var aborted []string
	for _, r := range stale.ProduceSync(ctx, records...) {
		switch {
		case r.Err == nil:
			aborted = append(aborted, string(r.Record.Value))
		case errors.Is(r.Err, kerr.InvalidProducerEpoch), errors.Is(r.Err, kerr.ProducerFenced),
			errors.Is(r.Err, kerr.InvalidTxnState), errors.Is(r.Err, kerr.InvalidProducerIDMapping):
			t.Logf("record %s refused, its transaction already aborted: %v", r.Record.Value, r.Err)
		default:
			t.Fatalf("produce %s: %v", r.Record.Value, r.Err)
		}
	}
	ended("e2e-stale", "CompleteAbort")
	if err := stale.EndTransaction(ctx, kgo.TryCommit); err == nil {
		t.Fatal("a producer whose transaction timed out committed it")
	}

	producer := txnProducer(t, c, topic, "e2e-producer", 30*time.Second)
	committed := txnRun(ctx, t, producer, "before", true)
	before := coordinatorEpochs("e2e-producer")
	if len(before) != txnPartitions {
		t.Fatalf("coordinator epochs of the producer's partitions: %v", before)
	}

	// The active controller stops: the next term's coordinator has a higher epoch.
	old := c.WaitController(t)
	if err := c.Stop(old); err != nil {
		t.Fatal(err)
	}
	if next := c.WaitController(t); next == old {
		t.Fatal("the stopped member is still the controller")
	}
	committed = append(committed, txnRun(ctx, t, producer, "after", true)...)
	after := coordinatorEpochs("e2e-producer")
	t.Logf("coordinator epochs at the partitions: %v before the failover, %v after", before, after)
	if len(after) != txnPartitions || slices.Max(after) != slices.Min(after) || after[0] <= slices.Max(before) {
		t.Fatalf("coordinator epochs after the failover %v, before %v: want all the same, above", after, before)
	}

	checkSeen(t, "read_committed", consumeAll(ctx, t, c, topic, kgo.ReadCommitted(), committed), committed)
	all := append(slices.Clone(committed), aborted...)
	checkSeen(t, "read_uncommitted", consumeAll(ctx, t, c, topic, kgo.ReadUncommitted(), all), all)
}
