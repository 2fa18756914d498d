package dataplane

// Produce, key 0, versions 3-8: RecordBatch v2 only (v3 is the first version that carries
// it, and librdkafka uses v2 batches only when v3 is in range); v9+ (flexible) is not
// advertised. KIP-98 idempotent producers; acks 0 (no response), 1 (after the append) and
// -1 (once the high watermark passes the batch, or REQUEST_TIMED_OUT at the request's
// timeout); LogAppendTime topics; per-partition errors.

import (
	"errors"
	"strings"
	"time"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const produceKey = int16(kmsg.Produce)

func handleProduce(s *Server, r *request) error {
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(r.hdr.APIVersion)
	if err := req.UnsafeReadFrom(r.body); err != nil {
		return err
	}
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	resp.SetVersion(r.hdr.APIVersion)
	acksValid := req.Acks == 0 || req.Acks == 1 || req.Acks == -1
	// waitFor pairs a response partition with the offset the high watermark must pass.
	type waitFor struct {
		rp   *kmsg.ProduceResponseTopicPartition
		p    *Partition
		need int64
	}
	var waits []waitFor
	for i := range req.Topics {
		rt := &req.Topics[i]
		respTopic := kmsg.NewProduceResponseTopic()
		respTopic.Topic = strings.Clone(rt.Topic) // the request views the inbound buffer; a parked answer outlives it
		respTopic.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(rt.Partitions))
		for j := range rt.Partitions {
			rp := &respTopic.Partitions[j]
			rp.Default()
			rp.Partition = rt.Partitions[j].Partition
			rp.BaseOffset, rp.LogAppendTime, rp.LogStartOffset = -1, -1, -1
			if !acksValid {
				rp.ErrorCode = kerr.InvalidRequiredAcks.Code
				continue
			}
			p := s.replicas.get(rt.Topic, rp.Partition)
			switch {
			case p == nil:
				rp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				continue
			case !p.IsLeader():
				rp.ErrorCode = kerr.NotLeaderForPartition.Code
				continue
			case req.Acks == -1 && p.isrSize.Load() < p.minInsyncReplicas.Load():
				rp.ErrorCode = kerr.NotEnoughReplicas.Code
				continue
			}
			first, last, appendTime, code := p.produce(rt.Partitions[j].Records)
			rp.ErrorCode = code
			if code != 0 {
				continue
			}
			rp.BaseOffset, rp.LogAppendTime, rp.LogStartOffset = first, appendTime, p.log.LogStartOffset()
			s.metrics.recordsIn.Add(int(last - first + 1))
			s.metrics.bytesIn.Add(len(rt.Partitions[j].Records))
			if req.Acks == -1 && p.HighWatermark() <= last {
				waits = append(waits, waitFor{rp, p, last + 1})
			}
		}
		resp.Topics = append(resp.Topics, respTopic)
	}
	if req.Acks == 0 {
		r.noResponse()
		return nil
	}
	if len(waits) == 0 {
		writeResponse(r, resp)
		return nil
	}
	// acks=all and the ISR has not caught up: park until the high watermark passes every
	// batch, or answer REQUEST_TIMED_OUT for those it did not pass at the timeout.
	w := &waiter{cs: r.conn}
	for _, wf := range waits {
		w.parts = append(w.parts, wf.p)
	}
	w.try = func() bool {
		for _, wf := range waits {
			if wf.p.HighWatermark() < wf.need {
				return false
			}
		}
		writeResponse(r, resp)
		return true
	}
	w.expire = func() {
		for _, wf := range waits {
			if wf.p.HighWatermark() < wf.need {
				wf.rp.ErrorCode = kerr.RequestTimedOut.Code
			}
		}
		writeResponse(r, resp)
	}
	s.metrics.delayedProduce.Inc()
	w.park(time.Duration(max(req.TimeoutMillis, 0)) * time.Millisecond)
	return nil
}

// produce appends a produce request's records for one partition as its leader: producer
// sequence checks, one append, producer state and high watermark updated. It returns the
// first and last offsets, the LogAppendTime (or -1) and a Kafka error code.
func (p *Partition) produce(records []byte) (first, last, appendTime int64, code int16) {
	epoch := p.leaderEpoch.Load()
	p.mu.Lock()
	// Idempotence: a batch the producer retried gets its first answer back.
	var dupFirst, dupLast int64 = -1, -1
	batches := 0
	for pos := 0; pos < len(records); batches++ {
		h, err := proto.ParseRecordBatchHeader(records[pos:])
		if err != nil || h.Size() > len(records)-pos {
			break // Append reports the exact problem
		}
		dup, c := p.producers.check(&h)
		if c != 0 {
			p.mu.Unlock()
			return -1, -1, -1, c
		}
		if dup != nil {
			dupFirst, dupLast = dup.firstOffset, dup.lastOffset
		}
		pos += h.Size()
	}
	if dupFirst >= 0 {
		p.mu.Unlock()
		if batches > 1 {
			return -1, -1, -1, kerr.OutOfOrderSequenceNumber.Code
		}
		return dupFirst, dupLast, -1, 0
	}
	info, err := p.log.Append(records, epoch)
	if err != nil {
		p.mu.Unlock()
		return -1, -1, -1, produceErrorCode(err)
	}
	for pos := 0; pos < len(records); {
		h, _ := proto.ParseRecordBatchHeader(records[pos:])
		p.producers.update(&h, h.BaseOffset)
		pos += h.Size()
	}
	p.mu.Unlock()
	p.advanceHighWatermark()
	p.wakeWaiters()
	return info.FirstOffset, info.LastOffset, info.LogAppendTime, 0
}

// produceErrorCode maps an append error to the code Kafka answers with.
func produceErrorCode(err error) int16 {
	switch {
	case errors.Is(err, proto.ErrBatchTooLarge):
		return kerr.MessageTooLarge.Code
	case errors.Is(err, proto.ErrBatchRecordCount):
		return kerr.InvalidRecord.Code
	case errors.Is(err, proto.ErrBatchCodec):
		return kerr.UnsupportedCompressionType.Code
	case errors.Is(err, proto.ErrBatchCRC), errors.Is(err, proto.ErrBatchMagic),
		errors.Is(err, proto.ErrBatchLength), errors.Is(err, proto.ErrBatchTruncated),
		errors.Is(err, segment.ErrEmptyAppend):
		return kerr.CorruptMessage.Code
	case errors.Is(err, segment.ErrClosed):
		return kerr.NotLeaderForPartition.Code
	default:
		return kerr.KafkaStorageError.Code
	}
}
