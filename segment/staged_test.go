package segment

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/proto"
)

// stageBytes stages b as a follower append, written in pieces of at most piece bytes
// as a splice would.
func stageBytes(t *testing.T, l *Log, b []byte, piece int) *StagedAppend {
	t.Helper()
	st, err := l.StageFollowerAppend(len(b))
	if err != nil {
		t.Fatalf("stage %d bytes: %v", len(b), err)
	}
	for rest := b; len(rest) > 0; {
		k := min(piece, len(rest))
		if err := st.Write(func(fd int, off *int64) error {
			if err := pwriteFull(fd, rest[:k], *off); err != nil {
				return err
			}
			*off += int64(k)
			return nil
		}); err != nil {
			t.Fatalf("staged write: %v", err)
		}
		rest = rest[k:]
	}
	return st
}

// dirFiles is every file of a log's directory by name, with its bytes.
func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

// leaderChunks fills a leader log (several epochs, small segments) and returns what a
// follower fetches from it: runs of whole batches of at most maxBytes.
func leaderChunks(t *testing.T, clock *testClock, maxBytes int) [][]byte {
	t.Helper()
	leader := openLog(t, t.TempDir(), testConfig(clock))
	defer leader.Close()
	for i := range 600 {
		mustAppend(t, leader, makeBatch("s", 1+i%5, 50+i%300, clock.Ms()), int32(i/150))
	}
	var chunks [][]byte
	for off := int64(0); off < leader.LogEndOffset(); {
		rs, err := leader.Read(nil, off, maxBytes, leader.LogEndOffset(), true)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			chunks = append(chunks, readRegion(t, r))
			off = r.NextOffset
		}
		ReleaseRegions(rs)
	}
	return chunks
}

// TestStagedAppendMatchesCopy: a follower that stages each fetched run in the segment
// and commits it ends with the same files — segments (rolled at the same places),
// indexes, leader-epoch checkpoint — as one that appends the same runs from a buffer.
func TestStagedAppendMatchesCopy(t *testing.T) {
	clock := newTestClock()
	chunks := leaderChunks(t, clock, 9000)
	copyDir, stageDir := t.TempDir(), t.TempDir()
	byCopy, byStage := openLog(t, copyDir, testConfig(clock)), openLog(t, stageDir, testConfig(clock))
	var seen []int64
	for i, c := range chunks {
		want, err := byCopy.AppendAsFollower(c)
		if err != nil {
			t.Fatalf("copy append %d: %v", i, err)
		}
		st := stageBytes(t, byStage, c, 1000+i*37%5000)
		var batches int
		got, err := st.Commit(func(b []byte) {
			seen = append(seen, baseOffsetOf(b))
			batches = len(splitBatches(t, b))
		})
		if err != nil {
			t.Fatalf("staged append %d: %v", i, err)
		}
		if got != want || batches != want.Batches {
			t.Fatalf("append %d: staged %+v (%d batches seen), copied %+v", i, got, batches, want)
		}
	}
	if byStage.NumSegments() < 3 {
		t.Fatalf("only %d segments: the test wants rolls", byStage.NumSegments())
	}
	if a, b := byStage.LeaderEpochs(), byCopy.LeaderEpochs(); len(a) != 4 || len(a) != len(b) || a[3] != b[3] {
		t.Fatalf("epochs staged %+v, copied %+v", a, b)
	}
	if !sort.SliceIsSorted(seen, func(i, j int) bool { return seen[i] < seen[j] }) || len(seen) != len(chunks) {
		t.Fatalf("committed callbacks saw %v", seen)
	}
	if err := byCopy.Close(); err != nil {
		t.Fatal(err)
	}
	if err := byStage.Close(); err != nil {
		t.Fatal(err)
	}
	a, b := dirFiles(t, stageDir), dirFiles(t, copyDir)
	if len(a) != len(b) {
		t.Fatalf("staged log has %d files, copied %d", len(a), len(b))
	}
	for name, data := range b {
		if !bytes.Equal(a[name], data) {
			t.Fatalf("%s differs: %d bytes staged, %d copied", name, len(a[name]), len(data))
		}
	}
}

