package dataplane

// Metadata, key 3, versions 0-8. The brokers are the live data-plane nodes; the
// controller id is a live data-plane node too (admin clients send CreateTopics there),
// the lowest id. v0 with no topics, or v1+ with a null list, means all topics. Topics are
// never created by a Metadata request (auto creation is off). A partition without a
// leader answers LEADER_NOT_AVAILABLE.

import (
	"slices"
	"sort"
	"strings"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const metadataKey = int16(kmsg.Metadata)

func handleMetadata(s *Server, r *request) error {
	req := kmsg.NewPtrMetadataRequest()
	req.SetVersion(r.hdr.APIVersion)
	if err := req.ReadFrom(r.body); err != nil {
		return err
	}
	snap := s.snapshot()
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	resp.SetVersion(r.hdr.APIVersion)
	resp.ClusterID = kmsg.StringPtr("gregor")
	resp.ControllerID = -1
	ids := make([]int32, 0, len(snap.Brokers))
	for id := range snap.Brokers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		b := snap.Brokers[id]
		rb := kmsg.NewMetadataResponseBroker()
		rb.NodeID, rb.Host, rb.Port = b.ID, b.Host, b.Port
		if b.Rack != "" {
			rb.Rack = kmsg.StringPtr(b.Rack)
		}
		resp.Brokers = append(resp.Brokers, rb)
	}
	if len(ids) > 0 {
		resp.ControllerID = ids[0]
	}
	var names []string
	if req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0) {
		for name := range snap.Topics {
			names = append(names, name)
		}
		sort.Strings(names)
	} else {
		for _, t := range req.Topics {
			if t.Topic != nil {
				names = append(names, *t.Topic)
			}
		}
	}
	for _, name := range names {
		resp.Topics = append(resp.Topics, metadataTopic(snap, name))
	}
	writeResponse(r, resp)
	return nil
}

func metadataTopic(snap *client.Snapshot, name string) kmsg.MetadataResponseTopic {
	rt := kmsg.NewMetadataResponseTopic()
	rt.Topic = kmsg.StringPtr(name)
	topic, ok := snap.Topics[name]
	if !ok {
		rt.ErrorCode = kerr.UnknownTopicOrPartition.Code
		if client.ValidateTopicName(name) != nil {
			rt.ErrorCode = kerr.InvalidTopicException.Code
		}
		return rt
	}
	rt.IsInternal = strings.HasPrefix(name, "__")
	for p := int32(0); p < topic.Partitions; p++ {
		st, ok := snap.Partitions[client.TopicPartition{Topic: name, Partition: p}]
		rp := kmsg.NewMetadataResponseTopicPartition()
		rp.Partition = p
		if !ok {
			rp.ErrorCode, rp.Leader = kerr.LeaderNotAvailable.Code, -1
			rt.Partitions = append(rt.Partitions, rp)
			continue
		}
		rp.Leader, rp.LeaderEpoch = st.Leader, st.LeaderEpoch
		rp.Replicas = append([]int32(nil), st.Replicas...)
		rp.ISR = append([]int32(nil), st.ISR...)
		for _, id := range st.Replicas {
			if _, live := snap.Brokers[id]; !live {
				rp.OfflineReplicas = append(rp.OfflineReplicas, id)
			}
		}
		if st.Leader == client.NoLeader {
			rp.ErrorCode = kerr.LeaderNotAvailable.Code
		}
		rt.Partitions = append(rt.Partitions, rp)
	}
	return rt
}
