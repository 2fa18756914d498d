package segment

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestIncrementLogStartOffset moves the log start into the middle of a segment and
// past several, as DeleteRecords does: reads below it are out of range, the segments
// wholly below it are gone, the leader-epoch cache starts there, time lookups answer
// nothing below it, and the start survives a clean reopen and a crash.
func TestIncrementLogStartOffset(t *testing.T) {
	for _, stop := range []string{"close", "crash"} {
		t.Run(stop, func(t *testing.T) {
			clock := newTestClock()
			dir := t.TempDir()
			l := openLog(t, dir, testConfig(clock))
			for i := range 300 {
				mustAppend(t, l, makeBatch("r", 1, 1000, clock.Ms()), int32(i/100))
			}
			segments := l.NumSegments()
			if segments < 4 {
				t.Fatalf("%d segments: the test needs several", segments)
			}
			bases := l.SegmentBaseOffsets()
			target := bases[2] + 3 // inside the third segment
			if got, err := l.IncrementLogStartOffset(target); err != nil || got != target {
				t.Fatalf("increment to %d: %d %v", target, got, err)
			}
			if l.LogStartOffset() != target || l.SegmentBaseOffsets()[0] != bases[2] {
				t.Fatalf("start %d, segments %v; want start %d, first segment %d", l.LogStartOffset(), l.SegmentBaseOffsets(), target, bases[2])
			}
			if got, _ := l.IncrementLogStartOffset(target - 1); got != target {
				t.Fatalf("a lower start moved it back to %d", got)
			}
			if _, err := l.IncrementLogStartOffset(l.LogEndOffset() + 1); !errors.Is(err, ErrOffsetOutOfRange) {
				t.Fatalf("past the log end: %v", err)
			}
			if _, err := l.Read(nil, target-1, 1<<20, l.LogEndOffset(), true); !errors.Is(err, ErrOffsetOutOfRange) {
				t.Fatalf("read below the start: %v", err)
			}
			if b := readAll(t, l, target, l.LogEndOffset()); len(b) == 0 || baseOffsetOf(b[0]) != target {
				t.Fatalf("read at the start: %d batches", len(b))
			}
			if off, _, found, err := l.OffsetForTimestamp(0); err != nil || !found || off != target {
				t.Fatalf("time lookup from 0: %d %v %v, want the start %d", off, found, err, target)
			}
			if e := l.LeaderEpochs(); len(e) == 0 || e[0].StartOffset != target {
				t.Fatalf("leader epochs %v do not start at %d", e, target)
			}
			leo := l.LogEndOffset()
			if stop == "close" {
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
			} else {
				l.crash()
			}
			l = openLog(t, dir, testConfig(clock))
			defer l.Close()
			if l.LogStartOffset() != target || l.LogEndOffset() != leo {
				t.Fatalf("reopened: start %d end %d, want %d %d", l.LogStartOffset(), l.LogEndOffset(), target, leo)
			}
			if _, err := l.Read(nil, target-1, 1<<20, leo, true); !errors.Is(err, ErrOffsetOutOfRange) {
				t.Fatalf("reopened, read below the start: %v", err)
			}
			// The whole log: the active segment stays (it takes the next append), but
			// nothing in it is readable.
			if got, err := l.IncrementLogStartOffset(leo); err != nil || got != leo || l.NumSegments() != 1 {
				t.Fatalf("to the end: %d %v, %d segments", got, err, l.NumSegments())
			}
			if info := mustAppend(t, l, makeBatch("n", 1, 10, clock.Ms()), 3); info.FirstOffset != leo || info.LogStartOffset != leo {
				t.Fatalf("append after deleting everything: %+v", info)
			}
		})
	}
}

// TestLogStartOffsetAndTruncation: a truncation below the log start lowers it (Kafka's
// truncateTo), a full truncation starts it at the new offset, and a checkpointed start
// past the recovered log end (a crash took the tail) starts the log empty there.
func TestLogStartOffsetAndTruncation(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	l := openLog(t, dir, testConfig(clock))
	for range 200 {
		mustAppend(t, l, makeBatch("t", 1, 1000, clock.Ms()), 0)
	}
	bases := l.SegmentBaseOffsets()
	if _, err := l.IncrementLogStartOffset(bases[1] + 10); err != nil {
		t.Fatal(err)
	}
	if leo, err := l.TruncateTo(bases[1] + 5); err != nil || leo != bases[1]+5 || l.LogStartOffset() != leo {
		t.Fatalf("truncate below the start: end %d start %d %v", leo, l.LogStartOffset(), err)
	}
	if err := l.TruncateFullyAndStartAt(500); err != nil || l.LogStartOffset() != 500 {
		t.Fatalf("full truncation: start %d %v", l.LogStartOffset(), err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, testConfig(clock))
	if l.LogStartOffset() != 500 || l.LogEndOffset() != 500 {
		t.Fatalf("reopened at %d..%d, want 500", l.LogStartOffset(), l.LogEndOffset())
	}
	mustAppend(t, l, makeBatch("u", 5, 10, clock.Ms()), 1)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// A checkpoint past the end, as a crash that lost the tail leaves it.
	if err := writeLogStartOffset(dir, 600); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, testConfig(clock))
	defer l.Close()
	if l.LogStartOffset() != 600 || l.LogEndOffset() != 600 {
		t.Fatalf("start past the end: reopened at %d..%d, want 600", l.LogStartOffset(), l.LogEndOffset())
	}
	if _, err := os.Stat(filepath.Join(dir, logStartOffsetFile)); err != nil {
		t.Fatal(err)
	}
}

// TestRetentionDeletesBelowLogStart: a segment wholly below the log start is deleted
// by the retention pass even when no retention setting would take it.
func TestRetentionDeletesBelowLogStart(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	l := openLog(t, dir, testConfig(clock))
	defer l.Close()
	for range 200 {
		mustAppend(t, l, makeBatch("k", 1, 1000, clock.Ms()), 0)
	}
	bases := l.SegmentBaseOffsets()
	// Move the start as a checkpoint found at open does, without the deletion.
	l.logStartOffset.Store(bases[2])
	res, err := l.DeleteRetained(l.LogEndOffset())
	if err != nil || res.Segments != 2 || res.LogStartOffset != bases[2] || l.SegmentBaseOffsets()[0] != bases[2] {
		t.Fatalf("%+v %v, segments %v", res, err, l.SegmentBaseOffsets())
	}
}
