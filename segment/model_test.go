package segment

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/proto"
)

// TestLogAgainstModel runs a seeded random sequence of operations on a Log — leader and
// follower appends, truncations, full truncations, rolls, retention by size, clean and
// crash reopens, reads and timestamp lookups — and checks after each one that the log
// agrees with logModel, a plain list of batches. Set GREGOR_MODEL_SEED to replay a run.
func TestLogAgainstModel(t *testing.T) {
	const steps = 2000
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("GREGOR_MODEL_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("GREGOR_MODEL_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with GREGOR_MODEL_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x6772))

	clock := newTestClock()
	cfg := testConfig(clock)
	cfg.SegmentBytes = 8 << 10
	cfg.IndexIntervalBytes = 256
	cfg.IndexMaxBytes = 240 // 20 time-index entries: some segments roll on a full index
	cfg.RetentionBytes = 24 << 10
	dir := t.TempDir()
	r := &modelRun{t: t, rng: rng, clock: clock, cfg: cfg, dir: dir, l: openLog(t, dir, cfg)}
	// bbolt's habit: whatever the test did, the log it leaves must reopen cleanly, with
	// no scan, and still be the model.
	t.Cleanup(r.finalCheck)

	for step := range steps {
		r.step = step
		r.do()
		r.checkBounds()
		r.maxSegments = max(r.maxSegments, r.l.NumSegments())
		if step%25 == 0 {
			r.checkContents()
		}
	}
	r.checkContents()
	t.Logf("ops: %v; up to %d segments", r.counts, r.maxSegments)
}

// modelBatch is one batch of the model: its offsets and its bytes as stored.
type modelBatch struct {
	base, next int64
	b          []byte
}

// logModel is what the log must hold.
type logModel struct {
	start, leo int64
	batches    []modelBatch
	// epochs follows the leader-epoch cache's rules (see LeaderEpochCache).
	epochs []EpochEntry
}

func (m *logModel) bytes() int64 {
	var n int64
	for _, b := range m.batches {
		n += int64(len(b.b))
	}
	return n
}

// firstEnding returns the index of the first batch whose last offset is ≥ offset.
func (m *logModel) firstEnding(offset int64) int {
	return searchFirst(len(m.batches), func(i int) bool { return m.batches[i].next > offset })
}

