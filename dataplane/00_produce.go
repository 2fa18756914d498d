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
	"time"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/replica"
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
	if fenced {
		s.metrics.fencedProduces.Inc()
	}
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
			p := s.replicas.PartitionBytes(name, index)
			switch {
			case !acksValid:
				res.ErrorCode = kerr.InvalidRequiredAcks.Code
			case p == nil:
				res.ErrorCode = s.notHostedCode(name, index)
			case !p.IsLeader() || fenced:
				res.ErrorCode = kerr.NotLeaderForPartition.Code
			case req.Acks == -1 && p.UnderMinISR():
				res.ErrorCode = kerr.NotEnoughReplicas.Code
			default:
				// Validate now (one CRC per batch), so each request is answered on its
				// own; the append itself waits for the end of the pass.
				if res.ErrorCode = validateRecords(records, p.Log().MaxBatchBytes(), p.Log().SegmentBytes()); res.ErrorCode == 0 {
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

// fenced reports whether this node's registration may have ended (its lease expired, or
// its session broke and was revoked): a leader cut off from the control plane past its
// lease, or past its session's grace, acknowledges nothing, so no write is acknowledged
// by an old leader once a new leader epoch can have started.
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
	entries      []stagedEntry
	requests     []stagedProduce
	leaderAppend replica.LeaderAppend // scratch for one partition's append
	accepted     []int                // scratch: the entries of that append
}

// stagedEntry is one partition of one produce request, validated and waiting for the
// pass's append. pos is where its answer lies in the request's response buffer.
type stagedEntry struct {
	p       *replica.Partition
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
// after the idempotent-producer checks (replica.LeaderAppend), and records each entry's
// result.
func (s *Server) appendStaged(st *stagedAppends, first int) {
	p := st.entries[first].p
	a := &st.leaderAppend
	a.Begin(p)
	accepted := st.accepted[:0]
	for i := first; i < len(st.entries); i++ {
		e := &st.entries[i]
		if e.p != p || e.done {
			continue
		}
		e.done = true
		e.res.LogAppendTimeMs, e.res.LogStartOffset = -1, -1
		as := a.Add(e.records)
		e.res.ErrorCode, e.res.BaseOffset, e.last = as.ErrorCode, as.FirstOffset, as.LastOffset
		if as.ErrorCode == 0 && !as.Duplicate {
			accepted = append(accepted, i)
		}
	}
	st.accepted = accepted[:0]
	info, err := a.Commit()
	if len(accepted) == 0 {
		return
	}
	if err != nil {
		for _, i := range accepted {
			st.entries[i].res.ErrorCode, st.entries[i].res.BaseOffset = produceErrorCode(err), -1
		}
		return
	}
	for _, i := range accepted {
		st.entries[i].res.LogAppendTimeMs, st.entries[i].res.LogStartOffset = info.LogAppendTime, info.LogStartOffset
	}
	s.metrics.recordsIn.Add(int(info.Records))
	s.metrics.bytesIn.Add(info.Bytes)
	s.metrics.appends.Inc()
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
		for i := range waits {
			if !waits[i].settle(r.resp.buf.B) {
				return false
			}
		}
		r.resp.setBytes()
		return true
	}
	w.expire = func() {
		for i := range waits {
			if !waits[i].settle(r.resp.buf.B) {
				proto.PatchProduceErrorCode(r.resp.buf.B, waits[i].pos, kerr.RequestTimedOut.Code)
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
	p    *replica.Partition
	need int64
	pos  int
	done bool
}

// notHostedCode is the answer for a partition this node has no replica of, as Kafka's
// ReplicaManager gives it: NOT_LEADER_OR_FOLLOWER if the partition exists (the client's
// metadata is stale, or this node has not opened its replica yet: it retries after a
// metadata refresh), else UNKNOWN_TOPIC_OR_PARTITION (which clients retry only a few
// times).
func (s *Server) notHostedCode(topic []byte, partition int32) int16 {
	if _, ok := s.snapshot().Partitions[cluster.TopicPartition{Topic: string(topic), Partition: partition}]; ok {
		return kerr.NotLeaderForPartition.Code
	}
	return kerr.UnknownTopicOrPartition.Code
}

// settle decides a waiting answer if it can now, patching its error code into the
// response b, and reports whether it is decided (Kafka's checkEnoughReplicasReachOffset):
// once the high watermark passes the batch it succeeded, or failed with
// NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below min.insync.replicas
// meanwhile; a node that stopped leading answers NOT_LEADER_OR_FOLLOWER. Leadership is
// checked first, as Kafka does: a demoted node's high watermark is its new leader's,
// over a log it may have truncated, so passing the batch's offset there says nothing
// of the batch (an idempotent producer's retry finds it at the new leader if it was
// committed).
func (wf *produceWait) settle(b []byte) bool {
	switch {
	case wf.done:
	case !wf.p.IsLeader():
		proto.PatchProduceErrorCode(b, wf.pos, kerr.NotLeaderForPartition.Code)
	case wf.p.HighWatermark() >= wf.need:
		if wf.p.UnderMinISR() {
			proto.PatchProduceErrorCode(b, wf.pos, kerr.NotEnoughReplicasAfterAppend.Code)
		}
	default:
		return false
	}
	wf.done = true
	return true
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
