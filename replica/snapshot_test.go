package replica

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
)

// sampleStates is a producer state with a ring that wrapped, an open transaction, a
// producer known only from a marker, and closed transactions.
func sampleStates() producerStates {
	var ps producerStates
	for i := range int32(7) {
		h := hdr(1, 2, 3*i, 3, int64(10*i))
		ps.update(&h, int64(10*i))
	}
	tx := hdr(2, 0, 0, 1, 100)
	tx.Attributes = 0x10
	ps.update(&tx, 100)
	ps.applyMarker(3, 4, proto.TxnMarker{Commit: true, CoordinatorEpoch: 9}, 101)
	ps.completed = []completedTxn{{producerID: 5, first: 20, marker: 30}, {producerID: 6, first: 25, marker: 99}}
	return ps
}

func TestProducerSnapshotRoundTrip(t *testing.T) {
	ps := sampleStates()
	b := encodeSnapshot(&ps, 102)
	got, off, err := decodeSnapshot(b)
	if err != nil || off != 102 {
		t.Fatalf("decode: %d, %v", off, err)
	}
	if again := encodeSnapshot(&got, 102); !bytes.Equal(again, b) {
		t.Fatal("the decoded state encodes differently")
	}
	for id, st := range ps.m {
		g := got.m[id]
		if g == nil || g.epoch != st.epoch || g.txnFirst != st.txnFirst || g.coordinatorEpoch != st.coordinatorEpoch ||
			g.n != st.n || *g.last() != *st.last() || g.lastTimestamp != st.lastTimestamp {
			t.Fatalf("producer %d: %+v, want %+v", id, g, st)
		}
	}
	if !reflect.DeepEqual(got.ongoing, ps.ongoing) || !slices.Equal(got.completed, ps.completed) {
		t.Fatalf("transactions: %v %v, want %v %v", got.ongoing, got.completed, ps.ongoing, ps.completed)
	}
	// Retries are recognised after the round trip: the five batches kept are the same.
	retry := hdr(1, 2, 9, 3, 0)
	if dup, code := got.check(&retry); dup == nil || code != 0 || dup.firstOffset != 30 {
		t.Fatalf("retry after the round trip: %+v %d", dup, code)
	}
	b[len(b)-1] ^= 1
	if _, _, err := decodeSnapshot(b); err == nil {
		t.Fatal("a damaged snapshot decoded")
	}
}

// FuzzDecodeSnapshot: any bytes decode without a panic or an allocation beyond them; a
// snapshot that decodes encodes back to the same bytes.
func FuzzDecodeSnapshot(f *testing.F) {
	ps := sampleStates()
	f.Add(encodeSnapshot(&ps, 102))
	var empty producerStates
	f.Add(encodeSnapshot(&empty, 0))
	f.Add([]byte("GPS\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, off, err := decodeSnapshot(b)
		if err != nil {
			return
		}
		if again := encodeSnapshot(&got, off); !bytes.Equal(again, b) {
			t.Fatalf("decoded snapshot encodes to other bytes")
		}
	})
}

// TestProducerSnapshotBoundsReplay: a replica that opens replays its log only from its
// newest usable snapshot — nothing after a clean close, the batches since the last roll
// after a crash — and ends in the same state as a full replay (sequences, transactions,
// LSO, aborted index).
func TestProducerSnapshotBoundsReplay(t *testing.T) {
	dir := t.TempDir()
	small := func() segment.Config { return segment.Config{SegmentBytes: 1024, Logger: testutil.Quiet()} }
	open := func() (*Manager, *Partition) {
		m := NewManager(Config{Dir: dir, NodeID: local, Logger: testutil.Quiet()})
		p, err := m.MakeLeader("t", 0, leaderState(0, local), nil, small)
		if err != nil {
			t.Fatal(err)
		}
		return m, p
	}
	m, p := open()
	total := 0
	var seq [3]int32
	for i := range 120 {
		pid := int64(i % 3)
		var code int16
		switch {
		case pid == 0:
			code = appendAsLeader(t, p, testBatch(hdr(pid, 0, seq[pid], 1, 0)))[0].ErrorCode
			seq[pid]++
		case i%6 == 1 || i%6 == 2:
			g := p.BeginTxnVerification(pid, 0, seq[pid])
			code = addVerified(t, p, txnBatch(pid, 0, seq[pid], 1), g).ErrorCode
			seq[pid]++
		default:
			code = marker(t, p, pid, 0, i%4 == 0, 1).ErrorCode
		}
		if code != 0 {
			t.Fatalf("append %d: code %d", i, code)
		}
		total++
	}
	if p.Log().NumSegments() < 4 {
		t.Fatalf("%d segments", p.Log().NumSegments())
	}
	type state struct {
		producers []ProducerSnapshot
		lso       int64
		aborted   []segment.AbortedTxn
	}
	stateOf := func(p *Partition) state {
		return state{p.Producers(), p.LastStableOffset(), p.Log().AbortedTxns()}
	}
	want := stateOf(p)
	if len(want.aborted) == 0 {
		t.Fatal("no aborted transaction to compare")
	}
	check := func(name string, replayedMax, replayedMin int) {
		t.Helper()
		m, p := open()
		defer m.Close()
		if got := stateOf(p); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: state %+v, want %+v", name, got, want)
		}
		if p.replayed > replayedMax || p.replayed < replayedMin {
			t.Fatalf("%s: %d batches replayed, want %d..%d of %d", name, p.replayed, replayedMin, replayedMax, total)
		}
		t.Logf("%s: %d of %d batches replayed", name, p.replayed, total)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	check("clean close", 0, 0)
	// Without the close's snapshot, the replay starts at the last roll's.
	offs := snapshotOffsets(p.Log().Dir())
	if len(offs) != snapshotsKept {
		t.Fatalf("snapshots at %v", offs)
	}
	if err := os.Remove(snapshotName(p.Log().Dir(), offs[len(offs)-1])); err != nil {
		t.Fatal(err)
	}
	check("from the last roll", total/2, 1)
	// Without any, from the log start; with the aborted index lost as well.
	for _, off := range snapshotOffsets(p.Log().Dir()) {
		_ = os.Remove(snapshotName(p.Log().Dir(), off))
	}
	idx, _ := filepath.Glob(filepath.Join(p.Log().Dir(), "*.txnindex"))
	for _, f := range idx {
		_ = os.Remove(f)
	}
	check("from the start", total, total)
}
