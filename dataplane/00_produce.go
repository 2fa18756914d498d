package dataplane

// Produce, key 0, versions 3-8 (hand-written codec in proto: no allocation per request),
// advertised from v0 (see produceAdvertisedMin).
// Transactions (KIP-98): transactional batches are checked against the producer state
// (txn.go, replica/txn.go); a producer's first transactional batch on a partition is
// verified with the transaction coordinator before it is appended (KIP-890 part 1,
// verifyTxnProduce below), the whole request waiting off the loop meanwhile.
// Control batches from clients are refused (INVALID_RECORD), as Kafka refuses them.
// The produce requests of one connection's read pass are validated one by one, then each
// partition's records are appended with one vectored write (see flushStaged):
// RecordBatch v2 only (v3 is the first version that carries
// it, and librdkafka uses v2 batches only when v3 is in range); v9+ (flexible) is not
// advertised. KIP-98 idempotent producers; acks 0 (no response), 1 (after the append) and
// -1 (once the high watermark passes the batch, or REQUEST_TIMED_OUT at the request's
// timeout); LogAppendTime topics; per-partition errors.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/client"
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

func handleProduce(s *Server, r *request) error { return s.produce(r, r.body, nil) }

// produce handles a produce request body: validated and staged partition by partition
// for the pass's appends. A request with a transactional batch that needs verification
// with the transaction coordinator (and verdicts nil: the first time) stages nothing: it
// is verified off the loop and handled again with the coordinator's verdicts
// (verifyTxnProduce).
func (s *Server) produce(r *request, body []byte, verdicts txnVerdicts) error {
	req, err := proto.ParseProduceRequest(body)
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
	var verify []txnCheck
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
				var attrs int16
				res.ErrorCode, attrs = validateRecords(records, p.Log().MaxBatchBytes(), p.Log().SegmentBytes())
				var guard uint64
				if res.ErrorCode == 0 && attrs&(proto.AttrTransactional|proto.AttrControl) != 0 {
					var check *txnCheck
					res.ErrorCode, guard, check = s.checkTxnProduce(p, name, index, records, attrs, req.TransactionalID, verdicts)
					if check != nil {
						verify = append(verify, *check)
						break
					}
				}
				if res.ErrorCode == 0 {
					st.entries = append(st.entries, stagedEntry{p: p, records: records, pos: len(buf.B), guard: guard})
				}
			}
			buf.B = proto.AppendProducePartition(buf.B, version, &res)
		}
	}
	if !req.Done() {
		st.entries = st.entries[:sp.from]
		return proto.ErrMalformedProduce
	}
	if len(verify) > 0 {
		st.entries = st.entries[:sp.from]
		s.verifyTxnProduce(r, body, req.Acks, req.TransactionalID, verify)
		return nil
	}
	buf.B = binary.BigEndian.AppendUint32(buf.B, 0) // throttle time
	proto.EndFrame(buf.B, start, 0)
	sp.to = len(st.entries)
	if req.Acks == 0 {
		if verdicts == nil {
			r.noResponse() // the appends still happen at the end of the pass
		}
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
// to answer (0: all good), with the batches' attributes or'ed together (the produce path
// looks at the transactional and control bits: one branch for the rest): each batch, as sent (compressed), against the topic's
// max.message.bytes (MESSAGE_TOO_LARGE) and its CRC, then all of them against its
// segment.bytes (RECORD_LIST_TOO_LARGE).
func validateRecords(records []byte, maxBatchBytes int, segmentBytes int64) (code int16, attrs int16) {
	if len(records) == 0 {
		return kerr.CorruptMessage.Code, 0
	}
	for pos := 0; pos < len(records); {
		h, err := proto.ValidateRecordBatch(records[pos:], maxBatchBytes)
		if err != nil {
			return produceErrorCode(err), 0
		}
		attrs |= h.Attributes
		pos += h.Size()
	}
	if int64(len(records)) > segmentBytes {
		return kerr.RecordListTooLarge.Code, 0
	}
	return 0, attrs
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
	// guard is the transaction verification the records' first transactional batch
	// passed (0: none; replica.LeaderAppend.AddVerified).
	guard uint64
	res   proto.ProducePartitionResult
	last  int64
	done  bool
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
		as := a.AddVerified(e.records, e.guard)
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
	if wf.done {
		return true
	}
	code, decided := replicatedCode(wf.p, wf.need)
	if !decided {
		return false
	}
	if code != 0 {
		proto.PatchProduceErrorCode(b, wf.pos, code)
	}
	wf.done = true
	return true
}

// replicatedCode decides an acks=all append that needs p's high watermark to reach
// need (see produceWait.settle): decided, with 0, NOT_ENOUGH_REPLICAS_AFTER_APPEND or
// NOT_LEADER_OR_FOLLOWER, or not yet.
func replicatedCode(p *replica.Partition, need int64) (code int16, decided bool) {
	switch {
	case !p.IsLeader():
		return kerr.NotLeaderForPartition.Code, true
	case p.HighWatermark() >= need:
		if p.UnderMinISR() {
			return kerr.NotEnoughReplicasAfterAppend.Code, true
		}
		return 0, true
	}
	return 0, false
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

// txnCheck is a partition of a produce request whose first transactional batch needs
// verification with the transaction coordinator (KIP-890 part 1): its producer has no
// transaction open on the partition at the batch's epoch.
type txnCheck struct {
	p          *replica.Partition
	topic      string
	partition  int32
	producerID int64
	epoch      int16
	seq        int32 // the batch's first sequence
	// guard is the partition's record of the verification (BeginTxnVerification).
	guard uint64
}

// txnVerdict is the coordinator's answer for one partition, as a produce error code
// (0: verified, the append may open the transaction under guard).
type txnVerdict struct {
	code  int16
	guard uint64
}

// txnVerdicts are a verified request's verdicts by partition.
type txnVerdicts map[tpKey]txnVerdict

// checkTxnProduce is the produce path for a partition's records with a transactional
// or control batch: control batches are for leaders only (INVALID_RECORD, as Kafka
// answers a client's); transactional records need the request's transactional id
// (TRANSACTIONAL_ID_AUTHORIZATION_FAILED without one, as Kafka answers); a producer
// without a transaction open here needs verification (check set) unless verdicts
// already hold the coordinator's answer. The records' rules proper (epochs, sequences,
// the open transaction) are the replica's, at the append.
func (s *Server) checkTxnProduce(p *replica.Partition, topic []byte, partition int32, records []byte, attrs int16,
	txnID []byte, verdicts txnVerdicts) (code int16, guard uint64, check *txnCheck) {
	if attrs&proto.AttrControl != 0 {
		return kerr.InvalidRecord.Code, 0, nil
	}
	if txnID == nil {
		return kerr.TransactionalIDAuthorizationFailed.Code, 0, nil
	}
	var h proto.RecordBatchHeader
	for pos := 0; pos < len(records); pos += h.Size() {
		h, _ = proto.ParseRecordBatchHeader(records[pos:]) // validated
		if h.IsTransactional() {
			break
		}
	}
	if h.ProducerID < 0 {
		return kerr.InvalidRecord.Code, 0, nil
	}
	if verdicts != nil {
		// Handled again after verification: the verdict, or, for a partition that
		// needed none then, the replica's rules alone.
		v := verdicts[tpKey{string(topic), partition}]
		return v.code, v.guard, nil
	}
	if !p.NeedsTxnVerification(h.ProducerID, h.ProducerEpoch) {
		return 0, 0, nil
	}
	return 0, 0, &txnCheck{p: p, topic: string(topic), partition: partition, producerID: h.ProducerID, epoch: h.ProducerEpoch,
		seq: h.BaseSequence}
}

// txnVerifyTimeout bounds a verification: the coordinator answers a verify-only
// AddPartitionsToTxn from memory.
const txnVerifyTimeout = 10 * time.Second

// verifyTxnProduce verifies a produce request's transactional partitions with the
// transaction coordinator, off the loop, then handles the request again on it with the
// verdicts (Kafka's handleProduceAppend and AddPartitionsToTxnManager): an
// AddPartitionsToTxn v4 with VerifyOnly for the producer's transaction, sent through
// the control plane's forwarding path like a group request. The request's body is
// copied: it views the inbound buffer.
func (s *Server) verifyTxnProduce(r *request, body []byte, acks int16, txnID []byte, checks []txnCheck) {
	owned := bytes.Clone(body)
	if acks == 0 {
		r.noResponse() // the newest request: its handler is running
	}
	r.retained = true
	r.frame, r.body, r.hdr.ClientID = nil, nil, nil // views of the inbound buffer
	w := &txnVerifyWait{r: r, body: owned}
	r.conn.verifying = append(r.conn.verifying, w)
	for i := range checks {
		if checks[i].producerID != checks[0].producerID || checks[i].epoch != checks[0].epoch {
			// Kafka's InvalidPidMappingException: one producer per transactional request.
			verdicts := make(txnVerdicts, len(checks))
			for _, c := range checks {
				verdicts[tpKey{c.topic, c.partition}] = txnVerdict{code: kerr.InvalidProducerIDMapping.Code}
			}
			_ = r.conn.post(func() {
				w.verdicts = verdicts
				s.applyVerified(r.conn)
			})
			return
		}
	}
	for i := range checks {
		checks[i].guard = checks[i].p.BeginTxnVerification(checks[i].producerID, checks[i].epoch, checks[i].seq)
	}
	id := string(txnID) // txnID views the inbound buffer
	frame := appendTxnVerifyRequest(nil, id, checks)
	s.txn.verifications.Inc()
	verify := s.txn.verify
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), txnVerifyTimeout)
		defer cancel()
		var resp []byte
		var err error
		if verify != nil {
			resp, err = verify(ctx, frame)
		} else if s.cp == nil {
			err = errNoControlPlane
		} else {
			resp, err = s.cp.ForwardGroupRequest(ctx, nil, "", frame)
		}
		codes := txnVerificationCodes(id, checks, resp, err)
		if err != nil {
			s.logger.Debug("transaction verification got no answer", "transactional_id", id, "err", err)
		}
		_ = r.conn.post(func() {
			verdicts := make(txnVerdicts, len(checks))
			for i, c := range checks {
				if codes[i] != 0 {
					s.txn.verifyFailures.Inc()
				}
				verdicts[tpKey{c.topic, c.partition}] = txnVerdict{code: codes[i], guard: c.guard}
			}
			w.verdicts = verdicts
			s.applyVerified(r.conn)
		})
	}()
}

