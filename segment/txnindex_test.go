package segment

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/proto"
)

// txnLog is a log of n one-record batches (offsets 0..n-1) in segments of about
// perSegment batches.
func txnLog(t testing.TB, dir string, n, perSegment int) (*Log, Config) {
	t.Helper()
	cfg := testConfig(newTestClock())
	b := makeBatch("x", 1, 40, 1000)
	cfg.SegmentBytes = int64(len(b) * perSegment)
	l := openLog(t, dir, cfg)
	for range n {
		mustAppend(t, l, makeBatch("x", 1, 40, 1000), 0)
	}
	return l, cfg
}

func txnIndexPath(l *Log, base int64) string { return segmentName(l.dir, base, txnIndexSuffix) }

// TestTxnIndexWriteAndCollect: entries go to the segment of their marker, survive a
// clean reopen, and a lookup returns those overlapping its range, stopping where an
// entry's last stable offset shows no later one can.
func TestTxnIndexWriteAndCollect(t *testing.T) {
	dir := t.TempDir()
	l, cfg := txnLog(t, dir, 30, 10)
	if l.NumSegments() < 3 {
		t.Fatalf("%d segments", l.NumSegments())
	}
	entries := []AbortedTxn{
		{ProducerID: 1, FirstOffset: 2, LastOffset: 5, LastStableOffset: 6},
		{ProducerID: 2, FirstOffset: 3, LastOffset: 12, LastStableOffset: 13},
		{ProducerID: 3, FirstOffset: 14, LastOffset: 25, LastStableOffset: 20}, // 4 still open then
		{ProducerID: 4, FirstOffset: 20, LastOffset: 27, LastStableOffset: 28},
	}
	for _, e := range entries {
		if err := l.AppendAbortedTxn(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.AppendAbortedTxn(entries[1]); err != nil || l.AbortedTxnCount() != 4 {
		t.Fatalf("an entry added twice: %v, %d entries", err, l.AbortedTxnCount())
	}
	if err := l.AppendAbortedTxn(AbortedTxn{ProducerID: 9, FirstOffset: 1, LastOffset: 30, LastStableOffset: 31}); err == nil {
		t.Fatal("an entry whose marker is past the log end was taken")
	}
	check := func(when string) {
		t.Helper()
		for _, tc := range []struct {
			from, to int64
			want     []int64 // producer ids
		}{
			{0, 30, []int64{1, 2, 3, 4}},
			{0, 3, []int64{1}},      // 2 starts at 3; 1's entry (lso 6 ≥ 3) ends the lookup
			{6, 13, []int64{2}},     // 1 ended before 6
			{13, 19, []int64{3}},    // 3's lso (20) ≥ 19: 4 is not looked at
			{21, 26, []int64{3, 4}}, // from the segment holding 21
			{28, 30, nil},
			{7, 7, nil},
		} {
			var ids []int64
			for _, a := range l.CollectAbortedTxns(nil, tc.from, tc.to) {
				ids = append(ids, a.ProducerID)
			}
			if !slices.Equal(ids, tc.want) {
				t.Errorf("%s: [%d, %d): %v, want %v", when, tc.from, tc.to, ids, tc.want)
			}
		}
	}
	check("open")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, cfg)
	defer l.Close()
	check("reopened")
	if got := l.AbortedTxns(); !slices.Equal(got, entries) {
		t.Fatalf("entries %+v, want %+v", got, entries)
	}
	for _, base := range l.SegmentBaseOffsets() {
		n := 0
		for _, e := range entries {
			if l.segments[l.segmentIndex(e.LastOffset)].baseOffset == base {
				n++
			}
		}
		if size := fileSize(t, txnIndexPath(l, base)); size != int64(n*txnIndexEntrySize) {
			t.Fatalf("segment %d: index of %d bytes, want %d entries", base, size, n)
		}
	}
}

// TestTxnIndexTruncateAndRetention: the index is cut with the log, and deleted with its
// segment by retention and by DeleteRecords.
func TestTxnIndexTruncateAndRetention(t *testing.T) {
	dir := t.TempDir()
	l, _ := txnLog(t, dir, 30, 10)
	defer l.Close()
	for _, e := range []AbortedTxn{
		{ProducerID: 1, FirstOffset: 1, LastOffset: 3, LastStableOffset: 4},
		{ProducerID: 2, FirstOffset: 4, LastOffset: 15, LastStableOffset: 16},
		{ProducerID: 3, FirstOffset: 16, LastOffset: 18, LastStableOffset: 19},
		{ProducerID: 4, FirstOffset: 20, LastOffset: 25, LastStableOffset: 26},
	} {
		if err := l.AppendAbortedTxn(e); err != nil {
			t.Fatal(err)
		}
	}
	bases := l.SegmentBaseOffsets()
	if _, err := l.TruncateTo(18); err != nil {
		t.Fatal(err)
	}
	if ids := producerIDs(l.AbortedTxns()); !slices.Equal(ids, []int64{1, 2}) {
		t.Fatalf("after truncation to 18: %v", ids)
	}
	last := bases[len(bases)-1]
	if _, err := os.Stat(txnIndexPath(l, last)); last >= 18 && !os.IsNotExist(err) {
		t.Fatalf("the index of a segment truncated away: %v", err)
	}
	if _, err := l.IncrementLogStartOffset(bases[1]); err != nil {
		t.Fatal(err)
	}
	if ids := producerIDs(l.AbortedTxns()); !slices.Equal(ids, []int64{2}) {
		t.Fatalf("after DeleteRecords to %d: %v", bases[1], ids)
	}
	if _, err := os.Stat(txnIndexPath(l, bases[0])); !os.IsNotExist(err) {
		t.Fatalf("the deleted segment's index: %v", err)
	}
	if err := l.Roll(); err != nil {
		t.Fatal(err)
	}
	l.cfg.RetentionAge = time.Hour // the batches' timestamps are from 1970
	if res, err := l.DeleteRetained(l.LogEndOffset()); err != nil || res.Segments == 0 {
		t.Fatalf("retention: %+v %v", res, err)
	}
	if _, err := os.Stat(txnIndexPath(l, bases[1])); !os.IsNotExist(err) {
		t.Fatalf("the retained-away segment's index: %v", err)
	}
	if n := l.AbortedTxnCount(); n != 0 {
		t.Fatalf("%d entries left", n)
	}
}

func producerIDs(es []AbortedTxn) []int64 {
	var ids []int64
	for _, e := range es {
		ids = append(ids, e.ProducerID)
	}
	return ids
}

// TestTxnIndexRecovery: at open a torn tail and bad entries are cut, entries whose
// marker is past the recovered log are dropped, and a missing file is made anew (empty:
// the replica's replay of the markers fills it, SyncAbortedTxns).
func TestTxnIndexRecovery(t *testing.T) {
	good := []AbortedTxn{
		{ProducerID: 1, FirstOffset: 1, LastOffset: 3, LastStableOffset: 4},
		{ProducerID: 2, FirstOffset: 2, LastOffset: 6, LastStableOffset: 7},
	}
	past := AbortedTxn{ProducerID: 3, FirstOffset: 7, LastOffset: 40, LastStableOffset: 41}
	encode := func(es ...AbortedTxn) []byte {
		var b []byte
		for _, e := range es {
			b = appendTxnIndexEntry(b, e)
		}
		return b
	}
	bad := encode(good[0])
	bad[0] = 9 // version
	for _, tc := range []struct {
		name     string
		contents []byte // nil: the file is removed
		clean    bool
		want     []AbortedTxn
	}{
		{"intact", encode(good...), true, good},
		{"torn tail", append(encode(good...), 0, 0, 0, 0, 0, 1, 2), false, good},
		{"torn tail after a clean stop", append(encode(good...), 7), true, good},
		{"bad entry", append(encode(good[0]), bad...), false, good[:1]},
		{"marker past the log", encode(good[0], good[1], past), false, good},
		{"out of order", encode(good[1], good[0]), false, good[1:]},
		{"missing", nil, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, cfg := txnLog(t, dir, 10, 100)
			path := txnIndexPath(l, 0)
			if tc.clean {
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
			} else {
				l.crash()
			}
			if tc.contents == nil {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			} else {
				writeFile(t, path, tc.contents)
			}
			l = openLog(t, dir, cfg)
			defer l.Close()
			if got := l.AbortedTxns(); !slices.Equal(got, tc.want) {
				t.Fatalf("entries %+v, want %+v", got, tc.want)
			}
			if size := fileSize(t, path); size != int64(len(tc.want)*txnIndexEntrySize) {
				t.Fatalf("file of %d bytes for %d entries", size, len(tc.want))
			}
		})
	}
}

