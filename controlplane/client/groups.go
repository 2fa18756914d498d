package client

// Group coordination: a data-plane node forwards Kafka group requests (JoinGroup,
// SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups,
// DescribeGroups, DeleteGroups, OffsetDelete) to the active controller's internal
// listener and relays the answers. The active controller publishes that listener's
// address under GroupCoordinatorKey, bound to its controller session.
//
// The internal protocol, over one TCP connection per data-plane node, requests pipelined
// and answered in any order (a JoinGroup long poll does not hold up a Heartbeat):
//
//	request:  size int32 | id int32 | hostLen int16 | host | Kafka request (header + body)
//	response: size int32 | id int32 | status int8 | Kafka response body (no header)
//
// size counts the bytes after itself. id is the sender's, echoed. host is the Kafka
// client's address (DescribeGroups reports it). The Kafka request is passed exactly as
// the client sent it; the body of a GroupStatusOK answer is encoded at its version.
//
// Order: the coordinator applies a connection's requests in the order it reads them,
// and the sender writes each Kafka client connection's requests in the order they
// arrived (GroupOrder), so a client's pipelined requests are applied in its order, as
// Kafka does. A "not active" answer retires the connection: the coordinator answers
// every request it reads afterwards "not active" too, the sender sends nothing more on
// it (it closes once the requests in flight on it are answered) and resends the "not
// active" ones to the coordinator it looks up again, each client connection's in their
// order. A request whose deadline passes is given up alone: the connection serves on;
// only a broken connection fails every request in flight on it. The sender also watches
// GroupCoordinatorKey: when another coordinator is published, the connection to the
// old one is retired too, and what it has not answered after groupRetiredGrace fails
// (a paused or cut-off coordinator answers nothing and closes nothing).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Status bytes of an internal response.
const (
	// GroupStatusOK: the body is the Kafka response.
	GroupStatusOK byte = 0
	// GroupStatusNotActive: this member is not the active controller (any more); the
	// sender looks the coordinator up again and resends.
	GroupStatusNotActive byte = 1
	// GroupStatusBadRequest: the Kafka request could not be decoded; the data-plane
	// node closes the client's connection, as Kafka does for a malformed request.
	GroupStatusBadRequest byte = 2
)

// Limits of the internal protocol.
const (
	// GroupFrameMax bounds an internal frame either way.
	GroupFrameMax = 100 << 20
	// groupFrameEagerMax is the largest frame whose buffer is allocated at once.
	groupFrameEagerMax = 1 << 20
	// groupHostMax bounds the client host field.
	groupHostMax = 1024
	// groupForwardAttempts bounds how often one request is sent (the first time, and
	// again after "not active" answers or failed coordinator look-ups).
	groupForwardAttempts = 4
	// groupWriteTimeout bounds one write to the coordinator; past it the connection is
	// closed.
	groupWriteTimeout = 30 * time.Second
)

// ErrGroupBadRequest is returned by ForwardGroupRequest when the coordinator could not
// decode the request: close the client's connection.
var ErrGroupBadRequest = errors.New("client: group request could not be decoded")

// ErrNoGroupCoordinator means no active controller has published its listener (none is
// elected, or it is starting): retriable (COORDINATOR_NOT_AVAILABLE).
var ErrNoGroupCoordinator = &Error{Code: kerr.CoordinatorNotAvailable, Message: "no active group coordinator"}

// AppendGroupRequest appends one internal request frame.
func AppendGroupRequest(dst []byte, id int32, host string, kafkaRequest []byte) []byte {
	if len(host) > groupHostMax {
		host = host[:groupHostMax]
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+2+len(host)+len(kafkaRequest)))
	dst = binary.BigEndian.AppendUint32(dst, uint32(id))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(host)))
	dst = append(dst, host...)
	return append(dst, kafkaRequest...)
}

// ParseGroupRequest splits the payload of an internal request frame (after its size).
func ParseGroupRequest(p []byte) (id int32, host string, kafkaRequest []byte, err error) {
	if len(p) < 6 {
		return 0, "", nil, errors.New("group frame: short header")
	}
	id = int32(binary.BigEndian.Uint32(p))
	n := int(binary.BigEndian.Uint16(p[4:]))
	if n > groupHostMax || len(p) < 6+n {
		return 0, "", nil, errors.New("group frame: bad host length")
	}
	return id, string(p[6 : 6+n]), p[6+n:], nil
}

