package dataplane

// Produce, key 0, versions 3-8 (hand-written codec in proto: no allocation per request),
// advertised from v0 (see produceAdvertisedMin).
// The produce requests of one connection's read pass are validated one by one, then each
// partition's records are appended with one vectored write (see flushStaged):
// RecordBatch v2 only (v3 is the first version that carries
// it, and librdkafka uses v2 batches only when v3 is in range); v9+ (flexible) is not
// advertised. KIP-98 idempotent producers; acks 0 (no response), 1 (after the append) and
// -1 (once the high watermark passes the batch, or REQUEST_TIMED_OUT at the request's
// timeout); LogAppendTime topics; per-partition errors.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const produceKey = int16(kmsg.Produce)

// produceAdvertisedMin is the lowest Produce version ApiVersions lists: 0, although only
// v3+ are served. librdkafka before 2.11.1 (Debian's is 2.0.2) enables gzip, snappy and
// lz4 only if Produce v0 lies in the broker's range, and otherwise sends those batches
// uncompressed. Kafka 4 lists Produce from v0 for the same reason (KAFKA-18659) and
// closes the connection on a v0-2 request; so does this node, because handleFrame checks
// the served range (apis' min). Clients pick the highest version both sides support, so
// none sends v0-2 because of the wider range.
const produceAdvertisedMin = 0

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
	st := &r.conn.staged
	fenced := s.fenced()
	sp := stagedProduce{r: r, acks: req.Acks, timeoutMs: req.TimeoutMs, version: version, from: len(st.entries)}
	for range req.Topics {
		name, partitions, err := req.NextTopic()
		if err != nil {
			return err
		}
		buf.B = proto.AppendTopicStart(buf.B, name, partitions)
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
			case !p.IsLeader() || fenced:
				res.ErrorCode = kerr.NotLeaderForPartition.Code
			case req.Acks == -1 && p.isrSize.Load() < p.minInsyncReplicas.Load():
				res.ErrorCode = kerr.NotEnoughReplicas.Code
			default:
				// Validate now (one CRC per batch), so each request is answered on its
				// own; the append itself waits for the end of the pass.
				if res.ErrorCode = validateRecords(records, p.log.MaxBatchBytes(), p.log.SegmentBytes()); res.ErrorCode == 0 {
					st.entries = append(st.entries, stagedEntry{p: p, records: records, pos: len(buf.B)})
				}
			}
			buf.B = proto.AppendProducePartition(buf.B, version, &res)
		}
	}
	if !req.Done() {
		st.entries = st.entries[:sp.from]
		return proto.ErrMalformedProduce
	}
	buf.B = binary.BigEndian.AppendUint32(buf.B, 0) // throttle time
	proto.EndFrame(buf.B, start, 0)
	sp.to = len(st.entries)
	if req.Acks == 0 {
		r.noResponse() // the appends still happen at the end of the pass
		sp.r = nil
	}
	if sp.from == sp.to {
		if sp.r != nil {
			r.resp.setBytes()
		}
		return nil
	}
	if sp.r != nil {
		r.retained = true // answered at the end of the pass
	}
	st.requests = append(st.requests, sp)
	return nil
}

// fenced reports whether this node's registration may have expired (RELIABILITY R5,
// R10): a leader cut off from the control plane past its lease acknowledges nothing, so
// no write is acknowledged by an old leader once a new leader epoch can have started.
func (s *Server) fenced() bool {
	return s.cfg.LeaseSafeUntil != nil && time.Now().After(s.cfg.LeaseSafeUntil())
}

// validateRecords checks a partition's records as Kafka does and returns the error code
// to answer (0: all good): each batch, as sent (compressed), against the topic's
// max.message.bytes (MESSAGE_TOO_LARGE) and its CRC, then all of them against its
// segment.bytes (RECORD_LIST_TOO_LARGE).
func validateRecords(records []byte, maxBatchBytes int, segmentBytes int64) int16 {
	if len(records) == 0 {
		return kerr.CorruptMessage.Code
	}
	for pos := 0; pos < len(records); {
		h, err := proto.ValidateRecordBatch(records[pos:], maxBatchBytes)
		if err != nil {
			return produceErrorCode(err)
		}
		pos += h.Size()
	}
	if int64(len(records)) > segmentBytes {
		return kerr.RecordListTooLarge.Code
	}
	return 0
}

// stagedAppends are the produce appends of one connection's pass: entries in arrival
// order, and the requests they answer.
type stagedAppends struct {
	entries  []stagedEntry
	requests []stagedProduce
	parts    [][]byte // scratch for one partition's append
	accepted []int    // scratch: the entries of that append
}

// stagedEntry is one partition of one produce request, validated and waiting for the
// pass's append. pos is where its answer lies in the request's response buffer.
type stagedEntry struct {
	p       *Partition
	records []byte
	pos     int
	res     proto.ProducePartitionResult
	last    int64
	done    bool
}

// stagedProduce is a produce request with staged partitions; entries[from:to] are its.
type stagedProduce struct {
	r         *request // nil for acks=0: nothing to answer
	acks      int16
	timeoutMs int32
	version   int16
	from, to  int
}

// flushStaged appends the pass's staged records — one append per partition, in arrival
// order — and answers the produce requests they came with.
func (cs *connState) flushStaged() error {
	st := &cs.staged
	if len(st.entries) == 0 {
		return nil
	}
	for i := range st.entries {
		if !st.entries[i].done {
			cs.s.appendStaged(st, i)
		}
	}
	for i := range st.requests {
		cs.s.answerStaged(st, &st.requests[i])
	}
	clear(st.entries)
	st.entries = st.entries[:0]
	clear(st.requests)
	st.requests = st.requests[:0]
	return nil
}

