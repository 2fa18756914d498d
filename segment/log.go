package segment

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gregor-streaming/gregor/proto"
	"golang.org/x/sys/unix"
)

// Errors of the log. Batch validation errors are *proto.BatchError (errors.Is with the
// proto.ErrBatch… sentinels).
var (
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("segment: log closed")
	// ErrOffsetOutOfRange: a read below the log start or above the log end offset.
	ErrOffsetOutOfRange = errors.New("segment: offset out of range")
	// ErrInvalidAppendOffset: a follower append whose offsets do not continue the log.
	ErrInvalidAppendOffset = errors.New("segment: append offsets do not follow the log end")
	// ErrEmptyAppend: an append of no bytes.
	ErrEmptyAppend = errors.New("segment: empty append")
)

// Log is one partition replica's log: an ordered list of LogSegments in one directory,
// the last of which (the active segment) takes appends. See docs/architecture.md (the storage engine) and the
// formats in index.go and checkpoint.go.
//
// Concurrency: appends, truncation, retention and roll take the write lock; reads, offset
// lookups and flushes take the read lock. Regions handed to readers hold file references
// and stay valid whatever the writer does afterwards (see File).
//
// Lock order: mu before flushMu before checkpointMu.
type Log struct {
	dir    string
	cfg    Config
	logger *slog.Logger

	mu sync.RWMutex
	// segments are sorted by base offset. Invariant: len(segments) ≥ 1, the last is the
	// active segment, and each segment's offsets lie below the next one's base offset.
	segments []*LogSegment
	epochs   *LeaderEpochCache
	closed   bool
	// staging is the follower append whose bytes lie past the active segment's end,
	// not yet part of the log (StagedAppend), or nil. Anything else that moves the
	// log's end first cuts them (dropStaging).
	staging *StagedAppend

	flushMu   sync.Mutex
	flushCond *sync.Cond
	flushing  bool
	// truncations counts truncations, so that a flush that raced one does not move the
	// recovery point past the truncated log end. Guarded by flushMu.
	truncations uint64
	// recoveryPoint: every byte of the log below this offset is on disk. Written under
	// flushMu, read lock-free. Invariant: recoveryPoint ≤ log end offset.
	recoveryPoint atomic.Int64
	// logStartOffset is the first offset a reader may read (Kafka's logStartOffset):
	// the first segment's base offset, or past it once DeleteRecords moved it
	// (IncrementLogStartOffset; checkpointed in log-start-offset). Written under mu's
	// write lock, read lock-free. Invariant: segments[0].baseOffset ≤ logStartOffset ≤
	// log end offset.
	logStartOffset atomic.Int64

	checkpointMu sync.Mutex

	// recoveredFrom is the lowest base offset of a segment this open's recovery scanned
	// or whose aborted-transaction index file was missing (the index may lack entries),
	// or the log end offset if there is none. Written by Open.
	recoveredFrom int64

	// maxBatchBytes and segmentBytes copy cfg.MaxBatchBytes and cfg.SegmentBytes for
	// readers that do not take mu: a producer validating a request must not wait behind
	// an append's write, which holds mu, and UpdateConfig may change them meanwhile.
	maxBatchBytes atomic.Int64
	segmentBytes  atomic.Int64

	// flushEvery tells the interval flush loop its new interval (0: stop flushing);
	// nil until a loop runs. Guarded by mu.
	flushEvery chan time.Duration

	stop chan struct{}
	bg   sync.WaitGroup
}

// AppendInfo describes a successful append.
type AppendInfo struct {
	// FirstOffset and LastOffset are the offsets of the first and last records written.
	FirstOffset, LastOffset int64
	// SegmentBaseOffset and Position locate the first batch on disk.
	SegmentBaseOffset, Position int64
	// MaxTimestamp is the largest batch maxTimestamp written (after LogAppendTime).
	MaxTimestamp int64
	// LogAppendTime is the broker time written into the batches, or -1 for CreateTime.
	LogAppendTime int64
	// LogStartOffset is the log start offset after the append.
	LogStartOffset int64
	Batches        int
	Records        int64
	Bytes          int
}

// Open opens the log in dir, creating it if needed, and recovers it if it was not
// closed cleanly: every batch after the recovery point is validated, the log is cut at
// the first bad byte (what was cut is logged), and missing or damaged indexes are
// rebuilt. After a clean Close it reads only the tail of each segment.
func Open(dir string, cfg Config) (*Log, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	_, statErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("segment: create %s: %w", dir, err)
	}
	if os.IsNotExist(statErr) {
		// A new log's directory entry is made durable before anything in it: a power
		// loss would otherwise take the directory away with every segment synced in it.
		if j := syncJournal; j != nil {
			j.created(filepath.Clean(dir))
		}
		if err := syncDir(filepath.Dir(filepath.Clean(dir))); err != nil {
			return nil, err
		}
	}
	l := &Log{dir: dir, cfg: cfg, logger: cfg.Logger.With("log", dir), stop: make(chan struct{})}
	l.flushCond = sync.NewCond(&l.flushMu)
	l.maxBatchBytes.Store(int64(cfg.MaxBatchBytes))
	l.segmentBytes.Store(cfg.SegmentBytes)
	if err := l.load(); err != nil {
		for _, s := range l.segments {
			s.close()
		}
		return nil, err
	}
	l.setFlushInterval(cfg.Flush.Interval)
	return l, nil
}

