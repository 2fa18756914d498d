package dataplane

// Produce, key 0, versions 3-8 (hand-written codec in proto: no allocation per request):
// RecordBatch v2 only (v3 is the first version that carries
// it, and librdkafka uses v2 batches only when v3 is in range); v9+ (flexible) is not
// advertised. KIP-98 idempotent producers; acks 0 (no response), 1 (after the append) and
// -1 (once the high watermark passes the batch, or REQUEST_TIMED_OUT at the request's
// timeout); LogAppendTime topics; per-partition errors.

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const produceKey = int16(kmsg.Produce)

func handleProduce(s *Server, r *request) error {
	req, err := proto.ParseProduceRequest(r.body)
	if err != nil {
		return err
	}
	version := r.hdr.APIVersion
	acksValid := req.Acks == 0 || req.Acks == 1 || req.Acks == -1
	buf := r.resp.buf
	var start int
	buf.B, start = proto.BeginFrame(buf.B[:0], r.hdr.CorrelationID, false)
	buf.B = binary.BigEndian.AppendUint32(buf.B, uint32(req.Topics))
	// waits lists the partitions whose answer waits for the high watermark (acks=all
	// with an ISR that has not caught up), with where their answer lies in buf.
	var waits []produceWait
	for range req.Topics {
		name, partitions, err := req.NextTopic()
		if err != nil {
			return err
		}
		buf.B = proto.AppendProduceTopic(buf.B, name, partitions)
		for range partitions {
			index, records, err := req.NextPartition()
			if err != nil {
				return err
			}
			res := proto.ProducePartitionResult{Partition: index, BaseOffset: -1, LogAppendTimeMs: -1, LogStartOffset: -1}
			p := s.replicas.getBytes(name, index)
			switch {
			case !acksValid:
				res.ErrorCode = kerr.InvalidRequiredAcks.Code
			case p == nil:
				res.ErrorCode = kerr.UnknownTopicOrPartition.Code
			case !p.IsLeader():
				res.ErrorCode = kerr.NotLeaderForPartition.Code
			case req.Acks == -1 && p.isrSize.Load() < p.minInsyncReplicas.Load():
				res.ErrorCode = kerr.NotEnoughReplicas.Code
			default:
				var last int64
				res.BaseOffset, last, res.LogAppendTimeMs, res.ErrorCode = p.produce(records)
				if res.ErrorCode != 0 {
					break
				}
				res.LogStartOffset = p.log.LogStartOffset()
				s.metrics.recordsIn.Add(int(last - res.BaseOffset + 1))
				s.metrics.bytesIn.Add(len(records))
				if req.Acks == -1 && p.HighWatermark() <= last {
					waits = append(waits, produceWait{p: p, need: last + 1, pos: len(buf.B)})
				}
			}
			buf.B = proto.AppendProducePartition(buf.B, version, &res)
		}
	}
	if !req.Done() {
		return proto.ErrMalformedProduce
	}
	buf.B = binary.BigEndian.AppendUint32(buf.B, 0) // throttle time
	proto.EndFrame(buf.B, start, 0)
	if req.Acks == 0 {
		r.noResponse()
		return nil
	}
	if len(waits) == 0 {
		r.resp.setBytes()
		return nil
	}
	// acks=all and the ISR has not caught up: park until the high watermark passes every
	// batch, or answer REQUEST_TIMED_OUT for those it did not pass at the timeout.
	r.retained = true
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
		r.resp.setBytes()
		return true
	}
	w.expire = func() {
		for _, wf := range waits {
			if wf.p.HighWatermark() < wf.need {
				proto.PatchProduceErrorCode(r.resp.buf.B, wf.pos, kerr.RequestTimedOut.Code)
			}
		}
		r.resp.setBytes()
	}
	s.metrics.delayedProduce.Inc()
	w.park(time.Duration(max(req.TimeoutMs, 0))*time.Millisecond, &s.metrics.produceWaiting)
	return nil
}

// produceWait is a partition answer waiting for the high watermark to reach need; pos is
// where the answer lies in the response buffer.
type produceWait struct {
	p    *Partition
	need int64
	pos  int
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
