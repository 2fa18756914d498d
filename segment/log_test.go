package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/proto"
	"golang.org/x/sys/unix"
)

func TestAppendReadReopen(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	l := openLog(t, dir, testConfig(clock))
	var want [][]byte
	for i := range 200 {
		b := makeBatch("k", 1+i%5, 100+i%300, clock.Ms())
		info := mustAppend(t, l, b, 3)
		if info.FirstOffset != baseOffsetOf(b) {
			t.Fatalf("append %d: first offset %d, batch says %d", i, info.FirstOffset, baseOffsetOf(b))
		}
		want = append(want, b)
	}
	if l.NumSegments() < 2 {
		t.Fatalf("expected rolls, got %d segments", l.NumSegments())
	}
	leo := l.LogEndOffset()
	check := func(l *Log) {
		t.Helper()
		got := readAll(t, l, 0, leo)
		if len(got) != len(want) {
			t.Fatalf("read %d batches, want %d", len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("batch %d differs", i)
			}
		}
	}
	check(l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	scans := segmentScans.Load()
	l = openLog(t, dir, testConfig(clock))
	if n := segmentScans.Load() - scans; n != 0 {
		t.Fatalf("clean reopen scanned %d segments", n)
	}
	if l.LogEndOffset() != leo {
		t.Fatalf("leo %d after reopen, want %d", l.LogEndOffset(), leo)
	}
	check(l)
	l.crash()
	l = openLog(t, dir, testConfig(clock))
	check(l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestAppendBadInputLeavesLogUntouched(t *testing.T) {
	clock := newTestClock()
	l := openLog(t, t.TempDir(), testConfig(clock))
	defer l.Close()
	good := makeBatch("g", 3, 50, clock.Ms())
	mustAppend(t, l, append([]byte(nil), good...), 0)
	sizeBefore, leoBefore := l.Size(), l.LogEndOffset()

	mut := func(f func(b []byte)) []byte {
		b := makeBatch("x", 3, 50, clock.Ms())
		f(b)
		return b
	}
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrEmptyAppend},
		{"truncated batch", good[:len(good)-7], proto.ErrBatchTruncated},
		{"truncated header", good[:30], proto.ErrBatchTruncated},
		{"wrong magic", mut(func(b []byte) { b[16] = 1 }), proto.ErrBatchMagic},
		{"bad crc", mut(func(b []byte) { b[70] ^= 0x40 }), proto.ErrBatchCRC},
		{"length mismatch", mut(func(b []byte) { binary.BigEndian.PutUint32(b[8:], 20) }), proto.ErrBatchLength},
		{"record count", mut(func(b []byte) { binary.BigEndian.PutUint32(b[57:], 5); proto.SealRecordBatch(b) }), proto.ErrBatchRecordCount},
		{"oversized", makeBatch("big", 1, 2<<20, clock.Ms()), proto.ErrBatchTooLarge},
		// A good batch followed by a bad one: nothing of the pair may land.
		{"good then bad", append(append([]byte(nil), good...), mut(func(b []byte) { b[70] ^= 1 })...), proto.ErrBatchCRC},
		{"good then trailing bytes", append(append([]byte(nil), good...), 1, 2, 3), proto.ErrBatchTruncated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := l.Append(tc.b, 0)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			var be *proto.BatchError
			if tc.want != ErrEmptyAppend && !errors.As(err, &be) {
				t.Fatalf("error %T is not a *proto.BatchError", err)
			}
			if l.Size() != sizeBefore || l.LogEndOffset() != leoBefore {
				t.Fatalf("log changed: size %d→%d, leo %d→%d", sizeBefore, l.Size(), leoBefore, l.LogEndOffset())
			}
		})
	}
	// And the log still takes good appends at the right offset.
	if info := mustAppend(t, l, makeBatch("after", 2, 10, clock.Ms()), 0); info.FirstOffset != leoBefore {
		t.Fatalf("next append at %d, want %d", info.FirstOffset, leoBefore)
	}
}

func TestAppendMultipleBatchesOneWrite(t *testing.T) {
	clock := newTestClock()
	l := openLog(t, t.TempDir(), testConfig(clock))
	defer l.Close()
	var buf []byte
	for i := range 4 {
		buf = append(buf, makeBatch("m", i+1, 20, clock.Ms()+int64(i))...)
	}
	info := mustAppend(t, l, buf, 2)
	if info.FirstOffset != 0 || info.LastOffset != 9 || info.Batches != 4 || info.Records != 10 || info.Bytes != len(buf) || info.Position != 0 {
		t.Fatalf("info %+v", info)
	}
	// Offsets were assigned in place, batch by batch.
	want := []int64{0, 1, 3, 6}
	for i, b := range splitBatches(t, buf) {
		h, _ := proto.ParseRecordBatchHeader(b)
		if h.BaseOffset != want[i] || h.PartitionLeaderEpoch != 2 {
			t.Fatalf("batch %d: base %d epoch %d", i, h.BaseOffset, h.PartitionLeaderEpoch)
		}
	}
	if got := readAll(t, l, 0, l.LogEndOffset()); len(got) != 4 || !bytes.Equal(bytes.Join(got, nil), buf) {
		t.Fatalf("read back differs")
	}
}