// load reads the directory: the steps of Open.
func (l *Log) load() error {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("segment: read %s: %w", l.dir, err)
	}
	cleanEnd, clean := readCleanShutdown(l.dir)
	var bases []int64
	logs := map[int64]bool{}
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, tmpSuffix) || strings.HasSuffix(name, swapSuffix):
			// An interrupted checkpoint write or truncation copy: the original stands.
			_ = os.Remove(filepath.Join(l.dir, name))
		case strings.HasSuffix(name, logSuffix):
			if base, ok := parseSegmentName(name, logSuffix); ok {
				bases = append(bases, base)
				logs[base] = true
			}
		}
	}
	for _, e := range entries {
		// Index files whose log is gone: a crash while deleting a segment.
		for _, suffix := range []string{indexSuffix, timeIndexSuffix, txnIndexSuffix} {
			if base, ok := parseSegmentName(e.Name(), suffix); ok && !logs[base] {
				_ = os.Remove(filepath.Join(l.dir, e.Name()))
			}
		}
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })

	recoveryPoint := readRecoveryPoint(l.dir)
	rebuild := make([]bool, len(bases))
	recovered := false
	for i, base := range bases {
		rebuild[i] = !indexesExist(l.dir, base)
		if _, err := os.Stat(segmentName(l.dir, base, txnIndexSuffix)); err != nil && !recovered {
			// Lost (or from before the index existed): opened empty, refilled by the
			// replica's replay of the markers from here.
			l.recoveredFrom, recovered = base, true
		}
		s, err := openSegment(l.dir, base, &l.cfg, i == len(bases)-1, false)
		if err != nil {
			return err
		}
		l.segments = append(l.segments, s)
	}

	// Segments from the one holding the recovery point on are scanned after an unclean
	// stop; earlier ones (and all after a clean stop) are trusted if their indexes pass a
	// check, and rebuilt otherwise.
	scanFrom := len(l.segments)
	if !clean {
		scanFrom = 0
		for i, s := range l.segments {
			if s.baseOffset <= recoveryPoint {
				scanFrom = i
			}
		}
	}
	var buf []byte
	prevNext := int64(-1)
	for i := 0; i < len(l.segments); i++ {
		s := l.segments[i]
		if i < scanFrom && !rebuild[i] {
			err := s.loadTail()
			if err == nil && s.baseOffset >= prevNext {
				prevNext = s.nextOffset
				continue
			}
			l.logger.Warn("segment index failed its check, rebuilding", "segment", s.file.path, "err", err)
		}
		if buf == nil {
			buf = make([]byte, recoveryBufferBytes)
		}
		res, err := s.recover(buf, prevNext, &l.cfg)
		if err != nil {
			return err
		}
		if !recovered || s.baseOffset < l.recoveredFrom {
			l.recoveredFrom, recovered = s.baseOffset, true
		}
		if i < len(l.segments)-1 {
			if err := s.trimIndexes(); err != nil {
				return err
			}
		}
		prevNext = s.nextOffset
		if res.cutBytes == 0 && res.reason == "" {
			continue
		}
		// Everything after the first bad byte goes: the log must stay a prefix of what
		// was written.
		var cutSegments int
		for _, later := range l.segments[i+1:] {
			res.cutBytes += later.size
			cutSegments++
			if err := later.delete(); err != nil {
				return err
			}
		}
		l.segments = l.segments[:i+1]
		l.logger.Warn("recovery truncated the log",
			"segment", s.file.path, "reason", res.reason, "keptBytes", res.validBytes,
			"cutBytes", res.cutBytes, "cutSegments", cutSegments, "logEndOffset", s.nextOffset)
		break
	}
	if len(l.segments) == 0 {
		s, err := openSegment(l.dir, 0, &l.cfg, true, true)
		if err != nil {
			return err
		}
		l.segments = append(l.segments, s)
	} else if err := l.activate(l.active()); err != nil {
		return err
	}
	leo := l.active().nextOffset
	if clean && cleanEnd != leo {
		// The marker disagrees with the files: do not trust either, scan everything.
		l.logger.Warn("clean-shutdown marker disagrees with the log, recovering", "marker", cleanEnd, "logEndOffset", leo)
		for _, s := range l.segments {
			s.close()
		}
		l.segments = nil
		_ = os.Remove(filepath.Join(l.dir, cleanShutdownFile))
		_ = os.Remove(filepath.Join(l.dir, recoveryPointFile))
		return l.load()
	}

	epochs, err := loadLeaderEpochCache(l.dir)
	// The cache is rebuilt from the batches' epochs where it may lack some: from every
	// batch if its file is unreadable or gone while the log holds batches (an empty
	// cache would make a follower skip its truncation by epoch), else from the batches
	// recovery scanned (a crash between an append's write and the checkpoint of the
	// epoch it began), as Kafka's recovery does.
	epochsFrom := len(l.segments)
	if !clean {
		epochsFrom = min(scanFrom, len(l.segments)-1)
	}
	changed := false
	if _, statErr := os.Stat(filepath.Join(l.dir, leaderEpochFile)); err != nil || (os.IsNotExist(statErr) && leo > l.segments[0].baseOffset) {
		l.logger.Warn("leader-epoch checkpoint unreadable or missing, rebuilding it from the log", "err", err)
		epochs = &LeaderEpochCache{path: filepath.Join(l.dir, leaderEpochFile)}
		epochsFrom, changed = 0, true // written even if empty: the next open does not scan again
	}
	l.epochs = epochs
	lso := max(readLogStartOffset(l.dir), l.segments[0].baseOffset)
	if lso > leo {
		// Records were deleted up to lso, then a crash took appends above the log end
		// that never reached the disk: what is left lies wholly below the log start,
		// so the log starts empty there (the records it lacks were deleted anyway).
		l.logger.Warn("log start offset past the recovered log end, starting the log empty there",
			"logStartOffset", lso, "logEndOffset", leo)
		if err := l.truncateFullyAndStartAt(lso); err != nil {
			return err
		}
		leo, epochsFrom = lso, len(l.segments)
	}
	l.logStartOffset.Store(lso)
	if l.epochs.truncateFromEnd(leo) {
		changed = true
	}
	if l.epochs.truncateFromStart(lso) {
		changed = true
	}
	var sc headerScanner
scan:
	for _, s := range l.segments[epochsFrom:] {
		sc.fd, sc.bufLen = s.file.fd, 0
		for pos := int64(0); pos < s.size; {
			h, err := sc.header(pos, s.size)
			if err != nil {
				// A trusted segment whose headers do not parse: reads will say so; the
				// epochs found so far stand.
				l.logger.Warn("leader epochs not rebuilt past a bad header", "segment", s.file.path, "err", err)
				break scan
			}
			if l.epochs.assign(h.PartitionLeaderEpoch, h.BaseOffset) {
				changed = true
			}
			pos += int64(h.Size())
		}
	}
	if changed {
		if err := l.epochs.persist(); err != nil {
			return err
		}
	}

	if !clean {
		// What recovery kept is now forced to disk, so it need not be scanned again.
		for _, s := range l.segments[min(scanFrom, len(l.segments)-1):] {
			if err := s.flush(); err != nil {
				return err
			}
		}
	}
	l.recoveryPoint.Store(leo)
	if !recovered || l.recoveredFrom > leo {
		l.recoveredFrom = leo
	}
	if err := writeRecoveryPoint(l.dir, leo); err != nil {
		return err
	}
	// From here on a crash must be noticed: the marker goes before the first append.
	if clean {
		if err := os.Remove(filepath.Join(l.dir, cleanShutdownFile)); err != nil {
			return fmt.Errorf("segment: remove clean-shutdown marker: %w", err)
		}
	}
	return syncDir(l.dir)
}

