package segment

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/gregor-streaming/gregor/proto"
	"golang.org/x/sys/unix"
)

// File name suffixes of a segment's files.
const (
	logSuffix       = ".log"
	indexSuffix     = ".index"
	timeIndexSuffix = ".timeindex"
	swapSuffix      = ".swap"
)

// segmentName is <baseOffset:020d>, Kafka's naming, so names sort by offset.
func segmentName(dir string, baseOffset int64, suffix string) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", baseOffset, suffix))
}

// LogSegment is one file of a partition's log, <baseOffset:020d>.log, holding RecordBatch
// v2 batches exactly as received (with baseOffset and partitionLeaderEpoch assigned), plus
// its OffsetIndex and TimeIndex. The log's lock guards every field.
type LogSegment struct {
	baseOffset int64
	file       *File
	// size is the byte length of the log file. Invariant: every byte below size is part
	// of a whole, validated batch.
	size        int64
	offsetIndex *OffsetIndex
	timeIndex   *TimeIndex
	// txnIndex lists the transactions aborted by markers in the segment (txnindex.go).
	txnIndex *TxnIndex
	// nextOffset is the offset after the last batch (baseOffset when empty).
	nextOffset int64
	// maxTimestamp is the largest batch maxTimestamp in the segment (-1 when empty);
	// offsetOfMaxTimestamp is the base offset of the batch that has it.
	maxTimestamp         int64
	offsetOfMaxTimestamp int64
	// firstAppendMs is the broker time (ms) of the segment's first append since the log
	// was opened (after a restart a segment's age starts again); -1 until then.
	// segment.ms counts from it. Kafka counts from the first batch's own timestamp, which
	// makes producers with old clocks roll a segment per append; the broker's clock
	// cannot.
	firstAppendMs int64
	// bytesSinceIndexEntry counts log bytes appended since the last offset-index entry.
	bytesSinceIndexEntry int
	// indexMaxBytes is the configured index size, to tell a full time index (which
	// takes no more entries) from a damaged one.
	indexMaxBytes int
}

// openSegment opens the files of the segment at baseOffset in dir. It does not read the
// log: call recover or loadTail to learn its contents.
func openSegment(dir string, baseOffset int64, cfg *Config, active, create bool) (*LogSegment, error) {
	flags := unix.O_RDWR
	if create {
		flags |= unix.O_CREAT | unix.O_TRUNC
	}
	f, err := openFile(segmentName(dir, baseOffset, logSuffix), flags)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		f.release()
		return nil, fmt.Errorf("segment: stat %s: %w", f.path, err)
	}
	s := &LogSegment{
		baseOffset:           baseOffset,
		file:                 f,
		size:                 st.Size,
		nextOffset:           baseOffset,
		maxTimestamp:         -1,
		offsetOfMaxTimestamp: baseOffset,
		firstAppendMs:        -1,
		indexMaxBytes:        cfg.IndexMaxBytes,
	}
	if create {
		// A new segment's indexes start empty whatever a crash may have left behind.
		_ = os.Remove(segmentName(dir, baseOffset, indexSuffix))
		_ = os.Remove(segmentName(dir, baseOffset, timeIndexSuffix))
		if j := syncJournal; j != nil {
			for _, suffix := range []string{logSuffix, indexSuffix, timeIndexSuffix, txnIndexSuffix} {
				j.created(segmentName(dir, baseOffset, suffix))
			}
		}
	}
	if s.offsetIndex, err = openOffsetIndex(segmentName(dir, baseOffset, indexSuffix), baseOffset, cfg.IndexMaxBytes, active); err != nil {
		s.file.release()
		return nil, err
	}
	if s.timeIndex, err = openTimeIndex(segmentName(dir, baseOffset, timeIndexSuffix), baseOffset, cfg.IndexMaxBytes, active); err != nil {
		_ = s.offsetIndex.close()
		s.file.release()
		return nil, err
	}
	if s.txnIndex, err = openTxnIndex(segmentName(dir, baseOffset, txnIndexSuffix), create); err != nil {
		_ = s.offsetIndex.close()
		_ = s.timeIndex.close()
		s.file.release()
		return nil, err
	}
	return s, nil
}