func TestLogAppendTime(t *testing.T) {
	clock := newTestClock()
	cfg := testConfig(clock)
	cfg.TimestampType = LogAppendTime
	l := openLog(t, t.TempDir(), cfg)
	defer l.Close()
	b := makeBatch("t", 2, 10, 5)
	info := mustAppend(t, l, b, 0)
	h, err := proto.ValidateRecordBatch(b, len(b))
	if err != nil {
		t.Fatal(err)
	}
	if !h.IsLogAppendTime() || h.MaxTimestamp != clock.Ms() || info.LogAppendTime != clock.Ms() {
		t.Fatalf("header %+v info %+v", h, info)
	}
}

func TestReadLimits(t *testing.T) {
	clock := newTestClock()
	l := openLog(t, t.TempDir(), testConfig(clock))
	defer l.Close()
	var sizes []int64
	for i := range 300 {
		b := makeBatch("r", 2, 200+i%7*40, clock.Ms())
		mustAppend(t, l, b, 0)
		sizes = append(sizes, int64(len(b)))
	}
	leo := l.LogEndOffset() // 600, batches of 2 records: batch i holds offsets 2i, 2i+1
	if l.NumSegments() < 3 {
		t.Fatalf("want several segments, got %d", l.NumSegments())
	}
	total := func(rs []Region) (n int64) {
		for _, r := range rs {
			n += r.Length
		}
		return n
	}
	t.Run("starts at the batch holding the offset", func(t *testing.T) {
		for _, off := range []int64{0, 1, 77, 301, 599} {
			rs, err := l.Read(nil, off, 1, leo, true)
			if err != nil || len(rs) != 1 {
				t.Fatalf("offset %d: %v %v", off, rs, err)
			}
			if rs[0].BaseOffset != off/2*2 || rs[0].Length != sizes[off/2] || rs[0].NextOffset != off/2*2+2 {
				t.Fatalf("offset %d: region %+v, want batch %d of %d bytes", off, rs[0], off/2, sizes[off/2])
			}
			ReleaseRegions(rs)
		}
	})
	t.Run("max bytes keeps whole batches", func(t *testing.T) {
		rs, err := l.Read(nil, 10, int(sizes[5]+sizes[6]+sizes[7]-1), leo, true)
		if err != nil {
			t.Fatal(err)
		}
		if total(rs) != sizes[5]+sizes[6] || rs[len(rs)-1].NextOffset != 14 {
			t.Fatalf("got %d bytes %+v", total(rs), rs)
		}
		ReleaseRegions(rs)
	})
	t.Run("without minOneBatch a too-small limit reads nothing", func(t *testing.T) {
		rs, err := l.Read(nil, 10, int(sizes[5]-1), leo, false)
		if err != nil || len(rs) != 0 {
			t.Fatalf("got %+v %v", rs, err)
		}
	})
	t.Run("upper bound", func(t *testing.T) {
		rs, err := l.Read(nil, 0, 1<<30, 21, true) // HW 21 is inside batch 10: batches 0..9
		if err != nil {
			t.Fatal(err)
		}
		var want int64
		for _, s := range sizes[:10] {
			want += s
		}
		if total(rs) != want || rs[len(rs)-1].NextOffset != 20 {
			t.Fatalf("got %d bytes, want %d: %+v", total(rs), want, rs)
		}
		ReleaseRegions(rs)
		if rs, err := l.Read(nil, 21, 1<<20, 21, true); err != nil || len(rs) != 0 {
			t.Fatalf("read at the bound: %+v %v", rs, err)
		}
	})
	t.Run("spans segments", func(t *testing.T) {
		rs, err := l.Read(nil, 0, 1<<30, leo, true)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != l.NumSegments() || total(rs) != l.Size() || rs[len(rs)-1].NextOffset != leo {
			t.Fatalf("%d regions for %d segments, %d bytes of %d", len(rs), l.NumSegments(), total(rs), l.Size())
		}
		for i := 1; i < len(rs); i++ {
			if rs[i].BaseOffset != rs[i-1].NextOffset {
				t.Fatalf("gap between regions %d and %d", i-1, i)
			}
		}
		ReleaseRegions(rs)
	})
	t.Run("out of range", func(t *testing.T) {
		if _, err := l.Read(nil, leo+1, 100, leo+1, true); !errors.Is(err, ErrOffsetOutOfRange) {
			t.Fatalf("got %v", err)
		}
		if _, err := l.Read(nil, -1, 100, leo, true); !errors.Is(err, ErrOffsetOutOfRange) {
			t.Fatalf("got %v", err)
		}
		if rs, err := l.Read(nil, leo, 100, leo, true); err != nil || len(rs) != 0 {
			t.Fatalf("read at the log end: %+v %v", rs, err)
		}
	})
}

