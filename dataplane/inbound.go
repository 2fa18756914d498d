package dataplane

import (
	"encoding/binary"
	"io"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/gregor-streaming/gregor/proto"
	"golang.org/x/sys/unix"
)

// Inbound bytes: how a connection's requests get from the socket to their handlers.
//
// gnet reads a socket into its event loop's read buffer and hands that buffer to
// OnTraffic; what OnTraffic leaves unread it copies into the connection's own ring
// buffer, and a later Peek of a ring buffer that wrapped copies everything buffered once
// more into a fresh slice. A pipelining producer whose requests span reads would have
// each byte copied (and each fresh slice zeroed) once per read event until its frame
// completes, and again whenever the in-flight limit stopped a pass — quadratic in the
// amount buffered. So every pass takes all gnet read (Next, a view of the loop's buffer,
// which leaves gnet nothing to keep) and the connection keeps, itself, only what the pass
// could not handle, copying each byte at most once:
//
//   - whole frames in the loop's buffer are handled in place, with no copy;
//   - the whole frames a pass could not handle (the in-flight limit) are copied once into
//     a backlog chunk, and later handled in place from there;
//   - an incomplete frame is copied into a buffer reserved for its whole size (the size
//     prefix tells it), and the rest of it is read from the socket straight into that
//     buffer (readFrom) — the bulk of a large request is never copied in user space; it
//     then joins the backlog as a chunk of its own, without a copy.
//
// Frames never span chunks. Buffers come from a bounded free list (bufferPool) and go back
// once the pass that handled their last frame has ended — produce requests stage views of
// their records until the end of the pass (flushStaged). Only the 4-byte size prefix of a
// frame split inside it is copied twice. Reserving what a size prefix claims is bounded
// node-wide (partialReserveMaxBytes): past that budget a frame's buffer grows by doubling
// with what arrives, so a client must send bytes to make the node hold more memory.
type inbound struct {
	// backlog holds whole frames not yet handled, in arrival order; the next one starts at
	// backlog[0][head:].
	backlog [][]byte
	head    int
	// partial is an incomplete frame, size prefix included: len is what has arrived, cap
	// its whole size once the prefix is known (or less, past the reserve budget). nil:
	// none. Invariant: while partial is not nil, it is the last thing read from the socket.
	partial []byte
	// reserved is what partial holds of the node's reserve budget (its capacity).
	reserved int
	// partials counts the partial frames begun, so a pass can tell a new one.
	partials uint64
	// spent are backlog chunks whose frames were all handled during this pass: they go
	// back to the pool when the pass ends.
	spent [][]byte
}

// partialReserveMaxBytes bounds the capacity of all buffers of frames still arriving,
// node-wide. Within it a frame's whole size is reserved when its size prefix arrives (the
// rest is read straight into it); past it, buffers grow with what arrives.
const partialReserveMaxBytes = 256 << 20

// partialReserved is the capacity of the node's partial-frame buffers.
var partialReserved atomic.Int64

// partialGrowMinBytes is the least a partial frame's buffer grows to past the budget.
const partialGrowMinBytes = 64 << 10

// backlogChunkMinBytes is the least capacity of a backlog chunk.
const backlogChunkMinBytes = 64 << 10

// inboundPool recycles the connections' backlog and partial-frame buffers.
var inboundPool = bufferPool{idleMaxBytes: inboundIdleMaxBytes}

// inboundIdleMaxBytes bounds the request buffers a node keeps idle for reuse: enough for
// a few producers' requests of 16 MiB and more in flight at once.
const inboundIdleMaxBytes = 256 << 20

// bufferPool is a free list of byte slices in size classes (see bufferClass), bounded by
// the bytes it keeps idle. Unlike sync.Pool it is not emptied by garbage collections:
// those come at moments that depend on timing, and a node that allocated its largest
// buffers again after each would allocate in proportion to what it buffers.
type bufferPool struct {
	mu           sync.Mutex
	free         [bufferClasses][][]byte
	idleBytes    int
	idleMaxBytes int
}

// Size classes: 4 KiB, then four per power of two up to 128 MiB (above the default
// 100 MiB frame limit). Larger buffers are neither pooled nor rounded up.
const (
	bufferClassMinShift = 12
	bufferClassMaxShift = 27
	bufferClasses       = 1 + (bufferClassMaxShift-bufferClassMinShift)*4
)

// bufferClass returns the class of a buffer of n bytes and its size: the smallest of
// 2^k, 1.25·2^k, 1.5·2^k, 1.75·2^k at least n, so a buffer wastes at most a fifth of
// itself. ok is false above the largest class.
func bufferClass(n int) (index, size int, ok bool) {
	if n <= 1<<bufferClassMinShift {
		return 0, 1 << bufferClassMinShift, true
	}
	k := bits.Len(uint(n-1)) - 1 // 2^k < n ≤ 2^(k+1)
	step := 1 << (k - 2)
	m := (n - 1<<k + step - 1) / step // 1..4
	index = 1 + (k-bufferClassMinShift)*4 + m - 1
	return index, 1<<k + m*step, index < bufferClasses
}

