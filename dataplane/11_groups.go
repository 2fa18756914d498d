package dataplane

// The group APIs, forwarded to the group coordinator, which runs in the active
// control-plane node (controlplane/client/groups.go has the internal protocol):
//
//   - JoinGroup, key 11, versions 0-5 (v1 rebalance timeout; v4 MEMBER_ID_REQUIRED,
//     KIP-394; v5 static membership, KIP-345)
//   - SyncGroup, key 14, versions 0-3
//   - Heartbeat, key 12, versions 0-3
//   - LeaveGroup, key 13, versions 0-3 (v3: a batch of members, KIP-345)
//   - OffsetCommit, key 8, versions 2-7
//   - OffsetFetch, key 9, versions 1-7 (v2: every topic with null topics, top-level error;
//     v7: require_stable, KIP-447)
//   - ListGroups, key 16, versions 0-2
//   - DescribeGroups, key 15, versions 0-4
//   - DeleteGroups, key 42, versions 0-1
//   - OffsetDelete, key 47, version 0
//   - and the transaction APIs (txn_forward.go), TxnOffsetCommit to the group
//     coordinator, the others to the transaction coordinator beside it
//
// A request is decoded here (a malformed one closes the connection at once), copied and
// sent on a goroutine: a JoinGroup is a long poll that may last a whole rebalance, and
// the event loop never waits. Kafka applies a connection's requests in order (Java's
// commitAsync relies on it: of two pipelined OffsetCommits the later offset stays), so
// each request takes its place in its connection's client.GroupOrder here, on the loop,
// and the goroutine writes it to the coordinator only after the one before it — the
// answers may come back in any order (a parked JoinGroup holds up no one), and the
// response queue puts them back in the client's order. The coordinator's answer is the
// response body at the request's version; this node puts the client's correlation id in
// front of it. No answer (no coordinator published, a coordinator that failed over, a
// timeout) is answered here with NOT_COORDINATOR where the response has a group-scoped
// error, so the client looks its coordinator up again and retries.
//
// Every request is forwarded whatever FindCoordinator said about its group: the control
// plane holds every group's state, so any node can relay any group. ListGroups is the
// exception in what it answers: Kafka answers it per broker with the groups that broker
// coordinates, and admin clients take the union over every broker, so each node keeps
// only the groups that rendezvous hashing gives to it (10_findcoordinator.go).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const listGroupsKey = int16(kmsg.ListGroups)

// joinGroupSlack is how long past its rebalance timeout a JoinGroup may wait for the
// coordinator: the rebalance ends at that timeout, and the answer then needs to travel.
const joinGroupSlack = 5 * time.Second