func TestOffsetForTimestamp(t *testing.T) {
	clock := newTestClock()
	l := openLog(t, t.TempDir(), testConfig(clock))
	defer l.Close()
	base := clock.Ms()
	// Batch i holds 3 records with timestamps base+10i .. base+10i+2; offsets 3i..3i+2.
	for i := range 400 {
		mustAppend(t, l, makeBatch("ts", 3, 100, base+int64(10*i)), 0)
	}
	check := func(l *Log) {
		t.Helper()
		for _, tc := range []struct {
			ts         int64
			wantOffset int64
			wantTs     int64
			found      bool
		}{
			{base - 1000, 0, base, true},
			{base, 0, base, true},
			{base + 2, 2, base + 2, true},
			{base + 3, 3, base + 10, true},
			{base + 1241, 3*124 + 1, base + 1241, true},
			{base + 1243, 3 * 125, base + 1250, true},
			{base + 3992, 3*399 + 2, base + 3992, true},
			{base + 3993, 0, 0, false},
		} {
			off, ts, found, err := l.OffsetForTimestamp(tc.ts)
			if err != nil || found != tc.found || (found && (off != tc.wantOffset || ts != tc.wantTs)) {
				t.Fatalf("ts %d: got (%d, %d, %v, %v), want (%d, %d, %v)", tc.ts-base, off, ts-base, found, err, tc.wantOffset, tc.wantTs-base, tc.found)
			}
		}
	}
	check(l)
	dir := l.Dir()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, testConfig(clock))
	check(l)
}