// appendStaged appends every staged entry of entries[first]'s partition with one write,
// after the idempotent-producer checks, and records each entry's result.
func (s *Server) appendStaged(st *stagedAppends, first int) {
	p := st.entries[first].p
	epoch := p.leaderEpoch.Load()
	p.mu.Lock()
	next := p.log.LogEndOffset()
	parts, accepted := st.parts[:0], st.accepted[:0]
	for i := first; i < len(st.entries); i++ {
		e := &st.entries[i]
		if e.p != p || e.done {
			continue
		}
		e.done = true
		e.res.LogAppendTimeMs, e.res.LogStartOffset = -1, -1
		code, dupFirst, dupLast := p.checkProducers(e.records)
		switch {
		case code != 0:
			e.res.ErrorCode, e.res.BaseOffset = code, -1
			continue
		case dupFirst >= 0:
			e.res.BaseOffset, e.last = dupFirst, dupLast
			continue
		}
		// Offsets are known before the append: this partition's appends all run under
		// p.mu, so the log end offset cannot move meanwhile. The producer state takes the
		// batches now, so the next entry's sequence check sees them.
		e.res.BaseOffset = next
		for pos := 0; pos < len(e.records); {
			h, _ := proto.ParseRecordBatchHeader(e.records[pos:])
			p.producers.update(&h, next)
			next += int64(h.RecordCount)
			pos += h.Size()
		}
		e.last = next - 1
		parts = append(parts, e.records)
		accepted = append(accepted, i)
	}
	st.parts, st.accepted = parts[:0], accepted[:0]
	if len(parts) == 0 {
		p.mu.Unlock()
		return
	}
	info, err := p.log.AppendValidated(parts, epoch)
	clear(parts)
	if err == nil && info.FirstOffset != st.entries[accepted[0]].res.BaseOffset {
		err = fmt.Errorf("dataplane: append landed at %d, not the expected %d", info.FirstOffset, st.entries[accepted[0]].res.BaseOffset)
	}
	if err != nil {
		// Nothing (or not what the producer state assumed) was written: rebuild the
		// producer state from the log and fail the entries.
		p.producers = producerStates{}
		if rerr := p.producers.rebuild(p.log); rerr != nil {
			s.logger.Error("rebuild producer state", "topic", p.Topic, "partition", p.Index, "err", rerr)
		}
		p.mu.Unlock()
		for _, i := range accepted {
			st.entries[i].res.ErrorCode, st.entries[i].res.BaseOffset = produceErrorCode(err), -1
		}
		return
	}
	logStart := p.log.LogStartOffset()
	for _, i := range accepted {
		st.entries[i].res.LogAppendTimeMs, st.entries[i].res.LogStartOffset = info.LogAppendTime, logStart
	}
	p.mu.Unlock()
	s.metrics.recordsIn.Add(int(info.Records))
	s.metrics.bytesIn.Add(info.Bytes)
	s.metrics.appends.Inc()
	p.advanceHighWatermark()
	p.wakeWaiters()
}

// answerStaged writes a staged request's results into its response and answers it, or
// parks it until the high watermark passes its batches (acks=all).
func (s *Server) answerStaged(st *stagedAppends, sp *stagedProduce) {
	if sp.r == nil {
		return
	}
	b := sp.r.resp.buf.B
	var waits []produceWait
	for i := sp.from; i < sp.to; i++ {
		e := &st.entries[i]
		e.res.Partition = int32(binary.BigEndian.Uint32(b[e.pos:]))
		proto.PatchProducePartition(b, e.pos, sp.version, &e.res)
		if sp.acks == -1 && e.res.ErrorCode == 0 && e.p.HighWatermark() <= e.last {
			waits = append(waits, produceWait{p: e.p, need: e.last + 1, pos: e.pos})
		}
	}
	r := sp.r
	if len(waits) == 0 {
		r.resp.setBytes()
		*r = request{} // answered: nothing holds the request any more
		requestPool.Put(r)
		return
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
	w.park(time.Duration(max(sp.timeoutMs, 0))*time.Millisecond, &s.metrics.produceWaiting)
}

// produceWait is a partition answer waiting for the high watermark to reach need; pos is
// where the answer lies in the response buffer.
type produceWait struct {
	p    *Partition
	need int64
	pos  int
}

// checkProducers runs the idempotent-producer checks over a partition's batches: an
// error code, or the offsets of the batch a retry duplicates (dupFirst ≥ 0), or neither.
// The caller holds p.mu.
func (p *Partition) checkProducers(records []byte) (code int16, dupFirst, dupLast int64) {
	dupFirst, dupLast = -1, -1
	batches := 0
	for pos := 0; pos < len(records); batches++ {
		h, err := proto.ParseRecordBatchHeader(records[pos:])
		if err != nil || h.Size() > len(records)-pos {
			return kerr.CorruptMessage.Code, -1, -1
		}
		dup, c := p.producers.check(&h)
		if c != 0 {
			return c, -1, -1
		}
		if dup != nil {
			dupFirst, dupLast = dup.firstOffset, dup.lastOffset
		}
		pos += h.Size()
	}
	if dupFirst >= 0 && batches > 1 {
		return kerr.OutOfOrderSequenceNumber.Code, -1, -1
	}
	return 0, dupFirst, dupLast
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
