package segment

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/gregor-streaming/gregor/proto"
	"golang.org/x/sys/unix"
)

// The aborted-transaction index (Kafka's .txnindex): one file per segment,
// <base>.txnindex, holding an entry for every transaction aborted by a marker in that
// segment, in the order the markers were written. Each entry is 34 bytes, big-endian:
//
//	version int16 (0) · producerId int64 · firstOffset int64 · lastOffset int64 ·
//	lastStableOffset int64
//
// firstOffset is the transaction's first offset in this partition, lastOffset its abort
// marker's offset, lastStableOffset the partition's last stable offset once the marker
// was written (the first offset of the earliest other transaction still open, else the
// marker's offset + 1). A read_committed fetch returns the entries that overlap the
// records it sends, so that the consumer drops the aborted records; lastStableOffset
// lets the lookup stop early, as Kafka's does.
//
// The entries are kept in memory too (a lookup reads no file); the file is written with
// pwrite, never memory-mapped. It is created with its segment, cut with it by
// truncation, deleted with it by retention and DeleteRecords, fsynced with it. Open
// drops a torn tail (a size not a multiple of 34), any entry that does not parse, and
// entries whose marker lies past the segment's end; the entries recovery cannot know
// (a crash between a marker's write and its entry's) are put back by the replica,
// which replays the log's transaction markers when it opens (SyncAbortedTxns).

const (
	txnIndexSuffix    = ".txnindex"
	txnIndexEntrySize = 34
	txnIndexVersion   = 0
	// maxTxnIndexBytes bounds the file read at open: 30 million aborted transactions in
	// one segment is not a log this node wrote.
	maxTxnIndexBytes = 1 << 30
)

// AbortedTxn is one entry of the aborted-transaction index (Kafka's AbortedTxn).
type AbortedTxn struct {
	ProducerID int64
	// FirstOffset is the transaction's first offset in the partition; LastOffset its
	// abort marker's.
	FirstOffset, LastOffset int64
	// LastStableOffset is the partition's last stable offset right after the marker.
	LastStableOffset int64
}

// ErrBadTxnIndexEntry: an index entry that does not parse or holds impossible offsets.
var ErrBadTxnIndexEntry = errors.New("segment: bad aborted-transaction index entry")

// appendTxnIndexEntry encodes e.
func appendTxnIndexEntry(dst []byte, e AbortedTxn) []byte {
	dst = binary.BigEndian.AppendUint16(dst, txnIndexVersion)
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.ProducerID))
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.FirstOffset))
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.LastOffset))
	return binary.BigEndian.AppendUint64(dst, uint64(e.LastStableOffset))
}

// parseTxnIndexEntry decodes the entry at the start of b (at least 34 bytes) and checks
// it: version 0, a producer id, 0 ≤ firstOffset ≤ lastOffset, a last stable offset
// (which may lie below firstOffset: another transaction was still open).
func parseTxnIndexEntry(b []byte) (AbortedTxn, error) {
	if len(b) < txnIndexEntrySize {
		return AbortedTxn{}, fmt.Errorf("%w: %d bytes", ErrBadTxnIndexEntry, len(b))
	}
	if v := int16(binary.BigEndian.Uint16(b)); v != txnIndexVersion {
		return AbortedTxn{}, fmt.Errorf("%w: version %d", ErrBadTxnIndexEntry, v)
	}
	e := AbortedTxn{
		ProducerID:       int64(binary.BigEndian.Uint64(b[2:])),
		FirstOffset:      int64(binary.BigEndian.Uint64(b[10:])),
		LastOffset:       int64(binary.BigEndian.Uint64(b[18:])),
		LastStableOffset: int64(binary.BigEndian.Uint64(b[26:])),
	}
	if e.ProducerID < 0 || e.FirstOffset < 0 || e.FirstOffset > e.LastOffset || e.LastStableOffset < 0 {
		return e, fmt.Errorf("%w: %+v", ErrBadTxnIndexEntry, e)
	}
	return e, nil
}

// parseTxnIndex decodes a whole index file's bytes: the entries up to the first that
// does not parse or does not follow the one before (markers are written in order), and
// whether everything parsed (false: a torn or damaged tail was left out).
func parseTxnIndex(b []byte) ([]AbortedTxn, bool) {
	var out []AbortedTxn
	for len(b) >= txnIndexEntrySize {
		e, err := parseTxnIndexEntry(b)
		if err != nil || (len(out) > 0 && e.LastOffset <= out[len(out)-1].LastOffset) {
			return out, false
		}
		out = append(out, e)
		b = b[txnIndexEntrySize:]
	}
	return out, len(b) == 0
}

