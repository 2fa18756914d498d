package txn

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Ending a transaction (Kafka's TransactionMarkerChannelManager). Once PrepareCommit or
// PrepareAbort is stored, every partition of the transaction gets a marker — a
// WriteTxnMarkers (v1) to its current leader — and every group whose offsets it
// committed is told (GroupOffsets). The marker loop batches: one request per leader at
// a time, holding every marker due there (of any transaction); what falls due while it
// is in flight goes in the next. A partition that does not take its marker (not the
// leader any more, offline, a node that does not answer) is tried again after a backoff
// that doubles up to markerRetryMax, at whichever node leads it then; a partition
// deleted meanwhile counts as done. When every partition and group has taken it, the
// coordinator stores CompleteCommit or CompleteAbort.

// MarkerVersion is the WriteTxnMarkers version the coordinator sends.
const MarkerVersion = 1

// ending is what remains of ending one transaction.
type ending struct {
	commit     bool
	producerID int64
	epoch      int16
	start      time.Time
	partitions map[topicPartition]*markerState
	groups     map[string]*markerState
	// completing is set while Complete* is being written; completeAfter delays the
	// next attempt after a failed one.
	completing    bool
	completeAfter time.Time
	// waiters are the requests waiting for this transaction to complete (waitEnd):
	// its EndTxn, and InitProducerIds of its transactional id.
	waiters []*endWaiter
}

// endResult is how a wait for a transaction's completion ended.
type endResult int

const (
	endComplete endResult = iota // Complete* stored
	endTimedOut                  // Config.EndTxnCompleteWait passed first
	endStopped                   // the term ended first
)

// endWaiter is a request waiting for its transaction to complete, at most until its
// timer fires.
type endWaiter struct {
	done  func(endResult)
	timer clockwork.Timer
}

// markerState is one partition's (or group's) marker: in flight, or due at notBefore.
type markerState struct {
	inflight  bool
	attempts  int
	notBefore time.Time
}

// beginEnding starts sending m's markers (m is in PrepareCommit or PrepareAbort).
func (co *Coordinator) beginEnding(m *txnMeta) {
	e := &ending{commit: m.state == StatePrepareCommit, producerID: m.producerID, epoch: m.epoch,
		start: co.clock.Now(), partitions: map[topicPartition]*markerState{}, groups: map[string]*markerState{}}
	for tp := range m.partitions {
		e.partitions[tp] = &markerState{}
	}
	for g := range m.groups {
		e.groups[g] = &markerState{}
	}
	m.ending = e
	co.wakeMarkers()
}

// awaitEnd answers an EndTxn of e's transaction (its Prepare* stored) once the
// transaction is complete, or with 0 anyway after Config.EndTxnCompleteWait. The answer
// is 0 either way: the outcome is decided and durable once Prepare* is stored, which is
// why Kafka answers then. Waiting only spares the producer the CONCURRENT_TRANSACTIONS
// its next AddPartitionsToTxn (and its partition leaders' verification) would get until
// Complete* is stored, and the client's backoff after it. reply runs with mu held.
func (co *Coordinator) awaitEnd(e *ending, reply func(code int16)) {
	if co.cfg.EndTxnCompleteWait < 0 {
		reply(0)
		return
	}
	co.waitEnd(e, func(r endResult) {
		switch r {
		case endTimedOut:
			co.metrics.endBeforeCompleteWait.Inc()
		case endStopped:
			co.metrics.endBeforeCompleteStopped.Inc()
		}
		reply(0)
	})
}

// waitEnd calls done once e's transaction is complete, once Config.EndTxnCompleteWait
// has passed, or once the term ends, whichever comes first: always once, with mu held
// as every answer is. Those are the only ends of a wait: an id in Prepare* is not
// fenced, aborted or expired, and a failed Complete* write is tried again while the
// waiters wait; when the term ends (stop, or a Complete* write refused as not active)
// the next term loads Prepare* and completes the transaction.
func (co *Coordinator) waitEnd(e *ending, done func(endResult)) {
	if co.stopped { // a write stored as the term ended
		done(endStopped)
		return
	}
	w := &endWaiter{done: done}
	e.waiters = append(e.waiters, w)
	w.timer = co.clock.AfterFunc(co.cfg.EndTxnCompleteWait, func() {
		co.mu.Lock()
		defer co.mu.Unlock()
		i := slices.Index(e.waiters, w)
		if i < 0 {
			return // answered meanwhile
		}
		e.waiters = slices.Delete(e.waiters, i, i+1)
		w.done(endTimedOut)
	})
}

// answerEnd ends every wait for e with r.
func (co *Coordinator) answerEnd(e *ending, r endResult) {
	waiters := e.waiters
	e.waiters = nil
	for _, w := range waiters {
		w.timer.Stop()
		w.done(r)
	}
}

// retry counts a failed attempt and sets when to try again.
func (co *Coordinator) retry(st *markerState, now time.Time) {
	st.inflight = false
	st.attempts++
	backoff := co.cfg.MarkerRetryBackoff << min(st.attempts-1, 16)
	st.notBefore = now.Add(min(backoff, markerRetryMax))
	co.metrics.markerRetries.Inc()
}

// runMarkers is the marker loop: it sends what is due, and looks again when woken
// (an answer, a new ending) or when the next retry falls due.
func (co *Coordinator) runMarkers(ctx context.Context) {
	t := co.clock.NewTimer(time.Hour)
	defer t.Stop()
	for {
		wait := co.sendDue(ctx)
		t.Stop()
		if wait > 0 {
			t.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-co.wake:
		case <-t.Chan():
		}
	}
}

// markerRef ties a marker of a request to the transaction it ends.
type markerRef struct {
	m *txnMeta
	e *ending
}

// groupJob is one group to tell of a transaction's end.
type groupJob struct {
	m     *txnMeta
	e     *ending
	group string
	st    *markerState
}

// sendDue sends every marker due now, one request per leader not busy, tells the groups
// due, and completes the transactions with nothing left. It returns how long until the
// next retry falls due (0: none is waiting).
func (co *Coordinator) sendDue(ctx context.Context) time.Duration {
	co.mu.Lock()
	if co.stopped {
		co.mu.Unlock()
		return 0
	}
	now := co.clock.Now()
	var wait time.Duration
	due := func(st *markerState) bool {
		if st.inflight {
			return false
		}
		if d := st.notBefore.Sub(now); d > 0 {
			if wait == 0 || d < wait {
				wait = d
			}
			return false
		}
		return true
	}
	reqs := map[int32]*kmsg.WriteTxnMarkersRequest{}
	refs := map[int32][]markerRef{}
	var jobs []groupJob
	for _, id := range slices.Sorted(maps.Keys(co.txns)) {
		m := co.txns[id]
		e := m.ending
		if e == nil || e.completing {
			continue
		}
		byNode := map[int32]map[string][]int32{}
		for _, tp := range sortedPartitions(e.partitions) {
			st := e.partitions[tp]
			if !due(st) {
				continue
			}
			leader, exists := co.leader(tp.Topic, tp.Partition)
			switch {
			case !exists:
				delete(e.partitions, tp) // deleted: nothing to end there
				continue
			case leader < 0:
				co.retry(st, now) // offline: wait for a leader
				if d := st.notBefore.Sub(now); wait == 0 || d < wait {
					wait = d
				}
				continue
			case co.busy[leader]:
				continue // goes in the next request, when this one is answered
			}
			if byNode[leader] == nil {
				byNode[leader] = map[string][]int32{}
			}
			byNode[leader][tp.Topic] = append(byNode[leader][tp.Topic], tp.Partition)
			st.inflight = true
		}
		for node, topics := range byNode {
			req := reqs[node]
			if req == nil {
				req = kmsg.NewPtrWriteTxnMarkersRequest()
				req.SetVersion(MarkerVersion)
				reqs[node] = req
			}
			mk := kmsg.NewWriteTxnMarkersRequestMarker()
			mk.ProducerID, mk.ProducerEpoch, mk.Committed, mk.CoordinatorEpoch = e.producerID, e.epoch, e.commit, co.epoch
			for _, topic := range slices.Sorted(maps.Keys(topics)) {
				mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
				mt.Topic, mt.Partitions = topic, topics[topic]
				mk.Topics = append(mk.Topics, mt)
			}
			req.Markers = append(req.Markers, mk)
			refs[node] = append(refs[node], markerRef{m: m, e: e})
		}
		if co.groups != nil {
			for _, g := range slices.Sorted(maps.Keys(e.groups)) {
				if st := e.groups[g]; due(st) {
					st.inflight = true
					jobs = append(jobs, groupJob{m: m, e: e, group: g, st: st})
				}
			}
		}
		if len(e.partitions) == 0 && len(e.groups) == 0 {
			if d := e.completeAfter.Sub(now); d > 0 {
				if wait == 0 || d < wait {
					wait = d
				}
			} else {
				co.complete(m, e)
			}
		}
	}
	for node, req := range reqs {
		co.busy[node] = true
		n := 0
		for _, mk := range req.Markers {
			for _, t := range mk.Topics {
				n += len(t.Partitions)
			}
		}
		co.metrics.markersSent.Add(n)
		co.metrics.markerRequests.Inc()
		co.metrics.markersInFlight.Add(int64(n))
	}
	co.mu.Unlock()
	for node, req := range reqs {
		go co.send(ctx, node, req, refs[node])
	}
	for _, j := range jobs {
		co.groups.CompleteTxn(j.group, j.e.producerID, j.e.commit, func(err error) {
			co.mu.Lock()
			defer co.mu.Unlock()
			if err != nil {
				co.logger.Debug("group did not take a transaction's end; retrying", "group", j.group, "err", err)
				co.retry(j.st, co.clock.Now())
			} else {
				delete(j.e.groups, j.group)
			}
			j.st.inflight = false
			co.wakeMarkers()
		})
	}
	return wait
}

// send sends one request to node and applies its answer.
func (co *Coordinator) send(ctx context.Context, node int32, req *kmsg.WriteTxnMarkersRequest, refs []markerRef) {
	var resp *kmsg.WriteTxnMarkersResponse
	err := errNoSender
	if co.markers != nil {
		rctx, cancel := context.WithTimeout(ctx, markerRequestTimeout)
		resp, err = co.markers.WriteTxnMarkers(rctx, node, req)
		cancel()
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	defer co.wakeMarkers()
	delete(co.busy, node)
	if err != nil {
		co.logger.Debug("transaction markers not delivered; retrying", "node", node, "err", err)
	}
	// The answer's codes, by producer id and partition.
	codes := map[int64]map[topicPartition]int16{}
	if err == nil {
		for _, mk := range resp.Markers {
			if codes[mk.ProducerID] == nil {
				codes[mk.ProducerID] = map[topicPartition]int16{}
			}
			for _, t := range mk.Topics {
				for _, p := range t.Partitions {
					codes[mk.ProducerID][topicPartition{Topic: t.Topic, Partition: p.Partition}] = p.ErrorCode
				}
			}
		}
	}
	now := co.clock.Now()
	for i, mk := range req.Markers {
		ref := refs[i]
		for _, t := range mk.Topics {
			for _, p := range t.Partitions {
				co.metrics.markersInFlight.Add(-1)
				tp := topicPartition{Topic: t.Topic, Partition: p}
				st := ref.e.partitions[tp]
				if st == nil || ref.m.ending != ref.e {
					continue
				}
				code, answered := codes[mk.ProducerID][tp]
				switch {
				case err != nil || !answered:
					co.retry(st, now)
				case code == 0:
					delete(ref.e.partitions, tp)
				case code == kerr.UnknownTopicOrPartition.Code:
					if _, exists := co.leader(tp.Topic, tp.Partition); !exists {
						delete(ref.e.partitions, tp) // deleted meanwhile
					} else {
						co.retry(st, now)
					}
				case code == kerr.InvalidProducerEpoch.Code:
					// The partition has seen a later epoch of the producer: this
					// transaction was ended there.
					co.logger.Warn("a partition refused a transaction marker for a later producer epoch",
						"topic", tp.Topic, "partition", tp.Partition, "producer_id", mk.ProducerID, "epoch", mk.ProducerEpoch)
					delete(ref.e.partitions, tp)
				default:
					co.retry(st, now)
				}
			}
		}
	}
}

// errNoSender fails every marker when the coordinator has no MarkerSender.
var errNoSender = errors.New("txn: no marker sender")

// complete writes CompleteCommit or CompleteAbort once every marker of e is taken;
// a failed write is tried again at the next pass.
func (co *Coordinator) complete(m *txnMeta, e *ending) {
	if m.pending {
		return // a fence being written (not possible while ending): the next pass
	}
	e.completing = true
	next := m.txnData.clone()
	next.state = StateCompleteAbort
	if e.commit {
		next.state = StateCompleteCommit
	}
	next.updateMs = co.clock.Now().UnixMilli()
	clear(next.partitions)
	clear(next.groups)
	co.transition(m, next, func(code int16) {
		e.completing = false
		switch code {
		case 0:
			if m.ending == e {
				m.ending = nil
			}
			co.metrics.completionLatency.Update(co.clock.Since(e.start).Seconds())
			co.metrics.completed.Inc()
			co.answerEnd(e, endComplete)
		case notActiveCode:
			co.answerEnd(e, endStopped)
		default:
			e.completeAfter = co.clock.Now().Add(markerRetryMax) // tried again then
			co.wakeMarkers()
		}
	})
}

// sortedPartitions returns the partitions of a set in order.
func sortedPartitions[V any](set map[topicPartition]V) []topicPartition {
	out := slices.Collect(maps.Keys(set))
	slices.SortFunc(out, func(a, b topicPartition) int {
		if a.Topic != b.Topic {
			if a.Topic < b.Topic {
				return -1
			}
			return 1
		}
		return int(a.Partition) - int(b.Partition)
	})
	return out
}