func TestTruncateTo(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	l := openLog(t, dir, testConfig(clock))
	var batches [][]byte
	for i := range 300 {
		b := makeBatch("t", 2, 250, clock.Ms()+int64(i))
		mustAppend(t, l, b, int32(i/100)) // epochs 0, 1, 2 start at offsets 0, 200, 400
		batches = append(batches, b)
	}
	segsBefore := l.NumSegments()
	// Offset 301 is inside batch 150 (offsets 300, 301): the log ends at 300.
	leo, err := l.TruncateTo(301)
	if err != nil || leo != 300 || l.LogEndOffset() != 300 {
		t.Fatalf("truncate: leo %d err %v", leo, err)
	}
	if l.NumSegments() >= segsBefore {
		t.Fatalf("segments %d, had %d", l.NumSegments(), segsBefore)
	}
	if got := l.LeaderEpochs(); len(got) != 2 || got[1] != (EpochEntry{1, 200}) {
		t.Fatalf("epochs %+v", got)
	}
	got := readAll(t, l, 0, 300)
	if len(got) != 150 || !bytes.Equal(got[149], batches[149]) {
		t.Fatalf("read %d batches after truncation", len(got))
	}
	// Appends continue at 300 with a new epoch.
	if info := mustAppend(t, l, makeBatch("n", 1, 10, clock.Ms()), 5); info.FirstOffset != 300 {
		t.Fatalf("append after truncation at %d", info.FirstOffset)
	}
	if e, end := l.EndOffsetForEpoch(1); e != 1 || end != 300 {
		t.Fatalf("end offset for epoch 1: %d %d", e, end)
	}
	if e, end := l.EndOffsetForEpoch(4); e != 1 || end != 300 {
		t.Fatalf("end offset for epoch 4 (unknown, falls back to 1): %d %d", e, end)
	}
	if e, end := l.EndOffsetForEpoch(5); e != 5 || end != 301 {
		t.Fatalf("end offset for epoch 5: %d %d", e, end)
	}
	// The truncation survives a crash and a clean reopen.
	l.crash()
	l = openLog(t, dir, testConfig(clock))
	if l.LogEndOffset() != 301 || len(l.LeaderEpochs()) != 3 {
		t.Fatalf("after crash: leo %d epochs %+v", l.LogEndOffset(), l.LeaderEpochs())
	}
	// Negative offsets are refused and change nothing.
	if _, err := l.TruncateTo(-5); !errors.Is(err, ErrOffsetOutOfRange) || l.LogEndOffset() != 301 {
		t.Fatalf("truncate to -5: %v, leo %d", err, l.LogEndOffset())
	}
	if err := l.TruncateFullyAndStartAt(-1); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatalf("start at -1: %v", err)
	}
	// A full truncation empties the log and restarts it at the offset.
	if err := l.TruncateFullyAndStartAt(1000); err != nil {
		t.Fatal(err)
	}
	if l.LogStartOffset() != 1000 || l.LogEndOffset() != 1000 || l.NumSegments() != 1 || len(l.LeaderEpochs()) != 0 {
		t.Fatalf("after full truncation: start %d end %d segs %d", l.LogStartOffset(), l.LogEndOffset(), l.NumSegments())
	}
	if info := mustAppend(t, l, makeBatch("n", 1, 10, clock.Ms()), 6); info.FirstOffset != 1000 {
		t.Fatalf("append at %d", info.FirstOffset)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRetention(t *testing.T) {
	t.Run("by size", func(t *testing.T) {
		clock := newTestClock()
		cfg := testConfig(clock)
		cfg.RetentionBytes = 150 << 10
		l := openLog(t, t.TempDir(), cfg)
		defer l.Close()
		for range 600 {
			mustAppend(t, l, makeBatch("s", 1, 1000, clock.Ms()), 0)
		}
		size, start := l.Size(), l.LogStartOffset()
		// Nothing above the upper bound goes.
		if res, err := l.DeleteRetained(0); err != nil || res.Segments != 0 {
			t.Fatalf("deleted below bound 0: %+v %v", res, err)
		}
		res, err := l.DeleteRetained(l.LogEndOffset())
		if err != nil {
			t.Fatal(err)
		}
		if res.Segments == 0 || l.Size() != size-res.Bytes || l.Size() < cfg.RetentionBytes || l.Size()-int64(cfg.SegmentBytes) >= cfg.RetentionBytes {
			t.Fatalf("deleted %+v: size %d → %d, limit %d", res, size, l.Size(), cfg.RetentionBytes)
		}
		if l.LogStartOffset() <= start || res.LogStartOffset != l.LogStartOffset() {
			t.Fatalf("log start %d → %d", start, l.LogStartOffset())
		}
		if _, err := l.Read(nil, start, 100, l.LogEndOffset(), true); !errors.Is(err, ErrOffsetOutOfRange) {
			t.Fatalf("read below the new start: %v", err)
		}
	})
	t.Run("by age including the active segment", func(t *testing.T) {
		clock := newTestClock()
		cfg := testConfig(clock)
		cfg.RetentionAge = time.Hour
		l := openLog(t, t.TempDir(), cfg)
		defer l.Close()
		for range 100 {
			mustAppend(t, l, makeBatch("a", 1, 1000, clock.Ms()), 0)
		}
		clock.Advance(30 * time.Minute)
		for range 10 {
			mustAppend(t, l, makeBatch("b", 1, 1000, clock.Ms()), 0)
		}
		if res, _ := l.DeleteRetained(l.LogEndOffset()); res.Segments != 0 {
			t.Fatalf("nothing is an hour old yet, deleted %+v", res)
		}
		clock.Advance(45 * time.Minute) // the first 100 are 75 min old, the last 10 are 45
		res, err := l.DeleteRetained(l.LogEndOffset())
		if err != nil || res.Segments == 0 {
			t.Fatalf("%+v %v", res, err)
		}
		if l.LogStartOffset() > 100 {
			t.Fatalf("deleted young records: start %d", l.LogStartOffset())
		}
		clock.Advance(time.Hour)
		leo := l.LogEndOffset()
		if _, err := l.DeleteRetained(leo); err != nil {
			t.Fatal(err)
		}
		if l.LogStartOffset() != leo || l.LogEndOffset() != leo || l.Size() != 0 {
			t.Fatalf("all expired: start %d end %d size %d, want empty at %d", l.LogStartOffset(), l.LogEndOffset(), l.Size(), leo)
		}
		if info := mustAppend(t, l, makeBatch("c", 1, 10, clock.Ms()), 0); info.FirstOffset != leo {
			t.Fatalf("append after full retention at %d", info.FirstOffset)
		}
	})
}

func TestRollByAgeAndIndexFull(t *testing.T) {
	clock := newTestClock()
	cfg := testConfig(clock)
	cfg.SegmentAge = time.Minute
	cfg.IndexIntervalBytes = 1 // an index entry per batch (after the first)
	cfg.IndexMaxBytes = minIndexMaxBytes
	l := openLog(t, t.TempDir(), cfg)
	defer l.Close()
	mustAppend(t, l, makeBatch("a", 1, 10, clock.Ms()), 0)
	clock.Advance(2 * time.Minute)
	mustAppend(t, l, makeBatch("a", 1, 10, clock.Ms()), 0)
	if n := l.NumSegments(); n != 2 {
		t.Fatalf("age roll: %d segments", n)
	}
	// minIndexMaxBytes holds 4 time-index entries and 6 offset-index entries: with a
	// rising timestamp per batch the time index fills after 4 entries, then the segment
	// rolls.
	for i := range 12 {
		mustAppend(t, l, makeBatch("b", 1, 10, clock.Ms()+int64(i)), 0)
	}
	if n := l.NumSegments(); n < 4 {
		t.Fatalf("index-full rolls: %d segments", n)
	}
	if got := readAll(t, l, 0, l.LogEndOffset()); len(got) != 14 {
		t.Fatalf("read %d batches", len(got))
	}
}

func TestFollowerAppend(t *testing.T) {
	clock := newTestClock()
	leader := openLog(t, t.TempDir(), testConfig(clock))
	defer leader.Close()
	follower := openLog(t, t.TempDir(), testConfig(clock))
	defer follower.Close()
	for i := range 50 {
		mustAppend(t, leader, makeBatch("f", 3, 100, clock.Ms()), int32(i/20))
	}
	for off := int64(0); off < leader.LogEndOffset(); {
		rs, err := leader.Read(nil, off, 4096, leader.LogEndOffset(), true)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if _, err := follower.AppendAsFollower(readRegion(t, r)); err != nil {
				t.Fatalf("follower append at %d: %v", off, err)
			}
			off = r.NextOffset
		}
		ReleaseRegions(rs)
	}
	if follower.LogEndOffset() != leader.LogEndOffset() {
		t.Fatalf("follower leo %d, leader %d", follower.LogEndOffset(), leader.LogEndOffset())
	}
	if a, b := follower.LeaderEpochs(), leader.LeaderEpochs(); len(a) != 3 || len(a) != len(b) || a[2] != b[2] {
		t.Fatalf("epochs follower %+v leader %+v", a, b)
	}
	// A batch that does not continue the log is refused.
	old := readAll(t, leader, 0, 3)[0]
	if _, err := follower.AppendAsFollower(old); !errors.Is(err, ErrInvalidAppendOffset) {
		t.Fatalf("stale follower append: %v", err)
	}
}