// Get returns a slice of length n, from the free list when one of its class is idle.
// Its bytes are whatever the last user left.
func (p *bufferPool) Get(n int) []byte {
	class, size, ok := bufferClass(n)
	if n <= 0 || !ok {
		return make([]byte, n)
	}
	p.mu.Lock()
	if free := p.free[class]; len(free) > 0 {
		b := free[len(free)-1]
		free[len(free)-1] = nil
		p.free[class] = free[:len(free)-1]
		p.idleBytes -= cap(b)
		p.mu.Unlock()
		return b[:n]
	}
	p.mu.Unlock()
	return make([]byte, n, size)
}

// Put keeps b for reuse if its capacity is a class size. Past the idle bound it drops
// idle buffers of other classes, largest first, to make room: the sizes in use now are
// worth more than the sizes a past workload left, which would otherwise fill the bound
// for good and have every buffer of today's sizes allocated anew.
func (p *bufferPool) Put(b []byte) {
	c := cap(b)
	class, size, ok := bufferClass(c)
	if c == 0 || !ok || size != c || c > p.idleMaxBytes {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.free) - 1; i >= 0 && p.idleBytes+c > p.idleMaxBytes; i-- {
		for i != class && len(p.free[i]) > 0 && p.idleBytes+c > p.idleMaxBytes {
			last := len(p.free[i]) - 1
			p.idleBytes -= cap(p.free[i][last])
			p.free[i][last] = nil
			p.free[i] = p.free[i][:last]
		}
	}
	if p.idleBytes+c <= p.idleMaxBytes {
		p.free[class] = append(p.free[class], b[:0])
		p.idleBytes += c
	}
}

// frames hands the whole frames that have arrived to handle (without their size
// prefixes), oldest first, while room allows: the backlog's, then those in fresh — the
// bytes just read, handled in place. What is left of fresh is kept (stash). It returns
// how many frames it handled; an error from handle or a size prefix out of range stops it.
func (in *inbound) frames(fresh []byte, maxFrameBytes int, room func() bool, handle func([]byte) error) (handled int, err error) {
	if in.partial != nil && len(fresh) > 0 {
		if fresh, err = in.fill(fresh, maxFrameBytes); err != nil {
			return 0, err
		}
	}
	for ; in.pending() && room(); handled++ {
		if err := handle(in.nextFrame()); err != nil {
			return handled, err
		}
	}
	if in.pending() || in.partial != nil {
		// Older frames still wait (or the partial frame took all of fresh): keep the rest
		// behind them.
		return handled, in.stash(fresh, maxFrameBytes)
	}
	consumed := 0
	for ; room(); handled++ {
		rest := fresh[consumed:]
		size, ok, err := proto.FrameSize(rest, maxFrameBytes)
		if err != nil {
			return handled, err
		}
		if !ok || len(rest) < proto.FrameSizeBytes+size {
			break
		}
		consumed += proto.FrameSizeBytes + size
		if err := handle(rest[proto.FrameSizeBytes : proto.FrameSizeBytes+size]); err != nil {
			return handled, err
		}
	}
	return handled, in.stash(fresh[consumed:], maxFrameBytes)
}

// pending reports whether the backlog holds a whole frame to handle.
func (in *inbound) pending() bool { return len(in.backlog) > 0 }

// nextFrame returns the backlog's next whole frame (prefix excluded); the caller has
// checked pending. A chunk whose frames are all taken moves to spent.
func (in *inbound) nextFrame() []byte {
	chunk := in.backlog[0]
	// The prefix was checked against the limit when the frame was stashed.
	size := int(binary.BigEndian.Uint32(chunk[in.head:]))
	frame := chunk[in.head+proto.FrameSizeBytes : in.head+proto.FrameSizeBytes+size]
	in.head += proto.FrameSizeBytes + size
	if in.head == len(chunk) {
		in.spent = append(in.spent, chunk)
		// The backlog is a chunk or two: shift rather than reslice, so its array is reused.
		n := copy(in.backlog, in.backlog[1:])
		in.backlog[n] = nil
		in.backlog = in.backlog[:n]
		in.head = 0
	}
	return frame
}

