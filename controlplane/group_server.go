package controlplane

// The internal listener: data-plane nodes' forwarded group requests in, answers out,
// in any order (protocol in controlplane/client/groups.go).
//
// Each connection has a reader and a writer. The reader decodes the requests and applies
// them to the runtime one at a time, in the order they arrived — also while the runtime
// is still loading (the reader waits, up to groupLoadWait), never a goroutine per
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

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/client"
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

// groupHeader is the part of a Kafka request header the coordinator needs.
type groupHeader struct {
	key, version int16
	clientID     string
}

// parseGroupHeader reads a request header (v1, or v2 for flexible versions) and
// returns the body.
func parseGroupHeader(b []byte) (groupHeader, kmsg.Request, []byte, error) {
	r := kbin.Reader{Src: b}
	h := groupHeader{key: r.Int16(), version: r.Int16()}
	_ = r.Int32() // the client's correlation id: the data-plane node answers it
	if cid := r.NullableString(); cid != nil {
		h.clientID = *cid
	}
	if err := r.Complete(); err != nil {
		return h, nil, nil, err
	}
	req := kmsg.RequestForKey(h.key)
	if req == nil || h.version < 0 || h.version > req.MaxVersion() || !isGroupAPI(h.key) {
		return h, nil, nil, errors.New("not a group request")
	}
	req.SetVersion(h.version)
	if req.IsFlexible() {
		for n := r.Uvarint(); n > 0 && r.Ok(); n-- {
			r.Uvarint()
			r.Span(int(r.Uvarint()))
		}
		if err := r.Complete(); err != nil {
			return h, nil, nil, err
		}
	}
	return h, req, r.Src, nil
}

func isGroupAPI(key int16) bool {
	switch kmsg.Key(key) {
	case kmsg.JoinGroup, kmsg.SyncGroup, kmsg.Heartbeat, kmsg.LeaveGroup, kmsg.OffsetCommit,
		kmsg.OffsetFetch, kmsg.ListGroups, kmsg.DescribeGroups, kmsg.DeleteGroups, kmsg.OffsetDelete:
		return true
	}
	return false
}

// handleGroupRequest decodes one forwarded request and runs it on the active runtime.
// It returns once the request is applied (its answer may come later); the caller, a
// connection's reader, applies the next one only then.
func (s *Server) handleGroupRequest(host string, kreq []byte, reply func(status byte, body []byte)) {
	h, req, body, err := parseGroupHeader(kreq)
	if err == nil {
		err = req.ReadFrom(body)
	}
	if err != nil {
		s.metrics.groupBadRequests.Inc()
		reply(client.GroupStatusBadRequest, nil)
		return
	}
	rt := s.groupRT.Load()
	if rt == nil {
		reply(client.GroupStatusNotActive, nil)
		return
	}
	s.metrics.groupRequest(h.key)
	select {
	case <-rt.loaded:
	default:
		// Loading: the connection's reader waits, so that this request and those read
		// after it are applied in their order. (The coordinator is published only once
		// loaded: a data-plane node rarely finds it loading.)
		t := time.NewTimer(groupLoadWait)
		select {
		case <-rt.loaded:
		case <-t.C:
		}
		t.Stop()
	}
	rt.handle(h, host, req, reply)
}