func TestFlushPolicies(t *testing.T) {
	t.Run("sync", func(t *testing.T) {
		clock := newTestClock()
		cfg := testConfig(clock)
		cfg.Flush.Sync = true
		l := openLog(t, t.TempDir(), cfg)
		defer l.Close()
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 25 {
					info, err := l.Append(makeBatch(fmt.Sprint(g), 1, 100, clock.Ms()), 0)
					if err != nil {
						t.Error(err)
						return
					}
					if rp := l.RecoveryPoint(); rp <= info.LastOffset {
						t.Errorf("sync append returned before its offset %d was flushed (recovery point %d)", info.LastOffset, rp)
					}
				}
			}()
		}
		wg.Wait()
	})
	t.Run("every N messages", func(t *testing.T) {
		clock := newTestClock()
		cfg := testConfig(clock)
		cfg.Flush.Messages = 10
		l := openLog(t, t.TempDir(), cfg)
		defer l.Close()
		for range 9 {
			mustAppend(t, l, makeBatch("m", 1, 10, clock.Ms()), 0)
		}
		if rp := l.RecoveryPoint(); rp != 0 {
			t.Fatalf("flushed early: recovery point %d", rp)
		}
		mustAppend(t, l, makeBatch("m", 1, 10, clock.Ms()), 0)
		if rp := l.RecoveryPoint(); rp != 10 {
			t.Fatalf("recovery point %d after 10 messages", rp)
		}
	})
	t.Run("interval", func(t *testing.T) {
		clock := newTestClock()
		cfg := testConfig(clock)
		cfg.Flush.Interval = 5 * time.Millisecond
		dir := t.TempDir()
		l := openLog(t, dir, cfg)
		defer l.Close()
		mustAppend(t, l, makeBatch("i", 4, 10, clock.Ms()), 0)
		deadline := time.Now().Add(5 * time.Second)
		for readRecoveryPoint(dir) != 4 {
			if time.Now().After(deadline) {
				t.Fatalf("interval flush never checkpointed: memory %d disk %d", l.RecoveryPoint(), readRecoveryPoint(dir))
			}
			time.Sleep(time.Millisecond)
		}
	})
	t.Run("none flushes on roll", func(t *testing.T) {
		clock := newTestClock()
		l := openLog(t, t.TempDir(), testConfig(clock))
		for range 5 {
			mustAppend(t, l, makeBatch("n", 1, 10, clock.Ms()), 0)
		}
		if err := l.Roll(); err != nil {
			t.Fatal(err)
		}
		l.bg.Wait() // the roll's background flush
		if rp := l.RecoveryPoint(); rp != 5 {
			t.Fatalf("recovery point %d after roll", rp)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestReadersSurviveWriter holds regions while the writer appends, rolls, truncates
// (with a copy, since readers hold the file) and deletes segments by retention; every
// region must keep reading exactly the bytes it named. Meaningful under -race.
func TestReadersSurviveWriter(t *testing.T) {
	clock := newTestClock()
	cfg := testConfig(clock)
	cfg.SegmentBytes = 16 << 10
	cfg.RetentionBytes = 48 << 10
	l := openLog(t, t.TempDir(), cfg)
	defer l.Close()
	// Every batch ever written at each base offset: after a truncation the offset is
	// reused, and a region taken before it keeps the older batch.
	var writtenMu sync.Mutex
	written := map[int64][][]byte{}
	appendOne := func(i int) {
		// Record the batch as it will be stored before appending it: a reader may see it
		// as soon as the write lands.
		b := makeBatch(fmt.Sprint(i), 1+i%3, 300, clock.Ms())
		off := l.LogEndOffset() // the only writer is this goroutine
		stored := append([]byte(nil), b...)
		proto.SetBaseOffset(stored, off)
		proto.SetPartitionLeaderEpoch(stored, 0)
		writtenMu.Lock()
		written[off] = append(written[off], stored)
		writtenMu.Unlock()
		if info, err := l.Append(b, 0); err != nil || info.FirstOffset != off {
			t.Errorf("append at %d: %+v %v", off, info, err)
		}
	}
	wasWritten := func(off int64, b []byte) bool {
		writtenMu.Lock()
		defer writtenMu.Unlock()
		for _, w := range written[off] {
			if bytes.Equal(w, b) {
				return true
			}
		}
		return false
	}
	for i := range 50 {
		appendOne(i)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reads atomic.Int64
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			var held []Region
			for {
				select {
				case <-stop:
					ReleaseRegions(held)
					return
				default:
				}
				start, end := l.LogStartOffset(), l.LogEndOffset()
				off := start + rng.Int64N(max(end-start, 1))
				rs, err := l.Read(nil, off, 8<<10, end, true)
				if errors.Is(err, ErrOffsetOutOfRange) {
					continue // retention or truncation moved the log meanwhile
				}
				if err != nil {
					t.Error(err)
					return
				}
				held = append(held, rs...)
				// Check an older region: its bytes must still be the batches written.
				if len(held) > 8 {
					old := held[0]
					held = held[1:]
					b := make([]byte, old.Length)
					if n, err := preadFull(old.File.Fd(), b, old.Position); err != nil || int64(n) != old.Length {
						t.Errorf("held region lost bytes: n=%d err=%v", n, err)
					}
					for len(b) > 0 {
						h, err := proto.ValidateRecordBatch(b, len(b))
						if err != nil {
							t.Errorf("held region holds a bad batch: %v", err)
							break
						}
						if !wasWritten(h.BaseOffset, b[:h.Size()]) {
							t.Errorf("held region's batch %d is not a batch written there", h.BaseOffset)
						}
						b = b[h.Size():]
					}
					old.Release()
					reads.Add(1)
				}
			}
		}()
	}
	for i := 50; i < 1500; i++ {
		appendOne(i)
		switch i % 100 {
		case 37:
			leo := l.LogEndOffset()
			if _, err := l.TruncateTo(leo - 7); err != nil {
				t.Fatal(err)
			}
		case 71:
			if _, err := l.DeleteRetained(l.LogEndOffset()); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	if reads.Load() == 0 {
		t.Fatal("readers checked nothing")
	}
}

func TestDeleteKeepsHeldRegions(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir() + "/topic-0"
	l := openLog(t, dir, testConfig(clock))
	b := makeBatch("d", 2, 100, clock.Ms())
	mustAppend(t, l, b, 0)
	rs, err := l.Read(nil, 0, 1<<20, l.LogEndOffset(), true)
	if err != nil || len(rs) != 1 {
		t.Fatalf("%v %v", rs, err)
	}
	if err := l.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("directory still there: %v", err)
	}
	if got := readRegion(t, rs[0]); !bytes.Equal(got, b) {
		t.Fatal("held region lost its bytes after Delete")
	}
	ReleaseRegions(rs)
	if _, err := l.Append(makeBatch("d", 1, 1, clock.Ms()), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after delete: %v", err)
	}
}

func TestUpdateConfig(t *testing.T) {
	clock := newTestClock()
	l := openLog(t, t.TempDir(), testConfig(clock))
	defer l.Close()
	for range 200 {
		mustAppend(t, l, makeBatch("u", 1, 1000, clock.Ms()), 0)
	}
	if res, _ := l.DeleteRetained(l.LogEndOffset()); res.Segments != 0 {
		t.Fatalf("no retention configured, deleted %+v", res)
	}
	cfg := testConfig(clock)
	cfg.RetentionBytes = 64 << 10
	cfg.TimestampType = LogAppendTime
	if err := l.UpdateConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if res, err := l.DeleteRetained(l.LogEndOffset()); err != nil || res.Segments == 0 {
		t.Fatalf("retention.bytes update not applied: %+v %v", res, err)
	}
	if info := mustAppend(t, l, makeBatch("u", 1, 10, 5), 0); info.LogAppendTime != clock.Ms() {
		t.Fatalf("timestamp type update not applied: %+v", info)
	}
	bad := cfg
	bad.SegmentBytes = -1
	if err := l.UpdateConfig(bad); err == nil {
		t.Fatal("invalid config accepted")
	}
}

// TestUpdateConfigFlushInterval: flush.ms may change on an open log: the interval flush
// starts, follows the new interval, and stops.
func TestUpdateConfigFlushInterval(t *testing.T) {
	clock := newTestClock()
	cfg := testConfig(clock)
	l := openLog(t, t.TempDir(), cfg)
	defer l.Close()
	flushedWithin := func(d time.Duration) bool {
		t.Helper()
		mustAppend(t, l, makeBatch("f", 1, 10, clock.Ms()), 0)
		for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if l.RecoveryPoint() == l.LogEndOffset() {
				return true
			}
		}
		return false
	}
	if flushedWithin(100 * time.Millisecond) {
		t.Fatal("flushed with no flush policy")
	}
	for _, d := range []time.Duration{10 * time.Millisecond, 20 * time.Millisecond} {
		c := cfg
		c.Flush.Interval = d
		if err := l.UpdateConfig(c); err != nil {
			t.Fatal(err)
		}
		if !flushedWithin(5 * time.Second) {
			t.Fatalf("no flush 5s after the interval became %v", d)
		}
	}
	if err := l.UpdateConfig(cfg); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // a tick already under way may still flush
	if flushedWithin(100 * time.Millisecond) {
		t.Fatal("flushed after the interval was removed")
	}
}

// TestUpdateConfigLimits: the batch size limit and segment size follow UpdateConfig at
// once, for Append and for the lock-free getters producers validate with; a limit below
// a batch header refuses every batch (Kafka's max.message.bytes=0). Appends run beside
// the updates, so the race detector sees the limit read outside the log's lock.
func TestUpdateConfigLimits(t *testing.T) {
	clock := newTestClock()
	cfg := testConfig(clock)
	l := openLog(t, t.TempDir(), cfg)
	defer l.Close()
	b := makeBatch("m", 1, 2000, clock.Ms())
	if l.MaxBatchBytes() != cfg.MaxBatchBytes || l.SegmentBytes() != cfg.SegmentBytes {
		t.Fatalf("limits %d %d, want %d %d", l.MaxBatchBytes(), l.SegmentBytes(), cfg.MaxBatchBytes, cfg.SegmentBytes)
	}
	done := make(chan error, 1)
	go func() {
		var err error
		c := makeBatch("c", 1, 10, clock.Ms())
		for range 1000 {
			if _, e := l.Append(c, 0); e != nil && !errors.Is(e, proto.ErrBatchTooLarge) {
				err = e
			}
		}
		done <- err
	}()
	for i := 0; ; i++ { // until the appends are done, so that the two overlap
		c := cfg
		c.MaxBatchBytes = 1 + i%2*(1<<20)
		if err := l.UpdateConfig(c); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("append beside config updates: %v", err)
			}
		default:
			continue
		}
		break
	}
	small := cfg
	small.MaxBatchBytes, small.SegmentBytes = len(b)-1, 128<<10
	if err := l.UpdateConfig(small); err != nil {
		t.Fatal(err)
	}
	if l.MaxBatchBytes() != len(b)-1 || l.SegmentBytes() != 128<<10 {
		t.Fatalf("limits %d %d after update", l.MaxBatchBytes(), l.SegmentBytes())
	}
	if _, err := l.Append(b, 0); !errors.Is(err, proto.ErrBatchTooLarge) {
		t.Fatalf("batch of %d bytes with limit %d: %v", len(b), len(b)-1, err)
	}
	small.MaxBatchBytes = len(b)
	if err := l.UpdateConfig(small); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, b, 0)
	small.MaxBatchBytes = 1
	if err := l.UpdateConfig(small); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(makeBatch("z", 1, 0, clock.Ms()), 0); !errors.Is(err, proto.ErrBatchTooLarge) {
		t.Fatalf("limit 1 accepted a batch: %v", err)
	}
	small.MaxBatchBytes = -1
	if err := l.UpdateConfig(small); err == nil {
		t.Fatal("negative max.message.bytes accepted")
	}
}

