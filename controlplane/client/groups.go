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
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// GroupCoordinatorKey holds the active controller's internal listener (GroupCoordinator).
const GroupCoordinatorKey = RootPrefix + "group-coordinator"

// GroupCoordinator is the value of GroupCoordinatorKey.
type GroupCoordinator struct {
	// Name is the control-plane member's name; Addr its internal listener (host:port).
	Name string `json:"name"`
	Addr string `json:"addr"`
}

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
	// groupForwardAttempts bounds how often one request is resent after a stale address.
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

// groupConn is one connection to a coordinator's internal listener.
type groupConn struct {
	nc   net.Conn
	addr string

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	pending map[int32]chan groupReply
	nextID  int32
	err     error // set once the connection failed; no more requests are taken
}

// groupForwarder keeps the connection to the active coordinator.
type groupForwarder struct {
	mu   sync.Mutex
	conn *groupConn
}

// ForwardGroupRequest sends one Kafka group request (header and body, as the client sent
// it) to the active group coordinator and returns the response body at the request's
// version. It blocks until the answer, ctx's end or a failure of the connection: call it
// from a goroutine of its own. A stale coordinator address is looked up again and the
// request resent; other failures return an error and the caller answers its client with
// a retriable coordinator error (the client finds its coordinator again and retries).
func (c *Client) ForwardGroupRequest(ctx context.Context, host string, kafkaRequest []byte) ([]byte, error) {
	var lastErr error
	for attempt := 0; attempt < groupForwardAttempts; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(time.Duration(attempt) * 50 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
		gc, err := c.groupConn(ctx)
		if err != nil {
			lastErr = err
			continue
		}
		rep, err := gc.do(ctx, host, kafkaRequest)
		if err != nil {
			if ctx.Err() != nil {
				// This request's deadline: the connection serves on (the others on it
				// wait for their own answers; a late answer to this one is dropped).
				return nil, ctx.Err()
			}
			c.dropGroupConn(gc)
			return nil, err
		}
		switch rep.status {
		case GroupStatusOK:
			return rep.body, nil
		case GroupStatusBadRequest:
			return nil, ErrGroupBadRequest
		default:
			c.dropGroupConn(gc)
			lastErr = ErrNoGroupCoordinator
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
		failed := f.conn.err != nil
		f.conn.mu.Unlock()
		if !failed {
			return f.conn, nil
		}
		f.conn = nil
	}
	resp, err := c.get(ctx, "get_group_coordinator", GroupCoordinatorKey)
	if err != nil {
		return nil, fmt.Errorf("client: group coordinator: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, ErrNoGroupCoordinator
	}
	var gc GroupCoordinator
	if err := json.Unmarshal(resp.Kvs[0].Value, &gc); err != nil || gc.Addr == "" {
		return nil, fmt.Errorf("client: group coordinator %q: bad value", resp.Kvs[0].Value)
	}
	d := net.Dialer{Timeout: DefaultDialTimeout}
	nc, err := d.DialContext(ctx, "tcp", gc.Addr)
	if err != nil {
		return nil, fmt.Errorf("client: group coordinator %s at %s: %w", gc.Name, gc.Addr, errors.Join(ErrNoGroupCoordinator, err))
	}
	conn := &groupConn{nc: nc, addr: gc.Addr, pending: map[int32]chan groupReply{}}
	go conn.readLoop()
	f.conn = conn
	return conn, nil
}

// dropGroupConn closes gc if it is still the current connection.
func (c *Client) dropGroupConn(gc *groupConn) {
	f := &c.groups
	f.mu.Lock()
	if f.conn == gc {
		f.conn = nil
	}
	f.mu.Unlock()
	gc.fail(errors.New("client: group coordinator connection dropped"))
}

// closeGroups closes the coordinator connection (Client.Close).
func (c *Client) closeGroups() {
	f := &c.groups
	f.mu.Lock()
	gc := f.conn
	f.conn = nil
	f.mu.Unlock()
	if gc != nil {
		gc.fail(errors.New("client: closed"))
	}
}

// do sends one request and waits for its answer.
func (gc *groupConn) do(ctx context.Context, host string, kafkaRequest []byte) (groupReply, error) {
	ch := make(chan groupReply, 1)
	gc.mu.Lock()
	if gc.err != nil {
		err := gc.err
		gc.mu.Unlock()
		return groupReply{}, err
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
		return groupReply{}, fmt.Errorf("client: group coordinator %s: %w", gc.addr, err)
	}
	// A late answer finds no waiter and is dropped (readLoop).
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
		delete(gc.pending, id)
		gc.mu.Unlock()
		return groupReply{}, ctx.Err()
	}
}

// readLoop delivers answers to their waiters until the connection fails.
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
		gc.mu.Unlock()
		if ch != nil {
			ch <- rep
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
}

// PutGroupCoordinator publishes the active controller's internal listener under its
// session lease, fenced on its election key (electionKey created at electionRev).
func (c *Client) PutGroupCoordinator(ctx context.Context, electionKey string, electionRev int64, lease clientv3.LeaseID, gc GroupCoordinator) error {
	v, err := json.Marshal(gc)
	if err != nil {
		return err
	}
	resp, err := c.txn(ctx, "put_group_coordinator",
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(electionKey), "=", electionRev)},
		[]clientv3.Op{clientv3.OpPut(GroupCoordinatorKey, string(v), clientv3.WithLease(lease))})
	if err != nil {
		return fmt.Errorf("client: publish group coordinator: %w", err)
	}
	if !resp.Succeeded {
		return errors.New("client: publish group coordinator: no longer the controller")
	}
	return nil
}