// handle runs one request on the runtime and answers it, now or later.
func (rt *groupRuntime) handle(h groupHeader, host string, req kmsg.Request, reply func(status byte, body []byte)) {
	send := func(resp kmsg.Response) {
		resp.SetVersion(h.version)
		reply(client.GroupStatusOK, resp.AppendTo(nil))
	}
	notActive := func() { reply(client.GroupStatusNotActive, nil) }
	select {
	case <-rt.loaded:
		if rt.loadErr != nil {
			notActive()
			return
		}
	default:
		// Still loading after groupLoadWait: the data-plane node tries again.
		notActive()
		return
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.stopped {
		notActive()
		return
	}
	switch req := req.(type) {
	case *kmsg.JoinGroupRequest:
		rt.handleJoin(req, h.clientID, host, send, notActive)
	case *kmsg.SyncGroupRequest:
		rt.handleSync(req, send, notActive)
	case *kmsg.HeartbeatRequest:
		resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = rt.handleHeartbeat(req)
		send(resp)
	case *kmsg.LeaveGroupRequest:
		send(rt.handleLeave(req))
	case *kmsg.OffsetCommitRequest:
		resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
		rt.commitOffsets(req, func(all int16, codes []int16) {
			if all == notActiveCode {
				notActive()
				return
			}
			i := 0
			for _, t := range req.Topics {
				rtp := kmsg.NewOffsetCommitResponseTopic()
				rtp.Topic = t.Topic
				for _, p := range t.Partitions {
					rp := kmsg.NewOffsetCommitResponseTopicPartition()
					rp.Partition, rp.ErrorCode = p.Partition, all
					if codes != nil {
						rp.ErrorCode = codes[i]
					}
					i++
					rtp.Partitions = append(rtp.Partitions, rp)
				}
				resp.Topics = append(resp.Topics, rtp)
			}
			send(resp)
		})
	case *kmsg.OffsetFetchRequest:
		answer := func() {
			resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
			rt.fetchOffsets(req, resp)
			if resp.ErrorCode != 0 && h.version < 2 {
				setPartitionErrors(resp, resp.ErrorCode)
			}
			send(resp)
		}
		if g := rt.groups[req.Group]; g == nil || g.offsetWrites == 0 {
			answer()
			return
		}
		// A commit or delete of this group's offsets is being written (a client may
		// pipeline OffsetCommit and OffsetFetch on one connection, and Kafka answers
		// the fetch with the commit applied): answer once the store has completed
		// what was queued before — it completes in order.
		rt.store.submit(nil, func(err error) {
			rt.mu.Lock()
			defer rt.mu.Unlock()
			if errors.Is(err, errNotActive) {
				notActive()
				return
			}
			answer()
		})
	case *kmsg.ListGroupsRequest:
		send(rt.handleList(req))
	case *kmsg.DescribeGroupsRequest:
		send(rt.handleDescribe(req))
	case *kmsg.DeleteGroupsRequest:
		rt.handleDeleteGroups(req, send, notActive)
	case *kmsg.OffsetDeleteRequest:
		resp := req.ResponseKind().(*kmsg.OffsetDeleteResponse)
		rt.deleteOffsets(req, func(code int16, codes map[topicPartition]int16) {
			if code == notActiveCode {
				notActive()
				return
			}
			resp.ErrorCode = code
			if code == 0 {
				for _, t := range req.Topics {
					rtp := kmsg.NewOffsetDeleteResponseTopic()
					rtp.Topic = t.Topic
					for _, p := range t.Partitions {
						rp := kmsg.NewOffsetDeleteResponseTopicPartition()
						rp.Partition, rp.ErrorCode = p.Partition, codes[topicPartition{t.Topic, p.Partition}]
						rtp.Partitions = append(rtp.Partitions, rp)
					}
					resp.Topics = append(resp.Topics, rtp)
				}
			}
			send(resp)
		})
	}
}

func (rt *groupRuntime) handleJoin(req *kmsg.JoinGroupRequest, clientID, host string, send func(kmsg.Response), notActive func()) {
	resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
	answer := func(res joinResult) {
		if res.code == notActiveCode {
			notActive()
			return
		}
		resp.ErrorCode, resp.MemberID = res.code, res.memberID
		resp.Generation, resp.LeaderID, resp.Members = -1, "", nil
		if res.code == 0 {
			resp.Generation, resp.LeaderID, resp.Members = res.generation, res.leader, res.members
			resp.Protocol, resp.ProtocolType = kmsg.StringPtr(res.protocol), kmsg.StringPtr(res.protoType)
		}
		send(resp)
	}
	sess := time.Duration(req.SessionTimeoutMillis) * time.Millisecond
	metaBytes := 0
	for _, p := range req.Protocols {
		metaBytes += len(p.Name) + len(p.Metadata)
	}
	switch {
	case !validGroupID(req.Group):
		answer(joinResult{code: kerr.InvalidGroupID.Code, memberID: req.MemberID})
		return
	case sess < rt.cfg.MinSessionTimeout || sess > rt.cfg.MaxSessionTimeout:
		answer(joinResult{code: kerr.InvalidSessionTimeout.Code, memberID: req.MemberID})
		return
	case metaBytes > memberBytesMax || req.Version >= 1 && req.RebalanceTimeoutMillis <= 0:
		answer(joinResult{code: kerr.InvalidRequest.Code, memberID: req.MemberID})
		return
	case req.ProtocolType == consumerProtocolType && !consumerMetadataValid(req.Protocols):
		answer(joinResult{code: kerr.InconsistentGroupProtocol.Code, memberID: req.MemberID})
		return
	}
	g := rt.getGroup(req.Group, req.MemberID == "" || req.InstanceID != nil)
	if g == nil {
		answer(joinResult{code: kerr.UnknownMemberID.Code, memberID: req.MemberID})
		return
	}
	rt.join(g, joinRequest{req: req, clientID: clientID, clientHost: host, reply: answer})
	rt.maybeForget(g)
}

// consumerMetadataValid checks that every protocol's metadata is a consumer
// subscription.
func consumerMetadataValid(ps []kmsg.JoinGroupRequestProtocol) bool {
	for _, p := range ps {
		var md kmsg.ConsumerMemberMetadata
		if md.ReadFrom(p.Metadata) != nil {
			return false
		}
	}
	return true
}

func (rt *groupRuntime) handleSync(req *kmsg.SyncGroupRequest, send func(kmsg.Response), notActive func()) {
	resp := req.ResponseKind().(*kmsg.SyncGroupResponse)
	answer := func(code int16, assignment []byte) {
		if code == notActiveCode {
			notActive()
			return
		}
		resp.ErrorCode, resp.MemberAssignment = code, assignment
		if resp.MemberAssignment == nil {
			resp.MemberAssignment = []byte{}
		}
		send(resp)
	}
	if !validGroupID(req.Group) {
		answer(kerr.InvalidGroupID.Code, nil)
		return
	}
	g := rt.groups[req.Group]
	if g == nil {
		answer(kerr.UnknownMemberID.Code, nil)
		return
	}
	if g.state == stateCompletingRebalance || g.state == stateStable {
		resp.ProtocolType, resp.Protocol = kmsg.StringPtr(g.protocolType), kmsg.StringPtr(g.protocol)
	}
	rt.sync(g, syncRequest{req: req, reply: answer})
}

func (rt *groupRuntime) handleHeartbeat(req *kmsg.HeartbeatRequest) int16 {
	if !validGroupID(req.Group) {
		return kerr.InvalidGroupID.Code
	}
	g := rt.groups[req.Group]
	if g == nil {
		return kerr.UnknownMemberID.Code
	}
	m := g.members[req.MemberID]
	switch {
	case g.state == stateDead:
		return kerr.CoordinatorNotAvailable.Code
	case !g.instanceMatches(req.InstanceID, req.MemberID):
		return kerr.FencedInstanceID.Code
	case g.state == stateEmpty || m == nil:
		return kerr.UnknownMemberID.Code
	case req.Generation != g.generation:
		return kerr.IllegalGeneration.Code
	}
	rt.heartbeat(g, m, time.Now())
	if g.state == statePreparingRebalance {
		return kerr.RebalanceInProgress.Code
	}
	return 0
}

func (rt *groupRuntime) handleLeave(req *kmsg.LeaveGroupRequest) *kmsg.LeaveGroupResponse {
	resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
	leaving := req.Members
	if req.Version < 3 {
		leaving = []kmsg.LeaveGroupRequestMember{{MemberID: req.MemberID}}
	}
	g := rt.groups[req.Group]
	switch {
	case !validGroupID(req.Group):
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return resp
	case g == nil:
		// As Kafka: v3+ answers each member (the top level has no error), v0-2 carry
		// the member's error at the top.
		resp.ErrorCode = kerr.UnknownMemberID.Code
		if req.Version >= 3 {
			resp.ErrorCode = 0
			for _, l := range leaving {
				rm := kmsg.NewLeaveGroupResponseMember()
				rm.MemberID, rm.InstanceID, rm.ErrorCode = l.MemberID, l.InstanceID, kerr.UnknownMemberID.Code
				resp.Members = append(resp.Members, rm)
			}
		}
		return resp
	case g.state == stateDead:
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp
	}
	changed := false
	for _, l := range leaving {
		code := int16(0)
		var m *member
		if l.InstanceID != nil {
			id, ok := g.static[*l.InstanceID]
			switch {
			case !ok:
				code = kerr.UnknownMemberID.Code
			case l.MemberID != "" && l.MemberID != id:
				code = kerr.FencedInstanceID.Code
			default:
				m = g.members[id]
			}
		} else if t, ok := g.pending[l.MemberID]; ok {
			t.Stop()
			delete(g.pending, l.MemberID)
			changed = true
		} else if m = g.members[l.MemberID]; m == nil {
			code = kerr.UnknownMemberID.Code
		}
		if m != nil {
			rt.removeMember(g, m)
			changed = true
		}
		rm := kmsg.NewLeaveGroupResponseMember()
		rm.MemberID, rm.InstanceID, rm.ErrorCode = l.MemberID, l.InstanceID, code
		resp.Members = append(resp.Members, rm)
		if req.Version < 3 {
			resp.ErrorCode = code
		}
	}
	if changed {
		rt.membersLeft(g)
	}
	return resp
}

func (rt *groupRuntime) handleList(req *kmsg.ListGroupsRequest) *kmsg.ListGroupsResponse {
	resp := req.ResponseKind().(*kmsg.ListGroupsResponse)
	for _, id := range sortedKeys(rt.groups) {
		g := rt.groups[id]
		if g.state == stateDead || len(req.StatesFilter) > 0 && !containsFold(req.StatesFilter, g.state.String()) {
			continue
		}
		lg := kmsg.NewListGroupsResponseGroup()
		lg.Group, lg.ProtocolType, lg.GroupState, lg.GroupType = id, g.protocolType, g.state.String(), "classic"
		resp.Groups = append(resp.Groups, lg)
	}
	return resp
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if len(x) == len(s) && (x == s || equalFold(x, s)) {
			return true
		}
	}
	return false
}