func TestScanBatchHeaders(t *testing.T) {
	clock := newTestClock()
	l := openLog(t, t.TempDir(), testConfig(clock))
	defer l.Close()
	for range 300 {
		mustAppend(t, l, makeBatch("h", 2, 300, clock.Ms()), 0)
	}
	var bases []int64
	if err := l.ScanBatchHeaders(101, func(h *proto.RecordBatchHeader) bool {
		bases = append(bases, h.BaseOffset)
		return h.BaseOffset < 400
	}); err != nil {
		t.Fatal(err)
	}
	if len(bases) != 151 || bases[0] != 100 || bases[len(bases)-1] != 400 {
		t.Fatalf("scanned %d batches %v…%v", len(bases), bases[:1], bases[len(bases)-1:])
	}
	for i := 1; i < len(bases); i++ {
		if bases[i] != bases[i-1]+2 {
			t.Fatalf("gap at %d", i)
		}
	}
}

func TestAppendValidatedParts(t *testing.T) {
	clock := newTestClock()
	l := openLog(t, t.TempDir(), testConfig(clock))
	defer l.Close()
	mustAppend(t, l, makeBatch("first", 2, 10, clock.Ms()), 0)
	parts := [][]byte{makeBatch("a", 3, 50, clock.Ms()), append(makeBatch("b", 1, 20, clock.Ms()), makeBatch("c", 2, 30, clock.Ms())...), makeBatch("d", 4, 10, clock.Ms())}
	var want []byte
	for _, p := range parts {
		if _, err := proto.ValidateRecordBatch(p, len(p)); err != nil {
			t.Fatal(err)
		}
	}
	info, err := l.AppendValidated(parts, 7)
	if err != nil {
		t.Fatal(err)
	}
	if info.FirstOffset != 2 || info.LastOffset != 11 || info.Batches != 4 || info.Records != 10 {
		t.Fatalf("info %+v", info)
	}
	for _, p := range parts {
		want = append(want, p...)
	}
	got := readAll(t, l, 2, l.LogEndOffset())
	if !bytes.Equal(bytes.Join(got, nil), want) {
		t.Fatal("parts read back differ")
	}
	if h, _ := proto.ParseRecordBatchHeader(parts[2]); h.BaseOffset != 8 || h.PartitionLeaderEpoch != 7 {
		t.Fatalf("offsets not assigned in place across parts: %+v", h)
	}
	// Header-level checks still hold for validated parts.
	if _, err := l.AppendValidated([][]byte{parts[0][:40]}, 7); !errors.Is(err, proto.ErrBatchTruncated) {
		t.Fatalf("truncated part: %v", err)
	}
}

