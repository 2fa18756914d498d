package segment

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gregor-streaming/gregor/proto"
)

// The crash cases: mid-append, mid-roll, mid-checkpoint, torn tail, flipped bit, lost index. Each writes the same log (fixture), stops it
// (crash: as SIGKILL, page cache kept; or a clean Close), damages the files as a crash or
// a disk would, reopens and asserts the exact recovered state: the log end offset, the
// batches read back byte for byte (a prefix of what was written), the indexes usable at
// every batch, the leader epochs, and that the next Append continues at the log end.

// fixture is a log written by writeFixture, with where each batch landed.
type fixture struct {
	dir     string
	cfg     Config
	clock   *testClock
	batches [][]byte // as stored: offsets and epochs assigned
	segBase []int64  // segBase[i]: base offset of the segment holding batch i
	pos     []int64  // pos[i]: byte position of batch i in its segment
	bases   []int64  // the segments' base offsets when the log was stopped
	leo     int64
}

// fixtureBatches is how many batches writeFixture appends: with fixtureConfig, about
// seven segments.
const fixtureBatches = 120

// fixtureConfig has 8 KiB segments, so the fixture spans several.
func fixtureConfig(clock *testClock) Config {
	cfg := testConfig(clock)
	cfg.SegmentBytes = 8 << 10
	cfg.IndexIntervalBytes = 256
	return cfg
}

// writeFixture appends fixtureBatches batches, one per Append: batch i holds 1+i%4
// records of 40+37*(i%11) bytes, timestamps from base+10i (so every batch's
// timestamps lie above the previous batch's), leader epoch i/40. The log is left open.
func writeFixture(t *testing.T, cfg Config, clock *testClock) (*Log, *fixture) {
	t.Helper()
	f := &fixture{dir: t.TempDir(), cfg: cfg, clock: clock}
	l := openLog(t, f.dir, cfg)
	base := clock.Ms()
	for i := range fixtureBatches {
		b := makeBatch(fmt.Sprint("fx", i), 1+i%4, 40+37*(i%11), base+int64(10*i))
		info := mustAppend(t, l, b, int32(i/40))
		f.batches = append(f.batches, b)
		f.segBase = append(f.segBase, info.SegmentBaseOffset)
		f.pos = append(f.pos, info.Position)
	}
	// The background flushes of the rolls move the recovery point on disk up to the
	// active segment; a crash() may overtake them, so wait to make the starting state
	// the same every run.
	l.bg.Wait()
	f.bases = l.SegmentBaseOffsets()
	f.leo = l.LogEndOffset()
	if len(f.bases) < 6 {
		t.Fatalf("fixture has %d segments, want at least 6", len(f.bases))
	}
	return l, f
}

// batchesIn returns the indexes (into f.batches) of the batches of segment k.
func (f *fixture) batchesIn(k int) []int {
	var out []int
	for i, b := range f.segBase {
		if b == f.bases[k] {
			out = append(out, i)
		}
	}
	return out
}

func (f *fixture) path(base int64, suffix string) string { return segmentName(f.dir, base, suffix) }

// scansFrom is how many segments an unclean open scans when nothing is cut: those from
// the one holding the recovery point rp on.
func scansFrom(bases []int64, rp int64) int64 {
	from := 0
	for i, b := range bases {
		if b <= rp {
			from = i
		}
	}
	return int64(len(bases) - from)
}

func nextOffsetOf(b []byte) int64 {
	h, err := proto.ParseRecordBatchHeader(b)
	if err != nil {
		panic(err)
	}
	return h.NextOffset()
}

func maxTimestampOf(b []byte) int64 {
	h, err := proto.ParseRecordBatchHeader(b)
	if err != nil {
		panic(err)
	}
	return h.MaxTimestamp
}

func epochOf(b []byte) int32 { return int32(binary.BigEndian.Uint32(b[12:])) }

// wantEpochs is the leader-epoch cache of a log of leader-appended batches: an entry
// where each epoch first appears.
func wantEpochs(batches [][]byte) []EpochEntry {
	var out []EpochEntry
	for _, b := range batches {
		if e := epochOf(b); len(out) == 0 || out[len(out)-1].Epoch != e {
			out = append(out, EpochEntry{Epoch: e, StartOffset: baseOffsetOf(b)})
		}
	}
	return out
}

