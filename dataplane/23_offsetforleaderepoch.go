package dataplane

// OffsetForLeaderEpoch, key 23, versions 0-3 (v4 is flexible): for each partition, the
// largest leader epoch ≤ the one asked that this leader's log knows and the offset where
// it ended (the log end offset for the latest) — from the leader-epoch cache, which
// also answers Fetch v12+'s LastFetchedEpoch. Followers ask it when a fetch finds their
// offset past the leader's end, to truncate where their log diverges from the leader's
// (KIP-101, KIP-279); clients ask it to detect truncation (KIP-320). Only a leader
// answers; v2+ fences by the current leader epoch as Fetch does.

import (
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const offsetForLeaderEpochKey = int16(kmsg.OffsetForLeaderEpoch)

func handleOffsetForLeaderEpoch(s *Server, r *request) error {
	req := kmsg.NewPtrOffsetForLeaderEpochRequest()
	req.SetVersion(r.hdr.APIVersion)
	if err := req.UnsafeReadFrom(r.body); err != nil {
		return err
	}
	resp := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
	resp.SetVersion(r.hdr.APIVersion)
	for i := range req.Topics {
		t := &req.Topics[i]
		rt := kmsg.NewOffsetForLeaderEpochResponseTopic()
		rt.Topic = strings.Clone(t.Topic)
		for _, q := range t.Partitions {
			rp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
			rp.Partition, rp.LeaderEpoch, rp.EndOffset = q.Partition, -1, -1
			if p := s.replicas.Partition(t.Topic, q.Partition); p == nil {
				rp.ErrorCode = kerr.UnknownTopicOrPartition.Code
			} else if rp.ErrorCode = p.CheckLeaderEpoch(q.CurrentLeaderEpoch); rp.ErrorCode == 0 {
				rp.LeaderEpoch, rp.EndOffset = p.EndOffsetForEpoch(q.LeaderEpoch)
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	writeResponse(r, resp)
	return nil
}
