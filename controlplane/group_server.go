package controlplane

// The internal listener: data-plane nodes' forwarded group requests in, answers out,
// in any order (protocol in controlplane/client/groups.go). The requests themselves are
// the group coordinator's (package groups); this file only moves them. ElectLeaders
// requests come the same way and go to the controller (elect_server.go).
//
// Each connection has a reader and a writer. The reader decodes the requests and applies
// them to the runtime one at a time, in the order they arrived — also while the runtime
// is still loading (the reader waits, see groups.Coordinator.Handle), never a goroutine per
// request, so two OffsetCommits a client pipelined are applied in its order. The writer
// is fed by a queue that never blocks whoever answers (handlers, timers, store
// completions answer with the runtime's lock held), and answers may come long after
// the connection closed (a parked JoinGroup, Server.Close stopping the runtime): send
// drops them then. The wake channel is never closed — a send on a closed channel panics
// even in a select with a default — the writer stops on done instead.
//
// The first "not active" answer retires the connection: every request read after it is
// answered "not active" without being applied. The data-plane node resends "not active"
// requests to the next coordinator in their order, so none of its later requests may be
// applied here behind their back (see ForwardGroupRequestInOrder).

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/groups"
	"github.com/gregor-streaming/gregor/proto"
)

// groupConnWriteTimeout bounds one write to a data-plane node.
const groupConnWriteTimeout = 30 * time.Second

// serveGroups accepts data-plane connections until the listener closes.
func (s *Server) serveGroups(ln net.Listener) {
	defer s.wg.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.logger.Warn("internal listener accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		gc := &groupServerConn{s: s, nc: nc, wake: make(chan struct{}, 1), done: make(chan struct{})}
		s.trackGroupConn(gc, true)
		go gc.writeLoop()
		go gc.readLoop()
	}
}

func (s *Server) trackGroupConn(gc *groupServerConn, add bool) {
	s.groupConnsMu.Lock()
	defer s.groupConnsMu.Unlock()
	if s.groupConns == nil {
		s.groupConns = map[*groupServerConn]struct{}{}
	}
	if add {
		s.groupConns[gc] = struct{}{}
	} else {
		delete(s.groupConns, gc)
	}
}

// closeGroupConns closes every data-plane connection (Close).
func (s *Server) closeGroupConns() {
	s.groupConnsMu.Lock()
	defer s.groupConnsMu.Unlock()
	for gc := range s.groupConns {
		_ = gc.nc.Close()
	}
}

// groupServerConn is one data-plane node's connection to the internal listener.
type groupServerConn struct {
	s  *Server
	nc net.Conn
	// wake tells the writer that out has grown; never closed (senders outlive the
	// connection). done is closed by the reader when the connection ends: the writer
	// stops.
	wake chan struct{}
	done chan struct{}

	mu  sync.Mutex
	out []byte // answers not yet written
	// dead is set when the connection ended: answers are dropped. Invariant: dead
	// implies out is empty.
	dead bool
	// retired is set by the first "not active" answer: requests read afterwards are
	// answered "not active" without being applied.
	retired bool
}

// send queues one answer; it never blocks, and drops the answer once the connection
// has ended.
func (gc *groupServerConn) send(id int32, status byte, body []byte) {
	gc.mu.Lock()
	if gc.dead {
		gc.mu.Unlock()
		return
	}
	gc.out = client.AppendGroupResponse(gc.out, id, status, body)
	if status == client.GroupStatusNotActive {
		gc.retired = true
	}
	gc.mu.Unlock()
	select {
	case gc.wake <- struct{}{}:
	default:
	}
}

func (gc *groupServerConn) isRetired() bool {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	return gc.retired
}

func (gc *groupServerConn) writeLoop() {
	var buf []byte
	for {
		select {
		case <-gc.done:
			return
		case <-gc.wake:
		}
		gc.mu.Lock()
		buf, gc.out = gc.out, buf[:0]
		gc.mu.Unlock()
		if len(buf) == 0 {
			continue
		}
		_ = gc.nc.SetWriteDeadline(time.Now().Add(groupConnWriteTimeout))
		if _, err := gc.nc.Write(buf); err != nil {
			_ = gc.nc.Close() // the reader ends too
		}
	}
}

func (gc *groupServerConn) readLoop() {
	defer func() {
		gc.mu.Lock()
		gc.dead = true
		gc.out = nil
		gc.mu.Unlock()
		close(gc.done)
		_ = gc.nc.Close()
		gc.s.trackGroupConn(gc, false)
	}()
	br := bufio.NewReaderSize(gc.nc, 64<<10)
	for {
		// A new buffer per frame: decoded requests alias it, and the group state keeps
		// their metadata and assignments.
		buf, err := client.ReadGroupFrame(br, nil)
		if err != nil {
			return
		}
		id, host, kreq, err := client.ParseGroupRequest(buf)
		if err != nil {
			return
		}
		reply := func(status byte, body []byte) { gc.send(id, status, body) }
		if gc.isRetired() {
			reply(client.GroupStatusNotActive, nil)
			continue
		}
		gc.s.handleGroupRequest(host, kreq, reply)
	}
}

// checkGroupShape accepts the body of a flexible version of a group request once it has
// its version's shape (client.GroupRequestShape); those not served are refused.
func checkGroupShape(key, version int16, body []byte) error {
	shape, ok := client.GroupRequestShape(key, version)
	if !ok {
		return errors.New("flexible version not served")
	}
	return proto.CheckShape(body, shape)
}

// handleGroupRequest decodes one forwarded request and runs it on the active
// coordinator. It returns once the request is applied (its answer may come later); the
// caller, a connection's reader, applies the next one only then.
func (s *Server) handleGroupRequest(host string, kreq []byte, reply func(status byte, body []byte)) {
	if isElectLeaders(kreq) {
		s.handleElectLeaders(kreq, reply) // not a group request: the controller's
		return
	}
	if isReassignmentRequest(kreq) {
		s.handleReassignmentRequest(kreq, reply) // the controller's too
		return
	}
	if isTxnRequest(kreq) {
		s.handleTxnRequest(host, kreq, reply) // the transaction coordinator's (txn_server.go)
		return
	}
	h, req, err := groups.ParseRequest(kreq, checkGroupShape)
	if err != nil {
		s.groupMetrics.BadRequest()
		reply(client.GroupStatusBadRequest, nil)
		return
	}
	co := s.groupRT.Load()
	if co == nil {
		reply(client.GroupStatusNotActive, nil)
		return
	}
	s.groupMetrics.Request(h.Key)
	co.Handle(h, host, req, groups.Answer{
		Response:  func(body []byte) { reply(client.GroupStatusOK, body) },
		NotActive: func() { reply(client.GroupStatusNotActive, nil) },
	})
}