func parseSegmentName(name, suffix string) (int64, bool) {
	stem, ok := strings.CutSuffix(name, suffix)
	if !ok || len(stem) != 20 {
		return 0, false
	}
	base, err := strconv.ParseInt(stem, 10, 64)
	return base, err == nil && base >= 0
}

func readCleanShutdown(dir string) (int64, bool) {
	lines, err := readCheckpointLines(filepath.Join(dir, cleanShutdownFile))
	if err != nil || len(lines) != 1 {
		return 0, false
	}
	v, err := strconv.ParseInt(lines[0], 10, 64)
	return v, err == nil
}

// activate prepares s to be the active segment: indexes extended for appends.
func (l *Log) activate(s *LogSegment) error {
	if err := s.offsetIndex.resize(l.cfg.IndexMaxBytes); err != nil {
		return err
	}
	return s.timeIndex.resize(l.cfg.IndexMaxBytes)
}

func (l *Log) active() *LogSegment { return l.segments[len(l.segments)-1] }

// Dir is the log's directory.
func (l *Log) Dir() string { return l.dir }

// LogStartOffset is the first offset a reader may read: the first segment's base
// offset, or past it after IncrementLogStartOffset. Lock-free.
func (l *Log) LogStartOffset() int64 { return l.logStartOffset.Load() }

// LogEndOffset is the offset the next appended record gets.
func (l *Log) LogEndOffset() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.active().nextOffset
}

// ActiveBaseOffset is the active segment's base offset.
func (l *Log) ActiveBaseOffset() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.active().baseOffset
}

// RecoveryPoint is the offset below which the log is known to be on disk.
func (l *Log) RecoveryPoint() int64 { return l.recoveryPoint.Load() }

// RecoveredFrom is the lowest offset Open's recovery scanned from (the base of the first
// segment it scanned, after an unclean stop or for lost indexes, or whose
// aborted-transaction index file was missing), or the log end offset at open if there is
// none: state derived from the log below it (the replica's producer snapshots) was built
// from records that stood the crash, and their aborted-transaction index entries are
// all there.
func (l *Log) RecoveredFrom() int64 { return l.recoveredFrom }

// Size is the log's total size in bytes.
func (l *Log) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var n int64
	for _, s := range l.segments {
		n += s.size
	}
	return n
}

// NumSegments is the number of segments.
func (l *Log) NumSegments() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.segments)
}

// SegmentBaseOffsets lists the segments' base offsets in order.
func (l *Log) SegmentBaseOffsets() []int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]int64, len(l.segments))
	for i, s := range l.segments {
		out[i] = s.baseOffset
	}
	return out
}

// Append validates batches — one or more RecordBatch v2 batches back to back, as in a
// produce request — and appends them with one write as leader of leaderEpoch: it assigns
// their offsets (and leader epoch, and for LogAppendTime topics the timestamp) by writing
// the headers in place in the caller's buffer, then writes them at the end of the active
// segment, rolling it first if needed. Either every batch is written or none: a bad batch
// returns a *proto.BatchError and leaves the log untouched. With Flush.Sync it returns
// once the batches are on disk.
func (l *Log) Append(batches []byte, leaderEpoch int32) (AppendInfo, error) {
	parts := [1][]byte{batches}
	return l.append(parts[:], leaderEpoch, true, true)
}

// AppendValidated appends, as leader of leaderEpoch, several runs of batches back to back
// with one vectored write — the produce requests for one partition that arrived in one
// event-loop pass — assigning offsets in place in order. Every part must already have
// passed proto.ValidateRecordBatch against MaxBatchBytes (the caller validated it to
// answer each request on its own); only the headers are read again. Whole or nothing.
func (l *Log) AppendValidated(parts [][]byte, leaderEpoch int32) (AppendInfo, error) {
	return l.append(parts, leaderEpoch, true, false)
}

// MaxBatchBytes is the largest batch the log accepts (max.message.bytes). It takes no
// lock.
func (l *Log) MaxBatchBytes() int { return int(l.maxBatchBytes.Load()) }

// SegmentBytes is the size past which the active segment rolls (segment.bytes). It takes
// no lock.
func (l *Log) SegmentBytes() int64 { return l.segmentBytes.Load() }

// AppendAsFollower appends batches replicated from the leader, keeping their offsets and
// leader epochs. Their offsets must increase and start at or after the log end offset,
// else ErrInvalidAppendOffset.
func (l *Log) AppendAsFollower(batches []byte) (AppendInfo, error) {
	parts := [1][]byte{batches}
	return l.append(parts[:], -1, false, true)
}

// scanned is what validation learns about an append.
type scanned struct {
	batches      int
	records      int64
	firstBase    int64 // follower appends: the first batch's base offset
	lastOffset   int64 // follower appends: the last batch's last offset
	maxTimestamp int64
	bytes        int
}

// validate checks every batch of the parts before anything is written; with checkCRC
// false (parts validated by the caller) it reads the headers only.
func (l *Log) validate(parts [][]byte, assign, checkCRC bool) (scanned, error) {
	sc := scanned{maxTimestamp: -1, firstBase: -1, lastOffset: -1}
	maxBatchBytes := l.MaxBatchBytes() // validation runs before mu is taken
	total := 0
	for _, b := range parts {
		total += len(b)
	}
	if total == 0 {
		return sc, ErrEmptyAppend
	}
	for _, b := range parts {
		for pos := 0; pos < len(b); {
			var h proto.RecordBatchHeader
			var err error
			if checkCRC {
				h, err = proto.ValidateRecordBatch(b[pos:], maxBatchBytes)
			} else if h, err = proto.ParseRecordBatchHeader(b[pos:]); err == nil && h.Size() > len(b)-pos {
				err = proto.ErrBatchTruncated
			}
			if err != nil {
				return sc, &proto.BatchError{Position: pos, Err: err, Detail: fmt.Sprintf("%d bytes left, batchLength %d", len(b)-pos, h.BatchLength)}
			}
			if !assign {
				if h.BaseOffset <= sc.lastOffset {
					return sc, fmt.Errorf("%w: batch at byte %d has base offset %d after %d", ErrInvalidAppendOffset, pos, h.BaseOffset, sc.lastOffset)
				}
				if sc.firstBase < 0 {
					sc.firstBase = h.BaseOffset
				}
				sc.lastOffset = h.LastOffset()
			}
			sc.batches++
			sc.records += int64(h.RecordCount)
			sc.maxTimestamp = max(sc.maxTimestamp, h.MaxTimestamp)
			pos += h.Size()
		}
	}
	sc.bytes = total
	return sc, nil
}