// indexesExist reports whether both index files of the segment are on disk.
func indexesExist(dir string, baseOffset int64) bool {
	for _, suffix := range []string{indexSuffix, timeIndexSuffix} {
		if _, err := os.Stat(segmentName(dir, baseOffset, suffix)); err != nil {
			return false
		}
	}
	return true
}

// headerScanner reads batch headers of one segment file sequentially through a small
// buffer, so that walking from an index entry to a target costs one or two preads.
type headerScanner struct {
	fd     int
	buf    [scanBufferBytes]byte
	bufPos int64 // file position of buf[0]
	bufLen int
}

// scanBufferBytes covers an index interval's worth of headers in one pread.
const scanBufferBytes = 8192

// header returns the header of the batch at pos, which must lie below limit (the
// segment's size). Headers in a live segment were validated on append, so a bad one here
// means the file changed under us: errCorruptSegment.
func (sc *headerScanner) header(pos, limit int64) (proto.RecordBatchHeader, error) {
	if pos+proto.RecordBatchHeaderSize > limit {
		return proto.RecordBatchHeader{}, fmt.Errorf("%w: header at %d passes end %d", errCorruptSegment, pos, limit)
	}
	if pos < sc.bufPos || pos+proto.RecordBatchHeaderSize > sc.bufPos+int64(sc.bufLen) {
		n, err := preadFull(sc.fd, sc.buf[:], pos)
		if err != nil {
			return proto.RecordBatchHeader{}, fmt.Errorf("segment: read header at %d: %w", pos, err)
		}
		sc.bufPos, sc.bufLen = pos, n
		if n < proto.RecordBatchHeaderSize {
			return proto.RecordBatchHeader{}, fmt.Errorf("%w: short header at %d", errCorruptSegment, pos)
		}
	}
	off := int(pos - sc.bufPos)
	h, err := proto.ParseRecordBatchHeader(sc.buf[off : off+proto.RecordBatchHeaderSize])
	if err != nil {
		return h, fmt.Errorf("%w: at %d: %v", errCorruptSegment, pos, err)
	}
	if pos+int64(h.Size()) > limit {
		return h, fmt.Errorf("%w: batch at %d passes end %d", errCorruptSegment, pos, limit)
	}
	return h, nil
}

var errCorruptSegment = errors.New("segment: corrupt segment")

// findBatch returns the position and header of the first batch whose last offset is ≥
// target, scanning from the offset index's entry for it. found is false when every batch
// ends before target.
func (s *LogSegment) findBatch(sc *headerScanner, target int64) (pos int64, h proto.RecordBatchHeader, found bool, err error) {
	pos = s.seek(sc, target)
	for pos < s.size {
		h, err = sc.header(pos, s.size)
		if err != nil {
			return pos, h, false, err
		}
		if h.LastOffset() >= target {
			return pos, h, true, nil
		}
		pos += int64(h.Size())
	}
	return s.size, h, false, nil
}

// seek returns where to scan from for target: the position of the offset index's entry
// for it, or the segment start if the batch there does not have the entry's offset. Open
// checks only an index's last entry; a damaged entry before it must not make a read skip
// batches, and the check costs nothing: the scan reads that header first anyway.
func (s *LogSegment) seek(sc *headerScanner, target int64) int64 {
	offset, pos := s.offsetIndex.lookup(target)
	if !s.entryHolds(sc, offset, pos) {
		return 0
	}
	return pos
}

// seekTimestamp returns where to scan from for the first batch reaching ts: the
// position of the time index's entry for it, or the segment start if that entry is not
// what the log holds (the batch at its offset must have its timestamp), for the same
// reason as seek.
func (s *LogSegment) seekTimestamp(sc *headerScanner, ts int64) int64 {
	t, o := s.timeIndex.lookupEntry(ts)
	if t < 0 {
		return 0
	}
	pos, h, found, err := s.findBatch(sc, o)
	if err != nil || !found || h.BaseOffset != o || h.MaxTimestamp != t {
		return 0
	}
	return pos
}

