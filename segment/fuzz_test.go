package segment

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Mutation kinds of FuzzRecovery (the fuzzer's kind, modulo their number).
const (
	mutTruncateLog = iota
	mutFlipLogByte
	mutGarbageLog
	mutTruncateIndex
	mutGarbageIndex
	mutRemoveIndex
	mutKinds
)

// FuzzRecovery damages a small crashed log in the one way the fuzzer's input picks —
// the .log of segment target cut at pos, its byte at pos flipped (xor data[0], or 0xff),
// data written over it at pos, or one of its indexes (target's high bit: which) cut,
// overwritten or removed — with the recovery point at rp modulo (log end + 1), and
// reopens it as after a crash.
//
// Invariants:
//
//   - Open never panics and never fails because of what is in the files: damage is
//     repaired, not reported.
//   - Damage within Open's scanned range (segments from the one holding the recovery
//     point on), and any damage to indexes, leaves a log that is what was written, cut:
//     every batch read back through Read is byte-identical to the batch written at that
//     offset, offsets are contiguous from the log start (0), the log end offset is where
//     the last kept batch ends, the indexes find every kept batch and record (Read,
//     OffsetForTimestamp), the leader epochs are those of the kept offsets, and an
//     Append continues at the log end. Recovery cuts at the first damaged batch and
//     deletes every later segment; index damage loses nothing.
//   - Two limits of the format make exceptions, each pinned by a test in
//     recovery_test.go. (1) baseOffset and partitionLeaderEpoch lie outside the batch
//     CRC, and offsets may jump (a follower append), so a change there that keeps offsets
//     increasing is kept: from the first such batch on, batches need only match in the
//     bytes the CRC covers. (2) A segment file that merely ends early at a batch boundary
//     (a lost tail) is not damage recovery can see: the segments after it are kept,
//     and the log has a hole where the lost batches were.
//   - Damage to a .log below the scanned range is not looked for (those segments were
//     fsynced before the recovery point passed them): Open must still succeed, the log
//     must still start at 0, and Append must continue at the log end.
func FuzzRecovery(f *testing.F) {
	px := buildFuzzLog(f)
	f.Add(uint8(mutTruncateLog), uint8(len(px.bases)-1), uint32(px.pos[len(px.pos)-1]+7), uint16(px.leo), []byte{})
	f.Add(uint8(mutTruncateLog), uint8(1), uint32(px.pos[px.batchesIn(1)[1]]), uint16(0), []byte{})   // at a boundary
	f.Add(uint8(mutTruncateLog), uint8(1), uint32(px.pos[px.batchesIn(1)[1]]+1), uint16(0), []byte{}) // inside a batch
	f.Add(uint8(mutFlipLogByte), uint8(0), uint32(px.pos[2]+40), uint16(0), []byte{0x01})
	f.Add(uint8(mutFlipLogByte), uint8(1), uint32(px.pos[px.batchesIn(1)[1]]+7), uint16(0), []byte{0x08}) // a base offset
	f.Add(uint8(mutFlipLogByte), uint8(1), uint32(px.pos[px.batchesIn(1)[1]]+9), uint16(0), []byte{0x80}) // a length
	f.Add(uint8(mutGarbageLog), uint8(len(px.bases)-1), uint32(30), uint16(px.leo), []byte("garbage over a header and records"))
	f.Add(uint8(mutGarbageLog), uint8(0), uint32(0), uint16(px.leo), bytes.Repeat([]byte{0xff}, 80)) // trusted
	f.Add(uint8(mutTruncateIndex), uint8(0), uint32(20), uint16(px.leo), []byte{})
	f.Add(uint8(mutTruncateIndex), uint8(0x80|1), uint32(13), uint16(px.leo), []byte{})
	f.Add(uint8(mutGarbageIndex), uint8(0), uint32(8), uint16(px.leo), []byte{0, 0, 0, 1, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add(uint8(mutGarbageIndex), uint8(0x80|2), uint32(0), uint16(px.leo), []byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Add(uint8(mutRemoveIndex), uint8(1), uint32(0), uint16(px.leo), []byte{})
	f.Add(uint8(mutRemoveIndex), uint8(0x80|2), uint32(0), uint16(0), []byte{})

	f.Fuzz(func(t *testing.T, kind, target uint8, pos uint32, rpSel uint16, data []byte) {
		if len(data) > 512 {
			data = data[:512]
		}
		dir := t.TempDir()
		for name, b := range px.files {
			writeFile(t, filepath.Join(dir, name), b)
		}
		rp := int64(rpSel) % (px.leo + 1)
		if err := writeRecoveryPoint(dir, rp); err != nil {
			t.Fatal(err)
		}
		seg := int(target&0x7f) % len(px.bases)
		want := px.mutate(t, dir, int(kind)%mutKinds, seg, target&0x80 != 0, int64(pos), data, rp)
		t.Logf("%s", want.what)

		l, err := Open(dir, px.cfg)
		if err != nil {
			t.Fatalf("open after %s: %v", want.what, err)
		}
		defer l.crash()
		if l.LogStartOffset() != 0 {
			t.Fatalf("log start %d, want 0", l.LogStartOffset())
		}
		if want.weak {
			px.checkWeak(t, l)
			return
		}
		px.checkStrict(t, l, want)
	})
}

// fuzzLog is the log every FuzzRecovery run starts from: its files after a crash and
// where each batch is.
type fuzzLog struct {
	cfg     Config
	files   map[string][]byte // file name → contents, without the recovery point
	batches [][]byte
	segBase []int64 // segment base offset of each batch
	pos     []int64 // position of each batch in its segment
	bases   []int64
	leo     int64
}

func buildFuzzLog(f *testing.F) *fuzzLog {
	clock := newTestClock()
	cfg := testConfig(clock)
	cfg.SegmentBytes = 1 << 10
	cfg.IndexIntervalBytes = 100
	cfg.IndexMaxBytes = 120 // ten time-index entries: some segments roll on a full index
	px := &fuzzLog{cfg: cfg, files: map[string][]byte{}}
	dir := f.TempDir()
	l := openLog(f, dir, cfg)
	base := clock.Ms()
	for i := range 24 {
		b := makeBatch(fmt.Sprint("z", i), 1+i%3, 20+23*(i%7), base+int64(10*i))
		info := mustAppend(f, l, b, int32(i/8))
		px.batches = append(px.batches, b)
		px.segBase = append(px.segBase, info.SegmentBaseOffset)
		px.pos = append(px.pos, info.Position)
	}
	l.bg.Wait()
	px.bases, px.leo = l.SegmentBaseOffsets(), l.LogEndOffset()
	l.crash()
	if len(px.bases) < 4 {
		f.Fatalf("fuzz log has %d segments, want at least 4", len(px.bases))
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == recoveryPointFile {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		px.files[e.Name()] = b
	}
	return px
}

func (px *fuzzLog) batchesIn(k int) []int {
	var out []int
	for i, b := range px.segBase {
		if b == px.bases[k] {
			out = append(out, i)
		}
	}
	return out
}

// fuzzWant is what a mutation allows Open to make of the log.
type fuzzWant struct {
	what string
	weak bool  // damage below the scanned range: only the weak invariant
	keep []int // indexes of the written batches the log must hold, in order
	// uncovered ≥ 0: from this batch on, only the bytes the CRC covers must match, and
	// keep is an upper bound.
	uncovered int
}

// mutate applies the mutation to the files in dir and works out what Open must keep.
func (px *fuzzLog) mutate(t *testing.T, dir string, kind, seg int, timeIndex bool, pos int64, data []byte, rp int64) fuzzWant {
	base := px.bases[seg]
	all := make([]int, len(px.batches))
	for i := range all {
		all[i] = i
	}
	want := fuzzWant{keep: all, uncovered: -1}
	if kind >= mutTruncateIndex {
		suffix := indexSuffix
		if timeIndex {
			suffix = timeIndexSuffix
		}
		path := segmentName(dir, base, suffix)
		size := fileSize(t, path)
		switch kind {
		case mutTruncateIndex:
			pos %= size + 1
			truncateFile(t, path, pos)
		case mutGarbageIndex:
			b := readFile(t, path)
			if len(b) > 0 {
				pos %= int64(len(b))
				copy(b[pos:], data)
				writeFile(t, path, b)
			}
		case mutRemoveIndex:
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}
		want.what = fmt.Sprintf("index mutation %d of %s at %d (%d bytes of data), recovery point %d", kind, filepath.Base(path), pos, len(data), rp)
		return want
	}

	path := segmentName(dir, base, logSuffix)
	orig := readFile(t, path)
	b := slices.Clone(orig)
	size := int64(len(b))
	switch kind {
	case mutTruncateLog:
		pos %= size + 1
		b = b[:pos]
	case mutFlipLogByte:
		pos %= size
		mask := byte(0xff)
		if len(data) > 0 && data[0] != 0 {
			mask = data[0]
		}
		b[pos] ^= mask
	case mutGarbageLog:
		pos %= size
		copy(b[pos:], data)
	}
	writeFile(t, path, b)
	want.what = fmt.Sprintf("log mutation %d of %s at %d (%d bytes of data), recovery point %d", kind, filepath.Base(path), pos, len(data), rp)

	scanFrom := int64(0)
	for _, sb := range px.bases {
		if sb <= rp {
			scanFrom = sb
		}
	}
	if base < scanFrom {
		want.weak = true
		return want
	}
	// Which of the segment's batches changed, and how.
	firstBad, firstUncovered := -1, -1
	boundary := false
	for _, k := range px.batchesIn(seg) {
		start, end := px.pos[k], px.pos[k]+int64(len(px.batches[k]))
		if end > int64(len(b)) {
			if firstBad < 0 {
				firstBad, boundary = k, start == int64(len(b))
			}
			continue
		}
		for p := start; p < end; p++ {
			if b[p] == orig[p] {
				continue
			}
			if rel := p - start; rel < 8 || (rel >= 12 && rel < 16) {
				if firstUncovered < 0 {
					firstUncovered = k
				}
			} else if firstBad < 0 {
				firstBad = k
			}
		}
	}
	switch {
	case firstUncovered >= 0 && (firstBad < 0 || firstUncovered < firstBad):
		want.uncovered = firstUncovered
		if firstBad >= 0 {
			want.keep = all[:firstBad]
		}
	case firstBad >= 0 && boundary:
		// The file ends at a batch boundary: the rest of this segment is lost, the
		// later segments stay (limit 2 above).
		want.keep = slices.Concat(all[:firstBad], all[px.batchesIn(seg)[len(px.batchesIn(seg))-1]+1:])
	case firstBad >= 0:
		want.keep = all[:firstBad]
	}
	return want
}

// checkWeak: the log opened; it starts at 0 and takes appends at its end.
func (px *fuzzLog) checkWeak(t *testing.T, l *Log) {
	leo := l.LogEndOffset()
	// Reads may fail on the damaged bytes that were trusted, but must not hang or panic.
	for off, n := int64(0), 0; off < leo && n < 1000; n++ {
		rs, err := l.Read(nil, off, 4096, leo, true)
		if err != nil || len(rs) == 0 {
			break
		}
		next := rs[len(rs)-1].NextOffset
		ReleaseRegions(rs)
		if next <= off {
			break
		}
		off = next
	}
	info, err := l.Append(makeBatch("after", 1, 10, 0), 0)
	if err != nil || info.FirstOffset != leo {
		t.Fatalf("append after recovery: %+v %v, want at %d", info, err, leo)
	}
}

func (px *fuzzLog) checkStrict(t *testing.T, l *Log, want fuzzWant) {
	leo := l.LogEndOffset()
	got := readAll(t, l, 0, leo) // fails the test on any read error or batch that does not validate
	if want.uncovered >= 0 {
		if len(got) > len(want.keep) {
			t.Fatalf("%s: %d batches kept, at most %d expected", want.what, len(got), len(want.keep))
		}
		for i, g := range got {
			w := px.batches[want.keep[i]]
			if i < want.uncovered && !bytes.Equal(g, w) || !bytes.Equal(g[8:12], w[8:12]) || !bytes.Equal(g[16:], w[16:]) {
				t.Fatalf("%s: batch %d differs from what was written", want.what, i)
			}
		}
		return
	}
	if len(got) != len(want.keep) {
		t.Fatalf("%s: %d batches kept, want %d", want.what, len(got), len(want.keep))
	}
	wantLeo := int64(0)
	for i, k := range want.keep {
		if !bytes.Equal(got[i], px.batches[k]) {
			t.Fatalf("%s: batch %d (offset %d) differs from what was written", want.what, i, baseOffsetOf(px.batches[k]))
		}
		wantLeo = nextOffsetOf(px.batches[k])
	}
	if leo != wantLeo {
		t.Fatalf("%s: log end offset %d, want %d", want.what, leo, wantLeo)
	}
	for _, k := range want.keep {
		b := px.batches[k]
		first, next := baseOffsetOf(b), nextOffsetOf(b)
		rs, err := l.Read(nil, next-1, 1, leo, true)
		if err != nil || len(rs) != 1 || rs[0].BaseOffset != first || rs[0].Length != int64(len(b)) {
			t.Fatalf("%s: read at %d: %+v %v", want.what, next-1, rs, err)
		}
		ReleaseRegions(rs)
		baseTs := maxTimestampOf(b) - (next - first - 1)
		for j := range next - first {
			off, ts, found, err := l.OffsetForTimestamp(baseTs + j)
			if err != nil || !found || off != first+j || ts != baseTs+j {
				t.Fatalf("%s: offset for timestamp of record %d: (%d, %d, %v, %v)", want.what, first+j, off, ts, found, err)
			}
		}
	}
	var wantEpochEntries []EpochEntry
	for _, e := range wantEpochs(px.batches) {
		if e.StartOffset < leo {
			wantEpochEntries = append(wantEpochEntries, e)
		}
	}
	if got := l.LeaderEpochs(); !slices.Equal(got, wantEpochEntries) {
		t.Fatalf("%s: leader epochs %+v, want %+v", want.what, got, wantEpochEntries)
	}
	b := makeBatch("after", 2, 10, maxTimestampOfAll(px.batches)+1)
	info, err := l.Append(b, l.LatestEpoch())
	if err != nil || info.FirstOffset != leo {
		t.Fatalf("%s: append after recovery: %+v %v, want at %d", want.what, info, err, leo)
	}
	if got := readAll(t, l, leo, leo+2); len(got) != 1 || !bytes.Equal(got[0], b) {
		t.Fatalf("%s: the append does not read back", want.what)
	}
}
