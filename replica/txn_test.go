package replica

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/twmb/franz-go/pkg/kerr"
)

// txnBatch is a transactional batch of n records of producer pid at epoch from sequence
// seq.
func txnBatch(pid int64, epoch int16, seq, n int32) []byte {
	h := hdr(pid, epoch, seq, n, 0)
	h.Attributes = proto.AttrTransactional
	return testBatch(h)
}

// markerBatch is producer pid's marker as a follower receives it: at offset, leader
// epoch leaderEpoch.
func markerBatch(pid int64, epoch int16, commit bool, coordinatorEpoch int32, offset int64, leaderEpoch int32) []byte {
	b := proto.AppendTxnMarkerBatch(nil, pid, epoch, proto.TxnMarker{Commit: commit, CoordinatorEpoch: coordinatorEpoch}, 1000)
	proto.SetBaseOffset(b, offset)
	proto.SetPartitionLeaderEpoch(b, leaderEpoch)
	return b
}

// addVerified appends records as one request whose transaction was verified under guard.
func addVerified(t *testing.T, p *Partition, records []byte, guard uint64) Assignment {
	t.Helper()
	var a LeaderAppend
	a.Begin(p)
	as := a.AddVerified(records, guard)
	if _, err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	return as
}

func marker(t *testing.T, p *Partition, pid int64, epoch int16, commit bool, coordinatorEpoch int32) MarkerResult {
	t.Helper()
	res, _ := p.AppendTxnMarker(pid, epoch, proto.TxnMarker{Commit: commit, CoordinatorEpoch: coordinatorEpoch}, nil)
	return res
}

func abortedOf(p *Partition, from, to int64) []proto.AbortedTransaction {
	return p.Log().CollectAbortedTxns(nil, from, to)
}