// entryHolds reports whether the batch at pos has base offset offset.
func (s *LogSegment) entryHolds(sc *headerScanner, offset, pos int64) bool {
	if pos == 0 {
		return true
	}
	h, err := sc.header(pos, s.size)
	return err == nil && h.BaseOffset == offset
}

// lastBoundaryBefore returns the largest batch boundary ≤ limit, starting at from (a
// boundary): the end of the last whole batch that fits below limit.
func (s *LogSegment) lastBoundaryBefore(sc *headerScanner, from, limit int64) (int64, error) {
	if limit >= s.size {
		return s.size, nil
	}
	if o, p := s.offsetIndex.lookupPosition(limit); p > from && s.entryHolds(sc, o, p) {
		from = p
	}
	pos := from
	for pos < s.size {
		h, err := sc.header(pos, s.size)
		if err != nil {
			return 0, err
		}
		if pos+int64(h.Size()) > limit {
			break
		}
		pos += int64(h.Size())
	}
	return pos, nil
}

// appendIndexEntries updates indexes and in-memory state for the batches in b, which
// were just written at position pos. Headers in b are already validated.
func (s *LogSegment) appendIndexEntries(b []byte, pos int64, indexInterval int) {
	for off := 0; off < len(b); {
		h, _ := proto.ParseRecordBatchHeader(b[off:])
		size := h.Size()
		s.trackBatch(&h, pos+int64(off), size, indexInterval)
		off += size
	}
}

// trackBatch accounts for one batch at position pos: offsets, timestamps and index
// entries. Index entries are added before the batch's bytes are counted, as Kafka does,
// so the first batch of a segment gets none.
func (s *LogSegment) trackBatch(h *proto.RecordBatchHeader, pos int64, size, indexInterval int) {
	if h.MaxTimestamp > s.maxTimestamp {
		s.maxTimestamp = h.MaxTimestamp
		s.offsetOfMaxTimestamp = h.BaseOffset
	}
	if s.bytesSinceIndexEntry > indexInterval && !s.offsetIndex.full() {
		s.offsetIndex.append(h.BaseOffset, pos)
		s.timeIndex.maybeAppend(s.maxTimestamp, s.offsetOfMaxTimestamp)
		s.bytesSinceIndexEntry = 0
	}
	s.bytesSinceIndexEntry += size
	s.nextOffset = h.NextOffset()
}

// indexFull reports whether either index can take no further entry.
func (s *LogSegment) indexFull() bool { return s.offsetIndex.full() || s.timeIndex.full() }

// fitsOffsets reports whether offsets up to last can be stored relative to the base.
func (s *LogSegment) fitsOffsets(last int64) bool { return last-s.baseOffset <= math.MaxInt32 }

