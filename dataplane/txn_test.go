package dataplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fakeCoordinator answers the produce path's transaction verifications in place of the
// control plane (txnSupport.verify): it records each request and answers with the
// partition code it is set to, or the top-level code, or the error.
type fakeCoordinator struct {
	mu       sync.Mutex
	requests []*kmsg.AddPartitionsToTxnRequest
	code     int16 // each partition's
	topCode  int16
	err      error
}

func (f *fakeCoordinator) verify(_ context.Context, frame []byte) ([]byte, error) {
	hdr, err := proto.ParseRequestHeader(frame)
	if err != nil || hdr.APIKey != int16(kmsg.AddPartitionsToTxn) || hdr.APIVersion != 4 || !hdr.Flexible {
		return nil, client.ErrGroupBadRequest
	}
	req := kmsg.NewPtrAddPartitionsToTxnRequest()
	req.SetVersion(4)
	if err := req.ReadFrom(frame[hdr.Size:]); err != nil {
		return nil, client.ErrGroupBadRequest
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, req)
	if f.err != nil {
		return nil, f.err
	}
	resp := req.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
	resp.SetVersion(4)
	resp.ErrorCode = f.topCode
	for _, tx := range req.Transactions {
		resp.Transactions = append(resp.Transactions, client.AddPartitionsTxnAnswer(tx, func(string, int32) int16 { return f.code }))
	}
	return resp.AppendTo(nil), nil
}

func (f *fakeCoordinator) calls() []*kmsg.AddPartitionsToTxnRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

func (f *fakeCoordinator) set(code, topCode int16, err error) {
	f.mu.Lock()
	f.code, f.topCode, f.err = code, topCode, err
	f.mu.Unlock()
}

// txnRecords is a transactional batch of n records of producer pid at epoch from seq.
func txnRecords(n int, tag string, pid int64, epoch int16, seq int32) []byte {
	b := batch(n, tag, pid, epoch, seq)
	b[22] |= proto.AttrTransactional // attributes' low byte
	proto.SealRecordBatch(b)
	return b
}

func txnProduce(t *testing.T, c net.Conn, txnID *string, topic string, records []byte) kmsg.ProduceResponseTopicPartition {
	t.Helper()
	req := produceReq(topic, 0, -1, records)
	req.TransactionID = txnID
	return roundTrip(t, c, req, 7, 3).(*kmsg.ProduceResponse).Topics[0].Partitions[0]
}

func writeMarker(t *testing.T, c net.Conn, version int16, topic string, pid int64, epoch int16, commit bool, coordinatorEpoch int32) int16 {
	t.Helper()
	req := kmsg.NewPtrWriteTxnMarkersRequest()
	m := kmsg.NewWriteTxnMarkersRequestMarker()
	m.ProducerID, m.ProducerEpoch, m.Committed, m.CoordinatorEpoch = pid, epoch, commit, coordinatorEpoch
	mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
	mt.Topic, mt.Partitions = topic, []int32{0}
	m.Topics = append(m.Topics, mt)
	req.Markers = append(req.Markers, m)
	resp := roundTrip(t, c, req, version, 9).(*kmsg.WriteTxnMarkersResponse)
	if len(resp.Markers) != 1 || resp.Markers[0].ProducerID != pid || len(resp.Markers[0].Topics[0].Partitions) != 1 {
		t.Fatalf("WriteTxnMarkers answer %+v", resp)
	}
	return resp.Markers[0].Topics[0].Partitions[0].ErrorCode
}

func fetchIsolated(t *testing.T, c net.Conn, topic string, offset int64, isolation int8, minBytes, wait int32) kmsg.FetchResponseTopicPartition {
	t.Helper()
	req := fetchReq(topic, 0, offset, 1<<20, minBytes, wait)
	req.IsolationLevel = isolation
	return roundTrip(t, c, req, 11, 5).(*kmsg.FetchResponse).Topics[0].Partitions[0]
}