// TestTxnLifecycle: a transaction on a leader whose ISR is itself — opened by a
// verified first batch, continued without verification, closed by an abort marker
// (which indexes it) — with the LSO and the producer's description at each step, and
// the marker's and the batches' refusals.
func TestTxnLifecycle(t *testing.T) {
	m := newManager(t, t.TempDir())
	p := lead(t, m, "t", leaderState(0, local))
	appendAsLeader(t, p, testBatch(hdr(7, 0, 0, 2, 0))) // 0-1, idempotent, no transaction
	if lso := p.LastStableOffset(); lso != 2 || p.OngoingTxns() != 0 {
		t.Fatalf("no transaction: LSO %d, %d open", lso, p.OngoingTxns())
	}
	if as := appendAsLeader(t, p, txnBatch(42, 0, 0, 2))[0]; as.ErrorCode != kerr.InvalidTxnState.Code {
		t.Fatalf("unverified first transactional batch: %+v", as)
	}
	if !p.NeedsTxnVerification(42, 0) {
		t.Fatal("a producer without a transaction needs no verification")
	}
	guard := p.BeginTxnVerification(42, 0, 2)
	if again := p.BeginTxnVerification(42, 0, 0); again != guard {
		t.Fatalf("pipelined verifications of one epoch: guards %d and %d", guard, again)
	}
	if as := addVerified(t, p, txnBatch(42, 0, 2, 2), guard); as.ErrorCode != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("a verified batch above the lowest sequence verified, first: %+v", as)
	}
	if as := addVerified(t, p, txnBatch(42, 0, 0, 2), guard); as.ErrorCode != 0 || as.FirstOffset != 2 {
		t.Fatalf("verified first transactional batch: %+v", as)
	}
	if p.NeedsTxnVerification(42, 0) || !p.NeedsTxnVerification(42, 1) {
		t.Fatal("an open transaction needs no verification at its epoch, and one at another")
	}
	if as := appendAsLeader(t, p, txnBatch(42, 0, 2, 2))[0]; as.ErrorCode != 0 || as.FirstOffset != 4 {
		t.Fatalf("second batch of the open transaction: %+v", as)
	}
	if as := appendAsLeader(t, p, testBatch(hdr(42, 0, 4, 1, 0)))[0]; as.ErrorCode != kerr.InvalidTxnState.Code {
		t.Fatalf("a plain batch inside the transaction: %+v", as)
	}
	ctl := hdr(42, 0, 4, 1, 0)
	ctl.Attributes = proto.AttrTransactional | proto.AttrControl
	if as := appendAsLeader(t, p, testBatch(ctl))[0]; as.ErrorCode != kerr.InvalidRecord.Code {
		t.Fatalf("a control batch from a client: %+v", as)
	}
	if hw, lso := p.HighWatermark(), p.LastStableOffset(); hw != 6 || lso != 2 || p.OngoingTxns() != 1 {
		t.Fatalf("open transaction: high watermark %d LSO %d, %d open", hw, lso, p.OngoingTxns())
	}
	i := slices.IndexFunc(p.Producers(), func(s ProducerSnapshot) bool { return s.ProducerID == 42 })
	if s := p.Producers()[i]; s.CurrentTxnStartOffset != 2 || s.CoordinatorEpoch != -1 || s.LastSequence != 3 {
		t.Fatalf("producer 42: %+v", s)
	}

	if res := marker(t, p, 42, 0, false, 3); res.ErrorCode != 0 || res.Offset != 6 || !res.Aborted {
		t.Fatalf("abort marker: %+v", res)
	}
	if hw, lso := p.HighWatermark(), p.LastStableOffset(); hw != 7 || lso != 7 || p.OngoingTxns() != 0 {
		t.Fatalf("after the abort: high watermark %d LSO %d, %d open", hw, lso, p.OngoingTxns())
	}
	want := []segment.AbortedTxn{{ProducerID: 42, FirstOffset: 2, LastOffset: 6, LastStableOffset: 7}}
	if got := p.Log().AbortedTxns(); !slices.Equal(got, want) {
		t.Fatalf("aborted index %+v, want %+v", got, want)
	}
	if got := abortedOf(p, 0, 7); !slices.Equal(got, []proto.AbortedTransaction{{ProducerID: 42, FirstOffset: 2}}) {
		t.Fatalf("aborted over [0, 7): %+v", got)
	}
	if got := abortedOf(p, 7, 9); len(got) != 0 {
		t.Fatalf("aborted past the marker: %+v", got)
	}
	i = slices.IndexFunc(p.Producers(), func(s ProducerSnapshot) bool { return s.ProducerID == 42 })
	if s := p.Producers()[i]; s.CurrentTxnStartOffset != -1 || s.CoordinatorEpoch != 3 {
		t.Fatalf("producer 42 after its marker: %+v", s)
	}
	if res := marker(t, p, 42, 0, true, 2); res.ErrorCode != kerr.TransactionCoordinatorFenced.Code {
		t.Fatalf("a marker of an older coordinator: %+v", res)
	}
	if res := marker(t, p, 42, -1, true, 3); res.ErrorCode != kerr.InvalidProducerEpoch.Code {
		t.Fatalf("a marker of an older producer epoch: %+v", res)
	}
	if as := appendAsLeader(t, p, txnBatch(42, 0, 4, 1))[0]; as.ErrorCode != kerr.InvalidTxnState.Code {
		t.Fatalf("a transactional batch after the transaction ended, unverified: %+v", as)
	}
	if as := addVerified(t, p, txnBatch(42, 0, 4, 1), guard); as.ErrorCode != kerr.InvalidTxnState.Code {
		t.Fatalf("a guard from before the marker: %+v", as)
	}
	// The next transaction commits: nothing is indexed.
	guard = p.BeginTxnVerification(42, 0, 4)
	if as := addVerified(t, p, txnBatch(42, 0, 4, 1), guard); as.ErrorCode != 0 || as.FirstOffset != 7 {
		t.Fatalf("the next transaction: %+v", as)
	}
	if res := marker(t, p, 42, 0, true, 3); res.ErrorCode != 0 || res.Aborted || res.Offset != 8 {
		t.Fatalf("commit marker: %+v", res)
	}
	if n := p.Log().AbortedTxnCount(); n != 1 || p.LastStableOffset() != 9 {
		t.Fatalf("after the commit: %d aborted entries, LSO %d", n, p.LastStableOffset())
	}
	// A marker with a bumped epoch (the coordinator aborting a timed-out transaction)
	// moves the producer to it: its earlier epoch is fenced.
	if res := marker(t, p, 42, 1, false, 3); res.ErrorCode != 0 || res.Aborted {
		t.Fatalf("empty abort at a bumped epoch: %+v", res)
	}
	if as := appendAsLeader(t, p, testBatch(hdr(42, 0, 5, 1, 0)))[0]; as.ErrorCode != kerr.InvalidProducerEpoch.Code {
		t.Fatalf("the fenced epoch's batch: %+v", as)
	}
}