// TxnIndex is one segment's aborted-transaction index. The log's lock guards it.
type TxnIndex struct {
	path    string
	fd      int
	entries []AbortedTxn
}

// openTxnIndex opens (creating if missing) the index at path and loads its entries,
// cutting the file after the last good one. With create, any old file is replaced.
func openTxnIndex(path string, create bool) (*TxnIndex, error) {
	flags := unix.O_RDWR | unix.O_CREAT | unix.O_CLOEXEC
	if create {
		flags |= unix.O_TRUNC
	}
	fd, err := unix.Open(path, flags, 0o644)
	if err != nil {
		return nil, fmt.Errorf("segment: open %s: %w", path, err)
	}
	x := &TxnIndex{path: path, fd: fd}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("segment: stat %s: %w", path, err)
	}
	if st.Size == 0 {
		return x, nil
	}
	size := min(st.Size, maxTxnIndexBytes)
	buf := make([]byte, size)
	n, err := preadFull(fd, buf, 0)
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("segment: read %s: %w", path, err)
	}
	entries, whole := parseTxnIndex(buf[:n])
	x.entries = entries
	if !whole || int64(n) != st.Size {
		if err := x.cut(len(entries)); err != nil {
			_ = unix.Close(fd)
			return nil, err
		}
	}
	return x, nil
}

// cut keeps the first n entries, in memory and in the file.
func (x *TxnIndex) cut(n int) error {
	x.entries = x.entries[:n]
	size := int64(n) * txnIndexEntrySize
	if err := unix.Ftruncate(x.fd, size); err != nil {
		return fmt.Errorf("segment: truncate %s: %w", x.path, err)
	}
	if j := syncJournal; j != nil {
		j.truncated(x.path, size)
	}
	return nil
}

// append adds an entry whose marker follows every entry's.
func (x *TxnIndex) append(e AbortedTxn) error {
	b := appendTxnIndexEntry(make([]byte, 0, txnIndexEntrySize), e)
	if err := pwriteFull(x.fd, b, int64(len(x.entries))*txnIndexEntrySize); err != nil {
		_ = x.cut(len(x.entries))
		return fmt.Errorf("segment: append to %s: %w", x.path, err)
	}
	x.entries = append(x.entries, e)
	return nil
}

// replace rewrites the index with entries (sorted by marker offset).
func (x *TxnIndex) replace(entries []AbortedTxn) error {
	b := make([]byte, 0, len(entries)*txnIndexEntrySize)
	for _, e := range entries {
		b = appendTxnIndexEntry(b, e)
	}
	if err := pwriteFull(x.fd, b, 0); err != nil {
		return fmt.Errorf("segment: write %s: %w", x.path, err)
	}
	x.entries = slices.Clone(entries)
	return x.cut(len(entries))
}

// truncateTo drops the entries of markers at or past offset (the log was cut there).
func (x *TxnIndex) truncateTo(offset int64) error {
	n := len(x.entries)
	for n > 0 && x.entries[n-1].LastOffset >= offset {
		n--
	}
	if n == len(x.entries) {
		return nil
	}
	return x.cut(n)
}

// collect appends to dst the entries overlapping [from, upperBound) — the transaction
// ends at or after from and starts before upperBound — and reports whether the lookup
// is complete: an entry whose last stable offset reaches upperBound shows that no
// later marker (here or in a later segment) aborts a transaction that starts below it.
func (x *TxnIndex) collect(dst []proto.AbortedTransaction, from, upperBound int64) ([]proto.AbortedTransaction, bool) {
	for i := range x.entries {
		e := &x.entries[i]
		if e.LastOffset >= from && e.FirstOffset < upperBound {
			dst = append(dst, proto.AbortedTransaction{ProducerID: e.ProducerID, FirstOffset: e.FirstOffset})
		}
		if e.LastStableOffset >= upperBound {
			return dst, true
		}
	}
	return dst, false
}

func (x *TxnIndex) flush() error { return fdatasyncJournaled(x.fd, x.path) }

func (x *TxnIndex) close() error { return unix.Close(x.fd) }