// TestSyncAbortedTxns: the replica's replay hands the entries the markers make; a
// segment whose index lacks some, or holds others, is rewritten, the rest left alone.
func TestSyncAbortedTxns(t *testing.T) {
	l, _ := txnLog(t, t.TempDir(), 30, 10)
	defer l.Close()
	want := []AbortedTxn{
		{ProducerID: 1, FirstOffset: 1, LastOffset: 3, LastStableOffset: 4},
		{ProducerID: 2, FirstOffset: 4, LastOffset: 15, LastStableOffset: 16},
		{ProducerID: 4, FirstOffset: 20, LastOffset: 25, LastStableOffset: 26},
	}
	for _, e := range []AbortedTxn{want[0], {ProducerID: 9, FirstOffset: 12, LastOffset: 14, LastStableOffset: 15}} {
		if err := l.AppendAbortedTxn(e); err != nil {
			t.Fatal(err)
		}
	}
	n, err := l.SyncAbortedTxns(0, want)
	if err != nil || n != 2 {
		t.Fatalf("first sync: %d segments rewritten, %v", n, err)
	}
	if got := l.AbortedTxns(); !slices.Equal(got, want) {
		t.Fatalf("entries %+v, want %+v", got, want)
	}
	if n, err := l.SyncAbortedTxns(0, want); err != nil || n != 0 {
		t.Fatalf("second sync: %d segments rewritten, %v", n, err)
	}
	// An entry out of order (the repair of a lost one) keeps the index sorted.
	l2, _ := txnLog(t, t.TempDir(), 30, 10)
	defer l2.Close()
	earlier := AbortedTxn{ProducerID: 5, FirstOffset: 10, LastOffset: 12, LastStableOffset: 13}
	for _, e := range []AbortedTxn{want[1], earlier} {
		if err := l2.AppendAbortedTxn(e); err != nil {
			t.Fatal(err)
		}
	}
	if got := l2.AbortedTxns(); !slices.Equal(got, []AbortedTxn{earlier, want[1]}) {
		t.Fatalf("entries added out of order: %+v", got)
	}
}