// loadTail sets nextOffset, the timestamps and the index counters of a segment whose
// indexes are trusted, reading only the headers after the last index entry (plus the
// first batch's, to check the base offset). It is how a clean open avoids scanning whole logs.
func (s *LogSegment) loadTail() error {
	var sc headerScanner
	sc.fd = s.file.fd
	if s.size == 0 {
		return s.trimTxnIndex()
	}
	first, err := sc.header(0, s.size)
	if err != nil {
		return err
	}
	if first.BaseOffset < s.baseOffset {
		return fmt.Errorf("%w: first batch offset %d below base %d", errCorruptSegment, first.BaseOffset, s.baseOffset)
	}
	if ts, off := s.timeIndex.lastEntry(); ts >= 0 {
		s.maxTimestamp, s.offsetOfMaxTimestamp = ts, off
	}
	lastOffset, pos := s.offsetIndex.lastEntry()
	if s.offsetIndex.entries > 0 {
		h, err := sc.header(pos, s.size)
		if err != nil {
			return err
		}
		if h.BaseOffset != lastOffset {
			return fmt.Errorf("%w: index entry %d at %d finds batch %d", errCorruptSegment, lastOffset, pos, h.BaseOffset)
		}
		// Each offset-index entry is followed by a time-index entry if its batch raised
		// the largest timestamp, so unless the time index filled up, its last entry
		// reaches this batch's timestamp. One that does not lost its later entries, and
		// would hide the segment's largest timestamp (OffsetForTimestamp, retention).
		timeFull := (s.timeIndex.entries+1)*timeIndexEntrySize > s.indexMaxBytes
		if ts, _ := s.timeIndex.lastEntry(); ts < h.MaxTimestamp && !timeFull {
			return fmt.Errorf("%w: time index ends at timestamp %d, below batch %d's %d", errCorruptSegment, ts, h.BaseOffset, h.MaxTimestamp)
		}
	}
	if ts, off := s.timeIndex.lastEntry(); s.timeIndex.entries > 0 {
		// The last time-index entry names the batch that has its timestamp.
		_, h, found, err := s.findBatch(&sc, off)
		if err != nil || !found || h.BaseOffset != off || h.MaxTimestamp != ts {
			return fmt.Errorf("%w: time index entry (%d, %d) does not match the log", errCorruptSegment, ts, off)
		}
	}
	// The batch at the last entry was counted after its entry was added (trackBatch), so
	// counting from it restores bytesSinceIndexEntry exactly; with no entry, from 0.
	s.bytesSinceIndexEntry = 0
	for pos < s.size {
		h, err := sc.header(pos, s.size)
		if err != nil {
			return err
		}
		if h.MaxTimestamp > s.maxTimestamp {
			s.maxTimestamp, s.offsetOfMaxTimestamp = h.MaxTimestamp, h.BaseOffset
		}
		s.bytesSinceIndexEntry += h.Size()
		s.nextOffset = h.NextOffset()
		pos += int64(h.Size())
	}
	if ts, off := s.timeIndex.lastEntry(); ts >= 0 && off >= s.nextOffset {
		return fmt.Errorf("%w: time index entry offset %d beyond the log end %d", errCorruptSegment, off, s.nextOffset)
	}
	return s.trimTxnIndex()
}

// trimTxnIndex drops the aborted-transaction entries whose markers are not in the
// segment: below its base (a damaged file) or at or past its end (the log was cut
// after the entry was written).
func (s *LogSegment) trimTxnIndex() error {
	keep := 0
	for _, e := range s.txnIndex.entries {
		if e.LastOffset < s.baseOffset || e.LastOffset >= s.nextOffset {
			break
		}
		keep++
	}
	if keep == len(s.txnIndex.entries) {
		return nil
	}
	return s.txnIndex.cut(keep)
}

// flush forces the segment's log and indexes to disk.
func (s *LogSegment) flush() error {
	if err := fdatasyncJournaled(s.file.fd, s.file.path); err != nil {
		return fmt.Errorf("segment: fdatasync %s: %w", s.file.path, err)
	}
	if err := s.offsetIndex.flush(); err != nil {
		return err
	}
	if err := s.txnIndex.flush(); err != nil {
		return err
	}
	return s.timeIndex.flush()
}

// trimIndexes cuts both index files to their entries (on roll and close).
func (s *LogSegment) trimIndexes() error {
	if err := s.offsetIndex.trim(); err != nil {
		return err
	}
	return s.timeIndex.trim()
}

// close releases the log's reference on the file and closes the indexes.
func (s *LogSegment) close() {
	_ = s.offsetIndex.close()
	_ = s.timeIndex.close()
	_ = s.txnIndex.close()
	s.file.release()
}

// delete unlinks the segment's files and closes it. Readers holding regions keep the
// data: the inode lives until they release it. The log file goes first, so a crash in
// between leaves index files without a log, which open removes.
func (s *LogSegment) delete() error {
	var errs []error
	if err := os.Remove(s.file.path); err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	if err := s.offsetIndex.delete(); err != nil {
		errs = append(errs, err)
	}
	if err := s.timeIndex.delete(); err != nil {
		errs = append(errs, err)
	}
	if err := s.txnIndex.delete(); err != nil {
		errs = append(errs, err)
	}
	s.file.release()
	return errors.Join(errs...)
}
