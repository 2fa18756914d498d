package dataplane

// Metadata, key 3, versions 0-8. The brokers are the live data-plane nodes; the
// controller id is a live data-plane node too (admin clients send CreateTopics there),
// the lowest id. v0 with no topics, or v1+ with a null list, means all topics. A missing
// topic is created only if the node is configured to (Config.AutoCreateTopics) and the
// request allows it (always before v4); it answers LEADER_NOT_AVAILABLE until it exists,
// as Kafka does. A partition without a leader answers LEADER_NOT_AVAILABLE.

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sort"
	"strings"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
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
	resp.ClusterID = kmsg.StringPtr(clusterID)
	brokers := liveBrokers(snap)
	for _, b := range brokers {
		rb := kmsg.NewMetadataResponseBroker()
		rb.NodeID, rb.Host, rb.Port = b.ID, b.Host, b.Port
		if b.Rack != "" {
			rb.Rack = kmsg.StringPtr(b.Rack)
		}
		resp.Brokers = append(resp.Brokers, rb)
	}
	resp.ControllerID = adminControllerID(brokers)
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
	autoCreate := s.cfg.AutoCreateTopics && s.cp != nil && (req.Version < 4 || req.AllowAutoTopicCreation)
	for _, name := range names {
		rt := metadataTopic(snap, name)
		if autoCreate && rt.ErrorCode == kerr.UnknownTopicOrPartition.Code {
			s.autoCreate(name)
			rt.ErrorCode = kerr.LeaderNotAvailable.Code
		}
		resp.Topics = append(resp.Topics, rt)
	}
	writeResponse(r, resp)
	return nil
}

// clusterID is the cluster id Metadata and DescribeCluster answer.
const clusterID = "gregor"

// liveBrokers are the live data-plane nodes of snap, in id order.
func liveBrokers(snap *client.Snapshot) []cluster.Broker {
	bs := make([]cluster.Broker, 0, len(snap.Brokers))
	for _, b := range snap.Brokers {
		bs = append(bs, b)
	}
	slices.SortFunc(bs, func(a, b cluster.Broker) int { return cmp.Compare(a.ID, b.ID) })
	return bs
}

// adminControllerID is the controller id Metadata and DescribeCluster answer: the lowest
// live data-plane node's (brokers in id order), where admin clients send CreateTopics
// and the like; -1 with no live node.
func adminControllerID(brokers []cluster.Broker) int32 {
	if len(brokers) == 0 {
		return -1
	}
	return brokers[0].ID
}

// autoCreate creates topic with the defaults in the background, once at a time per
// name; the client's next Metadata request finds it.
func (s *Server) autoCreate(topic string) {
	if _, busy := s.autoCreating.LoadOrStore(topic, struct{}{}); busy {
		return
	}
	go func() {
		defer s.autoCreating.Delete(topic)
		ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
		defer cancel()
		_, rev, err := s.cp.CreateTopic(ctx, client.TopicSpec{Name: topic, Partitions: -1, ReplicationFactor: -1})
		if err != nil {
			if !errors.Is(err, kerr.TopicAlreadyExists) {
				s.logger.Warn("auto topic creation failed", "topic", topic, "err", err)
			}
			return
		}
		if err := s.awaitRevision(ctx, rev); err != nil {
			s.logger.Warn("auto-created topic not seen", "topic", topic, "err", err)
		}
	}()
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
		st, ok := snap.Partitions[cluster.TopicPartition{Topic: name, Partition: p}]
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
		if st.Leader == cluster.NoLeader {
			rp.ErrorCode = kerr.LeaderNotAvailable.Code
		}
		rt.Partitions = append(rt.Partitions, rp)
	}
	return rt
}