// recordCount counts the records of a fetch answer's batches, and its control batches.
func recordCount(t *testing.T, b []byte) (records, control int) {
	t.Helper()
	for len(b) > 0 {
		h, err := proto.ValidateRecordBatch(b, len(b))
		if err != nil {
			t.Fatal(err)
		}
		if h.IsControl() {
			control++
		} else {
			records += int(h.RecordCount)
		}
		b = b[h.Size():]
	}
	return records, control
}

func listLatest(t *testing.T, c net.Conn, topic string, isolation int8) int64 {
	t.Helper()
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID, req.IsolationLevel = -1, isolation
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Partition, rp.Timestamp, rp.CurrentLeaderEpoch = 0, -1, -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	p := roundTrip(t, c, req, 4, 6).(*kmsg.ListOffsetsResponse).Topics[0].Partitions[0]
	if p.ErrorCode != 0 {
		t.Fatalf("ListOffsets: %+v", p)
	}
	return p.Offset
}

// TestTxnProduceFetch: a transaction through the wire — the first transactional batch
// verified with the coordinator once, the next not; read_committed fetches see nothing
// from its first offset until the abort marker, then everything with the transaction in
// the aborted list; read_uncommitted sees everything throughout; ListOffsets and
// DescribeProducers agree; a parked read_committed fetch wakes when the marker moves
// the LSO.
func TestTxnProduceFetch(t *testing.T) {
	s := startServer(t, Config{})
	coord := &fakeCoordinator{}
	s.txn.verify = coord.verify
	if err := s.BecomeLeader("orders", 0, 3, 1, 1); err != nil {
		t.Fatal(err)
	}
	c, consumer, admin := dial(t, s), dial(t, s), dial(t, s)
	plain := produce(t, c, 7, "orders", 0, -1, batch(2, "plain", -1, -1, -1)) // 0-1
	if plain.ErrorCode != 0 {
		t.Fatalf("plain produce: %+v", plain)
	}
	txnID := "tx-1"
	if rp := txnProduce(t, c, &txnID, "orders", txnRecords(3, "a", 42, 0, 0)); rp.ErrorCode != 0 || rp.BaseOffset != 2 {
		t.Fatalf("first transactional produce: %+v", rp)
	}
	calls := coord.calls()
	if len(calls) != 1 {
		t.Fatalf("%d verifications", len(calls))
	}
	if tx := calls[0].Transactions; len(tx) != 1 || tx[0].TransactionalID != txnID || tx[0].ProducerID != 42 ||
		tx[0].ProducerEpoch != 0 || !tx[0].VerifyOnly || len(tx[0].Topics) != 1 || tx[0].Topics[0].Topic != "orders" ||
		!slices.Equal(tx[0].Topics[0].Partitions, []int32{0}) {
		t.Fatalf("verification asked %+v", tx)
	}
	if rp := txnProduce(t, c, &txnID, "orders", txnRecords(2, "b", 42, 0, 3)); rp.ErrorCode != 0 || rp.BaseOffset != 5 {
		t.Fatalf("second transactional produce: %+v", rp)
	}
	if n := len(coord.calls()); n != 1 {
		t.Fatalf("the open transaction's second batch was verified again (%d calls)", n)
	}
	if rp := produce(t, c, 7, "orders", 0, -1, batch(1, "after", -1, -1, -1)); rp.ErrorCode != 0 || rp.BaseOffset != 7 {
		t.Fatalf("plain produce after: %+v", rp)
	}

	rc := fetchIsolated(t, consumer, "orders", 0, 1, 0, 0)
	if rc.ErrorCode != 0 || rc.HighWatermark != 8 || rc.LastStableOffset != 2 {
		t.Fatalf("read_committed during the transaction: %+v", rc)
	}
	if n, _ := recordCount(t, rc.RecordBatches); n != 2 {
		t.Fatalf("read_committed during the transaction: %d records, want the 2 below the LSO", n)
	}
	ru := fetchIsolated(t, consumer, "orders", 0, 0, 0, 0)
	if n, _ := recordCount(t, ru.RecordBatches); n != 8 || ru.LastStableOffset != 2 || ru.AbortedTransactions != nil {
		t.Fatalf("read_uncommitted: %d records, LSO %d, aborted %v", n, ru.LastStableOffset, ru.AbortedTransactions)
	}
	if committed, uncommitted := listLatest(t, admin, "orders", 1), listLatest(t, admin, "orders", 0); committed != 2 || uncommitted != 8 {
		t.Fatalf("ListOffsets latest: read_committed %d, read_uncommitted %d", committed, uncommitted)
	}
	dreq := kmsg.NewPtrDescribeProducersRequest()
	dt := kmsg.NewDescribeProducersRequestTopic()
	dt.Topic, dt.Partitions = "orders", []int32{0}
	dreq.Topics = append(dreq.Topics, dt)
	dp := roundTrip(t, admin, dreq, 0, 7).(*kmsg.DescribeProducersResponse).Topics[0].Partitions[0]
	if len(dp.ActiveProducers) != 1 || dp.ActiveProducers[0].ProducerID != 42 || dp.ActiveProducers[0].CurrentTxnStartOffset != 2 ||
		dp.ActiveProducers[0].CoordinatorEpoch != -1 {
		t.Fatalf("DescribeProducers: %+v", dp)
	}

	// A read_committed consumer at the LSO waits; the marker wakes it.
	parked := make(chan kmsg.FetchResponseTopicPartition, 1)
	go func() {
		req := fetchReq("orders", 0, 2, 1<<20, 1, 10_000)
		req.IsolationLevel = 1
		_, _ = consumer.Write(frameRequest(req, 11, 77))
		parked <- readAnswer(t, consumer, req, 77).(*kmsg.FetchResponse).Topics[0].Partitions[0]
	}()
	waitParked(t, s)
	start := time.Now()
	if code := writeMarker(t, admin, 1, "orders", 42, 0, false, 4); code != 0 {
		t.Fatalf("abort marker: %s", kerr.ErrorForCode(code))
	}
	woken := <-parked
	if time.Since(start) > 5*time.Second {
		t.Fatal("the parked fetch was answered at its deadline, not by the marker")
	}
	if n, ctl := recordCount(t, woken.RecordBatches); n != 6 || ctl != 1 || woken.LastStableOffset != 9 ||
		len(woken.AbortedTransactions) != 1 || woken.AbortedTransactions[0].ProducerID != 42 || woken.AbortedTransactions[0].FirstOffset != 2 {
		t.Fatalf("read_committed after the abort: %d records, %d markers, LSO %d, aborted %+v", n, ctl, woken.LastStableOffset, woken.AbortedTransactions)
	}
	if committed := listLatest(t, admin, "orders", 1); committed != 9 {
		t.Fatalf("ListOffsets read_committed latest %d, want 9", committed)
	}
	dp = roundTrip(t, admin, dreq, 0, 8).(*kmsg.DescribeProducersResponse).Topics[0].Partitions[0]
	if len(dp.ActiveProducers) != 1 || dp.ActiveProducers[0].CurrentTxnStartOffset != -1 || dp.ActiveProducers[0].CoordinatorEpoch != 4 {
		t.Fatalf("DescribeProducers after the marker: %+v", dp)
	}
	// The next transaction of the producer is verified again.
	if rp := txnProduce(t, c, &txnID, "orders", txnRecords(1, "c", 42, 0, 5)); rp.ErrorCode != 0 || rp.BaseOffset != 9 {
		t.Fatalf("next transaction: %+v", rp)
	}
	if n := len(coord.calls()); n != 2 {
		t.Fatalf("%d verifications, want 2", n)
	}
	var scrape bytes.Buffer
	s.cfg.Metrics.WritePrometheus(&scrape)
	for _, line := range []string{"gregor_txn_ongoing 1", "gregor_txn_lso_lag_max 1", "gregor_txn_aborted_index_entries 1",
		"gregor_txn_verifications_total 2", "gregor_txn_verification_failures_total 0", `gregor_txn_markers_total{type="abort"} 1`} {
		if !strings.Contains(scrape.String(), line+"\n") {
			t.Errorf("metrics lack %q:\n%s", line, scrape.String())
		}
	}
}