// AppendGroupResponse appends one internal response frame.
func AppendGroupResponse(dst []byte, id int32, status byte, body []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+1+len(body)))
	dst = binary.BigEndian.AppendUint32(dst, uint32(id))
	dst = append(dst, status)
	return append(dst, body...)
}

// Shapes of the flexible versions of the group requests served: OffsetFetch v6, and
// v7 with require_stable (KIP-447).
var (
	offsetFetchTopics = proto.CompactArray(proto.CompactString, proto.CompactArray(proto.Int32), proto.Tags)
	offsetFetchV6     = proto.Shape{proto.CompactString, offsetFetchTopics, proto.Tags}
	offsetFetchV7     = proto.Shape{proto.CompactString, offsetFetchTopics, proto.Bool, proto.Tags}
)

// GroupRequestShape returns the body shape of a forwarded group request's flexible
// version; ok is false for one not served (the group APIs are served at versions that
// are not flexible but for OffsetFetch v6 and v7).
func GroupRequestShape(key, version int16) (shape proto.Shape, ok bool) {
	if kmsg.Key(key) != kmsg.OffsetFetch {
		return nil, false
	}
	switch version {
	case 6:
		return offsetFetchV6, true
	case 7:
		return offsetFetchV7, true
	}
	return nil, false
}

// ReadGroupFrame reads one frame's payload (after its size) into buf, grown as needed.
func ReadGroupFrame(r io.Reader, buf []byte) ([]byte, error) {
	var sz [4]byte
	if _, err := io.ReadFull(r, sz[:]); err != nil {
		return buf, err
	}
	n := int(int32(binary.BigEndian.Uint32(sz[:])))
	if n < 5 || n > GroupFrameMax {
		return buf, fmt.Errorf("group frame: size %d out of range", n)
	}
	if cap(buf) >= n || n <= groupFrameEagerMax {
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		_, err := io.ReadFull(r, buf)
		return buf, err
	}
	// A large claimed size: grow with what actually arrives, not with the claim.
	bb := bytes.NewBuffer(buf[:0])
	if _, err := io.CopyN(bb, r, int64(n)); err != nil {
		return buf, err
	}
	return bb.Bytes(), nil
}

// groupReply is one answer delivered to a waiting ForwardGroupRequest.
type groupReply struct {
	status byte
	body   []byte
}

// errGroupConnRetired closes a retired connection once its requests are answered.
var errGroupConnRetired = errors.New("client: group coordinator connection retired")

// errGroupConnRefused: the connection takes no more requests (retired or closed) — the
// request was not sent, and goes to the current connection instead.
var errGroupConnRefused = errors.New("client: group coordinator connection takes no more requests")

// groupConn is one connection to a coordinator's internal listener.
//
// Lock order: groupForwarder.mu, then groupConn.mu; wmu is never held with either.
type groupConn struct {
	f    *groupForwarder
	nc   net.Conn
	addr string

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	pending map[int32]chan groupReply
	nextID  int32
	// retired is set by a "not active" answer: the coordinator answers every later
	// request on the connection "not active" too, so no more are sent, and the
	// connection closes once the requests in flight are answered. It is also set when
	// another coordinator is published (coordinatorChanged).
	retired bool
	// rev is the revision of the GroupCoordinatorKey value the connection was dialed
	// for: a change of the key after it means another coordinator.
	rev int64
	err error // set once the connection failed or closed; no more requests are taken
}

// groupForwarder keeps the connections to the coordinator: the current one, and those
// retired with requests still in flight (closed by Client.Close too).
type groupForwarder struct {
	mu    sync.Mutex
	conn  *groupConn
	conns map[*groupConn]struct{} // every connection not failed yet
	// stopWatch ends the watch of GroupCoordinatorKey, started with the first
	// connection.
	stopWatch context.CancelFunc
	// retiredGrace replaces groupRetiredGrace when set (tests; before the first
	// request).
	retiredGrace time.Duration
}

// groupRetiredGrace is how long a connection retired because another coordinator was
// published still waits for the answers to its requests in flight. A coordinator whose
// term ended answers them "not active" at once (and they are resent); one that is
// paused or cut off never answers: they fail then, and their clients retry.
const groupRetiredGrace = 5 * time.Second

