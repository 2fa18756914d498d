package segment

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrStagingLost: a staged append was overtaken by another change to the log (an
// append, a truncation, a roll, another staged append, Close); its bytes were cut and
// nothing of them is in the log.
var ErrStagingLost = errors.New("segment: staged append overtaken by another change to the log")

// StagedAppend is a follower append whose bytes reach the active segment before they
// are validated: a replica fetcher splices a partition's records from its socket
// straight into the segment file, past the log's end, where no reader looks (readers
// stop at a segment's size). Commit then validates them — read back from the page
// cache into a pooled buffer, which costs a copy from memory but none from the socket —
// exactly as AppendAsFollower validates a buffer (CRC, offsets that follow the log end,
// sizes), and only then moves the log's end, indexes and leader-epoch cache over them,
// by the same code. On any failure the bytes past the end are cut and the log is as
// before. (Mapping the bytes instead of reading them was measured slower: each commit's
// mmap and munmap, with its TLB shootdown, cost more than the copy; the CRCs then
// also ran over cold pages.)
//
// The roll comes first, as for any append: StageFollowerAppend rolls the active
// segment if n more bytes would pass segment.bytes (or it is old, or an index is
// full). A roll that only the batches' own offsets call for is known at Commit; the
// bytes are then written again into the new segment (a copy, rare: offsets that do not
// fit 32 bits past the segment's base).
//
// One staged append at a time per log; it is not safe for concurrent use. Its bytes
// survive a crash only as any unflushed tail does: recovery keeps what validates.
type StagedAppend struct {
	l *Log
	s *LogSegment
	// file is s's file when staging began, referenced until the append ends.
	file *File
	// pos is where the staged bytes start in file: s's size when staging began.
	pos     int64
	n       int64
	written int64
	// off is the position Write hands out (a field: a local would escape to the heap).
	off int64
	// relocated: Commit wrote the bytes again into another segment.
	relocated bool
	done      bool
}

// StageFollowerAppend begins a follower append of n bytes of batches, to be written
// with Write and then committed or aborted. It rolls the active segment first if an
// append of n bytes at the log end offset would (see maybeRoll).
func (l *Log) StageFollowerAppend(n int) (*StagedAppend, error) {
	if n <= 0 {
		return nil, ErrEmptyAppend
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	l.dropStaging()
	leo := l.active().nextOffset
	s, err := l.maybeRoll(n, leo, leo, l.cfg.Now().UnixMilli())
	if err != nil {
		return nil, err
	}
	s.file.acquire()
	st := &StagedAppend{l: l, s: s, file: s.file, pos: s.size, n: int64(n)}
	l.staging = st
	return st, nil
}

// Write lets write add bytes at the staged append's end: write is called with the
// segment file's descriptor and the position to write at, which it advances by what it
// wrote (sendfile.Splicer.DrainTo). It runs under the log's read lock: readers go on,
// nothing else moves the log's end meanwhile.
func (st *StagedAppend) Write(write func(fd int, off *int64) error) error {
	l := st.l
	l.mu.RLock()
	defer l.mu.RUnlock()
	if st.done || l.closed || l.staging != st {
		return ErrStagingLost
	}
	st.off = st.pos + st.written
	err := write(st.file.fd, &st.off)
	st.written = st.off - st.pos
	if st.written > st.n {
		// The bytes past n belong to no batch of this append: Commit refuses them.
		return fmt.Errorf("segment: staged %d bytes of %d", st.written, st.n)
	}
	return err
}

// Written is the bytes staged so far.
func (st *StagedAppend) Written() int64 { return st.written }

// Commit validates the staged bytes and appends them as AppendAsFollower appends a
// buffer: the leader's offsets and epochs kept, offsets that must start at or after the
// log end offset (else ErrInvalidAppendOffset), each batch's CRC checked (else a
// *proto.BatchError). committed, if not nil, is called with the batches once they are
// in the log, before Commit returns; its argument is valid only during the call. On any
// error nothing of the bytes is in the log. Commit ends the staged append.
func (st *StagedAppend) Commit(committed func(batches []byte)) (AppendInfo, error) {
	if st.done {
		panic("segment: StagedAppend ended twice")
	}
	info, err := st.commit(committed)
	st.Abort() // cuts the bytes if they are still staged: the commit failed before taking them
	return info, err
}

func (st *StagedAppend) commit(committed func(batches []byte)) (AppendInfo, error) {
	l := st.l
	if st.written != st.n {
		return AppendInfo{}, fmt.Errorf("segment: commit of %d staged bytes of %d", st.written, st.n)
	}
	// The read lock: nothing cuts or overwrites the bytes while they are read back.
	l.mu.RLock()
	if l.closed || l.staging != st {
		l.mu.RUnlock()
		return AppendInfo{}, ErrStagingLost
	}
	buf := getStageBuffer(int(st.n))
	defer putStageBuffer(buf)
	batches := (*buf)[:st.n]
	n, err := preadFull(st.file.fd, batches, st.pos)
	l.mu.RUnlock()
	if err != nil || n != len(batches) {
		return AppendInfo{}, fmt.Errorf("segment: read back %d staged bytes of %s: %d, %v", st.n, st.file.path, n, err)
	}
	// Validated outside the lock, on our copy: the lock, taken again, says whether the
	// bytes in the file are still these.
	sc, err := l.validate([][]byte{batches}, false, true)
	if err != nil {
		return AppendInfo{}, err
	}
	l.mu.Lock()
	if l.closed || l.staging != st {
		l.mu.Unlock()
		return AppendInfo{}, ErrStagingLost
	}
	l.staging = nil // ours now: the append's own roll must not cut the bytes it relocates
	info, err := l.appendLocked([][]byte{batches}, sc, -1, false, st)
	if err == nil && committed != nil {
		committed(batches)
	}
	if err != nil || st.relocated {
		l.mu.Lock()
		st.cutTail()
		l.mu.Unlock()
	}
	return info, err
}

// Abort ends a staged append that will not be committed, cutting its bytes. It does
// nothing after Commit or a previous Abort.
func (st *StagedAppend) Abort() {
	if st.done {
		return
	}
	l := st.l
	l.mu.Lock()
	if l.staging == st {
		l.staging = nil
		st.cutTail()
	}
	l.mu.Unlock()
	st.end()
}

func (st *StagedAppend) end() {
	st.done = true
	st.file.release()
}

// dropStaging cuts the bytes of the staged append, if any, which another change to the
// log overtakes. The caller holds l.mu for writing.
func (l *Log) dropStaging() {
	if st := l.staging; st != nil {
		l.staging = nil
		st.cutTail()
	}
}

// cutTail cuts the staged bytes from their segment file: everything past the segment's
// size, which is never part of the log. A file that a truncation replaced since is
// left alone (the bytes went with it). The caller holds l.mu for writing.
func (st *StagedAppend) cutTail() {
	if st.s.file != st.file {
		return
	}
	if err := unix.Ftruncate(st.file.fd, st.s.size); err != nil {
		// A tail past the size is cut by the next open's recovery at the latest.
		st.l.logger.Warn("cut staged bytes", "segment", st.file.path, "err", err)
	} else if j := syncJournal; j != nil {
		j.truncated(st.file.path, st.s.size)
	}
}

// stageBuffers recycles the buffers staged bytes are read back into, so that a
// follower's commits allocate nothing in steady state; buffers above
// stageBufferBytesMax (a batch larger than the usual max.message.bytes) are not kept.
var stageBuffers sync.Pool

const stageBufferBytesMax = 4 << 20

func getStageBuffer(n int) *[]byte {
	if b, ok := stageBuffers.Get().(*[]byte); ok && cap(*b) >= n {
		return b
	}
	b := make([]byte, max(n, 1<<20))
	return &b
}

func putStageBuffer(b *[]byte) {
	if cap(*b) <= stageBufferBytesMax {
		stageBuffers.Put(b)
	}
}