// FuzzTxnIndexFile: any bytes as an index file open without a panic, into entries that
// each parse, follow each other and fill the file exactly.
func FuzzTxnIndexFile(f *testing.F) {
	var seed []byte
	for i := range int64(3) {
		seed = appendTxnIndexEntry(seed, AbortedTxn{ProducerID: i, FirstOffset: 10 * i, LastOffset: 10*i + 5, LastStableOffset: 10*i + 6})
	}
	f.Add(seed)
	f.Add(seed[:50])
	f.Add(append(slices.Clone(seed), 0xff))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "0.txnindex")
		writeFile(t, path, data)
		x, err := openTxnIndex(path, false)
		if err != nil {
			t.Fatal(err)
		}
		defer x.close()
		for i, e := range x.entries {
			if _, err := parseTxnIndexEntry(appendTxnIndexEntry(nil, e)); err != nil {
				t.Fatalf("entry %d: %v", i, err)
			}
			if i > 0 && e.LastOffset <= x.entries[i-1].LastOffset {
				t.Fatalf("entry %d out of order", i)
			}
		}
		if size := fileSize(t, path); size != int64(len(x.entries)*txnIndexEntrySize) {
			t.Fatalf("file of %d bytes for %d entries", size, len(x.entries))
		}
	})
}

// BenchmarkCollectAbortedTxns: a read_committed fetch's lookup in a log of 100
// segments with 100 aborted transactions each, over a range holding a few of them.
func BenchmarkCollectAbortedTxns(b *testing.B) {
	l, _ := txnLog(b, b.TempDir(), 1, 1)
	// Stand-in segments: the lookup reads only the in-memory entries and base offsets.
	real := l.segments
	defer func() {
		l.segments = real
		_ = l.Close()
	}()
	l.segments = nil
	for s := range int64(100) {
		seg := &LogSegment{baseOffset: s * 10_000, nextOffset: (s + 1) * 10_000, txnIndex: &TxnIndex{}}
		for i := range int64(100) {
			first := s*10_000 + i*100
			seg.txnIndex.entries = append(seg.txnIndex.entries,
				AbortedTxn{ProducerID: i, FirstOffset: first, LastOffset: first + 50, LastStableOffset: first + 51})
		}
		l.segments = append(l.segments, seg)
	}
	var dst []proto.AbortedTransaction
	b.ReportAllocs()
	for b.Loop() {
		dst = l.CollectAbortedTxns(dst[:0], 504_000, 504_500)
		if len(dst) != 5 {
			b.Fatalf("%d entries", len(dst))
		}
	}
}