// TestLSOWaitsForReplication: with a follower in the ISR, a transaction's marker holds
// the LSO at the transaction's first offset until the high watermark passes the marker
// (Kafka's unreplicated transactions); the follower's fetch that moves it wakes the
// parked requests.
func TestLSOWaitsForReplication(t *testing.T) {
	m := newManager(t, t.TempDir())
	p := lead(t, m, "t", leaderState(0, local, 2))
	now := time.Now().UnixNano()
	appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 2, 0))) // 0-1
	guard := p.BeginTxnVerification(42, 0, 0)
	if as := addVerified(t, p, txnBatch(42, 0, 0, 2), guard); as.FirstOffset != 2 {
		t.Fatalf("transactional batch: %+v", as)
	}
	p.UpdateFollowerFetchState(2, BrokerEpochUnknown, 4, now)
	if hw, lso := p.HighWatermark(), p.LastStableOffset(); hw != 4 || lso != 2 {
		t.Fatalf("open transaction replicated: high watermark %d LSO %d", hw, lso)
	}
	if res := marker(t, p, 42, 0, true, 0); res.Offset != 4 {
		t.Fatalf("marker: %+v", res)
	}
	if lso := p.LastStableOffset(); lso != 2 {
		t.Fatalf("marker not replicated: LSO %d, want 2", lso)
	}
	var w countingWaiter
	p.AddWaiter(&w)
	p.UpdateFollowerFetchState(2, BrokerEpochUnknown, 5, now)
	if hw, lso := p.HighWatermark(), p.LastStableOffset(); hw != 5 || lso != 5 {
		t.Fatalf("marker replicated: high watermark %d LSO %d", hw, lso)
	}
	if w.wakes.Load() != 1 {
		t.Fatalf("%d wakes", w.wakes.Load())
	}
}

// TestTxnStateSurvivesReopen: the open transactions, the LSO and the aborted index after
// the replica's log is closed and opened again — also with the index file lost, which
// the replay of the markers writes again.
func TestTxnStateSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	for _, lose := range []bool{false, true} {
		m := NewManager(Config{Dir: dir, NodeID: local, Logger: testutil.Quiet()})
		epoch := int32(0)
		if lose {
			epoch = 1 // the second run: a new leader epoch
		}
		p := lead(t, m, "t", leaderState(epoch, local))
		if !lose {
			appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 1, 0))) // 0
			for _, pid := range []int64{42, 43} {
				g := p.BeginTxnVerification(pid, 0, 0)
				addVerified(t, p, txnBatch(pid, 0, 0, 1), g) // 1 (42), 2 (43)
			}
			marker(t, p, 43, 0, false, 5) // 3: aborts 43's; 42's stays open
		}
		want := []segment.AbortedTxn{{ProducerID: 43, FirstOffset: 2, LastOffset: 3, LastStableOffset: 1}}
		if got := p.Log().AbortedTxns(); !slices.Equal(got, want) {
			t.Fatalf("lose %v: aborted index %+v, want %+v", lose, got, want)
		}
		if lso, n := p.LastStableOffset(), p.OngoingTxns(); lso != 1 || n != 1 {
			t.Fatalf("lose %v: LSO %d with %d open, want 1 with 1", lose, lso, n)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if !lose {
			if err := os.Remove(filepath.Join(m.PartitionDir("t", 0), "00000000000000000000.txnindex")); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestTxnTruncation: a truncation that cuts a marker reopens its transaction and drops
// its index entry; one that cuts the transaction's batches drops the transaction.
func TestTxnTruncation(t *testing.T) {
	m := newManager(t, t.TempDir())
	p := lead(t, m, "t", leaderState(0, local))
	appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 2, 0))) // 0-1
	g := p.BeginTxnVerification(42, 0, 0)
	addVerified(t, p, txnBatch(42, 0, 0, 2), g) // 2-3
	marker(t, p, 42, 0, false, 0)               // 4
	if n := p.Log().AbortedTxnCount(); n != 1 {
		t.Fatalf("%d aborted entries", n)
	}
	fst := leaderState(1, 2, local)
	fst.Leader = 2
	m.MakeFollower("t", 0, fst)
	if _, err := p.TruncateTo(4); err != nil {
		t.Fatal(err)
	}
	if n, open, lso := p.Log().AbortedTxnCount(), p.OngoingTxns(), p.LastStableOffset(); n != 0 || open != 1 || lso != 2 {
		t.Fatalf("marker cut: %d aborted entries, %d open, LSO %d", n, open, lso)
	}
	if _, err := p.TruncateTo(2); err != nil {
		t.Fatal(err)
	}
	if open, lso := p.OngoingTxns(), p.LastStableOffset(); open != 0 || lso != 2 {
		t.Fatalf("transaction cut: %d open, LSO %d", open, lso)
	}
}