func (l *Log) append(parts [][]byte, epoch int32, assign, checkCRC bool) (AppendInfo, error) {
	sc, err := l.validate(parts, assign, checkCRC)
	if err != nil {
		return AppendInfo{}, err
	}
	l.mu.Lock()
	return l.appendLocked(parts, sc, epoch, assign, nil)
}

// appendLocked is an append after validation (sc), with l.mu held; it releases it. With
// staged set, the parts are that staged append's bytes, already in its segment past the
// end: they are written again only if the append must land elsewhere (a roll that the
// batches' offsets or the clock call for), which sets staged.relocated.
func (l *Log) appendLocked(parts [][]byte, sc scanned, epoch int32, assign bool, staged *StagedAppend) (AppendInfo, error) {
	var err error
	if staged == nil {
		l.dropStaging()
	}
	if l.closed {
		l.mu.Unlock()
		return AppendInfo{}, ErrClosed
	}
	nowMs := l.cfg.Now().UnixMilli()
	first, last := l.active().nextOffset, l.active().nextOffset+sc.records-1
	if !assign {
		if sc.firstBase < first {
			l.mu.Unlock()
			return AppendInfo{}, fmt.Errorf("%w: first offset %d below log end %d", ErrInvalidAppendOffset, sc.firstBase, first)
		}
		first, last = sc.firstBase, sc.lastOffset
	}
	s, err := l.maybeRoll(sc.bytes, first, last, nowMs)
	if err != nil {
		l.mu.Unlock()
		return AppendInfo{}, err
	}
	info := AppendInfo{
		FirstOffset: first, LastOffset: last, SegmentBaseOffset: s.baseOffset, Position: s.size,
		MaxTimestamp: sc.maxTimestamp, LogAppendTime: -1, LogStartOffset: l.logStartOffset.Load(),
		Batches: sc.batches, Records: sc.records, Bytes: sc.bytes,
	}
	if assign {
		logAppendTime := l.cfg.TimestampType == LogAppendTime
		if logAppendTime {
			info.LogAppendTime, info.MaxTimestamp = nowMs, nowMs
		}
		next := first
		for _, b := range parts {
			for pos := 0; pos < len(b); {
				h, _ := proto.ParseRecordBatchHeader(b[pos:])
				proto.SetBaseOffset(b[pos:], next)
				proto.SetPartitionLeaderEpoch(b[pos:], epoch)
				if logAppendTime {
					proto.SetLogAppendTime(b[pos:pos+h.Size()], nowMs)
				}
				next += int64(h.RecordCount)
				pos += h.Size()
			}
		}
	}
	switch {
	case staged != nil && staged.s == s && staged.file == s.file && staged.pos == s.size:
		// In place already.
	case staged != nil:
		staged.relocated = true
		err = pwriteFull(s.file.fd, parts[0], s.size)
	case len(parts) == 1:
		err = pwriteFull(s.file.fd, parts[0], s.size)
	default:
		err = pwritevFull(s.file.fd, parts, s.size)
	}
	if err != nil {
		// Whole or nothing: cut whatever part of the write landed.
		_ = unix.Ftruncate(s.file.fd, s.size)
		if j := syncJournal; j != nil {
			j.truncated(s.file.path, s.size)
		}
		l.mu.Unlock()
		return AppendInfo{}, fmt.Errorf("segment: append to %s: %w", s.file.path, err)
	}
	for _, b := range parts {
		s.appendIndexEntries(b, s.size, l.cfg.IndexIntervalBytes)
		s.size += int64(len(b))
		if err := l.assignEpochs(b, epoch, first, assign); err != nil {
			l.mu.Unlock()
			return info, err
		}
	}
	flush := l.cfg.Flush // UpdateConfig may change it once the lock is gone
	l.mu.Unlock()

	switch f := flush; {
	case f.Sync:
		err = l.flushTo(last + 1)
	case f.Messages > 0 && last+1-l.recoveryPoint.Load() >= f.Messages:
		err = l.flushTo(last + 1)
	}
	return info, err
}

// assignEpochs records new leader epochs in the cache: the leader's epoch for a leader
// append, each batch's partitionLeaderEpoch for a follower's. The cache file is written
// only when an epoch is new, which is rare.
func (l *Log) assignEpochs(b []byte, epoch int32, first int64, assign bool) error {
	changed := false
	if assign {
		changed = l.epochs.assign(epoch, first)
	} else {
		for pos := 0; pos < len(b); {
			h, _ := proto.ParseRecordBatchHeader(b[pos:])
			if l.epochs.assign(h.PartitionLeaderEpoch, h.BaseOffset) {
				changed = true
			}
			pos += h.Size()
		}
	}
	if !changed {
		return nil
	}
	return l.epochs.persist()
}

// maybeRoll rolls the active segment if an append of n bytes with offsets first..last
// would overfill it, it is older than segment.ms, an index is full, or last would not fit
// as a relative offset. It returns the segment to append to.
func (l *Log) maybeRoll(n int, first, last, nowMs int64) (*LogSegment, error) {
	s := l.active()
	if last-first > maxRelativeOffset {
		return nil, fmt.Errorf("%w: offsets %d..%d cannot be stored after segment %d", ErrInvalidAppendOffset, first, last, s.baseOffset)
	}
	if s.size == 0 && s.fitsOffsets(last) {
		s.firstAppendMs = nowMs
		return s, nil
	}
	if s.firstAppendMs < 0 {
		s.firstAppendMs = nowMs
	}
	if s.size > 0 && s.size+int64(n) <= l.cfg.SegmentBytes && nowMs-s.firstAppendMs <= l.cfg.SegmentAge.Milliseconds() &&
		!s.indexFull() && s.fitsOffsets(last) {
		return s, nil
	}
	if err := l.roll(first); err != nil {
		return nil, err
	}
	l.active().firstAppendMs = nowMs
	return l.active(), nil
}

const maxRelativeOffset = 1<<31 - 1