// txnVerifyWait is a produce request waiting for its transaction verification: its
// copied body, and the coordinator's verdicts once they are in.
type txnVerifyWait struct {
	r        *request
	body     []byte
	verdicts txnVerdicts
}

// applyVerified handles again, in the order the connection sent them, the verified
// requests at the head of its queue whose verdicts are in. Kafka handles a connection's
// requests one at a time; here the verifications of pipelined requests run side by
// side and may be answered in any order, and a later request's batch appended before
// an earlier one's of the same producer and partition would be refused
// OUT_OF_ORDER_SEQUENCE_NUMBER (the earlier one's verification holds the lowest
// sequence), which a transactional producer such as franz-go's takes as fatal.
func (s *Server) applyVerified(cs *connState) {
	for len(cs.verifying) > 0 && cs.verifying[0].verdicts != nil {
		w := cs.verifying[0]
		cs.verifying[0] = nil
		cs.verifying = cs.verifying[1:]
		s.produceVerified(w.r, w.body, w.verdicts)
	}
}

// produceVerified handles a verified produce request again, on the loop, and appends
// and answers it at once (no pass is under way: the mailbox runs between passes).
func (s *Server) produceVerified(r *request, body []byte, verdicts txnVerdicts) {
	detached := r.resp == nil // acks=0: its slot is gone, its answer is encoded nowhere
	if detached {
		r.resp = newResponse()
	}
	if err := s.produce(r, body, verdicts); err != nil {
		r.conn.closeRequested = true // the body parsed the first time: not reached
	}
	if err := r.conn.flushStaged(); err != nil {
		r.conn.closeRequested = true
	}
	if detached {
		r.resp.free()
		*r = request{}
		requestPool.Put(r)
	}
}

