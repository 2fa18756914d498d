package segment

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// The two indexes of a segment are memory-mapped files of fixed-size big-endian entries,
// sorted, preallocated to IndexMaxBytes while the segment is active and trimmed to their
// entries when it rolls or the log closes (Kafka's formats):
//
//	<base>.index      OffsetIndex: relativeOffset uint32 · position uint32   (8 bytes)
//	<base>.timeindex  TimeIndex:   timestamp int64 · relativeOffset uint32   (12 bytes)
//
// relativeOffset is offset − segment base offset. An offset-index entry names the base
// offset of a batch and that batch's byte position; one is written per
// index.interval.bytes of log. A time-index entry (t, o) says the largest timestamp of
// the batches up to and including the batch at offset o is t; one is written with an
// offset-index entry when the largest timestamp has grown.
//
// A preallocated file that was not trimmed (a crash) ends in zero entries: on open the
// index keeps its longest prefix of strictly increasing entries and the log checks the
// last of them against the segment (see LogSegment.sanityCheck).
const (
	offsetIndexEntrySize = 8
	timeIndexEntrySize   = 12
)

// mmapIndex is the file and mapping behind an index.
type mmapIndex struct {
	path      string
	fd        int
	data      []byte // the mapping; len(data) = mapped size (0: nothing mapped)
	entrySize int
	// entries is the number of valid entries. Invariant: entries*entrySize <= len(data).
	entries int
}

// openMmapIndex opens (creating if needed) the index at path. If active, the file is
// extended to maxBytes so that appends can add entries; otherwise it is mapped at its size.
func openMmapIndex(path string, entrySize, maxBytes int, active bool, valid func(prev, cur []byte) bool) (*mmapIndex, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("segment: open index %s: %w", path, err)
	}
	idx := &mmapIndex{path: path, fd: fd, entrySize: entrySize}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("segment: stat index %s: %w", path, err)
	}
	size := int(st.Size) / entrySize * entrySize
	if err := idx.mapSize(size); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	// Count the valid prefix: entries strictly increasing by the index's own rule.
	n := len(idx.data) / entrySize
	idx.entries = n
	for i := 1; i < n; i++ {
		if !valid(idx.entry(i-1), idx.entry(i)) {
			idx.entries = i
			break
		}
	}
	if active {
		if err := idx.resize(maxBytes); err != nil {
			idx.close()
			return nil, err
		}
	}
	return idx, nil
}

func (x *mmapIndex) entry(i int) []byte { return x.data[i*x.entrySize : (i+1)*x.entrySize] }

func (x *mmapIndex) full() bool { return (x.entries+1)*x.entrySize > len(x.data) }

// mapSize maps the first size bytes of the file (unmapping any previous mapping).
func (x *mmapIndex) mapSize(size int) error {
	if x.data != nil {
		if err := unix.Munmap(x.data); err != nil {
			return fmt.Errorf("segment: munmap %s: %w", x.path, err)
		}
		x.data = nil
	}
	if size == 0 {
		return nil
	}
	data, err := unix.Mmap(x.fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("segment: mmap %s: %w", x.path, err)
	}
	x.data = data
	return nil
}

// resize sets the file's size to size bytes (rounded down to whole entries, never below
// the valid entries) and remaps it. Growing preallocates room for appends; shrinking to
// the entries trims the file on roll and close.
func (x *mmapIndex) resize(size int) error {
	size = size / x.entrySize * x.entrySize
	if min := x.entries * x.entrySize; size < min {
		size = min
	}
	if x.data != nil {
		// Unmap first: truncating a file under a mapping and touching the lost pages
		// would fault.
		if err := unix.Munmap(x.data); err != nil {
			return fmt.Errorf("segment: munmap %s: %w", x.path, err)
		}
		x.data = nil
	}
	if err := unix.Ftruncate(x.fd, int64(size)); err != nil {
		return fmt.Errorf("segment: resize index %s: %w", x.path, err)
	}
	if j := syncJournal; j != nil {
		j.truncated(x.path, int64(size))
	}
	return x.mapSize(size)
}

// trim cuts the file to its valid entries.
func (x *mmapIndex) trim() error { return x.resize(0) }

// truncateEntries keeps the first n entries and zeroes the rest, so that a crash before
// the next trim cannot resurrect them.
func (x *mmapIndex) truncateEntries(n int) {
	if n >= x.entries {
		return
	}
	clear(x.data[n*x.entrySize : x.entries*x.entrySize])
	x.entries = n
}

// truncateFrom drops the trailing entries whose key (non-decreasing along the index) is
// ≥ bound.
func (x *mmapIndex) truncateFrom(bound int64, key func(i int) int64) {
	n := x.entries
	for n > 0 && key(n-1) >= bound {
		n--
	}
	x.truncateEntries(n)
}

// flush writes dirty pages of the mapping to disk.
func (x *mmapIndex) flush() error {
	if len(x.data) == 0 {
		return nil
	}
	var tok uint64
	if j := syncJournal; j != nil {
		tok = j.syncToken()
	}
	if err := unix.Msync(x.data, unix.MS_SYNC); err != nil {
		return fmt.Errorf("segment: msync %s: %w", x.path, err)
	}
	if j := syncJournal; j != nil {
		j.synced(x.path, int64(len(x.data)), tok, 0) // never replaced by rename
	}
	return nil
}