// roll makes a new active segment at base offset base: trim the old segment's indexes,
// create the new files, make them durable in the directory, and flush the old segment
// in the background (then move the recovery point past it). A crash between any two steps
// is repaired by Open: an untrimmed index is cut to its valid entries, a log without
// indexes has them rebuilt, indexes without a log are removed.
func (l *Log) roll(base int64) error {
	l.dropStaging()
	old := l.active()
	if old.size == 0 {
		// An empty active segment is replaced (a follower append that jumps ahead).
		if err := old.delete(); err != nil {
			return err
		}
		l.segments = l.segments[:len(l.segments)-1]
	} else if err := old.trimIndexes(); err != nil {
		return err
	}
	s, err := openSegment(l.dir, base, &l.cfg, true, true)
	if err != nil {
		if old.size > 0 {
			_ = l.activate(old)
		}
		return err
	}
	l.segments = append(l.segments, s)
	if err := syncDir(l.dir); err != nil {
		return err
	}
	if old.size > 0 && !l.cfg.Flush.Sync {
		l.bg.Add(1)
		go func() {
			defer l.bg.Done()
			if err := l.flushTo(base); err != nil {
				l.logger.Error("flush after roll failed", "err", err)
				return
			}
			if err := l.Checkpoint(); err != nil {
				l.logger.Error("recovery-point checkpoint failed", "err", err)
			}
		}()
	}
	return nil
}

// Roll forces a new active segment at the log end offset, if the active one is not empty.
func (l *Log) Roll() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.active().size == 0 {
		return nil
	}
	return l.roll(l.active().nextOffset)
}

// Read returns, appended to dst, the regions of whole batches to send for a fetch at
// offset: starting at the batch that holds offset, holding only batches that end below
// upperBound (the high watermark for consumers, the log end offset for followers), and no
// more than maxBytes in all — except that with minOneBatch the first batch is returned
// whole even if it is larger (Kafka's KIP-74 rule). Regions may span segments. An offset
// equal to the log end offset (or at or above upperBound) reads nothing; one outside
// [log start, log end] is ErrOffsetOutOfRange. The caller releases the regions.
func (l *Log) Read(dst []Region, offset int64, maxBytes int, upperBound int64, minOneBatch bool) ([]Region, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return dst, ErrClosed
	}
	start, end := l.logStartOffset.Load(), l.active().nextOffset
	if offset < start || offset > end {
		return dst, fmt.Errorf("%w: %d not in [%d, %d]", ErrOffsetOutOfRange, offset, start, end)
	}
	upperBound = min(upperBound, end)
	if offset >= upperBound {
		return dst, nil
	}
	var sc headerScanner
	remaining := int64(max(maxBytes, 0))
	taken := false
	for i := l.segmentIndex(offset); i < len(l.segments) && offset < upperBound; i++ {
		s := l.segments[i]
		sc.fd, sc.bufLen = s.file.fd, 0
		startPos, first, found, err := s.findBatch(&sc, offset)
		if err != nil {
			return dst, err
		}
		if !found {
			continue // every batch of s ends before offset: it starts in a later segment
		}
		if first.BaseOffset >= upperBound {
			break
		}
		// The end: the first batch reaching upperBound, or the segment end.
		endPos := s.size
		if upperBound < s.nextOffset {
			if endPos, _, _, err = s.findBatch(&sc, upperBound); err != nil {
				return dst, err
			}
		}
		if startPos+remaining < endPos {
			if endPos, err = s.lastBoundaryBefore(&sc, startPos, startPos+remaining); err != nil {
				return dst, err
			}
			if endPos == startPos && minOneBatch && !taken {
				endPos = startPos + int64(first.Size())
			}
		}
		if endPos <= startPos {
			break
		}
		s.file.acquire()
		r := Region{File: s.file, Position: startPos, Length: endPos - startPos, BaseOffset: first.BaseOffset}
		r.NextOffset = s.nextOffset
		if endPos < s.size {
			h, err := sc.header(endPos, s.size)
			if err != nil {
				s.file.release()
				return dst, err
			}
			r.NextOffset = h.BaseOffset
		}
		dst = append(dst, r)
		taken = true
		remaining -= r.Length
		offset = r.NextOffset
		if endPos < s.size || remaining <= 0 {
			break
		}
	}
	return dst, nil
}

// segmentIndex returns the index of the last segment whose base offset is ≤ offset (0 if
// none).
func (l *Log) segmentIndex(offset int64) int {
	i := sort.Search(len(l.segments), func(i int) bool { return l.segments[i].baseOffset > offset })
	return max(i-1, 0)
}

// OffsetForTimestamp answers ListOffsets by time: the offset and timestamp of the first
// record whose timestamp is ≥ ts; found is false when no record reaches ts. The time
// index and a header scan find the first batch whose largest timestamp reaches ts; only
// that one batch is read (and decompressed if it must be: at most
// maxTimestampSearchBytes) to find the record. A batch that cannot be decompressed
// answers with its base offset and largest timestamp.
func (l *Log) OffsetForTimestamp(ts int64) (offset, timestamp int64, found bool, err error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return 0, 0, false, ErrClosed
	}
	var sc headerScanner
	for _, s := range l.segments {
		if s.maxTimestamp < ts {
			continue
		}
		sc.fd, sc.bufLen = s.file.fd, 0
		pos := s.seekTimestamp(&sc, ts)
		for pos < s.size {
			h, err := sc.header(pos, s.size)
			if err != nil {
				return 0, 0, false, err
			}
			if h.MaxTimestamp >= ts && h.BaseOffset+int64(h.LastOffsetDelta) >= l.logStartOffset.Load() {
				offset, timestamp, found, err := s.recordAtOrAfter(pos, &h, ts)
				// Records below the log start were deleted: the answer is at least
				// the log start (Kafka searches from it).
				return max(offset, l.logStartOffset.Load()), timestamp, found, err
			}
			pos += int64(h.Size())
		}
	}
	return 0, 0, false, nil
}

// maxTimestampSearchBytes bounds the decompressed size of a batch opened for a
// timestamp search.
const maxTimestampSearchBytes = 64 << 20

// recordAtOrAfter reads the batch h at pos and finds its first record with timestamp ≥ ts.
func (s *LogSegment) recordAtOrAfter(pos int64, h *proto.RecordBatchHeader, ts int64) (int64, int64, bool, error) {
	if h.IsLogAppendTime() {
		return h.BaseOffset, h.MaxTimestamp, true, nil
	}
	batch := make([]byte, h.Size())
	if n, err := preadFull(s.file.fd, batch, pos); err != nil || n != len(batch) {
		return 0, 0, false, fmt.Errorf("segment: read batch at %d of %s: %d bytes, %v", pos, s.file.path, n, err)
	}
	delta, recordTs, found, err := proto.FirstRecordAtOrAfter(batch, ts, maxTimestampSearchBytes)
	if err != nil || !found {
		return h.BaseOffset, h.MaxTimestamp, true, nil
	}
	return h.BaseOffset + int64(delta), recordTs, true, nil
}