// searchFirst is sort.Search.
func searchFirst(n int, f func(int) bool) int {
	lo, hi := 0, n
	for lo < hi {
		mid := (lo + hi) / 2
		if f(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

func (m *logModel) assignEpoch(epoch int32, start int64) {
	if epoch < 0 || (len(m.epochs) > 0 && epoch <= m.epochs[len(m.epochs)-1].Epoch) {
		return
	}
	for len(m.epochs) > 0 && m.epochs[len(m.epochs)-1].StartOffset >= start {
		m.epochs = m.epochs[:len(m.epochs)-1]
	}
	m.epochs = append(m.epochs, EpochEntry{Epoch: epoch, StartOffset: start})
}

func (m *logModel) epochsTruncateFromEnd(end int64) {
	for len(m.epochs) > 0 && m.epochs[len(m.epochs)-1].StartOffset >= end {
		m.epochs = m.epochs[:len(m.epochs)-1]
	}
}

func (m *logModel) epochsTruncateFromStart(start int64) {
	i := 0
	for i+1 < len(m.epochs) && m.epochs[i+1].StartOffset <= start {
		i++
	}
	if len(m.epochs) == 0 || m.epochs[0].StartOffset >= start {
		return
	}
	m.epochs = append(m.epochs[:0], m.epochs[i:]...)
	m.epochs[0].StartOffset = start
}

func (m *logModel) startAt(offset int64) {
	m.start, m.leo, m.batches, m.epochs = offset, offset, nil, nil
}

type modelRun struct {
	t      *testing.T
	rng    *rand.Rand
	clock  *testClock
	cfg    Config
	dir    string
	l      *Log
	m      logModel
	epoch  int32 // the current leader epoch
	step   int
	tag    int
	counts map[string]int
	recent []string // the last operations, for a failure report
	// maxSegments is the most segments the log had: the run is only as good as its rolls.
	maxSegments int
}

func (r *modelRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("step %d: %s\nlast operations:\n  %s", r.step, fmt.Sprintf(format, args...), joinLines(r.recent))
}

func joinLines(s []string) string {
	var b bytes.Buffer
	for i, l := range s {
		if i > 0 {
			b.WriteString("\n  ")
		}
		b.WriteString(l)
	}
	return b.String()
}

func (r *modelRun) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if len(r.recent) == 30 {
		r.recent = r.recent[1:]
	}
	r.recent = append(r.recent, fmt.Sprintf("%d: %s", r.step, s))
	if r.counts == nil {
		r.counts = map[string]int{}
	}
	r.counts[s[:bytes.IndexByte([]byte(s+" "), ' ')]]++
}

// newBatch makes a batch of 1-5 records of random sizes with timestamps around now (not
// always increasing: CreateTime is the producer's clock).
func (r *modelRun) newBatch() []byte {
	r.tag++
	ts := r.clock.Ms() + r.rng.Int64N(2000) - 1000
	return makeBatch(fmt.Sprint("m", r.tag), 1+r.rng.IntN(5), 1+r.rng.IntN(700), ts)
}

func (r *modelRun) do() {
	r.clock.Advance(time.Duration(r.rng.IntN(50)) * time.Millisecond)
	switch p := r.rng.IntN(100); {
	case p < 35:
		r.leaderAppend()
	case p < 50:
		r.followerAppend()
	case p < 57:
		r.truncateTo()
	case p < 59:
		r.truncateFully()
	case p < 63:
		r.note("roll")
		if err := r.l.Roll(); err != nil {
			r.fatalf("roll: %v", err)
		}
	case p < 68:
		r.deleteRetained()
	case p < 71:
		r.note("close+open")
		if err := r.l.Close(); err != nil {
			r.fatalf("close: %v", err)
		}
		r.reopen()
	case p < 74:
		r.note("crash+open")
		r.l.crash()
		r.reopen()
	case p < 94:
		r.read()
	default:
		r.offsetForTimestamp()
	}
}

func (r *modelRun) reopen() {
	l, err := Open(r.dir, r.cfg)
	if err != nil {
		r.fatalf("reopen: %v", err)
	}
	r.l = l
	// Open trims the epoch cache to the log.
	r.m.epochsTruncateFromEnd(r.m.leo)
	r.m.epochsTruncateFromStart(r.m.start)
	r.checkContents()
}

func (r *modelRun) leaderAppend() {
	if r.rng.IntN(10) == 0 {
		r.epoch += int32(1 + r.rng.IntN(2))
	}
	epoch := r.epoch
	if r.rng.IntN(20) == 0 && epoch > 0 {
		epoch-- // a stale leader's append: stored with its epoch, not a new cache entry
	}
	n := 1 + r.rng.IntN(3)
	var buf []byte
	var want []modelBatch
	next := r.m.leo
	for range n {
		b := r.newBatch()
		buf = append(buf, b...)
		stored := slices.Clone(b)
		proto.SetBaseOffset(stored, next)
		proto.SetPartitionLeaderEpoch(stored, epoch)
		want = append(want, modelBatch{base: next, next: next + int64(recordCount(b)), b: stored})
		next += int64(recordCount(b))
	}
	r.note("append %d batches epoch %d at %d", n, epoch, r.m.leo)
	info, err := r.l.Append(buf, epoch)
	if err != nil {
		r.fatalf("append: %v", err)
	}
	if info.FirstOffset != r.m.leo || info.LastOffset != next-1 || info.Batches != n {
		r.fatalf("append info %+v, want offsets %d..%d", info, r.m.leo, next-1)
	}
	r.m.assignEpoch(epoch, r.m.leo)
	r.m.batches = append(r.m.batches, want...)
	r.m.leo = next
}

func (r *modelRun) followerAppend() {
	if r.rng.IntN(15) == 0 {
		// Offsets below the log end are refused and change nothing.
		if len(r.m.batches) == 0 {
			return
		}
		b := slices.Clone(r.m.batches[len(r.m.batches)-1].b)
		r.note("follower append stale at %d", baseOffsetOf(b))
		if _, err := r.l.AppendAsFollower(b); !errors.Is(err, ErrInvalidAppendOffset) {
			r.fatalf("stale follower append: %v, want ErrInvalidAppendOffset", err)
		}
		return
	}
	n := 1 + r.rng.IntN(3)
	var buf []byte
	var want []modelBatch
	next := r.m.leo
	for i := range n {
		if r.rng.IntN(8) == 0 {
			next += 1 + r.rng.Int64N(20) // the leader's log has a gap here
		}
		if r.rng.IntN(8) == 0 {
			r.epoch++
		}
		b := r.newBatch()
		proto.SetBaseOffset(b, next)
		proto.SetPartitionLeaderEpoch(b, r.epoch)
		buf = append(buf, b...)
		want = append(want, modelBatch{base: next, next: next + int64(recordCount(b)), b: slices.Clone(b)})
		next += int64(recordCount(b))
		_ = i
	}
	r.note("follower append %d batches at %d..%d", n, want[0].base, next)
	info, err := r.l.AppendAsFollower(buf)
	if err != nil {
		r.fatalf("follower append: %v", err)
	}
	if info.FirstOffset != want[0].base || info.LastOffset != next-1 {
		r.fatalf("follower append info %+v, want offsets %d..%d", info, want[0].base, next-1)
	}
	for _, b := range want {
		r.m.assignEpoch(epochOf(b.b), b.base)
	}
	r.m.batches = append(r.m.batches, want...)
	r.m.leo = next
}

func recordCount(b []byte) int32 {
	h, err := proto.ParseRecordBatchHeader(b)
	if err != nil {
		panic(err)
	}
	return h.RecordCount
}

func (r *modelRun) truncateTo() {
	// Mostly near the end, as a follower's truncation to its leader's epoch end is.
	lo := max(0, r.m.start-3)
	if r.rng.IntN(4) != 0 {
		lo = max(lo, r.m.leo-60)
	}
	offset := lo + r.rng.Int64N(r.m.leo+4-lo)
	r.note("truncateTo %d (log [%d, %d))", offset, r.m.start, r.m.leo)
	leo, err := r.l.TruncateTo(offset)
	if err != nil {
		r.fatalf("truncate to %d: %v", offset, err)
	}
	switch {
	case offset >= r.m.leo:
		if leo != r.m.leo {
			r.fatalf("truncate to %d at or past the end %d returned %d", offset, r.m.leo, leo)
		}
	case offset <= r.m.start:
		if leo != offset {
			r.fatalf("truncate to %d below the start %d returned %d", offset, r.m.start, leo)
		}
		r.m.startAt(offset)
	default:
		// The batch holding offset (or the first after it) goes with everything after
		// it. The new end is where the kept batches end — or, if the cut batch began a
		// segment that starts below it, that segment's base: anywhere from the kept
		// batches' end to the cut batch's base.
		c := r.m.firstEnding(offset)
		lower, upper := r.m.start, r.m.leo
		if c > 0 {
			lower = r.m.batches[c-1].next
		}
		if c < len(r.m.batches) {
			upper = r.m.batches[c].base
		}
		if leo < lower || leo > upper || leo > offset {
			r.fatalf("truncate to %d returned %d, want in [%d, %d] and ≤ %d", offset, leo, lower, upper, offset)
		}
		r.m.batches = r.m.batches[:c]
		r.m.leo = leo
		r.m.epochsTruncateFromEnd(leo)
	}
}

func (r *modelRun) truncateFully() {
	offset := r.m.leo + r.rng.Int64N(50)
	if r.rng.IntN(5) == 0 {
		offset = r.rng.Int64N(r.m.leo + 1)
	}
	r.note("truncateFullyAndStartAt %d", offset)
	if err := r.l.TruncateFullyAndStartAt(offset); err != nil {
		r.fatalf("truncate fully at %d: %v", offset, err)
	}
	r.m.startAt(offset)
}

// deleteRetained predicts retention by size from the segments' base offsets and the
// model's batches: the oldest segments go while the rest still reach RetentionBytes,
// never the active one (whose base is the last).
func (r *modelRun) deleteRetained() {
	bases := r.l.SegmentBaseOffsets()
	if bases[0] != r.m.start {
		r.fatalf("first segment at %d, log start %d", bases[0], r.m.start)
	}
	sizes := make([]int64, len(bases))
	nexts := slices.Clone(bases)
	for _, b := range r.m.batches {
		k := searchFirst(len(bases), func(i int) bool { return bases[i] > b.base }) - 1
		sizes[k] += int64(len(b.b))
		nexts[k] = b.next
	}
	total := r.m.bytes()
	upper := r.m.leo
	n := 0
	for n < len(bases)-1 && nexts[n] <= upper && total-sizes[n] >= r.cfg.RetentionBytes {
		total -= sizes[n]
		n++
	}
	r.note("deleteRetained (%d segments, %d bytes): expect %d", len(bases), r.m.bytes(), n)
	res, err := r.l.DeleteRetained(upper)
	if err != nil {
		r.fatalf("delete retained: %v", err)
	}
	var bytesGone int64
	for _, s := range sizes[:n] {
		bytesGone += s
	}
	if res.Segments != n || res.Bytes != bytesGone || res.LogStartOffset != bases[n] {
		r.fatalf("retention %+v, want %d segments, %d bytes, start %d (segments %v sizes %v)", res, n, bytesGone, bases[n], bases, sizes)
	}
	if n == 0 {
		return
	}
	r.counts["deleteRetained>0"]++
	r.m.start = bases[n]
	r.m.batches = r.m.batches[r.m.firstEnding(bases[n]):]
	if len(r.m.batches) > 0 && r.m.batches[0].base < r.m.start {
		r.fatalf("retention split a batch at %d", r.m.start)
	}
	r.m.epochsTruncateFromStart(r.m.start)
}

func (r *modelRun) read() {
	m := &r.m
	offset := m.start - 1 + r.rng.Int64N(m.leo-m.start+3)
	maxBytes := r.rng.IntN(12000)
	upper := m.leo
	if r.rng.IntN(4) == 0 && offset >= m.start && offset <= m.leo {
		upper = offset + r.rng.Int64N(m.leo-offset+1)
	}
	minOne := r.rng.IntN(4) != 0
	if r.rng.IntN(3) == 0 && offset >= m.start && offset < m.leo {
		// A limit at a batch boundary, or a byte either side of one.
		maxBytes = 0
		for i, k := m.firstEnding(offset), r.rng.IntN(6); i < len(m.batches) && k > 0; i, k = i+1, k-1 {
			maxBytes += len(m.batches[i].b)
		}
		maxBytes = max(0, maxBytes+r.rng.IntN(3)-1)
	}
	r.note("read %d max %d upper %d minOne %v", offset, maxBytes, upper, minOne)
	rs, err := r.l.Read(nil, offset, maxBytes, upper, minOne)
	defer ReleaseRegions(rs)
	if offset < m.start || offset > m.leo {
		if !errors.Is(err, ErrOffsetOutOfRange) {
			r.fatalf("read at %d outside [%d, %d]: %v", offset, m.start, m.leo, err)
		}
		return
	}
	if err != nil {
		r.fatalf("read at %d: %v", offset, err)
	}
	// The model's answer: whole batches from the one holding offset, ending below the
	// upper bound, as many as fit in maxBytes — at least one with minOneBatch.
	i := m.firstEnding(offset)
	var want []byte
	j := i
	for ; j < len(m.batches) && m.batches[j].next <= upper; j++ {
		if len(want)+len(m.batches[j].b) > maxBytes {
			if j == i && minOne {
				want = append(want, m.batches[j].b...)
				j++
			}
			break
		}
		want = append(want, m.batches[j].b...)
	}
	var got []byte
	for _, rg := range rs {
		got = append(got, readRegion(r.t, rg)...)
	}
	if !bytes.Equal(got, want) {
		r.fatalf("read at %d: %d bytes in %d regions, want %d bytes (batches %d..%d)", offset, len(got), len(rs), len(want), i, j)
	}
	if len(rs) == 0 {
		return
	}
	if rs[0].BaseOffset != m.batches[i].base {
		r.fatalf("read at %d: first region at %d, want %d", offset, rs[0].BaseOffset, m.batches[i].base)
	}
	// The last region says where to read next: past its last batch, not past the next.
	nextHi := m.leo
	if j < len(m.batches) {
		nextHi = m.batches[j].base
	}
	if last := rs[len(rs)-1].NextOffset; last < m.batches[j-1].next || last > nextHi {
		r.fatalf("read at %d: next offset %d, want in [%d, %d]", offset, last, m.batches[j-1].next, nextHi)
	}
}

// offsetForTimestamp checks ListOffsets by time: the first record, in offset order,
// whose timestamp reaches ts (makeBatch's record k has timestamp baseTimestamp+k).
func (r *modelRun) offsetForTimestamp() {
	ts := r.clock.Ms() - r.rng.Int64N(3000)
	r.note("offsetForTimestamp %d", ts)
	off, gotTs, found, err := r.l.OffsetForTimestamp(ts)
	if err != nil {
		r.fatalf("offset for timestamp %d: %v", ts, err)
	}
	for _, b := range r.m.batches {
		h, _ := proto.ParseRecordBatchHeader(b.b)
		for k := range int64(h.RecordCount) {
			if h.BaseTimestamp+k >= ts {
				if !found || off != b.base+k || gotTs != h.BaseTimestamp+k {
					r.fatalf("offset for timestamp %d: (%d, %d, %v), want (%d, %d)", ts, off, gotTs, found, b.base+k, h.BaseTimestamp+k)
				}
				return
			}
		}
	}
	if found {
		r.fatalf("offset for timestamp %d: found (%d, %d), want none", ts, off, gotTs)
	}
}

// checkBounds runs after every operation.
func (r *modelRun) checkBounds() {
	r.t.Helper()
	if got := r.l.LogStartOffset(); got != r.m.start {
		r.fatalf("log start offset %d, model %d", got, r.m.start)
	}
	if got := r.l.LogEndOffset(); got != r.m.leo {
		r.fatalf("log end offset %d, model %d", got, r.m.leo)
	}
	if got := r.l.Size(); got != r.m.bytes() {
		r.fatalf("size %d, model %d", got, r.m.bytes())
	}
	if got := r.l.LeaderEpochs(); !slices.Equal(got, r.m.epochs) {
		r.fatalf("leader epochs %+v, model %+v", got, r.m.epochs)
	}
}

// checkContents reads the whole log back.
func (r *modelRun) checkContents() {
	r.t.Helper()
	r.checkBounds()
	got := readAll(r.t, r.l, r.m.start, r.m.leo)
	if len(got) != len(r.m.batches) {
		r.fatalf("read back %d batches, model %d", len(got), len(r.m.batches))
	}
	for i, b := range r.m.batches {
		if !bytes.Equal(got[i], b.b) {
			r.fatalf("batch %d (offset %d) differs from the model", i, b.base)
		}
	}
}

// finalCheck closes the log, reopens it (no segment may be scanned after a clean
// close) and compares it with the model once more.
func (r *modelRun) finalCheck() {
	if r.t.Failed() {
		return
	}
	if err := r.l.Close(); err != nil {
		r.t.Fatalf("final close: %v", err)
	}
	scans := segmentScans.Load()
	r.reopen()
	if n := segmentScans.Load() - scans; n != 0 {
		r.t.Errorf("clean reopen scanned %d segments", n)
	}
	if err := r.l.Close(); err != nil {
		r.t.Errorf("close: %v", err)
	}
}
