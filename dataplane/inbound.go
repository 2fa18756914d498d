package dataplane

import (
	"encoding/binary"

	"math/bits"
	"sync"

	"github.com/gregor-streaming/gregor/proto"
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
//     prefix tells it), which the next reads fill until it is whole; it then joins the
//     backlog as a chunk of its own, without a copy.
//
// Frames never span chunks. Buffers come from a free list of power-of-two classes and go back
// once the pass that handled their last frame has ended — produce requests stage views of
// their records until the end of the pass (flushStaged). Only the 4-byte size prefix of a
// frame split inside it is copied twice, and a frame larger than frameReserveMaxBytes is
// not reserved whole up front (a client must send bytes to make the node hold memory): its
// buffer grows by doubling, which copies its bytes about twice on average.
type inbound struct {
	// backlog holds whole frames not yet handled, in arrival order; the next one starts at
	// backlog[0][head:].
	backlog [][]byte
	head    int
	// partial is an incomplete frame, size prefix included: len is what has arrived, cap
	// its whole size once the prefix is known (up to frameReserveMaxBytes). nil: none.
	partial []byte
	// partials counts the partial frames begun, so a pass can tell a new one.
	partials uint64
	// spent are backlog chunks whose frames were all handled during this pass: they go
	// back to the pool when the pass ends.
	spent [][]byte
}

// frameReserveMaxBytes is the largest frame whose whole size is reserved as soon as its
// size prefix arrives. Producers send requests of a few MiB at most (1 MiB batches,
// several partitions); a larger claimed size grows its buffer as bytes arrive instead.
const frameReserveMaxBytes = 8 << 20

// inboundPool recycles the connections' backlog and partial-frame buffers.
var inboundPool = bufferPool{idleMaxBytes: inboundIdleMaxBytes}

// inboundIdleMaxBytes bounds the request buffers a node keeps idle for reuse.
const inboundIdleMaxBytes = 64 << 20

// bufferPool is a free list of byte slices in power-of-two size classes, bounded by the
// bytes it keeps idle. Unlike sync.Pool it is not emptied by garbage collections: those
// come at moments that depend on timing, and a node that allocated its largest buffers
// again after each would allocate in proportion to what it buffers.
type bufferPool struct {
	mu           sync.Mutex
	free         [bufferClassMax + 1][][]byte
	idleBytes    int
	idleMaxBytes int
}

// Size classes: 4 KiB (2^12) to 16 MiB (2^24). Larger buffers are neither pooled nor
// rounded up.
const (
	bufferClassMin = 12
	bufferClassMax = 24
)

// Get returns a slice of length n, from the free list when one of its class is idle.
// Its bytes are whatever the last user left.
func (p *bufferPool) Get(n int) []byte {
	class := max(bits.Len(uint(n-1)), bufferClassMin)
	if n <= 0 || class > bufferClassMax {
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
	return make([]byte, n, 1<<class)
}

// Put keeps b for reuse if it is of a class and the idle bound allows.
func (p *bufferPool) Put(b []byte) {
	c := cap(b)
	class := bits.Len(uint(c - 1))
	if c == 0 || c != 1<<class || class < bufferClassMin || class > bufferClassMax {
		return
	}
	p.mu.Lock()
	if p.idleBytes+c <= p.idleMaxBytes {
		p.free[class] = append(p.free[class], b[:0])
		p.idleBytes += c
	}
	p.mu.Unlock()
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
		in.partial = regrow(in.partial, reserveFor(whole, len(in.partial)+take))
	}
	in.partial = append(in.partial, fresh[:take]...)
	fresh = fresh[take:]
	if len(in.partial) == whole {
		in.backlog = append(in.backlog, in.partial)
		in.partial = nil
	}
	return fresh, nil
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
		chunk := inboundPool.Get(whole)
		copy(chunk, rest[:whole])
		in.backlog = append(in.backlog, chunk)
	}
	if tail := rest[whole:]; len(tail) > 0 {
		want := max(len(tail), proto.FrameSizeBytes)
		if size, ok, _ := proto.FrameSize(tail, maxFrameBytes); ok {
			want = reserveFor(proto.FrameSizeBytes+size, len(tail))
		}
		in.partial = append(inboundPool.Get(want)[:0], tail...)
		in.partials++
	}
	return nil
}

// reserveFor is the capacity to give a frame of size whole (prefix included) of which
// have bytes must fit now: all of it up to frameReserveMaxBytes, else twice what has
// arrived (at least frameReserveMaxBytes, at most whole).
func reserveFor(whole, have int) int {
	if whole <= frameReserveMaxBytes {
		return whole
	}
	return min(whole, max(frameReserveMaxBytes, 2*have))
}

// regrow returns a pooled buffer of capacity at least n holding b's bytes, and puts b back.
func regrow(b []byte, n int) []byte {
	nb := append(inboundPool.Get(n)[:0], b...)
	if cap(b) > 0 {
		inboundPool.Put(b)
	}
	return nb
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
	}
	*in = inbound{}
}
