package dataplane

// DeleteRecords, key 21, versions 0-2 (v2: flexible; KIP-107), sent to each partition's
// leader: the partition's log start offset moves up to the offset given (-1: the high
// watermark), as Kafka's deleteRecordsOnLeader does:
//
//   - No replica here: NOT_LEADER_OR_FOLLOWER if the partition exists, else
//     UNKNOWN_TOPIC_OR_PARTITION; a replica that does not lead: NOT_LEADER_OR_FOLLOWER.
//   - An offset below 0 (other than -1) or above the high watermark:
//     OFFSET_OUT_OF_RANGE. One at or below the log start changes nothing.
//   - The new log start is checkpointed before the answer (segment's log-start-offset,
//     recovered at restart); the segments wholly below it are deleted; Fetch and
//     ListOffsets (earliest) no longer reach below it. Followers learn it from the
//     leader's Fetch responses (log_start_offset) and move theirs (fetcher.go), and
//     report theirs in their fetches.
//   - The answer's low watermark is the smallest log start over the leader and its
//     registered followers (Kafka's lowWatermarkIfLeader). The request waits, up to its
//     timeout_ms, until that reaches each partition's new start (Kafka's
//     DelayedDeleteRecords); a partition still short then answers REQUEST_TIMED_OUT
//     with the low watermark reached, one whose leadership moved meanwhile
//     NOT_LEADER_OR_FOLLOWER.
//
// The log start moves on a goroutine (an fsync and file deletions, never on the event
// loop); the wait is a purgatory waiter on the partitions, woken when a follower's
// fetch reports a new log start or the partition's role changes.

import (
	"errors"
	"time"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/replica"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const deleteRecordsKey = int16(kmsg.DeleteRecords)

// deleteRecordsHighWatermark is the offset that asks for every record below the high
// watermark to go (Kafka's DeleteRecordsRequest.HIGH_WATERMARK).
const deleteRecordsHighWatermark = -1

// deletePartition is one partition of a DeleteRecords request on its way through.
type deletePartition struct {
	topic     string
	partition int32
	p         *replica.Partition
	offset    int64 // as asked
	// required is the log start the low watermark must reach; set once moved.
	required int64
	code     int16
	low      int64
	pending  bool
}

func handleDeleteRecords(s *Server, r *request) error {
	req := kmsg.NewPtrDeleteRecordsRequest()
	req.SetVersion(r.hdr.APIVersion)
	if req.IsFlexible() {
		if err := proto.CheckShape(r.body, proto.DeleteRecordsRequestV2); err != nil {
			return err
		}
	}
	if err := req.ReadFrom(r.body); err != nil {
		return err
	}
	var parts []*deletePartition
	for _, t := range req.Topics {
		for _, rp := range t.Partitions {
			d := &deletePartition{topic: t.Topic, partition: rp.Partition, offset: rp.Offset, low: -1}
			d.p = s.replicas.Partition(t.Topic, rp.Partition)
			switch {
			case d.p == nil:
				d.code = s.notHostedCode([]byte(t.Topic), rp.Partition)
			case !d.p.IsLeader():
				d.code = kerr.NotLeaderForPartition.Code
			}
			parts = append(parts, d)
		}
	}
	r.retained = true
	go func() {
		for _, d := range parts {
			if d.code == 0 {
				d.code = s.moveLogStart(d)
			}
		}
		_ = r.conn.post(func() { s.awaitDeleteRecords(r, req, parts) })
	}()
	return nil
}

// moveLogStart moves one leader partition's log start (off the event loop) and
// returns the partition's error code.
func (s *Server) moveLogStart(d *deletePartition) int16 {
	if !d.p.IsLeader() {
		return kerr.NotLeaderForPartition.Code
	}
	hw := d.p.HighWatermark()
	target := d.offset
	if target == deleteRecordsHighWatermark {
		target = hw
	}
	if target < 0 || target > hw {
		return kerr.OffsetOutOfRange.Code
	}
	if _, err := d.p.Log().IncrementLogStartOffset(target); err != nil {
		s.logger.Warn("DeleteRecords: moving the log start", "topic", d.topic, "partition", d.partition, "offset", target, "err", err)
		if errors.Is(err, segment.ErrOffsetOutOfRange) {
			return kerr.OffsetOutOfRange.Code
		}
		return kerr.KafkaStorageError.Code
	}
	d.required, d.pending = target, true
	return 0
}

// awaitDeleteRecords answers once every moved partition's low watermark has reached
// its new log start, or at the request's timeout (on the connection's loop).
func (s *Server) awaitDeleteRecords(r *request, req *kmsg.DeleteRecordsRequest, parts []*deletePartition) {
	resp := req.ResponseKind().(*kmsg.DeleteRecordsResponse)
	resp.SetVersion(r.hdr.APIVersion)
	answer := func(timedOut bool) {
		resp.Topics = resp.Topics[:0]
		idx := map[string]int{}
		for _, d := range parts {
			if d.pending && timedOut {
				d.code = kerr.RequestTimedOut.Code
			}
			i, ok := idx[d.topic]
			if !ok {
				i = len(resp.Topics)
				idx[d.topic] = i
				rt := kmsg.NewDeleteRecordsResponseTopic()
				rt.Topic = d.topic
				resp.Topics = append(resp.Topics, rt)
			}
			rp := kmsg.NewDeleteRecordsResponseTopicPartition()
			rp.Partition, rp.LowWatermark, rp.ErrorCode = d.partition, d.low, d.code
			resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, rp)
		}
		writeResponse(r, resp)
	}
	// try updates each waiting partition (Kafka's DelayedDeleteRecords.tryComplete).
	try := func() bool {
		done := true
		for _, d := range parts {
			if !d.pending {
				continue
			}
			low, ok := d.p.LowWatermark()
			switch {
			case !ok:
				d.pending, d.code, d.low = false, kerr.NotLeaderForPartition.Code, -1
			case low >= d.required:
				d.pending, d.low = false, low
			default:
				d.low = low
				done = false
			}
		}
		return done
	}
	if try() {
		answer(false)
		return
	}
	w := &waiter{cs: r.conn}
	for _, d := range parts {
		if d.pending {
			w.parts = append(w.parts, d.p)
		}
	}
	w.try = func() bool {
		if !try() {
			return false
		}
		answer(false)
		return true
	}
	w.expire = func() {
		try()
		answer(true)
	}
	s.metrics.delayedDeleteRecords.Inc()
	w.park(time.Duration(max(req.TimeoutMillis, 0))*time.Millisecond, &s.metrics.deleteRecordsWaiting)
}