// groupRefusals says, for each forwarded API, how to answer a request the coordinator
// did not answer: the codes go wherever the response has a group-scoped error. Which
// APIs are forwarded is this table's key set.
var groupRefusals = map[int16]func(req kmsg.Request, resp kmsg.Response){
	int16(kmsg.JoinGroup): refusal(func(_ *kmsg.JoinGroupRequest, resp *kmsg.JoinGroupResponse) {
		resp.ErrorCode = kerr.NotCoordinator.Code
	}),
	int16(kmsg.SyncGroup): refusal(func(_ *kmsg.SyncGroupRequest, resp *kmsg.SyncGroupResponse) {
		resp.ErrorCode = kerr.NotCoordinator.Code
	}),
	int16(kmsg.Heartbeat): refusal(func(_ *kmsg.HeartbeatRequest, resp *kmsg.HeartbeatResponse) {
		resp.ErrorCode = kerr.NotCoordinator.Code
	}),
	int16(kmsg.LeaveGroup): refusal(func(_ *kmsg.LeaveGroupRequest, resp *kmsg.LeaveGroupResponse) {
		resp.ErrorCode = kerr.NotCoordinator.Code
	}),
	int16(kmsg.OffsetCommit): refusal(func(req *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse) {
		for _, t := range req.Topics {
			rt := kmsg.NewOffsetCommitResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, kerr.NotCoordinator.Code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	}),
	int16(kmsg.OffsetFetch): refusal(func(req *kmsg.OffsetFetchRequest, resp *kmsg.OffsetFetchResponse) {
		resp.ErrorCode = kerr.NotCoordinator.Code // encoded from v2
		for _, t := range req.Topics {
			rt := kmsg.NewOffsetFetchResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetFetchResponseTopicPartition()
				rp.Partition, rp.Offset, rp.ErrorCode = p, -1, kerr.NotCoordinator.Code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	}),
	listGroupsKey: refusal(func(_ *kmsg.ListGroupsRequest, resp *kmsg.ListGroupsResponse) {
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code // not about one group
	}),
	int16(kmsg.DescribeGroups): refusal(func(req *kmsg.DescribeGroupsRequest, resp *kmsg.DescribeGroupsResponse) {
		for _, g := range req.Groups {
			rg := kmsg.NewDescribeGroupsResponseGroup()
			rg.Group, rg.ErrorCode = g, kerr.NotCoordinator.Code
			resp.Groups = append(resp.Groups, rg)
		}
	}),
	int16(kmsg.DeleteGroups): refusal(func(req *kmsg.DeleteGroupsRequest, resp *kmsg.DeleteGroupsResponse) {
		for _, g := range req.Groups {
			rg := kmsg.NewDeleteGroupsResponseGroup()
			rg.Group, rg.ErrorCode = g, kerr.NotCoordinator.Code
			resp.Groups = append(resp.Groups, rg)
		}
	}),
	int16(kmsg.OffsetDelete): refusal(func(_ *kmsg.OffsetDeleteRequest, resp *kmsg.OffsetDeleteResponse) {
		resp.ErrorCode = kerr.NotCoordinator.Code
	}),
	// The transaction APIs (txn_forward.go).
	initProducerIDKey:                refusal(refuseInitProducerID),
	int16(kmsg.AddPartitionsToTxn):   refusal(refuseAddPartitionsToTxn),
	int16(kmsg.AddOffsetsToTxn):      refusal(refuseAddOffsetsToTxn),
	int16(kmsg.EndTxn):               refusal(refuseEndTxn),
	int16(kmsg.TxnOffsetCommit):      refusal(refuseTxnOffsetCommit),
	int16(kmsg.DescribeTransactions): refusal(refuseDescribeTransactions),
	listTransactionsKey:              refusal(refuseListTransactions),
}

// refusal adapts a typed refusal to groupRefusals' untyped signature.
func refusal[Req kmsg.Request, Resp kmsg.Response](fill func(Req, Resp)) func(kmsg.Request, kmsg.Response) {
	return func(req kmsg.Request, resp kmsg.Response) { fill(req.(Req), resp.(Resp)) }
}

// handleGroupRequest forwards one group request to the coordinator and answers with what
// it says, or with a refusal if it says nothing.
func handleGroupRequest(s *Server, r *request) error {
	key, version := r.hdr.APIKey, r.hdr.APIVersion
	// The frame views the inbound buffer, and kmsg's decoded byte fields view what they
	// were decoded from: copy first, decode the copy.
	frame := bytes.Clone(r.frame)
	req := kmsg.RequestForKey(key)
	req.SetVersion(version)
	if req.IsFlexible() {
		// Only the transaction APIs (txn_forward.go) and OffsetFetch v6-7 are served at
		// flexible versions.
		shape, ok := client.TxnRequestShape(key, version)
		if !ok {
			shape, ok = client.GroupRequestShape(key, version)
		}
		if !ok {
			return fmt.Errorf("dataplane: %s v%d is not forwarded", kmsg.NameForKey(key), version)
		}
		if err := proto.CheckShape(frame[r.hdr.Size:], shape); err != nil {
			return err
		}
	}
	if err := req.ReadFrom(frame[r.hdr.Size:]); err != nil {
		return err
	}
	s.forwardGroupRequest(r, frame, req)
	return nil
}

// forwardGroupRequest sends a decoded request (frame: its copy, which req views) to the
// coordinator and answers with what it says, or with its refusal if it says nothing.
func (s *Server) forwardGroupRequest(r *request, frame []byte, req kmsg.Request) {
	key, version := r.hdr.APIKey, r.hdr.APIVersion
	refuse := groupRefusals[key]
	host, m := r.conn.ip, s.metrics
	// The place is taken here, on the loop, in the order the requests arrived; async
	// gives it to exactly one ForwardGroupRequest (it runs op whenever there is a
	// control plane).
	var place *client.GroupPlace
	if s.cp != nil {
		place = r.conn.groupOrder.Next()
	}
	var body []byte
	s.async(r, groupForwardTimeoutMs(req), func(ctx context.Context) (err error) {
		m.groupForwards.Inc()
		m.groupForwarding.Add(1)
		defer m.groupForwarding.Add(-1)
		body, err = s.cp.ForwardGroupRequest(ctx, place, host, frame)
		switch {
		case err != nil:
		case key == listGroupsKey:
			body, err = s.ownGroupsOnly(body, version)
		case key == listTransactionsKey:
			body, err = s.ownTransactionsOnly(body, version)
		}
		if err != nil {
			m.groupFailures.Inc()
		}
		return err
	}, func(err error) {
		switch {
		case err == nil:
			writeResponseBody(r, body)
		case errors.Is(err, client.ErrGroupBadRequest):
			s.logger.Debug("coordinator could not decode a group request", "remote", r.conn.ip, "api", kmsg.NameForKey(key))
			r.conn.closeRequested = true
		default:
			s.logger.Debug("group request not answered by the coordinator", "api", kmsg.NameForKey(key), "err", err)
			resp := req.ResponseKind()
			refuse(req, resp)
			writeResponse(r, resp)
		}
	})
}

// groupForwardTimeoutMs bounds the wait for the coordinator's answer to req (0 gives
// async's default, adminTimeout):
//
//   - a JoinGroup waits for its rebalance (v0 has no rebalance timeout: the session
//     timeout plays it), and then some;
//   - a follower's SyncGroup waits for the leader's, which the coordinator bounds by the
//     group's longest rebalance timeout. This node does not know it (any member may set
//     it, up to an int32 of milliseconds: Kafka Streams asks for the most), so it does
//     not give up before the coordinator would: the coordinator answers at that timeout,
//     or "not active" when its term ends, and a lost internal connection fails the
//     request at once. (Giving up early would answer NOT_COORDINATOR, and the member
//     would rejoin for nothing.)
func groupForwardTimeoutMs(req kmsg.Request) int32 {
	switch req := req.(type) {
	case *kmsg.JoinGroupRequest:
		rebalance := req.RebalanceTimeoutMillis
		if req.Version == 0 {
			rebalance = req.SessionTimeoutMillis
		}
		return int32(min(int64(rebalance)+joinGroupSlack.Milliseconds(), math.MaxInt32))
	case *kmsg.SyncGroupRequest:
		return math.MaxInt32
	}
	return 0
}

// ownGroupsOnly keeps, of a ListGroups response body at version, the groups this node
// coordinates.
func (s *Server) ownGroupsOnly(body []byte, version int16) ([]byte, error) {
	resp := kmsg.NewPtrListGroupsResponse()
	resp.SetVersion(version)
	if err := resp.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("dataplane: ListGroups answer from the coordinator: %w", err)
	}
	resp.Groups = coordinatedHere(s, resp.Groups, func(g kmsg.ListGroupsResponseGroup) string { return g.Group })
	return resp.AppendTo(nil), nil
}

// coordinatedHere keeps, of entries (in place), those whose coordinator key, id(entry),
// this node coordinates: the coordinator's answer to a list request covers every node.
func coordinatedHere[T any](s *Server, entries []T, id func(T) string) []T {
	brokers := s.snapshot().Brokers
	own := entries[:0]
	for _, e := range entries {
		if b, ok := groupCoordinator(brokers, id(e)); ok && b.ID == s.cfg.NodeID {
			own = append(own, e)
		}
	}
	return own
}

// writeResponseBody answers r with a body encoded elsewhere (the coordinator's answer),
// behind the response header for r.
func writeResponseBody(r *request, body []byte) {
	buf := r.resp.buf
	var start int
	buf.B, start = proto.BeginFrame(buf.B[:0], r.hdr.CorrelationID, proto.IsFlexibleResponse(r.hdr.APIKey, r.hdr.APIVersion))
	buf.B = append(buf.B, body...)
	proto.EndFrame(buf.B, start, 0)
	r.resp.setBytes()
}