func equalFold(a, b string) bool {
	for i := range len(a) {
		ca, cb := a[i]|0x20, b[i]|0x20
		if ca != cb {
			return false
		}
	}
	return true
}

func (rt *groupRuntime) handleDescribe(req *kmsg.DescribeGroupsRequest) *kmsg.DescribeGroupsResponse {
	resp := req.ResponseKind().(*kmsg.DescribeGroupsResponse)
	for _, id := range req.Groups {
		dg := kmsg.NewDescribeGroupsResponseGroup()
		dg.Group = id
		g := rt.groups[id]
		switch {
		case !validGroupID(id):
			dg.ErrorCode = kerr.InvalidGroupID.Code
		case g == nil:
			dg.State = stateDead.String()
		default:
			dg.State, dg.ProtocolType = g.state.String(), g.protocolType
			stable := g.state == stateStable
			if stable {
				dg.Protocol = g.protocol
			}
			for _, m := range g.sortedMembers() {
				dm := kmsg.NewDescribeGroupsResponseGroupMember()
				dm.MemberID, dm.InstanceID, dm.ClientID, dm.ClientHost = m.id, m.instanceID, m.clientID, m.clientHost
				dm.ProtocolMetadata, dm.MemberAssignment = []byte{}, []byte{}
				if stable {
					dm.ProtocolMetadata, dm.MemberAssignment = m.metadataFor(g.protocol), m.assignment
					if dm.MemberAssignment == nil {
						dm.MemberAssignment = []byte{}
					}
				}
				dg.Members = append(dg.Members, dm)
			}
		}
		resp.Groups = append(resp.Groups, dg)
	}
	return resp
}