// ScanBatchHeaders calls fn with the header of every batch from the one holding offset
// to the log end, in order, reading only headers. fn returning false stops the scan.
func (l *Log) ScanBatchHeaders(offset int64, fn func(h *proto.RecordBatchHeader) bool) error {
	return l.walkBatches(offset, func(_ *LogSegment, _ int64, h *proto.RecordBatchHeader) (bool, error) {
		return fn(h), nil
	})
}

// walkBatches calls fn with the segment, position and header of every batch from the
// one holding offset to the log end, in order, under the log's read lock. fn returning
// false or an error stops the walk (the error is returned).
func (l *Log) walkBatches(offset int64, fn func(s *LogSegment, pos int64, h *proto.RecordBatchHeader) (bool, error)) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	var sc headerScanner
	for i := l.segmentIndex(offset); i < len(l.segments); i++ {
		s := l.segments[i]
		sc.fd, sc.bufLen = s.file.fd, 0
		pos, h, found, err := s.findBatch(&sc, offset)
		if err != nil {
			return err
		}
		for found && pos < s.size {
			if h, err = sc.header(pos, s.size); err != nil {
				return err
			}
			if more, err := fn(s, pos, &h); !more || err != nil {
				return err
			}
			pos += int64(h.Size())
		}
	}
	return nil
}

// LatestEpoch is the newest leader epoch in the leader-epoch cache, or -1.
func (l *Log) LatestEpoch() int32 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.epochs.latest()
}

// EndOffsetForEpoch answers OffsetForLeaderEpoch for this replica: the largest epoch ≤
// epoch it knows and the offset where that epoch ended (the log end offset for the
// latest), or (-1, -1).
func (l *Log) EndOffsetForEpoch(epoch int32) (int32, int64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.epochs.endOffsetFor(epoch, l.active().nextOffset)
}

// LeaderEpochs returns the leader-epoch cache's entries.
func (l *Log) LeaderEpochs() []EpochEntry {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.epochs.Entries()
}

// TruncateTo cuts the log so that it ends before the batch holding offset (a follower
// truncating to the leader's epoch end offset) and returns the new log end offset, which
// is offset unless offset falls inside a batch. An offset at or past the log end changes
// nothing; one below the log start empties the log and starts it at offset. Readers
// holding regions of the cut segment keep their bytes: the cut is made on a copy.
func (l *Log) TruncateTo(offset int64) (int64, error) {
	if offset < 0 {
		return 0, fmt.Errorf("%w: truncation to negative offset %d", ErrOffsetOutOfRange, offset)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, ErrClosed
	}
	l.dropStaging()
	if offset >= l.active().nextOffset {
		return l.active().nextOffset, nil
	}
	if offset <= l.segments[0].baseOffset {
		return offset, l.truncateFullyAndStartAt(offset)
	}
	i := l.segmentIndex(offset)
	s := l.segments[i]
	var sc headerScanner
	sc.fd = s.file.fd
	pos, cut, found, err := s.findBatch(&sc, offset)
	if err != nil {
		return 0, err
	}
	for _, later := range l.segments[i+1:] {
		if err := later.delete(); err != nil {
			return 0, err
		}
	}
	l.segments = l.segments[:i+1]
	if found {
		if err := l.truncateSegment(s, pos, cut.BaseOffset); err != nil {
			return 0, err
		}
	}
	if err := l.activate(s); err != nil {
		return 0, err
	}
	leo := s.nextOffset
	if l.epochs.truncateFromEnd(leo) {
		if err := l.epochs.persist(); err != nil {
			return 0, err
		}
	}
	if l.logStartOffset.Load() > leo {
		// Kafka's truncateTo lowers the log start with the log end.
		if err := l.setLogStartOffset(leo); err != nil {
			return 0, err
		}
	}
	l.lowerRecoveryPoint(leo)
	// The checkpoint also syncs the directory. A recovery point left above the new log
	// end would make a crash trust the offsets written again before they are flushed.
	return leo, l.Checkpoint()
}

// truncateSegment cuts s at byte pos, the start of the batch with base offset cutOffset,
// drops the index entries past the cut and reloads the tail state. If readers hold the
// file, the kept prefix is copied (copy_file_range, in the kernel) to a new file that
// replaces it, so their regions keep the old bytes.
func (l *Log) truncateSegment(s *LogSegment, pos, cutOffset int64) error {
	if s.file.shared() {
		if err := s.copyOnTruncate(pos); err != nil {
			return err
		}
	} else if err := unix.Ftruncate(s.file.fd, pos); err != nil {
		return fmt.Errorf("segment: truncate %s: %w", s.file.path, err)
	} else if j := syncJournal; j != nil {
		j.truncated(s.file.path, pos)
	}
	s.size = pos
	s.offsetIndex.truncateToPosition(pos)
	s.timeIndex.truncateToOffset(cutOffset)
	if err := s.txnIndex.truncateTo(cutOffset); err != nil {
		return err
	}
	s.nextOffset, s.maxTimestamp, s.offsetOfMaxTimestamp = s.baseOffset, -1, s.baseOffset
	s.bytesSinceIndexEntry = 0
	return s.loadTail()
}

func (s *LogSegment) copyOnTruncate(pos int64) error {
	swap := s.file.path + swapSuffix
	nf, err := openFile(swap, unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		nf.release()
		_ = os.Remove(swap)
		return fmt.Errorf("segment: truncate %s by copy: %w", s.file.path, err)
	}
	var inOff, outOff int64
	for inOff < pos {
		n, err := unix.CopyFileRange(s.file.fd, &inOff, nf.fd, &outOff, int(min(pos-inOff, 1<<30)), 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fail(err)
		}
		if n == 0 {
			return fail(unix.EIO)
		}
	}
	if err := unix.Fdatasync(nf.fd); err != nil {
		return fail(err)
	}
	if err := os.Rename(swap, s.file.path); err != nil {
		return fail(err)
	}
	if j := syncJournal; j != nil {
		// The copy was synced whole: the file is pos bytes, or the old one (whose
		// first pos bytes are the same) if the rename is lost.
		j.truncated(s.file.path, pos)
	}
	nf.path = s.file.path
	old := s.file
	s.file = nf
	old.release()
	return nil
}