// checkRecovered asserts that l holds exactly want, starting at start: log start and
// end offsets, every batch byte for byte, Read at each batch's first, middle and last
// offsets (the indexes lead to it), OffsetForTimestamp at each batch's largest
// timestamp (batches' timestamps must increase), the leader epochs; then that an Append
// continues at the log end and reads back.
func checkRecovered(t *testing.T, l *Log, want [][]byte, start int64) {
	t.Helper()
	leo := start
	if len(want) > 0 {
		leo = nextOffsetOf(want[len(want)-1])
	}
	if got := l.LogStartOffset(); got != start {
		t.Fatalf("log start offset %d, want %d", got, start)
	}
	if got := l.LogEndOffset(); got != leo {
		t.Fatalf("log end offset %d, want %d (%d batches)", got, leo, len(want))
	}
	got := readAll(t, l, start, leo)
	if len(got) != len(want) {
		t.Fatalf("read back %d batches, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("batch %d (offset %d) differs from what was written", i, baseOffsetOf(want[i]))
		}
	}
	for i, b := range want {
		base, next := baseOffsetOf(b), nextOffsetOf(b)
		for _, off := range []int64{base, (base + next - 1) / 2, next - 1} {
			rs, err := l.Read(nil, off, 1, leo, true)
			if err != nil || len(rs) != 1 {
				t.Fatalf("read at %d (batch %d): %+v %v", off, i, rs, err)
			}
			if rs[0].BaseOffset != base || rs[0].NextOffset != next || !bytes.Equal(readRegion(t, rs[0]), b) {
				t.Fatalf("read at %d: region %+v, want batch %d [%d, %d)", off, rs[0], i, base, next)
			}
			ReleaseRegions(rs)
		}
		// makeBatch's record j has timestamp baseTimestamp+j: each is found exactly.
		baseTs := int64(binary.BigEndian.Uint64(b[27:]))
		for j := range next - base {
			off, ts, found, err := l.OffsetForTimestamp(baseTs + j)
			if err != nil || !found || off != base+j || ts != baseTs+j {
				t.Fatalf("offset for timestamp of batch %d record %d: (%d, %d, %v, %v), want (%d, %d)", i, j, off, ts, found, err, base+j, baseTs+j)
			}
		}
	}
	if len(want) > 0 {
		ts := maxTimestampOf(want[len(want)-1]) + 1
		if off, _, found, err := l.OffsetForTimestamp(ts); err != nil || found {
			t.Fatalf("offset for a timestamp past the log: %d %v %v", off, found, err)
		}
	}
	if got, w := l.LeaderEpochs(), wantEpochs(want); !slices.Equal(got, w) {
		t.Fatalf("leader epochs %+v, want %+v", got, w)
	}
	// The log goes on at its end.
	epoch := max(l.LatestEpoch(), 0)
	b := makeBatch("after", 2, 30, maxTimestampOfAll(want)+100)
	info := mustAppend(t, l, b, epoch)
	if info.FirstOffset != leo || l.LogEndOffset() != leo+2 {
		t.Fatalf("append after recovery at %d (leo now %d), want %d", info.FirstOffset, l.LogEndOffset(), leo)
	}
	if got := readAll(t, l, start, leo+2); len(got) != len(want)+1 || !bytes.Equal(got[len(got)-1], b) {
		t.Fatalf("append after recovery does not read back (%d batches)", len(got))
	}
}

func maxTimestampOfAll(batches [][]byte) int64 {
	ts := int64(0)
	for _, b := range batches {
		ts = max(ts, maxTimestampOf(b))
	}
	return ts
}

// readRaw returns the bytes of the whole log through Read without validating them.
func readRaw(t *testing.T, l *Log) []byte {
	t.Helper()
	rs, err := l.Read(nil, l.LogStartOffset(), 1<<30, l.LogEndOffset(), true)
	if err != nil {
		t.Fatal(err)
	}
	defer ReleaseRegions(rs)
	var out []byte
	for _, r := range rs {
		out = append(out, readRegion(t, r)...)
	}
	return out
}

func flipBit(t *testing.T, path string, pos int64, mask byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, pos); err != nil {
		t.Fatalf("read %s at %d: %v", path, pos, err)
	}
	b[0] ^= mask
	if _, err := f.WriteAt(b, pos); err != nil {
		t.Fatal(err)
	}
}

func appendToFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func truncateFile(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// outcome is what Open must make of a damaged fixture.
type outcome struct {
	keep  [2]int // the recovered log is batches[keep[0]:keep[1]]
	scans int64  // segments scanned by Open
	check func(t *testing.T, l *Log)
}

func TestRecovery(t *testing.T) {
	cases := []struct {
		name  string
		clean bool // stop with Close instead of crash
		// damage changes the stopped log's files and says what Open must make of them.
		damage func(t *testing.T, f *fixture) outcome
	}{
		{
			name: "torn tail",
			damage: func(t *testing.T, f *fixture) outcome {
				active := f.path(f.bases[len(f.bases)-1], logSuffix)
				size := fileSize(t, active)
				torn := makeBatch("torn", 3, 200, f.clock.Ms())
				proto.SetBaseOffset(torn, f.leo)
				appendToFile(t, active, torn[:len(torn)/2])
				return outcome{
					keep:  [2]int{0, fixtureBatches},
					scans: scansFrom(f.bases, readRecoveryPoint(f.dir)),
					check: func(t *testing.T, l *Log) {
						if got := fileSize(t, active); got != size {
							t.Fatalf("active segment is %d bytes, want the torn half cut back to %d", got, size)
						}
					},
				}
			},
		},
		{
			name: "flipped bit in the middle of the last segment",
			damage: func(t *testing.T, f *fixture) outcome {
				last := f.batchesIn(len(f.bases) - 1)
				i := last[len(last)/2]
				flipBit(t, f.path(f.segBase[i], logSuffix), f.pos[i]+int64(len(f.batches[i]))/2, 0x10)
				return outcome{keep: [2]int{0, i}, scans: 1}
			},
		},
		{
			// A segment in the scanned range that is not the last: it is cut at the bad
			// batch and every later segment is deleted.
			name: "flipped bit in the scanned range below the last segment",
			damage: func(t *testing.T, f *fixture) outcome {
				// The recovery point in segment 1: segments 1.. are scanned.
				if err := writeRecoveryPoint(f.dir, f.bases[1]+1); err != nil {
					t.Fatal(err)
				}
				seg := f.batchesIn(2)
				i := seg[len(seg)/2]
				flipBit(t, f.path(f.segBase[i], logSuffix), f.pos[i]+proto.RecordBatchHeaderSize+3, 0x01)
				return outcome{
					keep:  [2]int{0, i},
					scans: 2, // segment 1 passes, segment 2 is cut: the rest are not scanned but deleted
					check: func(t *testing.T, l *Log) {
						if got := l.SegmentBaseOffsets(); !slices.Equal(got, f.bases[:3]) {
							t.Fatalf("segments %v, want %v", got, f.bases[:3])
						}
						for _, base := range f.bases[3:] {
							for _, suffix := range []string{logSuffix, indexSuffix, timeIndexSuffix} {
								if exists(f.path(base, suffix)) {
									t.Fatalf("%s of a segment after the cut survived", filepath.Base(f.path(base, suffix)))
								}
							}
						}
					},
				}
			},
		},
		{
			name: "flipped bit in a batch header length",
			damage: func(t *testing.T, f *fixture) outcome {
				last := f.batchesIn(len(f.bases) - 1)
				i := last[1]
				flipBit(t, f.path(f.segBase[i], logSuffix), f.pos[i]+9, 0x40) // batchLength grows by 4 MiB
				return outcome{keep: [2]int{0, i}, scans: 1}
			},
		},
		{
			name: "deleted .index of an old segment",
			damage: func(t *testing.T, f *fixture) outcome {
				return rebuiltIndex(t, f, indexSuffix, func(path string) {
					if err := os.Remove(path); err != nil {
						t.Fatal(err)
					}
				})
			},
		},
		{
			name: "deleted .timeindex of an old segment",
			damage: func(t *testing.T, f *fixture) outcome {
				return rebuiltIndex(t, f, timeIndexSuffix, func(path string) {
					if err := os.Remove(path); err != nil {
						t.Fatal(err)
					}
				})
			},
		},
		{
			name:  "garbage .index of an old segment, clean stop",
			clean: true,
			damage: func(t *testing.T, f *fixture) outcome {
				return rebuiltIndex(t, f, indexSuffix, func(path string) { writeGarbage(t, path, 1) })
			},
		},
		{
			name: "garbage .timeindex of an old segment",
			damage: func(t *testing.T, f *fixture) outcome {
				return rebuiltIndex(t, f, timeIndexSuffix, func(path string) { writeGarbage(t, path, 2) })
			},
		},
		{
			// A shorter index is a valid, sparser index: it passes the check (its last
			// entry leads to a batch) and is kept; reads walk further from its last entry.
			name:  "truncated .index of an old segment",
			clean: true,
			damage: func(t *testing.T, f *fixture) outcome {
				path := f.path(f.bases[1], indexSuffix)
				orig := readFile(t, path)
				if len(orig) < 4*offsetIndexEntrySize {
					t.Fatalf("index of segment 1 has %d bytes, too few entries to cut", len(orig))
				}
				truncateFile(t, path, int64(len(orig)/2))
				return outcome{keep: [2]int{0, fixtureBatches}, scans: 0}
			},
		},
		{
			// A time index that lost its last entries would understate the segment's
			// largest timestamp: its last entry no longer reaches the timestamp of the
			// batch at the offset index's last entry, so it is rebuilt.
			name:  "truncated .timeindex of an old segment",
			clean: true,
			damage: func(t *testing.T, f *fixture) outcome {
				return rebuiltIndex(t, f, timeIndexSuffix, func(path string) { truncateFile(t, path, fileSize(t, path)/2) })
			},
		},
		{
			// Open checks only an index's last entry. A damaged entry before it — here the
			// first entry's offset zeroed, which keeps the entries increasing — is caught
			// when a read uses it, and the read scans the segment from its start instead.
			name:  "zeroed entry inside an old segment's .index",
			clean: true,
			damage: func(t *testing.T, f *fixture) outcome {
				path := f.path(f.bases[1], indexSuffix)
				b := readFile(t, path)
				if len(b) < 2*offsetIndexEntrySize {
					t.Fatalf("index of segment 1 has %d bytes: too few entries", len(b))
				}
				clear(b[:4])
				writeFile(t, path, b)
				return outcome{keep: [2]int{0, fixtureBatches}, scans: 0}
			},
		},
		{
			// The same for the time index: a lowered timestamp in its first entry.
			name:  "lowered timestamp inside an old segment's .timeindex",
			clean: true,
			damage: func(t *testing.T, f *fixture) outcome {
				path := f.path(f.bases[1], timeIndexSuffix)
				b := readFile(t, path)
				if len(b) < 2*timeIndexEntrySize {
					t.Fatalf("time index of segment 1 has %d bytes: too few entries", len(b))
				}
				binary.BigEndian.PutUint64(b, binary.BigEndian.Uint64(b)-25)
				writeFile(t, path, b)
				return outcome{keep: [2]int{0, fixtureBatches}, scans: 0}
			},
		},
		{
			// Crash between roll steps (a): the old segment's indexes were never trimmed.
			// Below the recovery point they are trusted: the zero entries are not counted.
			name: "untrimmed preallocated indexes of a non-active segment",
			damage: func(t *testing.T, f *fixture) outcome {
				for _, suffix := range []string{indexSuffix, timeIndexSuffix} {
					truncateFile(t, f.path(f.bases[1], suffix), int64(f.cfg.IndexMaxBytes))
				}
				return outcome{keep: [2]int{0, fixtureBatches}, scans: scansFrom(f.bases, readRecoveryPoint(f.dir))}
			},
		},
		{
			// The same in the scanned range: rebuilt, and trimmed back to the entries.
			name: "untrimmed preallocated indexes of a scanned non-active segment",
			damage: func(t *testing.T, f *fixture) outcome {
				if err := writeRecoveryPoint(f.dir, f.bases[1]); err != nil {
					t.Fatal(err)
				}
				orig := map[string][]byte{}
				for _, suffix := range []string{indexSuffix, timeIndexSuffix} {
					path := f.path(f.bases[1], suffix)
					orig[path] = readFile(t, path)
					truncateFile(t, path, int64(f.cfg.IndexMaxBytes))
				}
				return outcome{
					keep:  [2]int{0, fixtureBatches},
					scans: int64(len(f.bases) - 1),
					check: func(t *testing.T, l *Log) {
						for path, b := range orig {
							if got := readFile(t, path); !bytes.Equal(got, b) {
								t.Fatalf("%s: %d bytes after recovery, want the %d of the trimmed original", filepath.Base(path), len(got), len(b))
							}
						}
					},
				}
			},
		},
		{
			// (b): the new segment's .log was created, its indexes not yet.
			name: "new empty .log without indexes",
			damage: func(t *testing.T, f *fixture) outcome {
				writeFile(t, f.path(f.leo, logSuffix), nil)
				bases := append(slices.Clone(f.bases), f.leo)
				return outcome{
					keep:  [2]int{0, fixtureBatches},
					scans: scansFrom(bases, readRecoveryPoint(f.dir)),
					check: func(t *testing.T, l *Log) {
						if got := l.SegmentBaseOffsets(); !slices.Equal(got, bases) {
							t.Fatalf("segments %v, want %v", got, bases)
						}
						if !exists(f.path(f.leo, indexSuffix)) || !exists(f.path(f.leo, timeIndexSuffix)) {
							t.Fatal("the new segment's indexes were not created")
						}
					},
				}
			},
		},
		{
			// (c): index files without their log — a crash while deleting a segment (log
			// first, then indexes), here the oldest one by retention, and stray ones.
			name: "index files without a .log are removed",
			damage: func(t *testing.T, f *fixture) outcome {
				if err := os.Remove(f.path(f.bases[0], logSuffix)); err != nil {
					t.Fatal(err)
				}
				stray := f.leo + 1000
				writeFile(t, f.path(stray, indexSuffix), make([]byte, 64))
				writeFile(t, f.path(stray, timeIndexSuffix), make([]byte, 64))
				first := f.batchesIn(1)[0]
				return outcome{
					keep:  [2]int{first, fixtureBatches},
					scans: scansFrom(f.bases[1:], readRecoveryPoint(f.dir)),
					check: func(t *testing.T, l *Log) {
						for _, p := range []string{f.path(f.bases[0], indexSuffix), f.path(f.bases[0], timeIndexSuffix), f.path(stray, indexSuffix), f.path(stray, timeIndexSuffix)} {
							if exists(p) {
								t.Fatalf("%s survived", filepath.Base(p))
							}
						}
					},
				}
			},
		},
		{
			// A crash after an append's write and before the checkpoint of the new leader
			// epoch it began: the batches are in the log (the page cache kept them), the
			// epoch is not in the cache. Recovery finds it in the batches it scans, as
			// Kafka's does; a cache without it would answer OffsetForLeaderEpoch, and
			// truncate a follower, by the epoch before.
			name: "leader epoch of the last append not checkpointed",
			damage: func(t *testing.T, f *fixture) outcome {
				b := makeBatch("new-epoch", 2, 50, maxTimestampOfAll(f.batches)+10)
				proto.SetBaseOffset(b, f.leo)
				proto.SetPartitionLeaderEpoch(b, 7)
				appendToFile(t, f.path(f.bases[len(f.bases)-1], logSuffix), b)
				f.batches = append(f.batches, b)
				return outcome{
					keep:  [2]int{0, fixtureBatches + 1},
					scans: scansFrom(f.bases, readRecoveryPoint(f.dir)),
					check: func(t *testing.T, l *Log) {
						if got := l.LatestEpoch(); got != 7 {
							t.Fatalf("latest epoch %d, want 7 from the batch the cache missed", got)
						}
					},
				}
			},
		},
		{
			// The leader-epoch checkpoint lost or unreadable (a disk's damage: it is
			// written whole and renamed): rebuilt from every batch's epoch, not left
			// empty, which would make a follower skip its truncation by epoch.
			name: "leader-epoch checkpoint deleted",
			damage: func(t *testing.T, f *fixture) outcome {
				if err := os.Remove(filepath.Join(f.dir, leaderEpochFile)); err != nil {
					t.Fatal(err)
				}
				return outcome{keep: [2]int{0, fixtureBatches}, scans: scansFrom(f.bases, readRecoveryPoint(f.dir))}
			},
		},
		{
			name: "leader-epoch checkpoint half written",
			damage: func(t *testing.T, f *fixture) outcome {
				p := filepath.Join(f.dir, leaderEpochFile)
				b := readFile(t, p)
				writeFile(t, p, b[:len(b)/2])
				return outcome{keep: [2]int{0, fixtureBatches}, scans: scansFrom(f.bases, readRecoveryPoint(f.dir))}
			},
		},
		{
			// (d): an interrupted truncation copy and checkpoint writes.
			name: "leftover .swap and .tmp files are removed",
			damage: func(t *testing.T, f *fixture) outcome {
				leftovers := []string{
					f.path(f.bases[len(f.bases)-1], logSuffix+swapSuffix),
					filepath.Join(f.dir, recoveryPointFile+tmpSuffix),
					filepath.Join(f.dir, leaderEpochFile+tmpSuffix),
					filepath.Join(f.dir, cleanShutdownFile+tmpSuffix),
				}
				// The swap holds a plausible prefix of the active segment: it must not
				// replace it.
				writeFile(t, leftovers[0], readFile(t, f.path(f.bases[len(f.bases)-1], logSuffix))[:100])
				for _, p := range leftovers[1:] {
					writeFile(t, p, []byte("0\n1\n"))
				}
				return outcome{
					keep:  [2]int{0, fixtureBatches},
					scans: scansFrom(f.bases, readRecoveryPoint(f.dir)),
					check: func(t *testing.T, l *Log) {
						for _, p := range leftovers {
							if exists(p) {
								t.Fatalf("%s survived", filepath.Base(p))
							}
						}
					},
				}
			},
		},
		{
			// The log lost its last batch after a clean Close: the marker's log end offset
			// disagrees, so nothing is trusted and every segment is scanned.
			name:  "clean-shutdown marker disagrees with a shortened log",
			clean: true,
			damage: func(t *testing.T, f *fixture) outcome {
				last := fixtureBatches - 1
				truncateFile(t, f.path(f.segBase[last], logSuffix), f.pos[last])
				scans := int64(len(f.bases))
				// If the active segment's last index entry names the batch cut, the
				// first pass already rebuilds that segment.
				idx := readFile(t, f.path(f.segBase[last], indexSuffix))
				if len(idx) > 0 && int64(binary.BigEndian.Uint32(idx[len(idx)-4:])) >= f.pos[last] {
					scans++
				}
				return outcome{keep: [2]int{0, last}, scans: scans}
			},
		},
		{
			name:  "clean-shutdown marker with a wrong offset",
			clean: true,
			damage: func(t *testing.T, f *fixture) outcome {
				writeFile(t, filepath.Join(f.dir, cleanShutdownFile), []byte("0\n5\n"))
				return outcome{keep: [2]int{0, fixtureBatches}, scans: int64(len(f.bases))}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := newTestClock()
			l, f := writeFixture(t, fixtureConfig(clock), clock)
			if tc.clean {
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
			} else {
				l.crash()
			}
			want := tc.damage(t, f)
			scans := segmentScans.Load()
			l = openLog(t, f.dir, f.cfg)
			defer l.Close()
			if got := segmentScans.Load() - scans; got != want.scans {
				t.Errorf("open scanned %d segments, want %d", got, want.scans)
			}
			if want.check != nil {
				want.check(t, l)
			}
			kept := f.batches[want.keep[0]:want.keep[1]]
			start := int64(0)
			if want.keep[0] > 0 {
				start = baseOffsetOf(kept[0])
			}
			checkRecovered(t, l, kept, start)
			// And what recovery left is itself a log that reopens cleanly, scanning nothing.
			dir, cfg := l.Dir(), l.cfg
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			scans = segmentScans.Load()
			l = openLog(t, dir, cfg)
			if got := segmentScans.Load() - scans; got != 0 {
				t.Errorf("clean reopen after recovery scanned %d segments", got)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// rebuiltIndex damages the index with the given suffix of segment 1 (trusted: below the
// recovery point, or after a clean stop) and expects Open to notice, rebuild it from the
// log — byte for byte what it was — and scan only that segment besides the usual ones.
func rebuiltIndex(t *testing.T, f *fixture, suffix string, damage func(path string)) outcome {
	t.Helper()
	path := f.path(f.bases[1], suffix)
	orig := readFile(t, path)
	if len(orig) == 0 {
		t.Fatalf("%s is empty: nothing to damage", filepath.Base(path))
	}
	usual := int64(0)
	if !exists(filepath.Join(f.dir, cleanShutdownFile)) {
		usual = scansFrom(f.bases, readRecoveryPoint(f.dir))
		if usual > int64(len(f.bases)-2) {
			t.Fatalf("segment 1 is in the scanned range (%d scanned): the case tests nothing", usual)
		}
	}
	damage(path)
	return outcome{
		keep:  [2]int{0, fixtureBatches},
		scans: usual + 1,
		check: func(t *testing.T, l *Log) {
			if got := readFile(t, path); !bytes.Equal(got, orig) {
				t.Fatalf("rebuilt %s differs from the original (%d bytes, want %d)", filepath.Base(path), len(got), len(orig))
			}
		},
	}
}

// writeGarbage overwrites the file at path with as many random bytes as it holds.
func writeGarbage(t *testing.T, path string, seed uint64) {
	t.Helper()
	b := make([]byte, fileSize(t, path))
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	writeFile(t, path, b)
}

// TestRecoveryTrustsSegmentsBelowTheRecoveryPoint documents what happens to a flipped
// bit in a segment that Open does not scan: after a clean stop no segment is
// CRC-checked, after an unclean stop only those from the recovery point's on. Such a
// segment is trusted if its indexes pass their check (which reads only the headers after
// the last index entry), so the damaged batch is served as it is on disk. Those bytes
// were fsynced before the recovery point passed them; this is the disk's corruption, not
// a crash's, and consumers see it as a CRC error (CORRUPT_MESSAGE).
func TestRecoveryTrustsSegmentsBelowTheRecoveryPoint(t *testing.T) {
	for _, clean := range []bool{true, false} {
		t.Run(fmt.Sprintf("clean=%v", clean), func(t *testing.T) {
			clock := newTestClock()
			l, f := writeFixture(t, fixtureConfig(clock), clock)
			var usual int64
			if clean {
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
			} else {
				l.crash()
				usual = scansFrom(f.bases, readRecoveryPoint(f.dir))
				if usual != 1 {
					t.Fatalf("recovery point %d: %d segments to scan, want only the active one", readRecoveryPoint(f.dir), usual)
				}
			}
			seg := f.batchesIn(0)
			i := seg[len(seg)/2]
			at := f.pos[i] + proto.RecordBatchHeaderSize + 5
			flipBit(t, f.path(f.segBase[i], logSuffix), at, 0x04)
			scans := segmentScans.Load()
			l = openLog(t, f.dir, f.cfg)
			defer l.Close()
			if got := segmentScans.Load() - scans; got != usual {
				t.Fatalf("open scanned %d segments, want %d", got, usual)
			}
			if l.LogEndOffset() != f.leo {
				t.Fatalf("log end offset %d, want %d", l.LogEndOffset(), f.leo)
			}
			want := bytes.Join(f.batches, nil)
			want[at] ^= 0x04 // segment 0 starts the log: its positions are the log's
			if got := readRaw(t, l); !bytes.Equal(got, want) {
				t.Fatal("the log read back is not what was written with the one flipped bit")
			}
			if _, err := proto.ValidateRecordBatch(want[f.pos[i]:], len(want)); err == nil {
				t.Fatal("the flipped batch still validates: the flip tests nothing")
			}
		})
	}
}

// TestRecoveryCannotSeeFieldsOutsideTheCRC documents a limit of the batch format:
// baseOffset and partitionLeaderEpoch lie outside the CRC (Kafka's record format) and
// offsets may legitimately jump (a follower's append may start past the log end), so a
// flipped bit there that keeps offsets increasing is not detected by recovery. The batch
// is kept with the wrong offset or epoch, as in Kafka.
func TestRecoveryCannotSeeFieldsOutsideTheCRC(t *testing.T) {
	for _, tc := range []struct {
		name    string
		at      int64 // position within the last batch
		mask    byte
		leoDiff int64
	}{
		{"base offset moved up", 7, 0, 0}, // the bit is chosen below
		{"leader epoch", 15, 0x01, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newTestClock()
			l, f := writeFixture(t, fixtureConfig(clock), clock)
			l.crash()
			last := fixtureBatches - 1
			mask, leoDiff := tc.mask, tc.leoDiff
			if tc.name == "base offset moved up" {
				// The lowest clear bit of the base offset: setting it moves the batch up.
				bit := ^baseOffsetOf(f.batches[last]) & (baseOffsetOf(f.batches[last]) + 1)
				if bit > 0x80 {
					t.Fatalf("base offset %d: no clear bit in its last byte", baseOffsetOf(f.batches[last]))
				}
				mask, leoDiff = byte(bit), bit
			}
			flipBit(t, f.path(f.segBase[last], logSuffix), f.pos[last]+tc.at, mask)
			l = openLog(t, f.dir, f.cfg)
			defer l.Close()
			if got := l.LogEndOffset(); got != f.leo+leoDiff {
				t.Fatalf("log end offset %d, want %d", got, f.leo+leoDiff)
			}
			got := readAll(t, l, 0, l.LogEndOffset())
			if len(got) != fixtureBatches || bytes.Equal(got[last], f.batches[last]) || !bytes.Equal(got[last][16:], f.batches[last][16:]) {
				t.Fatal("want every batch kept, the last one differing only in its first 16 bytes")
			}
		})
	}
}

// TestRecoveryPointLimitsTheScan: after Flush and Checkpoint, a crash scans only the
// segments from the one holding the checkpointed recovery point on. Sync flushing is
// used because it never checkpoints by itself (a roll's background flush does), so the
// recovery point on disk is the one checkpointed here.
func TestRecoveryPointLimitsTheScan(t *testing.T) {
	clock := newTestClock()
	cfg := fixtureConfig(clock)
	cfg.Flush.Sync = true
	dir := t.TempDir()
	l := openLog(t, dir, cfg)
	var batches [][]byte
	appendN := func(n int) {
		for range n {
			b := makeBatch("rp", 2, 300, clock.Ms()+int64(10*len(batches)))
			mustAppend(t, l, b, 0)
			batches = append(batches, b)
		}
	}
	appendN(30)
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := l.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	rp := l.LogEndOffset()
	appendN(60)
	bases := l.SegmentBaseOffsets()
	l.crash()
	if got := readRecoveryPoint(dir); got != rp {
		t.Fatalf("recovery point on disk %d, want the checkpointed %d", got, rp)
	}
	want := scansFrom(bases, rp)
	if want < 2 || want >= int64(len(bases)) {
		t.Fatalf("%d of %d segments from the recovery point: the test shows nothing", want, len(bases))
	}
	scans := segmentScans.Load()
	l = openLog(t, dir, cfg)
	defer l.Close()
	if got := segmentScans.Load() - scans; got != want {
		t.Fatalf("open scanned %d segments, want %d (from the one holding %d of %v)", got, want, rp, bases)
	}
	checkRecovered(t, l, batches, 0)
	// Recovery forced what it kept to disk and checkpointed it.
	if got := readRecoveryPoint(dir); got != int64(2*len(batches)) {
		t.Fatalf("recovery point after recovery %d, want %d", got, 2*len(batches))
	}
}

// TestCleanReopenScansNothing: a clean Close and Open of a log of several segments
// reads no segment whole, before and after a crash recovery.
func TestCleanReopenScansNothing(t *testing.T) {
	clock := newTestClock()
	l, f := writeFixture(t, fixtureConfig(clock), clock)
	for round := range 3 {
		if round == 1 {
			l.crash()
			l = openLog(t, f.dir, f.cfg)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		scans := segmentScans.Load()
		l = openLog(t, f.dir, f.cfg)
		if got := segmentScans.Load() - scans; got != 0 {
			t.Fatalf("round %d: clean reopen of %d segments scanned %d", round, len(f.bases), got)
		}
		if got := l.SegmentBaseOffsets(); !slices.Equal(got, f.bases) {
			t.Fatalf("segments %v, want %v", got, f.bases)
		}
	}
	checkRecovered(t, l, f.batches, 0)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestTruncatedTimeIndexKeepsMaxTimestamp: a segment's largest timestamp need not be
// its last batch's (CreateTime is the producer's clock). When a trusted segment's time
// index lost its last entries, the segment must still know its largest timestamp, or
// OffsetForTimestamp skips it (and retention by age misjudges it).
func TestTruncatedTimeIndexKeepsMaxTimestamp(t *testing.T) {
	clock := newTestClock()
	cfg := fixtureConfig(clock)
	dir := t.TempDir()
	l := openLog(t, dir, cfg)
	base := clock.Ms()
	const peak = 10
	var peakOffset int64
	for i := range 30 {
		ts := base + int64(10*i)
		if i == peak {
			ts = base + 1_000_000 // a producer clock far ahead
		}
		info := mustAppend(t, l, makeBatch("p", 1, 200, ts), 0)
		if i == peak {
			peakOffset = info.FirstOffset
		}
	}
	if err := l.Roll(); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, makeBatch("q", 1, 200, base+500), 0)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	path := segmentName(dir, 0, timeIndexSuffix)
	if n := fileSize(t, path) / timeIndexEntrySize; n < 2 {
		t.Fatalf("time index of segment 0 has %d entries: nothing to cut", n)
	}
	truncateFile(t, path, fileSize(t, path)-timeIndexEntrySize) // the entry of the peak
	l = openLog(t, dir, cfg)
	defer l.Close()
	off, ts, found, err := l.OffsetForTimestamp(base + 1_000_000)
	if err != nil || !found || off != peakOffset || ts != base+1_000_000 {
		t.Fatalf("offset for the peak timestamp: (%d, %d, %v, %v), want (%d, %d)", off, ts-base, found, err, peakOffset, 1_000_000)
	}
}

// TestSegmentEmptiedByACrash: a crash can lose a whole unflushed segment's data while a
// later segment's survives (no order between files without fsync). Recovery cannot tell
// that from a follower's legitimate jump in offsets, so it keeps the later segments and
// the log has a hole (FuzzRecovery's limit 2). The empty segment left in the middle must
// not stop retention, which deletes segments oldest first.
func TestSegmentEmptiedByACrash(t *testing.T) {
	clock := newTestClock()
	l, f := writeFixture(t, fixtureConfig(clock), clock)
	l.crash()
	if err := writeRecoveryPoint(f.dir, 0); err != nil {
		t.Fatal(err)
	}
	truncateFile(t, f.path(f.bases[2], logSuffix), 0)
	l = openLog(t, f.dir, f.cfg)
	defer l.Close()
	if got := l.SegmentBaseOffsets(); !slices.Equal(got, f.bases) {
		t.Fatalf("segments %v, want %v", got, f.bases)
	}
	var want [][]byte
	for i, b := range f.batches {
		if f.segBase[i] != f.bases[2] {
			want = append(want, b)
		}
	}
	if got := readAll(t, l, 0, f.leo); len(got) != len(want) || !bytes.Equal(bytes.Join(got, nil), bytes.Join(want, nil)) {
		t.Fatalf("read back %d batches, want the %d outside segment 2", len(got), len(want))
	}
	cfg := f.cfg
	cfg.RetentionBytes = 1
	if err := l.UpdateConfig(cfg); err != nil {
		t.Fatal(err)
	}
	res, err := l.DeleteRetained(l.LogEndOffset())
	if err != nil {
		t.Fatal(err)
	}
	if res.Segments != len(f.bases)-1 || l.NumSegments() != 1 || l.LogStartOffset() != f.bases[len(f.bases)-1] {
		t.Fatalf("retention deleted %+v, left %v: want only the active segment", res, l.SegmentBaseOffsets())
	}
}

// TestTruncationLowersTheCheckpointedRecoveryPoint: the recovery point on disk must not
// exceed the log end. After a truncation it would claim that the offsets written again
// were flushed, and a crash before the next checkpoint (a roll's background flush not yet
// done) would trust, unscanned, segments holding unflushed data. Kafka checkpoints the
// recovery point after a truncation for this reason.
func TestTruncationLowersTheCheckpointedRecoveryPoint(t *testing.T) {
	for _, tc := range []struct {
		name     string
		truncate func(l *Log, f *fixture) error
	}{
		{"TruncateTo", func(l *Log, f *fixture) error { _, err := l.TruncateTo(f.bases[1] + 3); return err }},
		{"TruncateFullyAndStartAt", func(l *Log, f *fixture) error { return l.TruncateFullyAndStartAt(10) }},
		{"TruncateTo below the log start", func(l *Log, f *fixture) error { _, err := l.TruncateTo(0); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newTestClock()
			l, f := writeFixture(t, fixtureConfig(clock), clock)
			defer l.Close()
			if err := l.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := l.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			if err := tc.truncate(l, f); err != nil {
				t.Fatal(err)
			}
			if rp, leo := readRecoveryPoint(f.dir), l.LogEndOffset(); rp > leo {
				t.Fatalf("recovery point on disk %d after truncating to %d", rp, leo)
			}
		})
	}
}