// GroupOrder keeps the group requests of one Kafka client connection in the order they
// arrived on their way to the coordinator: Kafka applies a connection's requests in
// order, and clients rely on it (of two pipelined OffsetCommits, the later offset
// stays). A request is written to the internal connection only once the one before it
// has been; the answers come back in any order (a JoinGroup parked for a rebalance does
// not hold up the requests behind it: only their writes wait for its write).
//
// A request answered "not active" is resent, to the next coordinator, before any request
// behind it: all of an order's requests in flight ride one internal connection, and the
// order moves to a new one only once every request in flight on the old one is answered.
// That is quick: the coordinator answers every request it reads after a "not active"
// with "not active" too (controlplane/group_server.go), and those are resent in their
// order.
//
// The zero GroupOrder is ready for use; it is safe for concurrent use.
type GroupOrder struct {
	mu   sync.Mutex
	next uint64 // the seq of the next place
	// waiting holds the places to be written (for the first time or again), by seq;
	// only the first may write. sent holds those written and not answered yet.
	// Invariant: a place is in at most one of them, and in sent exactly when its conn
	// is set.
	waiting []*GroupPlace
	sent    []*GroupPlace
	// changed is closed (and cleared) when waiting or sent change; nil while no one
	// waits.
	changed chan struct{}
}

// GroupPlace is one request's place in a GroupOrder, from GroupOrder.Next to the return
// of the ForwardGroupRequestInOrder given it.
type GroupPlace struct {
	o    *GroupOrder
	seq  uint64
	conn *groupConn // while in o.sent
}

// Next reserves the next place in o. Call it in the order the requests arrived (on the
// client connection's event loop), and give the place to exactly one
// ForwardGroupRequestInOrder: the places after it wait for that call.
func (o *GroupOrder) Next() *GroupPlace {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := &GroupPlace{o: o, seq: o.next}
	o.next++
	o.waiting = append(o.waiting, p)
	return p
}

// changedLocked returns the channel closed at o's next change (o.mu held).
func (o *GroupOrder) changedLocked() chan struct{} {
	if o.changed == nil {
		o.changed = make(chan struct{})
	}
	return o.changed
}

// changedNowLocked wakes whoever waits for a change (o.mu held).
func (o *GroupOrder) changedNowLocked() {
	if o.changed != nil {
		close(o.changed)
		o.changed = nil
	}
}