// truncateFullyAndStartAt deletes every segment and starts an empty log at offset.
func (l *Log) truncateFullyAndStartAt(offset int64) error {
	l.dropStaging()
	for _, s := range l.segments {
		if err := s.delete(); err != nil {
			return err
		}
	}
	l.segments = l.segments[:0]
	s, err := openSegment(l.dir, offset, &l.cfg, true, true)
	if err != nil {
		return err
	}
	l.segments = append(l.segments, s)
	if l.epochs.clear() {
		if err := l.epochs.persist(); err != nil {
			return err
		}
	}
	if err := l.setLogStartOffset(offset); err != nil {
		return err
	}
	l.lowerRecoveryPoint(offset)
	l.flushMu.Lock()
	l.recoveryPoint.Store(offset)
	l.flushMu.Unlock()
	return l.Checkpoint() // as in TruncateTo; it syncs the directory too
}

// TruncateFullyAndStartAt empties the log and starts it at offset (a follower whose
// leader's log starts past its own end).
func (l *Log) TruncateFullyAndStartAt(offset int64) error {
	if offset < 0 {
		return fmt.Errorf("%w: log start at negative offset %d", ErrOffsetOutOfRange, offset)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	return l.truncateFullyAndStartAt(offset)
}

func (l *Log) lowerRecoveryPoint(offset int64) {
	l.flushMu.Lock()
	l.truncations++
	if l.recoveryPoint.Load() > offset {
		l.recoveryPoint.Store(offset)
	}
	l.flushMu.Unlock()
}

// RetentionResult says what DeleteRetained removed.
type RetentionResult struct {
	Segments       int
	Bytes          int64
	LogStartOffset int64
}

// DeleteRetained applies retention.ms and retention.bytes: it deletes the oldest whole
// segments that are entirely older than the retention age, or that the size limit does
// not leave room for, and advances the log start offset. Only segments that end at or
// below upperBound (the high watermark) are deleted. If the active segment itself has
// expired it is rolled first, so the log end offset is kept.
func (l *Log) DeleteRetained(upperBound int64) (RetentionResult, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return RetentionResult{}, ErrClosed
	}
	nowMs := l.cfg.Now().UnixMilli()
	var total int64
	for _, s := range l.segments {
		total += s.size
	}
	n := 0
	for n < len(l.segments) {
		s := l.segments[n]
		// An empty active segment stays; an empty one before others (its data lost in
		// a crash) holds nothing and must not stop retention.
		if (s.size == 0 && n == len(l.segments)-1) || s.nextOffset > upperBound {
			break
		}
		expired := l.cfg.RetentionAge > 0 && s.maxTimestamp < nowMs-l.cfg.RetentionAge.Milliseconds()
		oversize := l.cfg.RetentionBytes > 0 && total-s.size >= l.cfg.RetentionBytes
		// A segment wholly below the log start holds only deleted records (Kafka's
		// deleteLogStartOffsetBreachedSegments); IncrementLogStartOffset deletes them
		// at once, this catches one whose deletion failed.
		breached := n+1 < len(l.segments) && l.segments[n+1].baseOffset <= l.logStartOffset.Load()
		if !expired && !oversize && !breached {
			break
		}
		if n == len(l.segments)-1 {
			if !expired {
				break // size retention never takes the active segment
			}
			if err := l.roll(s.nextOffset); err != nil {
				return RetentionResult{}, err
			}
		}
		total -= s.size
		n++
	}
	res := RetentionResult{Segments: n}
	for _, s := range l.segments[:n] {
		res.Bytes += s.size
		if err := s.delete(); err != nil {
			return res, err
		}
	}
	l.segments = append(l.segments[:0], l.segments[n:]...)
	res.LogStartOffset = max(l.logStartOffset.Load(), l.segments[0].baseOffset)
	l.logStartOffset.Store(res.LogStartOffset)
	if n > 0 {
		if l.epochs.truncateFromStart(res.LogStartOffset) {
			if err := l.epochs.persist(); err != nil {
				return res, err
			}
		}
		if err := syncDir(l.dir); err != nil {
			return res, err
		}
	}
	return res, nil
}

// IncrementLogStartOffset moves the log start offset up to offset (Kafka's
// maybeIncrementLogStartOffset, for DeleteRecords on a leader and, on a follower, for
// the leader's log start its fetches learn): the records below it can no longer be
// read, the new start is checkpointed (fsynced) before it is answered, the segments
// wholly below it are deleted and the leader-epoch cache starts there. An offset at or
// below the current start changes nothing; one past the log end is ErrOffsetOutOfRange
// (the caller bounds it by the high watermark). It returns the log start offset after
// the call.
func (l *Log) IncrementLogStartOffset(offset int64) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, ErrClosed
	}
	cur, end := l.logStartOffset.Load(), l.active().nextOffset
	if offset <= cur {
		return cur, nil
	}
	if offset > end {
		return cur, fmt.Errorf("%w: log start %d past the log end %d", ErrOffsetOutOfRange, offset, end)
	}
	// The checkpoint goes first: a crash after a segment's deletion must not reopen the
	// log at that segment's successor's base with records below offset readable.
	if err := l.setLogStartOffset(offset); err != nil {
		return cur, err
	}
	n := 0
	for n+1 < len(l.segments) && l.segments[n+1].baseOffset <= offset {
		if err := l.segments[n].delete(); err != nil {
			l.segments = append(l.segments[:0], l.segments[n:]...)
			return offset, err
		}
		n++
	}
	l.segments = append(l.segments[:0], l.segments[n:]...)
	if l.epochs.truncateFromStart(offset) {
		if err := l.epochs.persist(); err != nil {
			return offset, err
		}
	}
	if n > 0 {
		if err := syncDir(l.dir); err != nil {
			return offset, err
		}
	}
	return offset, nil
}

// setLogStartOffset sets the log start offset and checkpoints it. The caller holds mu's
// write lock and keeps the invariant on logStartOffset.
func (l *Log) setLogStartOffset(offset int64) error {
	if l.logStartOffset.Swap(offset) == offset {
		return nil
	}
	return writeLogStartOffset(l.dir, offset)
}

// UpdateConfig applies new settings (a topic's configs changed). Segment and index sizes
// apply to new segments; the batch size limit, retention and flush settings from the
// next use (a new flush interval from the next tick of the interval flush).
func (l *Log) UpdateConfig(cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if cfg.Flush.Interval != l.cfg.Flush.Interval && !l.closed {
		l.setFlushInterval(cfg.Flush.Interval)
	}
	cfg.IndexMaxBytes = l.cfg.IndexMaxBytes // the active segment's indexes are already sized
	l.cfg = cfg
	l.maxBatchBytes.Store(int64(cfg.MaxBatchBytes))
	l.segmentBytes.Store(cfg.SegmentBytes)
	return nil
}