// fill moves the start of fresh into the partial frame, up to its end, and returns the
// rest of fresh. A completed frame joins the backlog. A size prefix out of range is an
// error (the connection closes).
func (in *inbound) fill(fresh []byte, maxFrameBytes int) ([]byte, error) {
	if len(in.partial) < proto.FrameSizeBytes {
		take := min(proto.FrameSizeBytes-len(in.partial), len(fresh))
		in.partial = append(in.partial, fresh[:take]...)
		fresh = fresh[take:]
		if len(in.partial) < proto.FrameSizeBytes {
			return fresh, nil
		}
	}
	size, _, err := proto.FrameSize(in.partial, maxFrameBytes)
	if err != nil {
		return fresh, err
	}
	whole := proto.FrameSizeBytes + size
	take := min(whole-len(in.partial), len(fresh))
	if len(in.partial)+take > cap(in.partial) {
		in.grow(whole, len(in.partial)+take)
	}
	in.partial = append(in.partial, fresh[:take]...)
	in.completeIf(whole)
	return fresh[take:], nil
}

// readFrom reads the rest of the partial frame from the socket fd straight into its
// buffer, until it is whole or the socket has nothing more (gnet reads what follows).
// The partial frame is the last thing read from the socket, so these are its bytes. A
// partial frame whose size prefix is not whole yet is left to gnet.
func (in *inbound) readFrom(fd int) error {
	for in.partial != nil && len(in.partial) >= proto.FrameSizeBytes {
		whole := proto.FrameSizeBytes + int(binary.BigEndian.Uint32(in.partial))
		if len(in.partial) == cap(in.partial) {
			in.grow(whole, len(in.partial)+1)
		}
		n, err := unix.Read(fd, in.partial[len(in.partial):min(cap(in.partial), whole)])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return nil
		case err != nil:
			return err
		case n == 0:
			return io.EOF
		}
		in.partial = in.partial[:len(in.partial)+n]
		in.completeIf(whole)
	}
	return nil
}

// completeIf moves the partial frame to the backlog once it holds whole bytes, and gives
// its reservation back.
func (in *inbound) completeIf(whole int) {
	if len(in.partial) < whole {
		return
	}
	in.backlog = append(in.backlog, in.partial)
	in.partial = nil
	partialReserved.Add(-int64(in.reserved))
	in.reserved = 0
}

// reserve returns a buffer for a partial frame of whole bytes (prefix included) holding
// b, at least need bytes long in capacity: whole, if the node's reserve budget allows;
// else need doubled (at least partialGrowMinBytes, at most whole). It charges the budget
// with the new buffer and releases the old one's charge.
func (in *inbound) reserve(b []byte, whole, need int) []byte {
	want := whole
	if partialReserved.Load()-int64(in.reserved)+int64(whole) > partialReserveMaxBytes {
		want = min(whole, max(2*need, partialGrowMinBytes))
	}
	want = max(want, need)
	nb := append(inboundPool.Get(want)[:0], b...)
	partialReserved.Add(int64(cap(nb) - in.reserved))
	in.reserved = cap(nb)
	return nb
}

// grow gives the partial frame (of whole bytes) room for need bytes.
func (in *inbound) grow(whole, need int) {
	old := in.partial
	in.partial = in.reserve(old, whole, need)
	if cap(old) > 0 {
		inboundPool.Put(old)
	}
}

// stash keeps rest, bytes of the loop's buffer the pass did not handle: its whole frames
// go to the backlog, a trailing incomplete frame becomes the partial frame. The frames'
// size prefixes are checked on the way.
func (in *inbound) stash(rest []byte, maxFrameBytes int) error {
	whole := 0
	for whole < len(rest) {
		size, ok, err := proto.FrameSize(rest[whole:], maxFrameBytes)
		if err != nil {
			return err
		}
		if !ok || len(rest)-whole < proto.FrameSizeBytes+size {
			break
		}
		whole += proto.FrameSizeBytes + size
	}
	if whole > 0 {
		// Chunks take a power of two (≥ 64 KiB): their sizes vary from pass to pass, and
		// few classes are reused more often than many.
		chunk := inboundPool.Get(max(1<<bits.Len(uint(whole-1)), backlogChunkMinBytes))[:whole]
		copy(chunk, rest[:whole])
		in.backlog = append(in.backlog, chunk)
	}
	if tail := rest[whole:]; len(tail) > 0 {
		frame := proto.FrameSizeBytes // the prefix, until it is whole
		if size, ok, _ := proto.FrameSize(tail, maxFrameBytes); ok {
			frame += size
		}
		in.partial = in.reserve(tail, frame, max(len(tail), proto.FrameSizeBytes))
		in.partials++
	}
	return nil
}

// endPass returns the chunks the pass used up to the pool: no view of them remains once
// the pass's staged appends are done.
func (in *inbound) endPass() {
	for i, b := range in.spent {
		inboundPool.Put(b)
		in.spent[i] = nil
	}
	in.spent = in.spent[:0]
}

// release returns every buffer to the pool (the connection closed; no pass runs).
func (in *inbound) release() {
	in.endPass()
	for _, b := range in.backlog {
		inboundPool.Put(b)
	}
	if in.partial != nil {
		inboundPool.Put(in.partial)
		partialReserved.Add(-int64(in.reserved))
	}
	*in = inbound{}
}
