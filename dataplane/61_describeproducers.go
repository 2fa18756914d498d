package dataplane

// DescribeProducers, key 61, version 0 (flexible; KIP-664), sent to each partition's
// leader: the producers' state the leader keeps (replica/producer.go) — producer id,
// epoch, last sequence and the last batch's timestamp, the coordinator epoch of the
// producer's last transaction marker and the first offset of its open transaction (-1
// for none). A partition this node does not lead:
// NOT_LEADER_OR_FOLLOWER, or UNKNOWN_TOPIC_OR_PARTITION when it does not exist, as
// Kafka answers.

import (
	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const describeProducersKey = int16(kmsg.DescribeProducers)

func handleDescribeProducers(s *Server, r *request) error {
	req := kmsg.NewPtrDescribeProducersRequest()
	req.SetVersion(r.hdr.APIVersion)
	if err := proto.CheckShape(r.body, proto.DescribeProducersRequestV0); err != nil {
		return err
	}
	if err := req.ReadFrom(r.body); err != nil {
		return err
	}
	resp := req.ResponseKind().(*kmsg.DescribeProducersResponse)
	resp.SetVersion(r.hdr.APIVersion)
	for _, t := range req.Topics {
		rt := kmsg.NewDescribeProducersResponseTopic()
		rt.Topic = t.Topic
		for _, index := range t.Partitions {
			rp := kmsg.NewDescribeProducersResponseTopicPartition()
			rp.Partition = index
			p := s.replicas.Partition(t.Topic, index)
			switch {
			case p == nil:
				rp.ErrorCode = s.notHostedCode([]byte(t.Topic), index)
			case !p.IsLeader():
				rp.ErrorCode = kerr.NotLeaderForPartition.Code
			default:
				for _, ps := range p.Producers() {
					ap := kmsg.NewDescribeProducersResponseTopicPartitionActiveProducer()
					ap.ProducerID, ap.ProducerEpoch = ps.ProducerID, int32(ps.ProducerEpoch)
					ap.LastSequence, ap.LastTimestamp = ps.LastSequence, ps.LastTimestamp
					ap.CoordinatorEpoch, ap.CurrentTxnStartOffset = ps.CoordinatorEpoch, ps.CurrentTxnStartOffset
					rp.ActiveProducers = append(rp.ActiveProducers, ap)
				}
			}
			if rp.ErrorCode != 0 {
				msg := kerr.ErrorForCode(rp.ErrorCode).Error()
				rp.ErrorMessage = &msg
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	writeResponse(r, resp)
	return nil
}
