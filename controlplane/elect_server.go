package controlplane

// ElectLeaders (Kafka API 43, versions 0-2) on the internal listener: a data-plane node
// forwards the request as its client sent it, as it forwards group requests, and the
// active controller runs the elections (controller.ElectLeaders) and answers with the
// response body. A member that is not the active controller answers "not active", and
// the data-plane node resends the request to the one it looks up again.

import (
	"context"
	"encoding/binary"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/controller"
	"github.com/gregor-streaming/gregor/proto"
)

// electLeadersVersionMax is the newest ElectLeaders version served (v2: flexible).
const electLeadersVersionMax = 2

// isElectLeaders reports whether a forwarded Kafka request is an ElectLeaders one.
func isElectLeaders(kreq []byte) bool {
	return len(kreq) >= 2 && int16(binary.BigEndian.Uint16(kreq)) == int16(kmsg.ElectLeaders)
}

// handleElectLeaders runs one forwarded ElectLeaders request (elections write to etcd:
// on a goroutine of its own, see runForwarded) and answers with the response body at
// the request's version.
func (s *Server) handleElectLeaders(kreq []byte, reply func(status byte, body []byte)) {
	req := kmsg.NewPtrElectLeadersRequest()
	if err := parseForwarded(kreq, req, electLeadersVersionMax, proto.ElectLeadersRequestV2); err != nil {
		reply(client.GroupStatusBadRequest, nil)
		return
	}
	if !s.ctl.IsController() {
		reply(client.GroupStatusNotActive, nil)
		return
	}
	runForwarded(req.TimeoutMillis, reply, func(ctx context.Context) (kmsg.Response, bool) {
		return s.electLeaders(ctx, req)
	})
}

// electLeaders runs the request's elections; notActive means this node is not the
// active controller (any more).
func (s *Server) electLeaders(ctx context.Context, req *kmsg.ElectLeadersRequest) (resp *kmsg.ElectLeadersResponse, notActive bool) {
	typ := controller.ElectionType(req.ElectionType) // 0 (preferred) for v0, which has no field
	if typ != controller.ElectionPreferred && typ != controller.ElectionUnclean {
		return refuseElectLeaders(req, kerr.InvalidRequest, "unknown election type"), false
	}
	var parts []cluster.TopicPartition
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			parts = append(parts, cluster.TopicPartition{Topic: t.Topic, Partition: p})
		}
	}
	results, err := s.ctl.ElectLeaders(ctx, typ, parts, req.Topics == nil)
	if errors.Is(err, controller.ErrNotController) {
		return nil, true
	}
	if err != nil {
		s.logger.Warn("ElectLeaders failed", "err", err)
		return refuseElectLeaders(req, kerr.RequestTimedOut, err.Error()), false
	}
	resp = req.ResponseKind().(*kmsg.ElectLeadersResponse)
	byTopic := map[string]int{}
	for _, r := range results {
		i, ok := byTopic[r.Topic]
		if !ok {
			i = len(resp.Topics)
			byTopic[r.Topic] = i
			rt := kmsg.NewElectLeadersResponseTopic()
			rt.Topic = r.Topic
			resp.Topics = append(resp.Topics, rt)
		}
		rp := kmsg.NewElectLeadersResponseTopicPartition()
		rp.Partition = r.Partition
		if r.Err != nil {
			rp.ErrorCode = r.Err.Code
			msg := r.Message
			rp.ErrorMessage = &msg
		}
		resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, rp)
	}
	if len(results) > 0 {
		s.logger.Info("ElectLeaders", "type", typ, "partitions", len(results))
	}
	return resp, false
}

// refuseElectLeaders answers every partition of req with code (and, from v1, the whole
// request).
func refuseElectLeaders(req *kmsg.ElectLeadersRequest, code *kerr.Error, message string) *kmsg.ElectLeadersResponse {
	resp := req.ResponseKind().(*kmsg.ElectLeadersResponse)
	resp.ErrorCode = code.Code // encoded from v1
	for _, t := range req.Topics {
		rt := kmsg.NewElectLeadersResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewElectLeadersResponseTopicPartition()
			rp.Partition, rp.ErrorCode, rp.ErrorMessage = p, code.Code, &message
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}
