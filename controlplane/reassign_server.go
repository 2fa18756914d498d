package controlplane

// AlterPartitionReassignments (Kafka API 45) and ListPartitionReassignments (46), both
// v0 (flexible), on the internal listener: a data-plane node forwards them as its
// client sent them, as it does ElectLeaders (elect_server.go), and the active
// controller answers with the response body. A member that is not the active
// controller answers "not active", and the data-plane node resends the request to the
// one it looks up again.

import (
	"context"
	"encoding/binary"
	"errors"
	"sort"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/controller"
	"github.com/gregor-streaming/gregor/proto"
)

// The request shapes of the versions served (checked before kmsg decodes a body: see
// proto.CheckShape), both v0 only.
var (
	// alterReassignmentsRequestV0: timeout, topics [name, partitions [partition,
	// replicas (nullable)]].
	alterReassignmentsRequestV0 = proto.Shape{proto.Int32,
		proto.CompactArray(proto.CompactString, proto.CompactArray(proto.Int32, proto.CompactArray(proto.Int32), proto.Tags), proto.Tags),
		proto.Tags}
	// listReassignmentsRequestV0: timeout, topics (nullable) [name, partitions].
	listReassignmentsRequestV0 = proto.Shape{proto.Int32,
		proto.CompactArray(proto.CompactString, proto.CompactArray(proto.Int32), proto.Tags), proto.Tags}
)

// isReassignmentRequest reports whether a forwarded Kafka request is an
// AlterPartitionReassignments or ListPartitionReassignments one.
func isReassignmentRequest(kreq []byte) bool {
	if len(kreq) < 2 {
		return false
	}
	key := int16(binary.BigEndian.Uint16(kreq))
	return key == int16(kmsg.AlterPartitionAssignments) || key == int16(kmsg.ListPartitionReassignments)
}

// handleReassignmentRequest runs one forwarded request on a goroutine of its own (a
// reassignment writes to etcd: the connection's reader goes on with the requests behind
// it) and answers with the response body.
func (s *Server) handleReassignmentRequest(kreq []byte, reply func(status byte, body []byte)) {
	if int16(binary.BigEndian.Uint16(kreq)) == int16(kmsg.ListPartitionReassignments) {
		req := kmsg.NewPtrListPartitionReassignmentsRequest()
		if err := parseForwarded(kreq, req, 0, listReassignmentsRequestV0); err != nil {
			reply(client.GroupStatusBadRequest, nil)
			return
		}
		resp, notActive := s.listReassignments(req)
		replyForwarded(reply, resp, notActive)
		return
	}
	req := kmsg.NewPtrAlterPartitionAssignmentsRequest()
	if err := parseForwarded(kreq, req, 0, alterReassignmentsRequestV0); err != nil {
		reply(client.GroupStatusBadRequest, nil)
		return
	}
	runForwarded(req.TimeoutMillis, reply, func(ctx context.Context) (kmsg.Response, bool) {
		return s.alterReassignments(ctx, req)
	})
}

// alterReassignments runs the request's reassignments and cancellations; notActive
// means this node is not the active controller (any more).
func (s *Server) alterReassignments(ctx context.Context, req *kmsg.AlterPartitionAssignmentsRequest) (resp *kmsg.AlterPartitionAssignmentsResponse, notActive bool) {
	var reqs []controller.ReassignmentRequest
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			reqs = append(reqs, controller.ReassignmentRequest{
				TopicPartition: cluster.TopicPartition{Topic: t.Topic, Partition: p.Partition}, Target: p.Replicas})
		}
	}
	results, err := s.ctl.AlterReassignments(ctx, reqs)
	if errors.Is(err, controller.ErrNotController) {
		return nil, true
	}
	resp = req.ResponseKind().(*kmsg.AlterPartitionAssignmentsResponse)
	if err != nil {
		s.logger.Warn("AlterPartitionReassignments failed", "err", err)
		msg := err.Error()
		resp.ErrorCode, resp.ErrorMessage = kerr.RequestTimedOut.Code, &msg
		for _, t := range req.Topics {
			rt := kmsg.NewAlterPartitionAssignmentsResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewAlterPartitionAssignmentsResponseTopicPartition()
				rp.Partition, rp.ErrorCode, rp.ErrorMessage = p.Partition, kerr.RequestTimedOut.Code, &msg
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, false
	}
	byTopic := map[string]int{}
	for _, r := range results {
		i, ok := byTopic[r.Topic]
		if !ok {
			i = len(resp.Topics)
			byTopic[r.Topic] = i
			rt := kmsg.NewAlterPartitionAssignmentsResponseTopic()
			rt.Topic = r.Topic
			resp.Topics = append(resp.Topics, rt)
		}
		rp := kmsg.NewAlterPartitionAssignmentsResponseTopicPartition()
		rp.Partition = r.Partition
		if r.Err != nil {
			rp.ErrorCode = r.Err.Code
			msg := r.Message
			if msg == "" {
				msg = r.Err.Description
			}
			rp.ErrorMessage = &msg
		}
		resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, rp)
	}
	if len(results) > 0 {
		s.logger.Info("AlterPartitionReassignments", "partitions", len(results))
	}
	return resp, false
}

// listReassignments answers from this node's view, on the active controller only (a
// ListPartitionReassignments after an AlterPartitionReassignments must see it, and the
// controller answers the latter once its view shows it): every partition being
// reassigned (null topics), or those of the listed partitions being reassigned.
// Partitions and topics that do not exist are left out, as Kafka does.
func (s *Server) listReassignments(req *kmsg.ListPartitionReassignmentsRequest) (resp *kmsg.ListPartitionReassignmentsResponse, notActive bool) {
	if !s.IsController() {
		return nil, true
	}
	snap := s.view.Snapshot()
	resp = req.ResponseKind().(*kmsg.ListPartitionReassignmentsResponse)
	add := func(st cluster.PartitionState, topics map[string]int) {
		i, ok := topics[st.Topic]
		if !ok {
			i = len(resp.Topics)
			topics[st.Topic] = i
			rt := kmsg.NewListPartitionReassignmentsResponseTopic()
			rt.Topic = st.Topic
			resp.Topics = append(resp.Topics, rt)
		}
		rp := kmsg.NewListPartitionReassignmentsResponseTopicPartition()
		rp.Partition = st.Partition
		rp.Replicas = nonNil(st.Replicas)
		rp.AddingReplicas = nonNil(st.AddingReplicas)
		rp.RemovingReplicas = nonNil(st.RemovingReplicas)
		resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, rp)
	}
	topics := map[string]int{}
	if req.Topics == nil {
		var all []cluster.PartitionState
		for tp, st := range snap.Partitions {
			if _, ok := snap.Topics[tp.Topic]; ok && st.Reassigning() {
				all = append(all, st)
			}
		}
		sort.Slice(all, func(i, j int) bool {
			if all[i].Topic != all[j].Topic {
				return all[i].Topic < all[j].Topic
			}
			return all[i].Partition < all[j].Partition
		})
		for _, st := range all {
			add(st, topics)
		}
		return resp, false
	}
	for _, t := range req.Topics {
		if _, ok := snap.Topics[t.Topic]; !ok {
			continue
		}
		for _, p := range t.Partitions {
			if st, ok := snap.Partitions[cluster.TopicPartition{Topic: t.Topic, Partition: p}]; ok && st.Reassigning() {
				add(st, topics)
			}
		}
	}
	return resp, false
}