// TestFollowerKeepsTxnState: a follower keeps the transactions from what it appends —
// the aborted index included — so that, made leader, it reports the same LSO and
// aborted transactions, and knows the producers' coordinator epochs.
func TestFollowerKeepsTxnState(t *testing.T) {
	m := newManager(t, t.TempDir())
	p := lead(t, m, "t", leaderState(0, local))
	fst := leaderState(3, 2, local)
	fst.Leader = 2
	m.MakeFollower("t", 0, fst)
	b42 := txnBatch(42, 0, 0, 2)
	proto.SetBaseOffset(b42, 0)
	b43 := txnBatch(43, 0, 0, 1)
	proto.SetBaseOffset(b43, 2)
	records := concat(b42, b43, markerBatch(42, 0, false, 7, 3, 3))
	if _, err := p.AppendAsFollower(records); err != nil {
		t.Fatal(err)
	}
	p.UpdateFollowerHighWatermark(4)
	want := []segment.AbortedTxn{{ProducerID: 42, FirstOffset: 0, LastOffset: 3, LastStableOffset: 2}}
	if got := p.Log().AbortedTxns(); !slices.Equal(got, want) {
		t.Fatalf("follower's aborted index %+v, want %+v", got, want)
	}
	lead(t, m, "t", leaderState(4, local))
	if lso, open := p.LastStableOffset(), p.OngoingTxns(); lso != 2 || open != 1 {
		t.Fatalf("new leader: LSO %d, %d open", lso, open)
	}
	if res := marker(t, p, 42, 0, false, 6); res.ErrorCode != kerr.TransactionCoordinatorFenced.Code {
		t.Fatalf("a marker of a coordinator older than the replicated one: %+v", res)
	}
	if as := appendAsLeader(t, p, txnBatch(43, 0, 1, 1))[0]; as.ErrorCode != 0 || as.FirstOffset != 4 {
		t.Fatalf("43's open transaction continues at the new leader: %+v", as)
	}
}

// BenchmarkProducerCheck: the producer checks of a leader append, for an idempotent
// batch and a batch of an open transaction.
func BenchmarkProducerCheck(b *testing.B) {
	for _, tc := range []struct {
		name  string
		batch []byte
	}{
		{"idempotent", testBatch(hdr(9, 0, 0, 1, 0))},
		{"transactional", txnBatch(9, 0, 0, 1)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var ps producerStates
			h, _ := proto.ParseRecordBatchHeader(tc.batch)
			ps.update(&h, 0)
			next := slices.Clone(tc.batch)
			next[53+3] = 1 // base sequence 1: the next batch
			proto.SealRecordBatch(next)
			b.ReportAllocs()
			for b.Loop() {
				if code, _, _ := ps.checkRecords(next, 0); code != 0 {
					b.Fatal(code)
				}
			}
		})
	}
}