func (x *mmapIndex) close() error {
	var err error
	if x.data != nil {
		err = unix.Munmap(x.data)
		x.data = nil
	}
	if cerr := unix.Close(x.fd); err == nil {
		err = cerr
	}
	x.fd = -1
	return err
}

// delete closes and removes the index file.
func (x *mmapIndex) delete() error {
	_ = x.close()
	if err := os.Remove(x.path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("segment: remove %s: %w", x.path, err)
	}
	return nil
}

// OffsetIndex maps relative offsets of batch starts to byte positions (see the format
// above).
type OffsetIndex struct {
	mmapIndex
	baseOffset int64
}

func openOffsetIndex(path string, baseOffset int64, maxBytes int, active bool) (*OffsetIndex, error) {
	x, err := openMmapIndex(path, offsetIndexEntrySize, maxBytes, active, func(prev, cur []byte) bool {
		return binary.BigEndian.Uint32(cur) > binary.BigEndian.Uint32(prev) &&
			binary.BigEndian.Uint32(cur[4:]) > binary.BigEndian.Uint32(prev[4:])
	})
	if err != nil {
		return nil, err
	}
	return &OffsetIndex{mmapIndex: *x, baseOffset: baseOffset}, nil
}

func (x *OffsetIndex) at(i int) (offset int64, position int64) {
	e := x.entry(i)
	return x.baseOffset + int64(binary.BigEndian.Uint32(e)), int64(binary.BigEndian.Uint32(e[4:]))
}

// lastEntry returns the last entry, or (baseOffset, 0) when there is none.
func (x *OffsetIndex) lastEntry() (offset, position int64) {
	if x.entries == 0 {
		return x.baseOffset, 0
	}
	return x.at(x.entries - 1)
}

// lookup returns the entry with the largest offset ≤ target, or (baseOffset, 0): the
// batch at the returned position starts at or before target.
func (x *OffsetIndex) lookup(target int64) (offset, position int64) {
	lo, hi := 0, x.entries // find the first entry with offset > target
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if o, _ := x.at(mid); o <= target {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		return x.baseOffset, 0
	}
	return x.at(lo - 1)
}

// lookupPosition returns the entry with the largest position ≤ pos, or (baseOffset, 0).
func (x *OffsetIndex) lookupPosition(pos int64) (offset, position int64) {
	lo, hi := 0, x.entries
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if _, p := x.at(mid); p <= pos {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		return x.baseOffset, 0
	}
	return x.at(lo - 1)
}

// append adds an entry; the caller ensures offset and position exceed the last entry's
// and that the index is not full.
func (x *OffsetIndex) append(offset, position int64) {
	if x.full() {
		panic("segment: append to a full offset index " + x.path)
	}
	e := x.data[x.entries*offsetIndexEntrySize:]
	binary.BigEndian.PutUint32(e, uint32(offset-x.baseOffset))
	binary.BigEndian.PutUint32(e[4:], uint32(position))
	x.entries++
}

// truncateToPosition drops the entries at or after byte position pos.
func (x *OffsetIndex) truncateToPosition(pos int64) {
	x.truncateFrom(pos, func(i int) int64 { _, p := x.at(i); return p })
}

// TimeIndex maps timestamps to the relative offsets of the batches that reach them (see
// the format above).
type TimeIndex struct {
	mmapIndex
	baseOffset int64
}

func openTimeIndex(path string, baseOffset int64, maxBytes int, active bool) (*TimeIndex, error) {
	x, err := openMmapIndex(path, timeIndexEntrySize, maxBytes, active, func(prev, cur []byte) bool {
		return int64(binary.BigEndian.Uint64(cur)) > int64(binary.BigEndian.Uint64(prev)) &&
			binary.BigEndian.Uint32(cur[8:]) >= binary.BigEndian.Uint32(prev[8:])
	})
	if err != nil {
		return nil, err
	}
	return &TimeIndex{mmapIndex: *x, baseOffset: baseOffset}, nil
}

func (x *TimeIndex) at(i int) (timestamp, offset int64) {
	e := x.entry(i)
	return int64(binary.BigEndian.Uint64(e)), x.baseOffset + int64(binary.BigEndian.Uint32(e[8:]))
}

// lastEntry returns the last entry, or (-1, baseOffset) when there is none.
func (x *TimeIndex) lastEntry() (timestamp, offset int64) {
	if x.entries == 0 {
		return -1, x.baseOffset
	}
	return x.at(x.entries - 1)
}

// lookupEntry returns the entry with the largest timestamp ≤ ts, or (-1, baseOffset).
func (x *TimeIndex) lookupEntry(ts int64) (timestamp, offset int64) {
	lo, hi := 0, x.entries
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if t, _ := x.at(mid); t <= ts {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		return -1, x.baseOffset
	}
	return x.at(lo - 1)
}

// maybeAppend adds (ts, offset) if ts exceeds the last entry's timestamp and there is room.
func (x *TimeIndex) maybeAppend(ts, offset int64) {
	if last, _ := x.lastEntry(); ts <= last || x.full() {
		return
	}
	e := x.data[x.entries*timeIndexEntrySize:]
	binary.BigEndian.PutUint64(e, uint64(ts))
	binary.BigEndian.PutUint32(e[8:], uint32(offset-x.baseOffset))
	x.entries++
}

// truncateToOffset drops the entries whose offset is ≥ offset.
func (x *TimeIndex) truncateToOffset(offset int64) {
	x.truncateFrom(offset, func(i int) int64 { _, o := x.at(i); return o })
}