func (rt *groupRuntime) handleDeleteGroups(req *kmsg.DeleteGroupsRequest, send func(kmsg.Response), notActive func()) {
	resp := req.ResponseKind().(*kmsg.DeleteGroupsResponse)
	codes := make([]int16, len(req.Groups))
	first := map[string]int{} // each group's first place in the request
	outstanding := 1          // released after the loop
	lost := false
	finish := func() {
		outstanding--
		if outstanding > 0 {
			return
		}
		if lost {
			notActive()
			return
		}
		for i, id := range req.Groups {
			if first[id] != i {
				continue // a group named twice is answered once, as Kafka does
			}
			dg := kmsg.NewDeleteGroupsResponseGroup()
			dg.Group, dg.ErrorCode = id, codes[i]
			resp.Groups = append(resp.Groups, dg)
		}
		send(resp)
	}
	for i, id := range req.Groups {
		if _, dup := first[id]; dup {
			continue
		}
		first[id] = i
		g := rt.groups[id]
		switch {
		case !validGroupID(id):
			codes[i] = kerr.InvalidGroupID.Code
		case g == nil || g.state == stateDead:
			codes[i] = kerr.GroupIDNotFound.Code
		case len(g.members) > 0 || g.state != stateEmpty:
			// Pending member ids (a first join step) do not keep an Empty group: as in
			// Kafka, it is deleted, and their second step finds no group.
			codes[i] = kerr.NonEmptyGroup.Code
		default:
			outstanding++
			rt.deleteGroup(g, func(code int16) {
				if code == notActiveCode {
					lost = true
				}
				codes[i] = code
				finish()
			})
		}
	}
	finish()
}

// setPartitionErrors puts code on every partition of an OffsetFetch answer (v0-1 have
// no top-level error).
func setPartitionErrors(r *kmsg.OffsetFetchResponse, code int16) {
	for i := range r.Topics {
		for j := range r.Topics[i].Partitions {
			r.Topics[i].Partitions[j].ErrorCode = code
		}
	}
}
