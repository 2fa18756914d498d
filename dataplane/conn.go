package dataplane

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/gregor-streaming/gregor/sendfile"
	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"
)

// response is one slot of a connection's response queue: the encoded frame's bytes and
// the file regions that follow them on the wire, in order.
type response struct {
	buf *bytebufferpool.ByteBuffer
	// pieces are what remains to be written: views of buf.B and regions' files.
	pieces []sendfile.Piece
	// regions are released once the response is written or the connection closes.
	regions []segment.Region
	// ready is set when the handler has encoded the response (at once, or later from a
	// purgatory). Only the event loop touches it.
	ready bool
}

var responsePool = sync.Pool{New: func() any { return new(response) }}

func newResponse() *response {
	r := responsePool.Get().(*response)
	r.buf = bytebufferpool.Get()
	return r
}

// setBytes makes the response the single byte piece buf.B.
func (r *response) setBytes() {
	r.pieces = append(r.pieces[:0], sendfile.Bytes(r.buf.B))
	r.ready = true
}

func (r *response) free() {
	segment.ReleaseRegions(r.regions)
	clear(r.regions)
	r.regions = r.regions[:0]
	clear(r.pieces)
	r.pieces = r.pieces[:0]
	r.ready = false
	if r.buf != nil {
		bytebufferpool.Put(r.buf)
		r.buf = nil
	}
	responsePool.Put(r)
}

// Park states of a connection: who owns the head of its response queue.
const (
	parkIdle int32 = iota // the event loop writes
	parkBusy              // a goroutine is writing the head response
	parkDone              // the goroutine finished; the loop collects its result
)

// connState is one client connection. Everything but the atomics and what parkMu guards
// belongs to the connection's event loop.
type connState struct {
	s  *Server
	c  gnet.Conn
	fd int
	ip string

	// queue holds responses in request order; the head is written first.
	queue respQueue
	fast  sendfile.Writer // the event loop's writer
	slow  sendfile.Writer // the parked goroutine's writer

	parked    *sendfile.Parked // created on the first EAGAIN, kept for the connection's life
	parkState atomic.Int32
	parkMu    sync.Mutex // guards closed and the hand-off of the head at close
	closed    bool
	parkRest  []sendfile.Piece // the goroutine's result, read after parkDone
	parkErr   error

	// in keeps the request bytes a pass could not handle; staged holds the produce
	// appends of the current pass, flushed at its end.
	in     inbound
	staged stagedAppends

	// mailbox holds functions posted from other goroutines (purgatory wakes and
	// deadlines) to run on this connection's loop.
	mailMu     sync.Mutex
	mailbox    []func()
	mailClosed bool
	// groupOrder keeps the connection's group requests in order on their way to the
	// coordinator (11_groups.go); Next is called on the loop.
	groupOrder client.GroupOrder
	// verifying are the connection's produce requests waiting for their transaction
	// verification, in arrival order (00_produce.go, verifyTxnProduce). Loop-owned.
	verifying []*txnVerifyWait
	// closeRequested is set by a posted function that wants the connection closed (a
	// forwarded request the group coordinator could not decode, as a handler's error
	// closes it for one decoded here). Loop-owned.
	closeRequested bool

	// frameSinceNs is when the current incomplete request began arriving (0: none);
	// lastRequestNs when the last request was read. Read by housekeeping.
	frameSinceNs  atomic.Int64
	lastRequestNs atomic.Int64
}

var errUnknownAPI = errors.New("dataplane: unknown API key or unsupported version")

// onTraffic runs on the event loop whenever bytes arrive or the parked writer wakes it:
// collect the parked write, read and handle whole frames, write ready responses.
func (cs *connState) onTraffic() gnet.Action {
	cs.runMailbox()
	if cs.closeRequested {
		return gnet.Close
	}
	if err := cs.collectParked(); err != nil {
		cs.s.logger.Debug("parked write failed", "remote", cs.ip, "err", err)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// A reader that stalled past the write deadline is aborted (RST), so the
			// kernel drops what it still queues for it instead of trickling it out.
			_ = cs.c.SetLinger(0)
			cs.s.metrics.writeTimedOut.Inc()
		}
		return gnet.Close
	}
	for {
		_, err := cs.readFrames()
		if err != nil {
			cs.s.logger.Debug("closing connection", "remote", cs.ip, "err", err)
			return gnet.Close
		}
		if err := cs.flush(); err != nil {
			cs.s.logger.Debug("write failed", "remote", cs.ip, "err", err)
			return gnet.Close
		}
		// Whole frames wait (reading stopped at the in-flight limit and writing freed
		// room, or readFrom completed one): read on — a pass with room and a pending
		// frame handles at least that frame. Otherwise the next bytes or the parked
		// writer's wake bring us back.
		if cs.queue.len() >= cs.s.cfg.MaxInFlightPerConnection || !cs.in.pending() {
			return gnet.None
		}
	}
}