func (x *TxnIndex) delete() error {
	_ = x.close()
	if err := os.Remove(x.path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// AppendAbortedTxn records an aborted transaction in the index of the segment holding
// its marker (e.LastOffset, which the log must hold). Markers are recorded in order; an
// entry already there is not added twice.
func (l *Log) AppendAbortedTxn(e AbortedTxn) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if e.LastOffset < l.segments[0].baseOffset || e.LastOffset >= l.active().nextOffset {
		return fmt.Errorf("%w: aborted transaction's marker %d not in the log", ErrOffsetOutOfRange, e.LastOffset)
	}
	x := l.segments[l.segmentIndex(e.LastOffset)].txnIndex
	if n := len(x.entries); n > 0 && x.entries[n-1].LastOffset >= e.LastOffset {
		if i, found := slices.BinarySearchFunc(x.entries, e.LastOffset, func(a AbortedTxn, off int64) int {
			return cmp.Compare(a.LastOffset, off)
		}); found && x.entries[i] == e {
			return nil
		} else if found {
			x.entries[i] = e
			return x.replace(x.entries)
		} else {
			return x.replace(slices.Insert(slices.Clone(x.entries), i, e))
		}
	}
	return x.append(e)
}

// CollectAbortedTxns appends to dst the aborted transactions that overlap the offsets
// [from, upperBound) — a read_committed fetch's records, upperBound the offset after
// the last batch it returns — as Kafka's collectAbortedTransactions finds them: from
// the segment holding from onwards, until an entry's last stable offset shows that no
// later one can overlap. It reads no file.
func (l *Log) CollectAbortedTxns(dst []proto.AbortedTransaction, from, upperBound int64) []proto.AbortedTransaction {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed || from >= upperBound {
		return dst
	}
	for i := l.segmentIndex(from); i < len(l.segments); i++ {
		var done bool
		if dst, done = l.segments[i].txnIndex.collect(dst, from, upperBound); done {
			break
		}
	}
	return dst
}

// AbortedTxnCount is the number of entries in the log's aborted-transaction indexes.
func (l *Log) AbortedTxnCount() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	n := 0
	for _, s := range l.segments {
		n += len(s.txnIndex.entries)
	}
	return n
}

// AbortedTxns returns a copy of every entry of the log's aborted-transaction indexes,
// in marker order.
func (l *Log) AbortedTxns() []AbortedTxn {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var out []AbortedTxn
	for _, s := range l.segments {
		out = append(out, s.txnIndex.entries...)
	}
	return out
}

// SyncAbortedTxns makes the indexes hold exactly want (sorted by marker offset) for the
// markers at or after from: the replica, having replayed the log's markers from from
// when it opened, hands over the entries they make, and any segment whose index
// differs — entries lost in a crash, or a missing file — is rewritten. It returns how
// many segments' indexes were rewritten.
func (l *Log) SyncAbortedTxns(from int64, want []AbortedTxn) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, ErrClosed
	}
	rewritten := 0
	for i, s := range l.segments {
		if s.nextOffset <= from && i < len(l.segments)-1 {
			continue
		}
		end := s.nextOffset
		if i+1 < len(l.segments) {
			end = l.segments[i+1].baseOffset
		}
		var mine []AbortedTxn
		for len(want) > 0 && want[0].LastOffset < end {
			if want[0].LastOffset >= s.baseOffset {
				mine = append(mine, want[0])
			}
			want = want[1:]
		}
		var expect []AbortedTxn
		for _, e := range s.txnIndex.entries {
			if e.LastOffset < from {
				expect = append(expect, e)
			}
		}
		expect = append(expect, mine...)
		if slices.Equal(expect, s.txnIndex.entries) {
			continue
		}
		if err := s.txnIndex.replace(expect); err != nil {
			return rewritten, err
		}
		rewritten++
	}
	return rewritten, nil
}

// maxMarkerBatchBytes bounds the read of a control batch while scanning: a marker's
// batch is under 100 bytes.
const maxMarkerBatchBytes = 64 << 10

// ScanProducerBatches is ScanBatchHeaders for the producer state: fn also gets, for a
// control batch, its transaction marker (markerErr set if it is not one, or too large
// to be one, in which case the batch is to be ignored).
func (l *Log) ScanProducerBatches(offset int64, fn func(h *proto.RecordBatchHeader, m proto.TxnMarker, markerErr error) bool) error {
	var batch []byte
	return l.walkBatches(offset, func(s *LogSegment, pos int64, h *proto.RecordBatchHeader) (bool, error) {
		var m proto.TxnMarker
		var merr error
		if h.IsControl() {
			if h.Size() > maxMarkerBatchBytes {
				merr = fmt.Errorf("%w: control batch of %d bytes", proto.ErrMalformedMarker, h.Size())
			} else {
				batch = slices.Grow(batch[:0], h.Size())[:h.Size()]
				if n, err := preadFull(s.file.fd, batch, pos); err != nil || n != len(batch) {
					return false, fmt.Errorf("segment: read control batch at %d of %s: %d bytes, %v", pos, s.file.path, n, err)
				}
				m, merr = proto.ParseTxnMarker(batch)
			}
		}
		return fn(h, m, merr), nil
	})
}