// waitParked waits until a fetch waits in s's purgatory.
func waitParked(t *testing.T, s *Server) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, func() error {
		if s.metrics.fetchWaiting.Load() == 0 {
			return errors.New("no fetch parked")
		}
		return nil
	})
}

// TestTxnPipelinedVerifications: two produce requests of one producer, pipelined on one
// connection, both needing verification (its transaction is not open on the partition
// yet) and verified in the reverse order: the batches are appended in the connection's
// order and both acknowledged, not the second refused OUT_OF_ORDER_SEQUENCE_NUMBER for
// coming before the first (franz-go's transactional producer, which pipelines its
// batches, takes that error as fatal).
func TestTxnPipelinedVerifications(t *testing.T) {
	s := startServer(t, Config{})
	coord := &fakeCoordinator{}
	secondDone := make(chan struct{})
	var n int
	var mu sync.Mutex
	s.txn.verify = func(ctx context.Context, frame []byte) ([]byte, error) {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		if !first {
			defer close(secondDone)
			return coord.verify(ctx, frame)
		}
		select { // the first is answered after the second
		case <-secondDone:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		// ... and after the connection's loop has run what the second's answer posted:
		// two rounds of its mailbox behind it.
		for range 2 {
			ran := make(chan struct{})
			s.connMu.Lock()
			for cs := range s.conns {
				cs.post(func() { close(ran) })
			}
			s.connMu.Unlock()
			select {
			case <-ran:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return coord.verify(ctx, frame)
	}
	if err := s.BecomeLeader("orders", 0, 3, 1, 1); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	txnID := "tx-pipelined"
	reqs := []*kmsg.ProduceRequest{produceReq("orders", 0, -1, txnRecords(3, "a", 42, 0, 0)),
		produceReq("orders", 0, -1, txnRecords(2, "b", 42, 0, 3))}
	var out []byte
	for i, req := range reqs {
		req.TransactionID = &txnID
		out = append(out, frameRequest(req, 7, int32(10+i))...)
	}
	if _, err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int64{0, 3} {
		rp := readAnswer(t, c, reqs[i], int32(10+i)).(*kmsg.ProduceResponse).Topics[0].Partitions[0]
		if rp.ErrorCode != 0 || rp.BaseOffset != want {
			t.Errorf("pipelined transactional produce %d: code %d offset %d, want 0 at %d", i, rp.ErrorCode, rp.BaseOffset, want)
		}
	}
	if got := len(coord.calls()); got != 2 {
		t.Fatalf("%d verifications, want 2", got)
	}
}

// TestTxnProduceRefusals: what a transactional produce gets when the coordinator does
// not verify it (each mapped as Kafka maps it), and the checks before any verification.
func TestTxnProduceRefusals(t *testing.T) {
	s := startServer(t, Config{})
	coord := &fakeCoordinator{}
	s.txn.verify = coord.verify
	if err := s.BecomeLeader("orders", 0, 3, 1, 1); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	txnID := "tx-2"
	for _, tc := range []struct {
		name          string
		code, topCode int16
		err           error
		want          int16
	}{
		{"not in the transaction", kerr.InvalidTxnState.Code, 0, nil, kerr.InvalidTxnState.Code},
		{"fenced producer", kerr.ProducerFenced.Code, 0, nil, kerr.InvalidProducerEpoch.Code},
		{"abortable", kerr.TransactionAbortable.Code, 0, nil, kerr.InvalidTxnState.Code},
		{"concurrent transactions", kerr.ConcurrentTransactions.Code, 0, nil, kerr.NotEnoughReplicas.Code},
		{"coordinator loading", 0, kerr.CoordinatorLoadInProgress.Code, nil, kerr.NotEnoughReplicas.Code},
		{"not authorized", 0, kerr.ClusterAuthorizationFailed.Code, nil, kerr.InvalidTxnState.Code},
		{"no coordinator", 0, 0, client.ErrNoGroupCoordinator, kerr.NotEnoughReplicas.Code},
		{"coordinator gone mid-request", 0, 0, context.DeadlineExceeded, kerr.NotEnoughReplicas.Code},
	} {
		t.Run(tc.name, func(t *testing.T) {
			coord.set(tc.code, tc.topCode, tc.err)
			if rp := txnProduce(t, c, &txnID, "orders", txnRecords(1, "x", 50, 0, 0)); rp.ErrorCode != tc.want {
				t.Fatalf("produce: %s, want %s", kerr.ErrorForCode(rp.ErrorCode), kerr.ErrorForCode(tc.want))
			}
		})
	}
	if hw := s.replicas.Partition("orders", 0).HighWatermark(); hw != 0 {
		t.Fatalf("refused records were written: high watermark %d", hw)
	}
	before := len(coord.calls())
	if rp := txnProduce(t, c, nil, "orders", txnRecords(1, "x", 50, 0, 0)); rp.ErrorCode != kerr.TransactionalIDAuthorizationFailed.Code {
		t.Fatalf("no transactional id: %+v", rp)
	}
	ctl := proto.AppendTxnMarkerBatch(nil, 50, 0, proto.TxnMarker{Commit: true}, 0)
	if rp := txnProduce(t, c, &txnID, "orders", ctl); rp.ErrorCode != kerr.InvalidRecord.Code {
		t.Fatalf("a client's control batch: %+v", rp)
	}
	if n := len(coord.calls()); n != before {
		t.Fatalf("refused before verification, yet %d verifications sent", n-before)
	}
	// acks=0: verified, written, not answered; the next request's answer comes next.
	coord.set(0, 0, nil)
	req := produceReq("orders", 0, 0, txnRecords(2, "zero", 51, 0, 0))
	req.TransactionID = &txnID
	if _, err := c.Write(frameRequest(req, 7, 40)); err != nil {
		t.Fatal(err)
	}
	p := s.replicas.Partition("orders", 0)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if hw := p.HighWatermark(); hw != 2 {
			return fmt.Errorf("high watermark %d", hw)
		}
		return nil
	})
	rp := produce(t, c, 7, "orders", 0, 1, batch(1, "next", -1, -1, -1))
	if rp.ErrorCode != 0 || rp.BaseOffset != 2 {
		t.Fatalf("after an acks=0 transactional produce: %+v", rp)
	}
}

// TestWriteTxnMarkersRefusals: the per-partition errors of WriteTxnMarkers, and its wait
// for replication.
func TestWriteTxnMarkersRefusals(t *testing.T) {
	s := startServer(t, Config{})
	s.txn.verify = (&fakeCoordinator{}).verify
	for _, tp := range []struct {
		topic       string
		isr, minISR int
	}{{"t", 1, 1}, {"under", 1, 2}, {"slow", 2, 1}} {
		if err := s.BecomeLeader(tp.topic, 0, 1, tp.isr, tp.minISR); err != nil {
			t.Fatal(err)
		}
	}
	c := dial(t, s)
	txnID := "tx-3"
	if rp := txnProduce(t, c, &txnID, "t", txnRecords(1, "a", 60, 2, 0)); rp.ErrorCode != 0 {
		t.Fatalf("produce: %+v", rp)
	}
	for _, tc := range []struct {
		name             string
		version          int16
		topic            string
		epoch            int16
		coordinatorEpoch int32
		want             int16
	}{
		{"unknown topic", 1, "nope", 2, 5, kerr.UnknownTopicOrPartition.Code},
		{"under min ISR", 0, "under", 2, 5, kerr.NotEnoughReplicas.Code},
		{"older producer epoch", 1, "t", 1, 5, kerr.InvalidProducerEpoch.Code},
		{"commit", 0, "t", 2, 5, 0},
		{"older coordinator", 1, "t", 2, 4, kerr.TransactionCoordinatorFenced.Code},
		{"same coordinator again", 1, "t", 2, 5, 0},
	} {
		if code := writeMarker(t, c, tc.version, tc.topic, 60, tc.epoch, true, tc.coordinatorEpoch); code != tc.want {
			t.Fatalf("%s: %s, want %s", tc.name, kerr.ErrorForCode(code), kerr.ErrorForCode(tc.want))
		}
	}
	// A marker whose partition's ISR does not catch up is answered REQUEST_TIMED_OUT.
	defer markerTimeout.Store(markerTimeout.Swap(int64(100 * time.Millisecond)))
	if code := writeMarker(t, c, 1, "slow", 61, 0, false, 0); code != kerr.RequestTimedOut.Code {
		t.Fatalf("unreplicated marker: %s", kerr.ErrorForCode(code))
	}
}

// TestTxnFailover: a follower keeps the transactions from what it replicates, so that
// made leader — its leader gone mid-transaction — it reports the same LSO and aborted
// transactions to read_committed consumers, fences an older coordinator by the epoch it
// replicated, and closes the open transaction with the coordinator's marker.
func TestTxnFailover(t *testing.T) {
	pr := startPair(t)
	for _, s := range pr.nodes {
		s.txn.verify = (&fakeCoordinator{}).verify
	}
	pr.view(1, 1, 1, 1, 2)
	pr.view(2, 1, 1, 1, 2)
	c1 := dial(t, pr.nodes[1])
	txnID := "tx-f"
	steps := []func() int16{
		func() int16 { return produce(t, c1, 7, "f", 0, -1, batch(2, "p", -1, -1, -1)).ErrorCode }, // 0-1
		func() int16 { return txnProduce(t, c1, &txnID, "f", txnRecords(2, "a", 42, 0, 0)).ErrorCode },
		func() int16 { return txnProduce(t, c1, &txnID, "f", txnRecords(1, "b", 43, 0, 0)).ErrorCode },
		func() int16 { return writeMarker(t, c1, 1, "f", 42, 0, false, 3) },                        // 5
		func() int16 { return produce(t, c1, 7, "f", 0, -1, batch(1, "q", -1, -1, -1)).ErrorCode }, // 6
	}
	for i, step := range steps {
		if code := step(); code != 0 {
			t.Fatalf("step %d: %s", i, kerr.ErrorForCode(code))
		}
	}
	pr.waitSameLog(7)
	want := []kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: 42, FirstOffset: 2}}
	check := func(c net.Conn, who string) {
		t.Helper()
		rc := fetchIsolated(t, c, "f", 0, 1, 0, 0)
		n, _ := recordCount(t, rc.RecordBatches)
		if rc.ErrorCode != 0 || rc.HighWatermark != 7 || rc.LastStableOffset != 4 || n != 4 ||
			!slices.EqualFunc(rc.AbortedTransactions, want, func(a, b kmsg.FetchResponseTopicPartitionAbortedTransaction) bool {
				return a.ProducerID == b.ProducerID && a.FirstOffset == b.FirstOffset
			}) {
			t.Fatalf("%s: read_committed %+v (%d records)", who, rc, n)
		}
		if lso := listLatest(t, c, "f", 1); lso != 4 {
			t.Fatalf("%s: ListOffsets read_committed %d", who, lso)
		}
	}
	check(c1, "leader")
	// Node 2 takes over at epoch 2; node 1 is gone from its view.
	pr.view(2, 2, 2, 2)
	c2 := dial(t, pr.nodes[2])
	testutil.CheckFor(t, 10*time.Second, func() error {
		if p := pr.nodes[2].replicas.Partition("f", 0); p == nil || !p.IsLeader() || p.HighWatermark() != 7 {
			return errors.New("node 2 not leading at high watermark 7 yet")
		}
		return nil
	})
	check(c2, "new leader")
	if code := writeMarker(t, c2, 1, "f", 42, 0, true, 2); code != kerr.TransactionCoordinatorFenced.Code {
		t.Fatalf("a marker of a coordinator older than the replicated one: %s", kerr.ErrorForCode(code))
	}
	if code := writeMarker(t, c2, 1, "f", 43, 0, false, 3); code != 0 {
		t.Fatalf("abort of the open transaction at the new leader: %s", kerr.ErrorForCode(code))
	}
	rc := fetchIsolated(t, c2, "f", 0, 1, 0, 0)
	if rc.LastStableOffset != 8 || len(rc.AbortedTransactions) != 2 || rc.AbortedTransactions[1].ProducerID != 43 ||
		rc.AbortedTransactions[1].FirstOffset != 4 {
		t.Fatalf("after the new leader's abort: %+v", rc)
	}
}
