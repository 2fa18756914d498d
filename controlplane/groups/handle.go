package groups

import (
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Header is the part of a Kafka request header the coordinator needs.
type Header struct {
	Key, Version int16
	ClientID     string
}

// ParseRequest reads a forwarded Kafka request: its header (v1, or v2 for flexible
// versions) and body. It refuses anything but the group APIs (IsGroupAPI). The body of a
// flexible version is decoded only once checkFlexible has accepted it (the caller walks
// it with its version's shape: kmsg believes the counts it reads); nil refuses every
// flexible version.
func ParseRequest(b []byte, checkFlexible func(key, version int16, body []byte) error) (Header, kmsg.Request, error) {
	r := kbin.Reader{Src: b}
	h := Header{Key: r.Int16(), Version: r.Int16()}
	_ = r.Int32() // the client's correlation id: the data-plane node answers it
	if cid := r.NullableString(); cid != nil {
		h.ClientID = *cid
	}
	if err := r.Complete(); err != nil {
		return h, nil, err
	}
	req := kmsg.RequestForKey(h.Key)
	if req == nil || h.Version < 0 || h.Version > req.MaxVersion() || !IsGroupAPI(h.Key) {
		return h, nil, errors.New("not a group request")
	}
	req.SetVersion(h.Version)
	if req.IsFlexible() {
		for n := r.Uvarint(); n > 0 && r.Ok(); n-- {
			r.Uvarint()
			r.Span(int(r.Uvarint()))
		}
		if err := r.Complete(); err != nil {
			return h, nil, err
		}
		if checkFlexible == nil {
			return h, nil, errors.New("flexible version not served")
		}
		if err := checkFlexible(h.Key, h.Version, r.Src); err != nil {
			return h, nil, err
		}
	}
	if err := req.ReadFrom(r.Src); err != nil {
		return h, nil, err
	}
	return h, req, nil
}

// IsGroupAPI reports whether key is one of the APIs ParseRequest reads (TxnOffsetCommit,
// whose flexible version the node checks before decoding it, is handed to Handle
// decoded).
func IsGroupAPI(key int16) bool {
	switch kmsg.Key(key) {
	case kmsg.JoinGroup, kmsg.SyncGroup, kmsg.Heartbeat, kmsg.LeaveGroup, kmsg.OffsetCommit,
		kmsg.OffsetFetch, kmsg.ListGroups, kmsg.DescribeGroups, kmsg.DeleteGroups, kmsg.OffsetDelete:
		return true
	}
	return false
}

// Answer is how a request is answered, now or later, from any goroutine and possibly
// with the coordinator's lock held: neither function may block or call back into the
// coordinator.
type Answer struct {
	// Response gets the encoded Kafka response (in the request's version).
	Response func(body []byte)
	// NotActive is called instead when this coordinator's term is over (or it never
	// loaded): the data-plane node resends the request to the next coordinator.
	NotActive func()
}

// Handle applies one request and answers it, now or later (a JoinGroup waits for the
// rest of its group; a commit for its write). It returns once the request is applied,
// so a caller applying a connection's requests one after the other keeps their order.
// While the coordinator is still loading it waits for it, up to groupLoadWait.
func (co *Coordinator) Handle(h Header, host string, req kmsg.Request, ans Answer) {
	select {
	case <-co.loaded:
	default:
		// Loading: the caller waits, so that this request and those read after it are
		// applied in their order. (The coordinator is published only once loaded: a
		// data-plane node rarely finds it loading.)
		t := co.clock.NewTimer(groupLoadWait)
		select {
		case <-co.loaded:
		case <-t.Chan():
		}
		t.Stop()
	}
	co.handle(h, host, req, ans)
}

// handle runs one request on the coordinator and answers it, now or later.
func (co *Coordinator) handle(h Header, host string, req kmsg.Request, ans Answer) {
	send := func(resp kmsg.Response) {
		resp.SetVersion(h.Version)
		ans.Response(resp.AppendTo(nil))
	}
	notActive := ans.NotActive
	select {
	case <-co.loaded:
		if co.loadErr != nil {
			notActive()
			return
		}
	default:
		// Still loading after groupLoadWait: the data-plane node tries again.
		notActive()
		return
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.stopped {
		notActive()
		return
	}
	switch req := req.(type) {
	case *kmsg.JoinGroupRequest:
		co.handleJoin(req, h.ClientID, host, send, notActive)
	case *kmsg.SyncGroupRequest:
		co.handleSync(req, send, notActive)
	case *kmsg.HeartbeatRequest:
		resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = co.handleHeartbeat(req)
		send(resp)
	case *kmsg.LeaveGroupRequest:
		send(co.handleLeave(req))
	case *kmsg.OffsetCommitRequest:
		resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
		co.commitOffsets(req, func(all int16, codes []int16) {
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
			co.fetchOffsets(req, resp)
			if resp.ErrorCode != 0 && h.Version < 2 {
				setPartitionErrors(resp, resp.ErrorCode)
			}
			send(resp)
		}
		if g := co.groups[req.Group]; g == nil || g.offsetWrites == 0 {
			answer()
			return
		}
		// A commit or delete of this group's offsets is being written (a client may
		// pipeline OffsetCommit and OffsetFetch on one connection, and Kafka answers
		// the fetch with the commit applied): answer once the store has completed
		// what was queued before — it completes in order.
		co.store.Submit(nil, func(err error) {
			co.mu.Lock()
			defer co.mu.Unlock()
			if errors.Is(err, ErrNotActive) {
				notActive()
				return
			}
			answer()
		})
	case *kmsg.TxnOffsetCommitRequest:
		co.handleTxnOffsetCommit(req, send, notActive)
	case *kmsg.ListGroupsRequest:
		send(co.handleList(req))
	case *kmsg.DescribeGroupsRequest:
		send(co.handleDescribe(req))
	case *kmsg.DeleteGroupsRequest:
		co.handleDeleteGroups(req, send, notActive)
	case *kmsg.OffsetDeleteRequest:
		resp := req.ResponseKind().(*kmsg.OffsetDeleteResponse)
		co.deleteOffsets(req, func(code int16, codes map[topicPartition]int16) {
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

func (co *Coordinator) handleJoin(req *kmsg.JoinGroupRequest, clientID, host string, send func(kmsg.Response), notActive func()) {
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
	case sess < co.cfg.MinSessionTimeout || sess > co.cfg.MaxSessionTimeout:
		answer(joinResult{code: kerr.InvalidSessionTimeout.Code, memberID: req.MemberID})
		return
	case metaBytes > memberBytesMax || req.Version >= 1 && req.RebalanceTimeoutMillis <= 0:
		answer(joinResult{code: kerr.InvalidRequest.Code, memberID: req.MemberID})
		return
	case req.ProtocolType == consumerProtocolType && !consumerMetadataValid(req.Protocols):
		answer(joinResult{code: kerr.InconsistentGroupProtocol.Code, memberID: req.MemberID})
		return
	}
	g := co.getGroup(req.Group, req.MemberID == "" || req.InstanceID != nil)
	if g == nil {
		answer(joinResult{code: kerr.UnknownMemberID.Code, memberID: req.MemberID})
		return
	}
	co.join(g, joinRequest{req: req, clientID: clientID, clientHost: host, reply: answer})
	co.maybeForget(g)
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

func (co *Coordinator) handleSync(req *kmsg.SyncGroupRequest, send func(kmsg.Response), notActive func()) {
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
	g := co.groups[req.Group]
	if g == nil {
		answer(kerr.UnknownMemberID.Code, nil)
		return
	}
	if g.state == stateCompletingRebalance || g.state == stateStable {
		resp.ProtocolType, resp.Protocol = kmsg.StringPtr(g.protocolType), kmsg.StringPtr(g.protocol)
	}
	co.sync(g, syncRequest{req: req, reply: answer})
}

func (co *Coordinator) handleHeartbeat(req *kmsg.HeartbeatRequest) int16 {
	if !validGroupID(req.Group) {
		return kerr.InvalidGroupID.Code
	}
	g := co.groups[req.Group]
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
	co.heartbeat(g, m, co.clock.Now())
	if g.state == statePreparingRebalance {
		return kerr.RebalanceInProgress.Code
	}
	return 0
}

func (co *Coordinator) handleLeave(req *kmsg.LeaveGroupRequest) *kmsg.LeaveGroupResponse {
	resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
	leaving := req.Members
	if req.Version < 3 {
		leaving = []kmsg.LeaveGroupRequestMember{{MemberID: req.MemberID}}
	}
	g := co.groups[req.Group]
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
			co.removeMember(g, m)
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
		co.membersLeft(g)
	}
	return resp
}

func (co *Coordinator) handleList(req *kmsg.ListGroupsRequest) *kmsg.ListGroupsResponse {
	resp := req.ResponseKind().(*kmsg.ListGroupsResponse)
	for _, id := range sortedKeys(co.groups) {
		g := co.groups[id]
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

func (co *Coordinator) handleDescribe(req *kmsg.DescribeGroupsRequest) *kmsg.DescribeGroupsResponse {
	resp := req.ResponseKind().(*kmsg.DescribeGroupsResponse)
	for _, id := range req.Groups {
		dg := kmsg.NewDescribeGroupsResponseGroup()
		dg.Group = id
		g := co.groups[id]
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

func (co *Coordinator) handleDeleteGroups(req *kmsg.DeleteGroupsRequest, send func(kmsg.Response), notActive func()) {
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
		g := co.groups[id]
		switch {
		case !validGroupID(id):
			codes[i] = kerr.InvalidGroupID.Code
		case g == nil || g.state == stateDead:
			codes[i] = kerr.GroupIDNotFound.Code
		case len(g.members) > 0 || g.state != stateEmpty || len(g.txnOffsets) > 0:
			// Pending member ids (a first join step) do not keep an Empty group: as in
			// Kafka, it is deleted, and their second step finds no group.
			codes[i] = kerr.NonEmptyGroup.Code
		default:
			outstanding++
			co.deleteGroup(g, func(code int16) {
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