// Flush forces everything appended so far to disk.
func (l *Log) Flush() error {
	return l.flushTo(l.LogEndOffset())
}

// flushTo makes every offset below target durable, sharing fdatasyncs between callers
// (group commit): one caller syncs everything written so far while later callers wait
// for it and return at once if it covered them.
func (l *Log) flushTo(target int64) error {
	l.flushMu.Lock()
	for {
		if l.recoveryPoint.Load() >= target {
			l.flushMu.Unlock()
			return nil
		}
		if !l.flushing {
			break
		}
		l.flushCond.Wait()
	}
	l.flushing = true
	gen, from := l.truncations, l.recoveryPoint.Load()
	l.flushMu.Unlock()

	var files [4]*File
	toSync := files[:0]
	var rolled []*LogSegment
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		l.flushMu.Lock()
		l.flushing = false
		l.flushCond.Broadcast()
		l.flushMu.Unlock()
		return ErrClosed
	}
	leo := l.active().nextOffset
	for i := l.segmentIndex(from); i < len(l.segments); i++ {
		s := l.segments[i]
		s.file.acquire()
		toSync = append(toSync, s.file)
		if i < len(l.segments)-1 {
			rolled = append(rolled, s)
		}
	}
	var rolledIndexes []string
	for _, s := range rolled {
		rolledIndexes = append(rolledIndexes, s.offsetIndex.path, s.timeIndex.path, s.txnIndex.path)
	}
	l.mu.RUnlock()

	var err error
	groupSyncs.Add(1)
	for _, f := range toSync {
		if e := fdatasyncJournaled(f.fd, f.path); e != nil && err == nil {
			err = fmt.Errorf("segment: fdatasync %s: %w", f.path, e)
		}
		f.release()
	}
	for _, p := range rolledIndexes {
		if e := fsyncPath(p); e != nil && err == nil {
			err = e
		}
	}

	l.flushMu.Lock()
	if err == nil && gen == l.truncations && leo > l.recoveryPoint.Load() {
		l.recoveryPoint.Store(leo)
	}
	l.flushing = false
	l.flushCond.Broadcast()
	l.flushMu.Unlock()
	return err
}

// groupSyncs counts the group flushes that ran (each one fdatasync per segment synced),
// so a benchmark can show how many appends share one.
var groupSyncs atomic.Int64

// fsyncPath fsyncs the file at path (a rolled segment's index, written through its
// mapping: fsync on Linux writes mapped dirty pages too). A file deleted meanwhile is
// skipped.
func fsyncPath(path string) error {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("segment: open %s: %w", path, err)
	}
	defer f.Close()
	var tok uint64
	var size int64
	if j := syncJournal; j != nil {
		tok = j.syncToken()
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("segment: stat %s: %w", path, err)
		}
		size = st.Size()
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("segment: fsync %s: %w", path, err)
	}
	if j := syncJournal; j != nil {
		j.synced(path, size, tok, 0) // an index: never replaced by rename
	}
	return nil
}

// Checkpoint writes the recovery point to disk, so that recovery after a crash starts
// there. The data plane calls it periodically; rolls, interval flushes and Close do too.
func (l *Log) Checkpoint() error {
	l.checkpointMu.Lock()
	defer l.checkpointMu.Unlock()
	return writeRecoveryPoint(l.dir, l.recoveryPoint.Load())
}

// setFlushInterval starts the interval flush loop, or gives it a new interval (0 stops
// its flushes). The caller holds mu (or is Open), and the log is not closed.
func (l *Log) setFlushInterval(d time.Duration) {
	if l.flushEvery == nil {
		if d > 0 {
			l.flushEvery = make(chan time.Duration, 1)
			l.bg.Add(1)
			go l.flushLoop(d, l.flushEvery)
		}
		return
	}
	select { // a change not yet taken is replaced
	case <-l.flushEvery:
	default:
	}
	l.flushEvery <- d
}

func (l *Log) flushLoop(interval time.Duration, every <-chan time.Duration) {
	defer l.bg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	tick := t.C
	for {
		select {
		case <-l.stop:
			return
		case d := <-every:
			if d > 0 {
				t.Reset(d)
				tick = t.C
			} else {
				t.Stop()
				tick = nil
			}
			continue
		case <-tick:
		}
		if leo := l.LogEndOffset(); leo > l.recoveryPoint.Load() {
			if err := l.flushTo(leo); err != nil {
				l.logger.Error("interval flush failed", "err", err)
				continue
			}
			if err := l.Checkpoint(); err != nil {
				l.logger.Error("recovery-point checkpoint failed", "err", err)
			}
		}
	}
}

// Close flushes the log, trims the active segment's indexes, writes the recovery point
// and the clean-shutdown marker, and closes the files (regions still held by readers stay
// valid until released). The next Open then needs no recovery scan.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true // appends and rolls stop here, so no background flush starts after Wait
	l.mu.Unlock()
	close(l.stop)
	l.bg.Wait()

	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropStaging()
	active := l.active()
	err := l.flushToLocked(active.nextOffset)
	if err == nil {
		err = active.trimIndexes()
	}
	if err == nil {
		err = active.flush()
	}
	if err == nil {
		err = writeRecoveryPoint(l.dir, active.nextOffset)
	}
	if err == nil {
		err = WriteFileAtomic(filepath.Join(l.dir, cleanShutdownFile), fmt.Appendf(nil, "%d\n%d\n", checkpointVersion, active.nextOffset))
	}
	for _, s := range l.segments {
		s.close()
	}
	return err
}

// flushToLocked syncs every segment from the recovery point's while the caller holds
// the write lock (Close: nothing else runs).
func (l *Log) flushToLocked(target int64) error {
	if l.recoveryPoint.Load() >= target {
		return nil
	}
	for i := l.segmentIndex(l.recoveryPoint.Load()); i < len(l.segments); i++ {
		if err := l.segments[i].flush(); err != nil {
			return err
		}
	}
	l.recoveryPoint.Store(target)
	return nil
}

// Delete closes the log without a clean-shutdown marker and removes its directory (the
// topic was deleted), as RemoveDir does: renamed at once, its files removed in the
// background. Readers holding regions keep their bytes until they release them.
func (l *Log) Delete() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return RemoveDir(l.dir)
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	l.bg.Wait()
	l.mu.Lock()
	for _, s := range l.segments {
		s.close()
	}
	l.mu.Unlock()
	return RemoveDir(l.dir)
}