// readFrames handles the whole requests that have arrived, oldest first, up to the
// in-flight limit: the backlog's, then those in what gnet has just read, in place. What
// the pass cannot handle is kept in cs.in (see inbound), copied at most once. A size
// prefix out of range, a bad header or an unknown API closes the connection before
// anything is allocated for it.
//
// Produce requests stage their records as views of the frames, and the pass appends each
// partition's records with one write at its end (flushStaged) — pipelined producers get
// one append per partition per pass; the buffers under those views go back to the pool
// only after that.
func (cs *connState) readFrames() (handled int, err error) {
	in := &cs.in
	// Everything gnet read, as a view of the event loop's buffer: gnet keeps nothing.
	fresh, err := cs.c.Next(-1)
	if err != nil {
		return 0, err
	}
	partials := in.partials
	defer func() {
		if ferr := cs.flushStaged(); ferr != nil && err == nil {
			err = ferr
		}
		in.endPass()
		switch {
		case in.partial == nil:
			cs.frameSinceNs.Store(0)
		case in.partials != partials:
			// A new request began arriving: its read deadline starts now.
			cs.frameSinceNs.Store(time.Now().UnixNano())
		}
		if handled > 0 {
			cs.lastRequestNs.Store(time.Now().UnixNano())
		}
	}()
	handled, err = in.frames(fresh, cs.s.cfg.MaxFrameBytes,
		func() bool { return cs.queue.len() < cs.s.cfg.MaxInFlightPerConnection },
		cs.handleFrame)
	if err == nil && in.partial != nil {
		// The rest of a frame that spans reads goes from the socket straight into its
		// buffer; a frame it completes waits in the backlog for the next pass.
		err = in.readFrom(cs.fd)
	}
	return handled, err
}

// handleFrame decodes one request's header and runs its handler, which fills the
// request's slot in the response queue now or later.
func (cs *connState) handleFrame(frame []byte) error {
	hdr, err := proto.ParseRequestHeader(frame)
	if err != nil {
		return err
	}
	api := lookupAPI(hdr.APIKey)
	if api == nil {
		return fmt.Errorf("%w: key %d", errUnknownAPI, hdr.APIKey)
	}
	// An ApiVersions newer than ours is answered from the header alone (KIP-511); any
	// other unsupported version closes the connection, as Kafka does.
	if (hdr.APIVersion < api.min || hdr.APIVersion > api.max) && api.key != apiVersionsKey {
		return fmt.Errorf("%w: key %d version %d", errUnknownAPI, hdr.APIKey, hdr.APIVersion)
	}
	if hdr.APIKey != produceKey {
		// A request after staged produces sees them appended, as if each had been
		// handled alone.
		if err := cs.flushStaged(); err != nil {
			return err
		}
	}
	start := time.Now()
	r := requestPool.Get().(*request)
	*r = request{hdr: hdr, frame: frame, body: frame[hdr.Size:], conn: cs, resp: newResponse()}
	cs.queue.push(r.resp)
	err = api.handle(cs.s, r)
	cs.s.metrics.observeRequest(api.key, start)
	if !r.retained {
		*r = request{}
		requestPool.Put(r)
	}
	return err
}

// flush writes ready responses from the head of the queue: directly to the socket while
// it takes them (most responses finish here), else it parks the head with a goroutine
// that waits for the socket in the Go poller.
func (cs *connState) flush() error {
	for cs.parkState.Load() == parkIdle && cs.queue.len() > 0 && cs.queue.front().ready {
		head := cs.queue.front()
		rest, err := cs.fast.WriteTo(cs.fd, head.pieces)
		if errors.Is(err, unix.EAGAIN) {
			head.pieces = rest
			return cs.park(head)
		}
		if err != nil {
			return err
		}
		cs.popHead()
	}
	return nil
}

func (cs *connState) popHead() {
	cs.queue.popFront().free()
}

// park hands the head response to a goroutine writing through a duplicate of the socket.
// The event loop goes on reading and queuing; the goroutine wakes it when done.
func (cs *connState) park(head *response) error {
	if cs.parked == nil {
		p, err := sendfile.Park(cs.fd)
		if err != nil {
			return err
		}
		cs.parked = p
	}
	cs.parkState.Store(parkBusy)
	pieces, deadline := head.pieces, time.Now().Add(cs.s.cfg.WriteTimeout)
	cs.s.metrics.parked.Inc()
	go func() {
		rest, err := cs.parked.WriteAll(&cs.slow, pieces, deadline)
		cs.parkMu.Lock()
		cs.parkRest, cs.parkErr = rest, err
		cs.parkState.Store(parkDone)
		closed := cs.closed
		if closed {
			// The connection closed while we wrote: the head is ours to free.
			head.free()
		}
		cs.parkMu.Unlock()
		if !closed {
			_ = cs.c.Wake(nil)
		}
	}()
	return nil
}

// collectParked takes back the head from a finished parked write.
func (cs *connState) collectParked() error {
	if cs.parkState.Load() != parkDone {
		return nil
	}
	cs.parkMu.Lock()
	rest, err := cs.parkRest, cs.parkErr
	cs.parkRest, cs.parkErr = nil, nil
	cs.parkMu.Unlock()
	cs.parkState.Store(parkIdle)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return errors.New("dataplane: parked write returned early")
	}
	cs.popHead()
	return nil
}

// onClose frees the queue (except a head a parked goroutine still writes: it frees that
// itself) and closes the duplicate socket, which ends that goroutine.
func (cs *connState) onClose() {
	cs.in.release()
	cs.mailMu.Lock()
	cs.mailClosed = true
	cs.mailbox = nil
	cs.mailMu.Unlock()
	cs.parkMu.Lock()
	cs.closed = true
	busy := cs.parkState.Load() == parkBusy
	for i := range cs.queue.len() {
		if i == 0 && busy {
			continue
		}
		cs.queue.at(i).free()
	}
	cs.queue = respQueue{}
	cs.parkMu.Unlock()
	if cs.parked != nil {
		_ = cs.parked.Close()
	}
}