// TestStagedAppendRefusals: staged bytes that fail validation (a flipped bit, offsets
// that do not follow the log end, fewer bytes than staged) are refused with the copy
// path's errors, and nothing of them stays: not in the log, not in the file.
func TestStagedAppendRefusals(t *testing.T) {
	clock := newTestClock()
	chunks := leaderChunks(t, clock, 4000)
	l := openLog(t, t.TempDir(), testConfig(clock))
	defer l.Close()
	if _, err := l.AppendAsFollower(chunks[0]); err != nil {
		t.Fatal(err)
	}
	path := l.active().file.path
	size := fileSize(t, path)
	leo := l.LogEndOffset()
	unchanged := func(what string) {
		t.Helper()
		if l.LogEndOffset() != leo || fileSize(t, path) != size || l.staging != nil {
			t.Fatalf("%s: log end %d (want %d), file %d bytes (want %d)", what, l.LogEndOffset(), leo, fileSize(t, path), size)
		}
	}

	bad := append([]byte(nil), chunks[1]...)
	bad[len(bad)-1] ^= 1
	st := stageBytes(t, l, bad, 700)
	if _, err := st.Commit(nil); !errors.Is(err, proto.ErrBatchCRC) {
		t.Fatalf("corrupt staged batch: %v", err)
	}
	unchanged("corrupt batch")

	st = stageBytes(t, l, chunks[0], 700)
	if _, err := st.Commit(nil); !errors.Is(err, ErrInvalidAppendOffset) {
		t.Fatalf("stale staged batch: %v", err)
	}
	unchanged("stale batch")

	st, err := l.StageFollowerAppend(len(chunks[1]))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Commit(nil); err == nil {
		t.Fatal("commit of nothing staged succeeded")
	}
	unchanged("short stage")

	st = stageBytes(t, l, chunks[1][:len(chunks[1])/2], 700)
	st.Abort()
	unchanged("aborted")

	if _, err := l.AppendAsFollower(chunks[1]); err != nil {
		t.Fatalf("append after the refusals: %v", err)
	}
}

// TestStagedAppendOvertaken: a staged append that another change to the log overtakes
// (a truncation, another append, Close) loses its bytes: its writes and commit fail
// with ErrStagingLost and the log is exactly what the other change made it.
func TestStagedAppendOvertaken(t *testing.T) {
	clock := newTestClock()
	chunks := leaderChunks(t, clock, 4000)
	for _, tc := range []struct {
		name  string
		other func(l *Log) error
	}{
		{"truncate", func(l *Log) error { _, err := l.TruncateTo(1); return err }},
		{"append", func(l *Log) error { _, err := l.AppendAsFollower(chunks[1]); return err }},
		{"restage", func(l *Log) error { _, err := l.StageFollowerAppend(10); return err }},
		{"roll", func(l *Log) error { return l.Roll() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := openLog(t, t.TempDir(), testConfig(clock))
			defer l.Close()
			if _, err := l.AppendAsFollower(chunks[0]); err != nil {
				t.Fatal(err)
			}
			st := stageBytes(t, l, chunks[1][:100], 100)
			if err := tc.other(l); err != nil {
				t.Fatal(err)
			}
			if err := st.Write(func(int, *int64) error { t.Fatal("write after being overtaken"); return nil }); !errors.Is(err, ErrStagingLost) {
				t.Fatalf("write: %v", err)
			}
			if _, err := st.Commit(nil); !errors.Is(err, ErrStagingLost) {
				t.Fatalf("commit: %v", err)
			}
			s := l.active()
			if got := fileSize(t, s.file.path); got != s.size {
				t.Fatalf("active segment file %d bytes, log size %d", got, s.size)
			}
		})
	}
	// Close cuts staged bytes: the next open finds a clean log.
	dir := t.TempDir()
	l := openLog(t, dir, testConfig(clock))
	if _, err := l.AppendAsFollower(chunks[0]); err != nil {
		t.Fatal(err)
	}
	st := stageBytes(t, l, chunks[1], 100)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Commit(nil); !errors.Is(err, ErrStagingLost) {
		t.Fatalf("commit after close: %v", err)
	}
	l = openLog(t, dir, testConfig(clock))
	defer l.Close()
	if got := readAll(t, l, 0, l.LogEndOffset()); len(got) != len(splitBatches(t, chunks[0])) {
		t.Fatalf("reopened log holds %d batches", len(got))
	}
}

// TestStagedAppendRelocates: a roll that only shows at commit (here the segment's age)
// puts the committed batches in a new segment, written again there, and cuts them
// from the old one.
func TestStagedAppendRelocates(t *testing.T) {
	clock := newTestClock()
	chunks := leaderChunks(t, clock, 4000)
	cfg := testConfig(clock)
	cfg.SegmentAge = time.Minute
	l := openLog(t, t.TempDir(), cfg)
	defer l.Close()
	if _, err := l.AppendAsFollower(chunks[0]); err != nil {
		t.Fatal(err)
	}
	old := l.active()
	st := stageBytes(t, l, chunks[1], 1000)
	clock.Advance(2 * time.Minute)
	info, err := st.Commit(nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.NumSegments() != 2 || info.SegmentBaseOffset != l.active().baseOffset || info.Position != 0 {
		t.Fatalf("relocated append: %+v, %d segments", info, l.NumSegments())
	}
	if got := fileSize(t, old.file.path); got != old.size {
		t.Fatalf("old segment file %d bytes, its size %d", got, old.size)
	}
	want := append(splitBatches(t, chunks[0]), splitBatches(t, chunks[1])...)
	got := readAll(t, l, 0, l.LogEndOffset())
	if len(got) != len(want) {
		t.Fatalf("%d batches, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("batch %d differs", i)
		}
	}
}