// appendTxnVerifyRequest appends the frame (header v2, then the body) of an
// AddPartitionsToTxn v4 request verifying that checks' partitions are in the
// producer's transaction txnID.
func appendTxnVerifyRequest(dst []byte, txnID string, checks []txnCheck) []byte {
	req := kmsg.NewPtrAddPartitionsToTxnRequest()
	req.SetVersion(4)
	tx := kmsg.NewAddPartitionsToTxnRequestTransaction()
	tx.TransactionalID, tx.ProducerID, tx.ProducerEpoch, tx.VerifyOnly = txnID, checks[0].producerID, checks[0].epoch, true
	for _, c := range checks {
		i := slices.IndexFunc(tx.Topics, func(t kmsg.AddPartitionsToTxnRequestTransactionTopic) bool { return t.Topic == c.topic })
		if i < 0 {
			t := kmsg.NewAddPartitionsToTxnRequestTransactionTopic()
			t.Topic = c.topic
			tx.Topics = append(tx.Topics, t)
			i = len(tx.Topics) - 1
		}
		tx.Topics[i].Partitions = append(tx.Topics[i].Partitions, c.partition)
	}
	req.Transactions = append(req.Transactions, tx)
	dst = binary.BigEndian.AppendUint16(dst, uint16(kmsg.AddPartitionsToTxn))
	dst = binary.BigEndian.AppendUint16(dst, 4)
	dst = binary.BigEndian.AppendUint32(dst, 0) // correlation id: the forwarding path's own
	const clientID = "gregor-dp"
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(clientID)))
	dst = append(dst, clientID...)
	dst = append(dst, 0) // header tags
	return req.AppendTo(dst)
}