// turn waits until p may be written — it is the first waiting place, and its order's
// requests in flight are all on the current connection — and returns that connection.
func (p *GroupPlace) turn(ctx context.Context, c *Client) (*groupConn, error) {
	o := p.o
	for {
		o.mu.Lock()
		first := o.waiting[0] == p
		o.mu.Unlock()
		var gc *groupConn
		if first {
			var err error
			if gc, err = c.groupConn(ctx); err != nil {
				return nil, err
			}
		}
		o.mu.Lock()
		if o.waiting[0] == p {
			if gc != nil && o.allSentOnLocked(gc) {
				o.mu.Unlock()
				return gc, nil
			}
			if gc == nil {
				// p became first between the two looks: the change that made it so
				// has come and gone, and no other may come (the places before it may
				// be waiting for answers to requests behind it). Look again now.
				o.mu.Unlock()
				continue
			}
		}
		changed := o.changedLocked()
		o.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (o *GroupOrder) allSentOnLocked(gc *groupConn) bool {
	for _, q := range o.sent {
		if q.conn != gc {
			return false
		}
	}
	return true
}

// written moves p, written on gc, from waiting to sent. p was first in line when it
// began writing; an earlier place answered "not active" meanwhile may have gone back in
// front of it. Then either the coordinator read p after that answer, and answers p "not
// active" too (p goes back behind that place), or before it, and applied it after that
// place, as in their order (the earlier one, a parked JoinGroup say, was then dropped
// by the coordinator's end of term, and is sent again).
func (p *GroupPlace) written(gc *groupConn) {
	o := p.o
	o.mu.Lock()
	defer o.mu.Unlock()
	o.waiting = removePlace(o.waiting, p)
	p.conn = gc
	o.sent = append(o.sent, p)
	o.changedNowLocked()
}

// again puts p, answered "not active", back among the waiting places, in its order.
func (p *GroupPlace) again() {
	o := p.o
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sent = removePlace(o.sent, p)
	p.conn = nil
	i := 0
	for i < len(o.waiting) && o.waiting[i].seq < p.seq {
		i++
	}
	o.waiting = slices.Insert(o.waiting, i, p)
	o.changedNowLocked()
}

// leave ends p: the places behind it no longer wait for it.
func (p *GroupPlace) leave() {
	o := p.o
	o.mu.Lock()
	defer o.mu.Unlock()
	o.waiting = removePlace(o.waiting, p)
	o.sent = removePlace(o.sent, p)
	p.conn = nil
	o.changedNowLocked()
}

func removePlace(ps []*GroupPlace, p *GroupPlace) []*GroupPlace {
	if i := slices.Index(ps, p); i >= 0 {
		return slices.Delete(ps, i, i+1)
	}
	return ps
}

// ForwardGroupRequest is ForwardGroupRequestInOrder for a request in an order of its
// own: it waits for no other request.
func (c *Client) ForwardGroupRequest(ctx context.Context, host string, kafkaRequest []byte) ([]byte, error) {
	return c.ForwardGroupRequestInOrder(ctx, nil, host, kafkaRequest)
}

// ForwardGroupRequestInOrder sends one Kafka group request (header and body, as the
// client sent it) to the active group coordinator, once the requests before it in its
// order (place; nil: an order of its own) have been sent, and returns the response
// body at the request's version. It blocks until the answer, ctx's end or a failure of
// the connection: call it from a goroutine of its own. A request answered "not active"
// (a stale coordinator address, a failover) is resent, in its order, to the coordinator
// looked up again; other failures return an error and the caller answers its client
// with a retriable coordinator error (the client finds its coordinator again and
// retries). ctx's end fails this request alone: the connection serves on, and a late
// answer is dropped.
func (c *Client) ForwardGroupRequestInOrder(ctx context.Context, place *GroupPlace, host string, kafkaRequest []byte) ([]byte, error) {
	if place == nil {
		place = new(GroupOrder).Next()
	}
	defer place.leave()
	var lastErr error
	for attempt := 0; attempt < groupForwardAttempts; attempt++ {
		if attempt > 0 {
			// The place stays first in line meanwhile: nothing behind it overtakes.
			t := time.NewTimer(time.Duration(attempt) * 50 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
		gc, err := place.turn(ctx, c)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			lastErr = err
			continue
		}
		if ctx.Err() != nil {
			return nil, ctx.Err() // not sent: the coordinator never sees it
		}
		id, ch, err := gc.send(host, kafkaRequest)
		if errors.Is(err, errGroupConnRefused) {
			// Not sent (gc was retired meanwhile): not an attempt. turn dials anew or
			// finds the current connection; ctx bounds the loop.
			attempt--
			continue
		}
		if err != nil {
			return nil, err // the write failed: every request in flight on gc fails
		}
		place.written(gc)
		rep, err := gc.wait(ctx, id, ch)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		switch rep.status {
		case GroupStatusOK:
			return rep.body, nil
		case GroupStatusBadRequest:
			return nil, ErrGroupBadRequest
		case GroupStatusNotActive: // gc is retired (readLoop)
			place.again()
			lastErr = ErrNoGroupCoordinator
		default:
			return nil, fmt.Errorf("client: group coordinator %s: unknown answer status %d", gc.addr, rep.status)
		}
	}
	return nil, lastErr
}

// groupConn returns the connection to the active coordinator, dialing it if needed.
func (c *Client) groupConn(ctx context.Context) (*groupConn, error) {
	f := &c.groups
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conn != nil {
		f.conn.mu.Lock()
		usable := f.conn.err == nil && !f.conn.retired
		f.conn.mu.Unlock()
		if usable {
			return f.conn, nil
		}
		f.conn = nil
	}
	resp, err := c.get(ctx, "get_group_coordinator", cluster.GroupCoordinatorKey)
	if err != nil {
		return nil, fmt.Errorf("client: group coordinator: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, ErrNoGroupCoordinator
	}
	var gc cluster.GroupCoordinator
	if err := json.Unmarshal(resp.Kvs[0].Value, &gc); err != nil || gc.Addr == "" {
		return nil, fmt.Errorf("client: group coordinator %q: bad value", resp.Kvs[0].Value)
	}
	d := net.Dialer{Timeout: DefaultDialTimeout}
	nc, err := d.DialContext(ctx, "tcp", gc.Addr)
	if err != nil {
		return nil, fmt.Errorf("client: group coordinator %s at %s: %w", gc.Name, gc.Addr, errors.Join(ErrNoGroupCoordinator, err))
	}
	conn := &groupConn{f: f, nc: nc, addr: gc.Addr, rev: resp.Kvs[0].ModRevision, pending: map[int32]chan groupReply{}}
	if f.conns == nil {
		f.conns = map[*groupConn]struct{}{}
	}
	f.conns[conn] = struct{}{}
	if f.stopWatch == nil {
		wctx, cancel := context.WithCancel(context.Background())
		f.stopWatch = cancel
		go c.watchGroupCoordinator(wctx, resp.Header.Revision+1)
	}
	go conn.readLoop()
	f.conn = conn
	return conn, nil
}

// closeGroups closes the coordinator connections (Client.Close).
func (c *Client) closeGroups() {
	f := &c.groups
	f.mu.Lock()
	conns := make([]*groupConn, 0, len(f.conns))
	for gc := range f.conns {
		conns = append(conns, gc)
	}
	f.conn = nil
	if f.stopWatch != nil {
		f.stopWatch()
	}
	f.mu.Unlock()
	for _, gc := range conns {
		gc.fail(errors.New("client: closed"))
	}
}

// watchGroupCoordinator retires the connections to a coordinator that is no longer the
// one published, from revision rev on, until ctx ends. Without it a connection to a
// coordinator that stopped answering without closing it (a paused process, a cut-off
// node) would keep taking requests that no one answers: a request's deadline fails that
// request alone, and a SyncGroup's is as long as the rebalance the coordinator bounds.
func (c *Client) watchGroupCoordinator(ctx context.Context, rev int64) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		// Bounded (watchBounded): a watch on a paused member would leave the connection
		// to a coordinator that moved in use until gRPC's keepalive gave up.
		err := c.watchBounded(ctx, "group-coordinator", watchProgressEvery, watchStallAfter, func(resp clientv3.WatchResponse) error {
			if err := resp.Err(); err != nil {
				return err // compacted or the watch failed: look at the key again, then watch on
			}
			for _, ev := range resp.Events {
				// A delete's ModRevision is its own; its address is none.
				c.groups.coordinatorChanged(ev.Kv.ModRevision, coordinatorAddr(ev.Kv.Value))
			}
			rev = resp.Header.Revision + 1
			backoff = 50 * time.Millisecond
			return nil
		}, cluster.GroupCoordinatorKey, clientv3.WithRev(rev))
		if errors.Is(err, errStalled) {
			c.logger.Warn("group coordinator watch heard nothing: its member stalled; watching elsewhere")
			c.event(EventWatchStalled)
			backoff = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
		gctx, cancel := c.opContext(ctx)
		resp, err := c.etcd.Get(gctx, cluster.GroupCoordinatorKey)
		cancel()
		if err != nil {
			continue // rev stays: the watch resumes where it was, or fails again
		}
		changed, addr := resp.Header.Revision, "" // deleted: anything dialed before is stale
		if len(resp.Kvs) > 0 {
			changed, addr = resp.Kvs[0].ModRevision, coordinatorAddr(resp.Kvs[0].Value)
		}
		c.groups.coordinatorChanged(changed, addr)
		rev = resp.Header.Revision + 1
	}
}

// coordinatorAddr is the address of a GroupCoordinatorKey value ("" if none).
func coordinatorAddr(v []byte) string {
	var gc cluster.GroupCoordinator
	if json.Unmarshal(v, &gc) != nil {
		return ""
	}
	return gc.Addr
}

// coordinatorChanged retires the connections dialed for a GroupCoordinatorKey value
// older than rev (the revision of a change of the key) unless the change names their
// address again (the same controller publishing again, after a put whose answer it
// missed: its term, and the requests waiting in it, go on).
func (f *groupForwarder) coordinatorChanged(rev int64, addr string) {
	var stale []*groupConn
	f.mu.Lock()
	for gc := range f.conns {
		if gc.rev < rev && gc.addr != addr {
			stale = append(stale, gc)
		}
	}
	if f.conn != nil && slices.Contains(stale, f.conn) {
		f.conn = nil
	}
	grace := groupRetiredGrace
	if f.retiredGrace > 0 {
		grace = f.retiredGrace
	}
	f.mu.Unlock()
	for _, gc := range stale {
		gc.retire(grace)
	}
}

// retire takes no more requests on gc, closes it once its requests in flight are
// answered, and fails those still unanswered after grace.
func (gc *groupConn) retire(grace time.Duration) {
	gc.mu.Lock()
	if gc.err != nil {
		gc.mu.Unlock()
		return
	}
	gc.retired = true
	idle := len(gc.pending) == 0
	gc.mu.Unlock()
	if idle {
		gc.fail(errGroupConnRetired)
		return
	}
	time.AfterFunc(grace, func() { gc.fail(errGroupCoordinatorMoved) })
}

// errGroupCoordinatorMoved fails the requests a retired coordinator did not answer.
var errGroupCoordinatorMoved = fmt.Errorf("client: another group coordinator was published: %w", ErrNoGroupCoordinator)

// send registers a waiter for one request and writes the request. It refuses
// (errGroupConnRefused) once gc is retired or closed.
func (gc *groupConn) send(host string, kafkaRequest []byte) (int32, chan groupReply, error) {
	ch := make(chan groupReply, 1)
	gc.mu.Lock()
	if gc.err != nil || gc.retired {
		gc.mu.Unlock()
		return 0, nil, errGroupConnRefused
	}
	gc.nextID++
	id := gc.nextID
	gc.pending[id] = ch
	gc.mu.Unlock()

	frame := AppendGroupRequest(make([]byte, 0, 10+len(host)+len(kafkaRequest)), id, host, kafkaRequest)
	gc.wmu.Lock()
	// Not the request's deadline: a write cut short breaks the framing, and with it
	// every other request on the connection.
	_ = gc.nc.SetWriteDeadline(time.Now().Add(groupWriteTimeout))
	_, err := gc.nc.Write(frame)
	gc.wmu.Unlock()
	if err != nil {
		gc.fail(err)
		return 0, nil, fmt.Errorf("client: group coordinator %s: %w", gc.addr, err)
	}
	return id, ch, nil
}

// wait waits for the answer to request id. At ctx's end it stops waiting: a late answer
// finds no waiter and is dropped (readLoop), and the connection serves on.
func (gc *groupConn) wait(ctx context.Context, id int32, ch chan groupReply) (groupReply, error) {
	select {
	case rep, ok := <-ch:
		if !ok {
			gc.mu.Lock()
			err := gc.err
			gc.mu.Unlock()
			return groupReply{}, fmt.Errorf("client: group coordinator %s: %w", gc.addr, err)
		}
		return rep, nil
	case <-ctx.Done():
		gc.mu.Lock()
		if gc.pending != nil {
			delete(gc.pending, id)
		}
		idle := gc.retired && len(gc.pending) == 0
		gc.mu.Unlock()
		if idle {
			gc.fail(errGroupConnRetired)
		}
		return groupReply{}, ctx.Err()
	}
}

// readLoop delivers answers to their waiters until the connection fails, or until it
// is retired — by a "not active" answer, whether or not its request is still awaited —
// and every request in flight on it is answered.
func (gc *groupConn) readLoop() {
	br := bufio.NewReaderSize(gc.nc, 64<<10)
	for {
		p, err := ReadGroupFrame(br, nil)
		if err != nil {
			gc.fail(err)
			return
		}
		id := int32(binary.BigEndian.Uint32(p))
		rep := groupReply{status: p[4], body: p[5:]}
		gc.mu.Lock()
		ch := gc.pending[id]
		delete(gc.pending, id)
		if rep.status == GroupStatusNotActive {
			gc.retired = true // groupConn dials anew from now on
		}
		idle := gc.retired && len(gc.pending) == 0
		gc.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
		if idle {
			gc.fail(errGroupConnRetired)
			return
		}
	}
}

// fail closes the connection and wakes every waiter with err.
func (gc *groupConn) fail(err error) {
	gc.mu.Lock()
	if gc.err != nil {
		gc.mu.Unlock()
		return
	}
	gc.err = err
	pending := gc.pending
	gc.pending = nil
	gc.mu.Unlock()
	_ = gc.nc.Close()
	for _, ch := range pending {
		close(ch)
	}
	gc.f.mu.Lock()
	delete(gc.f.conns, gc)
	if gc.f.conn == gc {
		gc.f.conn = nil
	}
	gc.f.mu.Unlock()
}

// PutGroupCoordinator publishes the active controller's internal listener under its
// session lease, fenced on its election key (electionKey created at electionRev).
func (c *Client) PutGroupCoordinator(ctx context.Context, electionKey string, electionRev int64, lease clientv3.LeaseID, gc cluster.GroupCoordinator) error {
	v, err := json.Marshal(gc)
	if err != nil {
		return err
	}
	resp, err := c.txn(ctx, "put_group_coordinator",
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(electionKey), "=", electionRev)},
		[]clientv3.Op{clientv3.OpPut(cluster.GroupCoordinatorKey, string(v), clientv3.WithLease(lease))})
	if err != nil {
		return fmt.Errorf("client: publish group coordinator: %w", err)
	}
	if !resp.Succeeded {
		return errors.New("client: publish group coordinator: no longer the controller")
	}
	return nil
}
