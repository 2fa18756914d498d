package dataplane

// ListOffsets, key 2, versions 1-5: earliest (-2: the log start offset), latest (-1: the
// high watermark; with isolation level 1, read_committed (v2+), the last stable offset),
// and by timestamp (the first record at or after it, below the high watermark, or the
// last stable offset for read_committed, as Kafka's lastFetchableOffset bounds it). v4+
// fences by the current leader epoch and answers with the leader epoch.

import (
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const listOffsetsKey = int16(kmsg.ListOffsets)

// Special timestamps of ListOffsets.
const (
	listOffsetsLatest   = -1
	listOffsetsEarliest = -2
)

func handleListOffsets(s *Server, r *request) error {
	req := kmsg.NewPtrListOffsetsRequest()
	req.SetVersion(r.hdr.APIVersion)
	if err := req.UnsafeReadFrom(r.body); err != nil {
		return err
	}
	resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
	resp.SetVersion(r.hdr.APIVersion)
	for i := range req.Topics {
		t := &req.Topics[i]
		rt := kmsg.NewListOffsetsResponseTopic()
		rt.Topic = strings.Clone(t.Topic)
		for j := range t.Partitions {
			rp := kmsg.NewListOffsetsResponseTopicPartition()
			rp.Partition = t.Partitions[j].Partition
			rp.Timestamp, rp.Offset, rp.LeaderEpoch = -1, -1, -1
			rp.ErrorCode = s.listOffset(t.Topic, &t.Partitions[j], req.IsolationLevel == 1, &rp)
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	writeResponse(r, resp)
	return nil
}

func (s *Server) listOffset(topic string, q *kmsg.ListOffsetsRequestTopicPartition, readCommitted bool,
	rp *kmsg.ListOffsetsResponseTopicPartition) int16 {
	p := s.replicas.Partition(topic, q.Partition)
	if p == nil {
		return kerr.UnknownTopicOrPartition.Code
	}
	if code := p.CheckLeaderEpoch(q.CurrentLeaderEpoch); code != 0 {
		return code
	}
	rp.LeaderEpoch = p.LeaderEpoch()
	hw := p.HighWatermark()
	if readCommitted {
		hw = p.LastStableOffset()
	}
	switch q.Timestamp {
	case listOffsetsEarliest:
		rp.Offset = p.Log().LogStartOffset()
	case listOffsetsLatest:
		rp.Offset = hw
	default:
		off, ts, found, err := p.Log().OffsetForTimestamp(q.Timestamp)
		if err != nil {
			return kerr.KafkaStorageError.Code
		}
		if found && off < hw {
			rp.Offset, rp.Timestamp = off, ts
		}
	}
	return 0
}
