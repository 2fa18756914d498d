package txn

import (
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/client"
)

// APIs are the keys the coordinator serves, with the highest version of each. (Kafka's
// AddPartitionsToTxn v4 is the batched form partition leaders send, VerifyOnly for
// KIP-890's check; clients use v0-3.)
var APIs = map[int16]int16{
	int16(kmsg.InitProducerID):       4,
	int16(kmsg.AddPartitionsToTxn):   4,
	int16(kmsg.AddOffsetsToTxn):      3,
	int16(kmsg.EndTxn):               3,
	int16(kmsg.DescribeTransactions): 0,
	int16(kmsg.ListTransactions):     0,
}

// fencedCode is how a version tells a producer it is fenced: PRODUCER_FENCED from the
// version that knows it (KIP-588), INVALID_PRODUCER_EPOCH before.
func fencedCode(code int16, key, version int16) int16 {
	if code != kerr.ProducerFenced.Code {
		return code
	}
	first := int16(2) // AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit
	if key == int16(kmsg.InitProducerID) {
		first = 4
	}
	if version < first {
		return kerr.InvalidProducerEpoch.Code
	}
	return code
}

// Handle applies one request and answers it, now or once its state change is stored
// (EndTxn: once its transaction is complete, within a bound; see awaitEnd). It returns
// once the request is applied, so a caller applying a connection's requests one after
// the other keeps their order. Until the coordinator has loaded, every request is
// answered COORDINATOR_LOAD_IN_PROGRESS.
func (co *Coordinator) Handle(h Header, req kmsg.Request, ans Answer) {
	co.metrics.request(h.Key)
	send := func(resp kmsg.Response) {
		resp.SetVersion(h.Version)
		ans.Response(resp.AppendTo(nil))
	}
	select {
	case <-co.loaded:
		if co.loadErr != nil {
			ans.NotActive()
			return
		}
	default:
		send(errorResponse(req, kerr.CoordinatorLoadInProgress.Code))
		return
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.stopped {
		ans.NotActive()
		return
	}
	// reply answers with one code for the whole request (or each partition of it).
	reply := func(code int16) {
		if code == notActiveCode {
			ans.NotActive()
			return
		}
		send(errorResponse(req, fencedCode(code, h.Key, h.Version)))
	}
	switch req := req.(type) {
	case *kmsg.InitProducerIDRequest:
		co.handleInit(req, func(code int16, pid int64, epoch int16) {
			if code != 0 {
				reply(code)
				return
			}
			resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
			resp.ProducerID, resp.ProducerEpoch = pid, epoch
			send(resp)
		})
	case *kmsg.AddPartitionsToTxnRequest:
		co.handleAddPartitions(req, send, ans.NotActive)
	case *kmsg.AddOffsetsToTxnRequest:
		co.addToTxn(req.TransactionalID, req.ProducerID, req.ProducerEpoch, nil, req.Group, func(code int16, _ map[topicPartition]int16) {
			reply(code)
		})
	case *kmsg.EndTxnRequest:
		co.endTxn(req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Commit, reply)
	case *kmsg.DescribeTransactionsRequest:
		send(co.describe(req))
	case *kmsg.ListTransactionsRequest:
		send(co.list(req))
	default:
		ans.NotActive() // not ours: the node's dispatch sends only the APIs above
	}
}

// errorResponse is req's response with code wherever it has an error: the request's
// or each partition's.
func errorResponse(req kmsg.Request, code int16) kmsg.Response {
	resp := req.ResponseKind()
	switch req := req.(type) {
	case *kmsg.InitProducerIDRequest:
		r := resp.(*kmsg.InitProducerIDResponse)
		r.ErrorCode, r.ProducerID, r.ProducerEpoch = code, noProducerID, noProducerEpoch
	case *kmsg.AddPartitionsToTxnRequest:
		r := resp.(*kmsg.AddPartitionsToTxnResponse)
		if req.Version < 4 {
			r.Topics = client.AddPartitionsTopicsAnswer(req.Topics, func(string, int32) int16 { return code })
			break
		}
		for _, t := range req.Transactions {
			r.Transactions = append(r.Transactions, client.AddPartitionsTxnAnswer(t, func(string, int32) int16 { return code }))
		}
	case *kmsg.AddOffsetsToTxnRequest:
		resp.(*kmsg.AddOffsetsToTxnResponse).ErrorCode = code
	case *kmsg.EndTxnRequest:
		r := resp.(*kmsg.EndTxnResponse)
		r.ErrorCode, r.ProducerID, r.ProducerEpoch = code, noProducerID, noProducerEpoch
	case *kmsg.DescribeTransactionsRequest:
		r := resp.(*kmsg.DescribeTransactionsResponse)
		for _, id := range req.TransactionalIDs {
			st := kmsg.NewDescribeTransactionsResponseTransactionState()
			st.TransactionalID, st.ErrorCode = id, code
			r.TransactionStates = append(r.TransactionStates, st)
		}
	case *kmsg.ListTransactionsRequest:
		resp.(*kmsg.ListTransactionsResponse).ErrorCode = code
	}
	return resp
}

// producerIDEpoch is what an InitProducerId v3+ names to recover (KIP-360).
type producerIDEpoch struct {
	id    int64
	epoch int16
}

// handleInit answers InitProducerId with a transactional id (Kafka's
// handleInitProducerId): a new id gets a producer id and epoch 0; later calls bump the
// epoch, fencing the producer that had it, after aborting the transaction it left
// ongoing (answered CONCURRENT_TRANSACTIONS meanwhile: the producer retries); an
// exhausted epoch moves to a new producer id.
func (co *Coordinator) handleInit(req *kmsg.InitProducerIDRequest, reply func(code int16, pid int64, epoch int16)) {
	fail := func(code int16) { reply(code, noProducerID, noProducerEpoch) }
	if req.TransactionalID == nil {
		// Not sent here by the data plane (it hands out idempotent producers' ids
		// itself), but valid: a fresh id, as Kafka.
		if id, ok := co.takeID(); ok {
			reply(0, id, 0)
		} else {
			fail(kerr.CoordinatorLoadInProgress.Code)
		}
		return
	}
	id := *req.TransactionalID
	timeout := time.Duration(req.TransactionTimeoutMillis) * time.Millisecond
	var expected *producerIDEpoch
	if req.Version >= 3 && (req.ProducerID != noProducerID || req.ProducerEpoch != noProducerEpoch) {
		if req.ProducerID == noProducerID || req.ProducerEpoch == noProducerEpoch {
			fail(kerr.InvalidRequest.Code)
			return
		}
		expected = &producerIDEpoch{req.ProducerID, req.ProducerEpoch}
	}
	switch {
	case id == "" || len(id) > idLenMax:
		fail(kerr.InvalidRequest.Code)
		return
	case req.TransactionTimeoutMillis <= 0 || timeout > co.cfg.MaxTimeout:
		fail(kerr.InvalidTransactionTimeout.Code)
		return
	}
	now := co.clock.Now().UnixMilli()
	m := co.txns[id]
	if m == nil {
		pid, ok := co.takeID()
		if !ok {
			fail(kerr.CoordinatorLoadInProgress.Code)
			return
		}
		// Held in memory from now on; its first write is the epoch bump below.
		m = &txnMeta{id: id, txnData: txnData{producerID: pid, lastProducerID: noProducerID,
			epoch: noProducerEpoch, lastEpoch: noProducerEpoch, timeoutMs: req.TransactionTimeoutMillis,
			state: StateEmpty, startMs: -1, updateMs: now}.clone()}
		co.txns[id] = m
		co.counts[StateEmpty]++
	}
	validExpected := func(e *producerIDEpoch) bool {
		// As Kafka: a new id (no epoch yet), the current producer id (the epoch is
		// checked below), or the previous one with an exhausted epoch (a retry of the
		// rotation whose answer the producer lost).
		return m.epoch == noProducerEpoch || e.id == m.producerID ||
			(e.id == m.lastProducerID && epochExhausted(e.epoch))
	}
	switch {
	case m.pending:
		fail(kerr.ConcurrentTransactions.Code)
		return
	case expected != nil && !validExpected(expected):
		fail(kerr.ProducerFenced.Code)
		return
	}
	// again answers once m's transaction has ended: the request applied anew, as the
	// producer's retry would be.
	again := func() {
		co.waitEnd(m.ending, func(r endResult) {
			co.metrics.initWaits[r].Inc()
			switch r {
			case endComplete:
				co.handleInit(req, reply)
			case endTimedOut:
				fail(kerr.ConcurrentTransactions.Code)
			default:
				fail(notActiveCode)
			}
		})
	}
	switch m.state {
	case StatePrepareCommit, StatePrepareAbort:
		// Kafka answers CONCURRENT_TRANSACTIONS, the producer retrying until the
		// markers are written; waiting for them (as EndTxn does) spares it the rounds.
		if m.ending == nil || co.cfg.EndTxnCompleteWait < 0 {
			fail(kerr.ConcurrentTransactions.Code)
			return
		}
		again()
	case StateOngoing:
		// Abort it first, with the epoch bumped (never returned), then bump the epoch
		// again once it has ended (Kafka answers CONCURRENT_TRANSACTIONS in between,
		// for the producer to retry).
		co.fenceAndAbort(m, func(code int16) {
			switch {
			case code != 0:
				fail(code)
			case m.ending == nil || co.cfg.EndTxnCompleteWait < 0:
				fail(kerr.ConcurrentTransactions.Code)
			default:
				again()
			}
		})
	default: // Empty, CompleteCommit, CompleteAbort
		next := m.txnData.clone()
		if epochExhausted(m.epoch) && (expected == nil || expected.epoch == m.epoch) {
			pid, ok := co.takeID()
			if !ok {
				fail(kerr.CoordinatorLoadInProgress.Code)
				return
			}
			next.lastProducerID, next.producerID, next.epoch, next.lastEpoch = m.producerID, pid, 0, noProducerEpoch
			if expected != nil {
				next.lastEpoch = m.epoch
			}
		} else {
			switch bumped := m.epoch + 1; {
			case expected == nil:
				next.epoch, next.lastEpoch = bumped, noProducerEpoch
			case m.epoch == noProducerEpoch || expected.epoch == m.epoch:
				next.epoch, next.lastEpoch = bumped, m.epoch
			case expected.epoch == m.lastEpoch:
				// A retry of a bump whose answer the producer lost: the same epoch again.
			default:
				fail(kerr.ProducerFenced.Code)
				return
			}
		}
		next.state, next.timeoutMs, next.startMs, next.updateMs = StateEmpty, req.TransactionTimeoutMillis, -1, now
		clear(next.partitions)
		clear(next.groups)
		co.transition(m, next, func(code int16) {
			if code != 0 {
				fail(code)
				return
			}
			reply(0, next.producerID, next.epoch)
		})
	}
}

// checkProducer applies the checks every request of a producer's transaction starts
// with (AddPartitionsToTxn, AddOffsetsToTxn, EndTxn): 0, or the code to answer.
func (co *Coordinator) checkProducer(id string, pid int64, epoch int16) (*txnMeta, int16) {
	m := co.txns[id]
	switch {
	case id == "":
		return nil, kerr.InvalidRequest.Code
	case m == nil || m.producerID != pid:
		return nil, kerr.InvalidProducerIDMapping.Code
	case m.epoch != epoch:
		return nil, kerr.ProducerFenced.Code
	case m.pending:
		return nil, kerr.ConcurrentTransactions.Code
	case m.state == StatePrepareCommit || m.state == StatePrepareAbort:
		return nil, kerr.ConcurrentTransactions.Code
	}
	return m, 0
}

// addToTxn adds partitions, or a group's offsets (AddOffsetsToTxn: group set), to
// id's transaction, beginning it if none is ongoing (Kafka's
// handleAddPartitionsToTransaction). done gets one code for all, or (codes set) one
// per partition: partitions that do not exist are refused and the others not tried,
// as Kafka does.
func (co *Coordinator) addToTxn(id string, pid int64, epoch int16, parts []topicPartition, group string,
	done func(code int16, codes map[topicPartition]int16)) {
	m, code := co.checkProducer(id, pid, epoch)
	if code != 0 {
		done(code, nil)
		return
	}
	if group == "" && len(parts) == 0 {
		done(0, nil)
		return
	}
	var unknown []topicPartition
	for _, tp := range parts {
		if _, ok := co.leader(tp.Topic, tp.Partition); !ok {
			unknown = append(unknown, tp)
		}
	}
	if len(unknown) > 0 {
		codes := map[topicPartition]int16{}
		for _, tp := range parts {
			codes[tp] = kerr.OperationNotAttempted.Code
		}
		for _, tp := range unknown {
			codes[tp] = kerr.UnknownTopicOrPartition.Code
		}
		done(0, codes)
		return
	}
	has := func() bool {
		if group != "" {
			_, ok := m.groups[group]
			return ok
		}
		for _, tp := range parts {
			if _, ok := m.partitions[tp]; !ok {
				return false
			}
		}
		return true
	}
	if m.state == StateOngoing && has() {
		done(0, nil) // nothing new: no write (Kafka's shortcut)
		return
	}
	now := co.clock.Now().UnixMilli()
	next := m.txnData.clone()
	if m.state != StateOngoing {
		next.startMs = now
		clear(next.partitions)
		clear(next.groups)
	}
	next.state, next.updateMs = StateOngoing, now
	for _, tp := range parts {
		next.partitions[tp] = struct{}{}
	}
	if group != "" {
		next.groups[group] = struct{}{}
	}
	co.transition(m, next, func(code int16) { done(code, nil) })
}

// verify answers a partition leader's check (AddPartitionsToTxn v4 VerifyOnly, KIP-890)
// from memory: each partition 0 if it is in producer pid's ongoing transaction at
// epoch, INVALID_TXN_STATE if not; or one code for all. A write of the id in flight
// (pending) is CONCURRENT_TRANSACTIONS, as for every other request, except a fence's:
// the transaction is ongoing at the old epoch until its PrepareAbort is stored, and the
// abort's markers close what the old epoch opens meanwhile (Kafka answers the same
// during PrepareEpochFence).
func (co *Coordinator) verify(id string, pid int64, epoch int16, parts []topicPartition) (int16, map[topicPartition]int16) {
	m := co.txns[id]
	switch {
	case id == "":
		return kerr.InvalidRequest.Code, nil
	case m == nil || m.producerID != pid:
		return kerr.InvalidProducerIDMapping.Code, nil
	case m.epoch != epoch:
		return kerr.ProducerFenced.Code, nil
	case m.pending && !m.fencing:
		return kerr.ConcurrentTransactions.Code, nil
	case m.state == StatePrepareCommit || m.state == StatePrepareAbort:
		return kerr.ConcurrentTransactions.Code, nil
	}
	codes := make(map[topicPartition]int16, len(parts))
	for _, tp := range parts {
		codes[tp] = kerr.InvalidTxnState.Code
		if _, ok := m.partitions[tp]; ok && m.state == StateOngoing {
			codes[tp] = 0
		}
	}
	return 0, codes
}

// handleAddPartitions answers AddPartitionsToTxn: v0-3 one producer's transaction;
// v4 several, each added to or (VerifyOnly) checked.
func (co *Coordinator) handleAddPartitions(req *kmsg.AddPartitionsToTxnRequest, send func(kmsg.Response), notActive func()) {
	resp := req.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
	codeOf := func(code int16, codes map[topicPartition]int16) func(string, int32) int16 {
		return func(topic string, partition int32) int16 {
			if code == 0 && codes != nil {
				code := codes[topicPartition{Topic: topic, Partition: partition}]
				return fencedCode(code, req.Key(), req.Version)
			}
			return fencedCode(code, req.Key(), req.Version)
		}
	}
	if req.Version < 4 {
		co.addToTxn(req.TransactionalID, req.ProducerID, req.ProducerEpoch, v3Partitions(req.Topics), "",
			func(code int16, codes map[topicPartition]int16) {
				if code == notActiveCode {
					notActive()
					return
				}
				resp.Topics = client.AddPartitionsTopicsAnswer(req.Topics, codeOf(code, codes))
				send(resp)
			})
		return
	}
	results := make([]kmsg.AddPartitionsToTxnResponseTransaction, len(req.Transactions))
	outstanding, lost := 1, false
	finish := func() {
		if outstanding--; outstanding > 0 {
			return
		}
		if lost {
			notActive()
			return
		}
		resp.Transactions = results
		send(resp)
	}
	for i, t := range req.Transactions {
		parts := v4Partitions(t.Topics)
		if t.VerifyOnly {
			code, codes := co.verify(t.TransactionalID, t.ProducerID, t.ProducerEpoch, parts)
			results[i] = client.AddPartitionsTxnAnswer(t, codeOf(code, codes))
			continue
		}
		outstanding++
		co.addToTxn(t.TransactionalID, t.ProducerID, t.ProducerEpoch, parts, "", func(code int16, codes map[topicPartition]int16) {
			if code == notActiveCode {
				lost = true
			}
			results[i] = client.AddPartitionsTxnAnswer(t, codeOf(code, codes))
			finish()
		})
	}
	finish()
}

func v3Partitions(topics []kmsg.AddPartitionsToTxnRequestTopic) []topicPartition {
	var out []topicPartition
	for _, t := range topics {
		for _, p := range t.Partitions {
			out = append(out, topicPartition{Topic: t.Topic, Partition: p})
		}
	}
	return out
}

func v4Partitions(topics []kmsg.AddPartitionsToTxnRequestTransactionTopic) []topicPartition {
	var out []topicPartition
	for _, t := range topics {
		for _, p := range t.Partitions {
			out = append(out, topicPartition{Topic: t.Topic, Partition: p})
		}
	}
	return out
}

// endTxn answers EndTxn (Kafka's endTransaction, transactions v1: no epoch bump per
// transaction): an ongoing transaction is written PrepareCommit or PrepareAbort, its
// markers follow, and it is answered once complete or after the bound (awaitEnd). A
// retry after the end is answered as the end was. A retry while the same end is still
// in Prepare* (the client gave up on the first answer) waits like the first, where
// Kafka answers CONCURRENT_TRANSACTIONS (as here when no wait is configured): the
// outcome asked for is already decided, so the client is told as soon as the end is
// complete, or at the bound, rather than made to poll.
func (co *Coordinator) endTxn(id string, pid int64, epoch int16, commit bool, reply func(code int16)) {
	m := co.txns[id]
	switch {
	case id == "":
		reply(kerr.InvalidRequest.Code)
		return
	case m == nil || m.producerID != pid:
		reply(kerr.InvalidProducerIDMapping.Code)
		return
	case m.epoch != epoch:
		reply(kerr.ProducerFenced.Code)
		return
	case m.pending && (m.ending == nil || !m.ending.completing):
		// (Complete* being written is the end a retry waits for, below.)
		reply(kerr.ConcurrentTransactions.Code)
		return
	}
	switch m.state {
	case StateOngoing:
		next := m.txnData.clone()
		next.state, next.updateMs = StatePrepareAbort, co.clock.Now().UnixMilli()
		if commit {
			next.state = StatePrepareCommit
		}
		co.transition(m, next, func(code int16) {
			if code != 0 {
				reply(code)
				return
			}
			co.beginEnding(m)
			co.awaitEnd(m.ending, reply)
		})
	case StateCompleteCommit, StateCompleteAbort:
		if commit == (m.state == StateCompleteCommit) {
			reply(0)
		} else {
			reply(kerr.InvalidTxnState.Code)
		}
	case StatePrepareCommit, StatePrepareAbort:
		switch {
		case commit != (m.state == StatePrepareCommit):
			reply(kerr.InvalidTxnState.Code)
		case m.ending != nil && co.cfg.EndTxnCompleteWait >= 0:
			co.awaitEnd(m.ending, reply)
		default: // no wait configured (Kafka's answer); or no ending, which Prepare* always has
			reply(kerr.ConcurrentTransactions.Code)
		}
	default: // Empty
		reply(kerr.InvalidTxnState.Code)
	}
}

// describe answers DescribeTransactions from memory.
func (co *Coordinator) describe(req *kmsg.DescribeTransactionsRequest) *kmsg.DescribeTransactionsResponse {
	resp := req.ResponseKind().(*kmsg.DescribeTransactionsResponse)
	for _, id := range req.TransactionalIDs {
		st := kmsg.NewDescribeTransactionsResponseTransactionState()
		st.TransactionalID = id
		m := co.txns[id]
		switch {
		case id == "":
			st.ErrorCode = kerr.InvalidRequest.Code
		case m == nil || m.state == StateDead:
			st.ErrorCode = kerr.TransactionalIDNotFound.Code
		default:
			st.State, st.TimeoutMillis, st.StartTimestamp = m.shownState().String(), m.timeoutMs, m.startMs
			st.ProducerID, st.ProducerEpoch = m.producerID, m.epoch
			for _, t := range sortedTopics(m.partitions) {
				rt := kmsg.NewDescribeTransactionsResponseTransactionStateTopic()
				rt.Topic, rt.Partitions = t.topic, t.partitions
				st.Topics = append(st.Topics, rt)
			}
		}
		resp.TransactionStates = append(resp.TransactionStates, st)
	}
	return resp
}

// list answers ListTransactions from memory: the ids in one of the states asked for
// (any if none) of one of the producer ids asked for (any if none). Names that are no
// state come back in UnknownStateFilters, as Kafka answers.
func (co *Coordinator) list(req *kmsg.ListTransactionsRequest) *kmsg.ListTransactionsResponse {
	resp := req.ResponseKind().(*kmsg.ListTransactionsResponse)
	states := map[State]bool{}
	for _, name := range req.StateFilters {
		if st, ok := stateFold(name); ok {
			states[st] = true
		} else {
			resp.UnknownStateFilters = append(resp.UnknownStateFilters, name)
		}
	}
	if len(req.StateFilters) > 0 && len(states) == 0 {
		return resp // only unknown states: nothing is in them
	}
	pids := map[int64]bool{}
	for _, p := range req.ProducerIDFilters {
		pids[p] = true
	}
	for _, id := range slices.Sorted(maps.Keys(co.txns)) {
		m := co.txns[id]
		shown := m.shownState()
		if shown == StateDead || len(states) > 0 && !states[shown] || len(pids) > 0 && !pids[m.producerID] {
			continue
		}
		st := kmsg.NewListTransactionsResponseTransactionState()
		st.TransactionalID, st.ProducerID, st.TransactionState = id, m.producerID, shown.String()
		resp.TransactionStates = append(resp.TransactionStates, st)
	}
	return resp
}