// TestDeleteRemovesInBackground: Delete frees the directory's name at once — a log of
// the same name can be made there straight away — and the renamed directory's files go
// in the background; one left behind by a crash goes at the next RemoveDeletedDirs.
func TestDeleteRemovesInBackground(t *testing.T) {
	clock := newTestClock()
	parent := t.TempDir()
	dir := parent + "/topic-0"
	l := openLog(t, dir, testConfig(clock))
	for range 50 {
		mustAppend(t, l, makeBatch("d", 10, 1000, clock.Ms()), 0)
	}
	if err := l.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("directory still under its name: %v", err)
	}
	again := openLog(t, dir, testConfig(clock))
	if again.LogEndOffset() != 0 {
		t.Fatalf("a new log at the same name starts at %d", again.LogEndOffset())
	}
	_ = again.Close()
	leftovers := func() []string {
		entries, err := os.ReadDir(parent)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), DeletedSuffix) {
				names = append(names, e.Name())
			}
		}
		return names
	}
	testutil.CheckFor(t, 10*time.Second, func() error {
		if n := leftovers(); len(n) > 0 {
			return fmt.Errorf("still being removed: %v", n)
		}
		return nil
	})

	// A crash between the rename and the removal leaves one behind.
	crashed := parent + "/topic-1.0123456789abcdef" + DeletedSuffix
	if err := os.MkdirAll(crashed, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(crashed+"/00000000000000000000.log", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	RemoveDeletedDirs(parent)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if n := leftovers(); len(n) > 0 {
			return fmt.Errorf("left behind: %v", n)
		}
		return nil
	})
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the new log's directory went too: %v", err)
	}
}