// txnVerificationCodes turns the coordinator's answer (or its absence, err) into each
// check's produce error code, as Kafka's AddPartitionsToTxnManager and ReplicaManager
// do: no coordinator reachable is COORDINATOR_NOT_AVAILABLE, a failed exchange
// NETWORK_EXCEPTION; a top-level error applies to every partition
// (CLUSTER_AUTHORIZATION_FAILED as INVALID_TXN_STATE); a partition's PRODUCER_FENCED is
// INVALID_PRODUCER_EPOCH and TRANSACTION_ABORTABLE INVALID_TXN_STATE (clients before
// Produce v12 know no other); then the retriable coordinator errors become
// NOT_ENOUGH_REPLICAS (ReplicaManager.handleProduceAppend's postVerificationCallback:
// CONCURRENT_TRANSACTIONS, NETWORK_EXCEPTION, COORDINATOR_LOAD_IN_PROGRESS,
// COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR), which every client retries without a
// metadata refresh. A partition the answer leaves out is not verified:
// INVALID_TXN_STATE.
func txnVerificationCodes(txnID string, checks []txnCheck, body []byte, err error) []int16 {
	codes := make([]int16, len(checks))
	fill := func(code int16) []int16 {
		for i := range codes {
			codes[i] = verificationProduceCode(code)
		}
		return codes
	}
	switch {
	case errors.Is(err, errNoControlPlane), errors.Is(err, client.ErrNoGroupCoordinator):
		return fill(kerr.CoordinatorNotAvailable.Code)
	case err != nil:
		return fill(kerr.NetworkException.Code)
	}
	resp := kmsg.NewPtrAddPartitionsToTxnResponse()
	resp.SetVersion(4)
	if err := resp.ReadFrom(body); err != nil {
		return fill(kerr.NetworkException.Code)
	}
	if resp.ErrorCode != 0 {
		if resp.ErrorCode == kerr.ClusterAuthorizationFailed.Code {
			return fill(kerr.InvalidTxnState.Code)
		}
		return fill(resp.ErrorCode)
	}
	for i := range codes {
		codes[i] = kerr.InvalidTxnState.Code
	}
	for _, tx := range resp.Transactions {
		if tx.TransactionalID != txnID {
			continue
		}
		for _, t := range tx.Topics {
			for _, pr := range t.Partitions {
				for i, c := range checks {
					if c.topic != t.Topic || c.partition != pr.Partition {
						continue
					}
					code := pr.ErrorCode
					switch code {
					case kerr.ProducerFenced.Code:
						code = kerr.InvalidProducerEpoch.Code
					case kerr.TransactionAbortable.Code:
						code = kerr.InvalidTxnState.Code
					}
					codes[i] = verificationProduceCode(code)
				}
			}
		}
	}
	return codes
}

// verificationProduceCode maps a verification's error to the produce answer (see
// txnVerificationCodes).
func verificationProduceCode(code int16) int16 {
	switch code {
	case kerr.ConcurrentTransactions.Code, kerr.NetworkException.Code, kerr.CoordinatorLoadInProgress.Code,
		kerr.CoordinatorNotAvailable.Code, kerr.NotCoordinator.Code:
		return kerr.NotEnoughReplicas.Code
	}
	return code
}