// TestRecoveryCompletesEpochCache: a crash between a batch's write and the checkpoint
// of its new leader epoch leaves the cache without that epoch; recovery takes it from
// the batches it scans, so the log still knows the epochs it holds (a follower with no
// known epoch would skip its truncation and keep what the leader never had).
func TestRecoveryCompletesEpochCache(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	l := openLog(t, dir, testConfig(clock))
	mustAppend(t, l, makeBatch("a", 1, 100, clock.Ms()), 0)
	mustAppend(t, l, makeBatch("b", 2, 100, clock.Ms()), 2)
	l.crash()
	// The checkpoint as it was before epoch 0 was written: none.
	if err := os.Remove(filepath.Join(dir, leaderEpochFile)); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, testConfig(clock))
	defer l.Close()
	want := []EpochEntry{{0, 0}, {2, 1}}
	if got := l.LeaderEpochs(); !slices.Equal(got, want) {
		t.Fatalf("epochs after recovery %+v, want %+v", got, want)
	}
	if e, end := l.EndOffsetForEpoch(0); e != 0 || end != 1 {
		t.Fatalf("end offset for epoch 0: %d %d", e, end)
	}
}

// TestEndOffsetForOlderEpoch: an epoch older than any the cache knows ended where the
// first known one starts (Kafka's answer), so that a follower holding records of it
// truncates them; with no epoch known, the answer is undefined.
func TestEndOffsetForOlderEpoch(t *testing.T) {
	clock := newTestClock()
	l := openLog(t, t.TempDir(), testConfig(clock))
	defer l.Close()
	if e, end := l.EndOffsetForEpoch(0); e != -1 || end != -1 {
		t.Fatalf("empty cache: %d %d", e, end)
	}
	mustAppend(t, l, makeBatch("a", 3, 100, clock.Ms()), 3)
	if e, end := l.EndOffsetForEpoch(1); e != 1 || end != 0 {
		t.Fatalf("epoch 1 before the first known (3 at 0): %d %d, want 1 0", e, end)
	}
	if e, end := l.EndOffsetForEpoch(-1); e != -1 || end != -1 {
		t.Fatalf("undefined epoch: %d %d", e, end)
	}
	if e, end := l.EndOffsetForEpoch(3); e != 3 || end != 3 {
		t.Fatalf("latest epoch: %d %d", e, end)
	}
}

// TestFsyncJournal: the fault-injection journal records, in order, what a power loss
// would keep: a new log's directory is created and its parent synced before anything in
// it, a new segment's name made durable by its directory's sync, and each sync with the
// size it covered — never more than a truncation that raced it left.
func TestFsyncJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), FsyncJournalFile)
	if err := EnableFsyncJournal(path); err != nil {
		t.Fatal(err)
	}
	defer func() {
		j := syncJournal
		syncJournal = nil
		_ = j.f.Close()
	}()
	parent := t.TempDir()
	dir := filepath.Join(parent, "t-0")
	cfg := testConfig(newTestClock())
	cfg.Flush.Sync = true
	l := openLog(t, dir, cfg)
	b := makeBatch("j", 1, 100, 0)
	mustAppend(t, l, b, 0)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	logPath := segmentName(dir, 0, logSuffix)
	j := syncJournal
	tok := j.syncToken()
	j.truncated("x", 5)
	j.synced("x", 10, tok, 0)
	tok = j.syncToken()
	j.synced("x", 10, tok, 0)
	// A sync of a file that a rename replaced meanwhile (a truncation by copy) records
	// nothing: the name holds another file now.
	var st unix.Stat_t
	if err := unix.Stat(logPath, &st); err != nil {
		t.Fatal(err)
	}
	j.synced(logPath, 999, j.syncToken(), st.Ino+1)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if strings.Contains(string(data), " 999\n") {
		t.Fatalf("a sync of a replaced file was journaled:\n%s", data)
	}
	want := []string{"create " + dir, "dirsync " + parent, "create " + logPath, "dirsync " + dir,
		fmt.Sprintf("sync %s %d", logPath, len(b)), "trunc x 5", "sync x 5", "sync x 10"}
	i := 0
	for _, line := range lines {
		if i < len(want) && line == want[i] {
			i++
		}
	}
	if i < len(want) {
		t.Fatalf("journal lacks %q in order; it is:\n%s", want[i], data)
	}
}
