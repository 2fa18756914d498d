package replica

import (
	"fmt"
	"math"
	"time"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Transactions on a partition (KIP-98): which transactions are open, the last stable
// offset (LSO) they hold back, and the aborted-transaction index their abort markers
// fill. docs/transactions.md describes the whole.
//
// The LSO is the first offset a read_committed consumer may not read: the smallest first
// offset over the open transactions and over those whose marker is written but not yet
// below the high watermark, capped by the high watermark (Kafka's firstUnstableOffset).
// Fetches read it lock-free: the partition publishes, under the append lock, the bounds
// it is computed from (txnBounds) whenever the transactions change; with no transaction
// at all there are no bounds and the LSO is the high watermark, one atomic load more.

// txnBounds is what the LSO is computed from, with the high watermark.
type txnBounds struct {
	// ongoingFirst is the smallest first offset of an open transaction (MaxInt64: none).
	ongoingFirst int64
	// completedFirst is the smallest first offset of a closed transaction whose marker
	// may not be below the high watermark; completedMarkerMin and completedMarkerMax
	// are the smallest and largest of their markers' offsets (MaxInt64, -1: none).
	completedFirst                         int64
	completedMarkerMin, completedMarkerMax int64
	// ongoing is the number of open transactions.
	ongoing int
}

// lso is the last stable offset at high watermark hw. While any closed transaction's
// marker is still at or above hw, all of them count (the pruning that drops those
// below it runs at the next append or high-watermark move): the LSO is then lower than
// it might be for a moment, never higher.
func (b *txnBounds) lso(hw int64) int64 {
	lso := min(hw, b.ongoingFirst)
	if hw <= b.completedMarkerMax {
		lso = min(lso, b.completedFirst)
	}
	return lso
}

// bounds computes the bounds of the current transactions, nil when there are none.
func (ps *producerStates) bounds() *txnBounds {
	if len(ps.ongoing) == 0 && len(ps.completed) == 0 {
		return nil
	}
	b := &txnBounds{ongoingFirst: math.MaxInt64, completedFirst: math.MaxInt64, completedMarkerMin: math.MaxInt64,
		completedMarkerMax: -1, ongoing: len(ps.ongoing)}
	for _, first := range ps.ongoing {
		b.ongoingFirst = min(b.ongoingFirst, first)
	}
	for _, c := range ps.completed {
		b.completedFirst = min(b.completedFirst, c.first)
		b.completedMarkerMin = min(b.completedMarkerMin, c.marker)
		b.completedMarkerMax = max(b.completedMarkerMax, c.marker)
	}
	return b
}

// lastStableAfter is the LSO right after producer pid's marker at offset closes its
// transaction, not counting replication (Kafka's lastStableOffset(CompletedTxn)): the
// first offset of the earliest other open transaction, else the offset after the
// marker. It goes into the aborted index entry.
func (ps *producerStates) lastStableAfter(pid, marker int64) int64 {
	lso := marker + 1
	for id, first := range ps.ongoing {
		if id != pid {
			lso = min(lso, first)
		}
	}
	return lso
}

// applyMarker records producer pid's transaction marker at offset, written at epoch
// (Kafka's appendEndTxnMarker, without its checks: checkMarker makes them on a leader):
// its open transaction, if any, closes (an abort returns its index entry), and the
// marker's epoch and coordinator epoch become the producer's.
func (ps *producerStates) applyMarker(pid int64, epoch int16, m proto.TxnMarker, offset int64) (segment.AbortedTxn, bool) {
	if ps.m == nil {
		ps.m = map[int64]*producerState{}
	}
	st := ps.m[pid]
	if st == nil {
		st = newProducerState(epoch)
		ps.m[pid] = st
	}
	st.setEpoch(epoch)
	st.coordinatorEpoch = m.CoordinatorEpoch
	delete(ps.verifying, pid)
	if st.txnFirst < 0 {
		return segment.AbortedTxn{}, false // an empty transaction: nothing to close
	}
	e := segment.AbortedTxn{ProducerID: pid, FirstOffset: st.txnFirst, LastOffset: offset,
		LastStableOffset: ps.lastStableAfter(pid, offset)}
	delete(ps.ongoing, pid)
	st.txnFirst = -1
	ps.completed = append(ps.completed, completedTxn{producerID: pid, first: e.FirstOffset, marker: offset})
	ps.txnChanged = true
	return e, !m.Commit
}

// checkMarker is the leader's check of a marker the coordinator asks for (Kafka's
// checkProducerEpoch and checkCoordinatorEpoch for the coordinator's appends).
func (ps *producerStates) checkMarker(pid int64, epoch int16, coordinatorEpoch int32) int16 {
	st := ps.m[pid]
	switch {
	case st == nil:
		return 0
	case epoch < st.epoch:
		return kerr.InvalidProducerEpoch.Code
	case coordinatorEpoch < st.coordinatorEpoch:
		return kerr.TransactionCoordinatorFenced.Code
	}
	return 0
}

// pruneCompleted forgets the closed transactions whose marker is below hw.
func (ps *producerStates) pruneCompleted(hw int64) {
	n := 0
	for _, c := range ps.completed {
		if c.marker >= hw {
			ps.completed[n] = c
			n++
		}
	}
	if n != len(ps.completed) {
		clear(ps.completed[n:])
		ps.completed = ps.completed[:n]
		ps.txnChanged = true
	}
}

// publishTxnBounds publishes the bounds of the LSO after a change of the transactions,
// and reports whether it did. The caller holds mu.
func (p *Partition) publishTxnBounds() bool {
	if !p.producers.txnChanged {
		return false
	}
	p.producers.txnChanged = false
	p.txnBounds.Store(p.producers.bounds())
	return true
}

// pruneTxnsLocked drops the closed transactions now below the high watermark and
// publishes the bounds if they changed, reporting whether they did. The caller holds mu.
func (p *Partition) pruneTxnsLocked() bool {
	if len(p.producers.completed) > 0 {
		p.producers.pruneCompleted(p.highWatermark.Load())
	}
	return p.publishTxnBounds()
}

// maybePruneTxns prunes after a high-watermark move made without the append lock (a
// follower's fetch), if a closed transaction's marker is now below it and the lock is
// free — a holder of the lock is an append, which prunes at its end —, and reports
// whether the LSO's bounds changed (the parked requests must then be woken).
func (p *Partition) maybePruneTxns() bool {
	if b := p.txnBounds.Load(); b == nil || b.completedMarkerMin >= p.highWatermark.Load() || !p.mu.TryLock() {
		return false
	}
	changed := p.pruneTxnsLocked()
	p.mu.Unlock()
	return changed
}

// LastStableOffset is the offset below which every record is decided (committed, or
// aborted with its marker replicated): read_committed consumers read below it. It is
// the high watermark when no transaction is open or unreplicated. Lock-free.
func (p *Partition) LastStableOffset() int64 {
	hw := p.highWatermark.Load() // first: the bounds only ever cover offsets at or above it
	if b := p.txnBounds.Load(); b != nil {
		return b.lso(hw)
	}
	return hw
}

// OngoingTxns is the number of transactions open on the partition. Lock-free.
func (p *Partition) OngoingTxns() int {
	if b := p.txnBounds.Load(); b != nil {
		return b.ongoing
	}
	return 0
}

// NeedsTxnVerification reports whether a transactional batch of producer pid at epoch
// must be verified with the transaction coordinator before it is appended (KIP-890
// part 1): the producer has no transaction open on the partition at that epoch.
func (p *Partition) NeedsTxnVerification(pid int64, epoch int16) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.producers.m[pid]
	return st == nil || st.txnFirst < 0 || st.epoch != epoch
}

// BeginTxnVerification records that producer pid's transaction at epoch is being
// verified with the coordinator for a batch from sequence seq (Kafka's
// maybeStartTransactionVerification) and returns the guard its append passes once the
// coordinator confirmed it. Verifications of the same epoch share one guard (requests
// pipelined before the first is verified), and the lowest sequence among them must be
// appended first (a batch above it is OUT_OF_ORDER_SEQUENCE_NUMBER until then, as
// Kafka's checkSequence has it). A marker for the producer, or its transaction opening,
// ends the verification: a guard taken before a marker opens nothing after it. At most
// one verification per producer id is kept, as its state is.
func (p *Partition) BeginTxnVerification(pid int64, epoch int16, seq int32) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v, ok := p.producers.verifying[pid]; ok && v.epoch >= epoch {
		v.lowestSeq = min(v.lowestSeq, seq)
		p.producers.verifying[pid] = v
		return v.guard
	}
	p.txnGuards++
	if p.producers.verifying == nil {
		p.producers.verifying = map[int64]txnVerification{}
	}
	p.producers.verifying[pid] = txnVerification{epoch: epoch, guard: p.txnGuards, lowestSeq: seq}
	return p.txnGuards
}

// MarkerResult is AppendTxnMarker's outcome.
type MarkerResult struct {
	// ErrorCode refuses the marker (0: written).
	ErrorCode int16
	// Offset is the marker's offset.
	Offset int64
	// Aborted is set when the marker aborted a transaction (its index entry was added).
	Aborted bool
	// Err is the storage error behind a KAFKA_STORAGE_ERROR.
	Err error
}

// AppendTxnMarker writes, as leader, the marker the transaction coordinator asks for
// (WriteTxnMarkers): a control batch for producer pid at epoch ending its transaction on
// this partition with m (commit or abort), after Kafka's checks — an epoch below the
// producer's is INVALID_PRODUCER_EPOCH, a coordinator epoch below its last marker's
// TRANSACTION_COORDINATOR_FENCED. The producer's open transaction closes and, for an
// abort, its entry goes into the aborted-transaction index. The marker moves the high
// watermark like any append; the caller waits for it to pass Offset (acks=all).
// scratch is a buffer to build the batch in (it may be nil).
func (p *Partition) AppendTxnMarker(pid int64, epoch int16, m proto.TxnMarker, scratch []byte) (MarkerResult, []byte) {
	p.mu.Lock()
	role, leaderEpoch := p.loadState()
	if role != RoleLeader {
		p.mu.Unlock()
		return MarkerResult{ErrorCode: kerr.NotLeaderForPartition.Code, Offset: -1}, scratch
	}
	if code := p.producers.checkMarker(pid, epoch, m.CoordinatorEpoch); code != 0 {
		p.mu.Unlock()
		return MarkerResult{ErrorCode: code, Offset: -1}, scratch
	}
	batch := proto.AppendTxnMarkerBatch(scratch[:0], pid, epoch, m, time.Now().UnixMilli())
	info, err := p.log.AppendValidated([][]byte{batch}, leaderEpoch)
	if err != nil {
		p.mu.Unlock()
		return MarkerResult{ErrorCode: kerr.KafkaStorageError.Code, Offset: -1, Err: err}, batch
	}
	res := MarkerResult{Offset: info.FirstOffset}
	if e, aborted := p.producers.applyMarker(pid, epoch, m, info.FirstOffset); aborted {
		res.Aborted = true
		if err := p.log.AppendAbortedTxn(e); err != nil {
			// The marker is in the log: the index entry is put back when the replica
			// next opens (its replay of the markers).
			p.logger.Error("aborted-transaction index append failed", "topic", p.Topic, "partition", p.Index, "err", err)
		}
	}
	p.publishTxnBounds()
	p.maybeIncrementHighWatermark(info.LastOffset + 1)
	p.pruneTxnsLocked()
	p.maybeSnapshot(info.SegmentBaseOffset)
	p.mu.Unlock()
	p.wakeWaiters()
	return res, batch
}

// trackMarker keeps the transactions from a control batch a follower appended (batch is
// the whole batch): the marker closes its producer's transaction, and an abort's entry
// goes into the aborted index. The caller holds mu.
func (p *Partition) trackMarker(batch []byte, h *proto.RecordBatchHeader) {
	m, err := proto.ParseTxnMarker(batch)
	if err != nil {
		p.logger.Warn("control batch without a transaction marker ignored", "topic", p.Topic, "partition", p.Index,
			"offset", h.BaseOffset, "err", err)
		return
	}
	if e, aborted := p.producers.applyMarker(h.ProducerID, h.ProducerEpoch, m, h.BaseOffset); aborted {
		if err := p.log.AppendAbortedTxn(e); err != nil {
			p.logger.Error("aborted-transaction index append failed", "topic", p.Topic, "partition", p.Index, "err", err)
		}
	}
}

// rebuildProducers rebuilds the producer state from the newest usable snapshot
// (snapshot.go) and the log after it — from the log start if there is none —, puts the
// aborted index back in line with the markers replayed, and publishes the LSO's bounds.
// The caller holds mu (or owns p).
func (p *Partition) rebuildProducers() error {
	dir, leo := p.log.Dir(), p.log.LogEndOffset()
	removeSnapshotsAbove(dir, leo)
	var (
		aborted  []segment.AbortedTxn
		replayed int
		ok       bool
		err      error
	)
	ps, from, found := p.loadSnapshot(min(leo, p.log.RecoveredFrom()))
	if found {
		p.producers = ps
		aborted, replayed, ok, err = replayFrom(&p.producers, p.log, from)
	}
	if !found || !ok {
		p.producers.reset()
		from = p.log.LogStartOffset()
		aborted, replayed, _, err = replayFrom(&p.producers, p.log, from)
	}
	p.replayed = replayed
	p.producers.txnChanged = true
	if err != nil {
		p.publishTxnBounds()
		return fmt.Errorf("replica: rebuild producer state of %s-%d: %w", p.Topic, p.Index, err)
	}
	if n, err := p.log.SyncAbortedTxns(from, aborted); err != nil {
		return fmt.Errorf("replica: aborted-transaction index of %s-%d: %w", p.Topic, p.Index, err)
	} else if n > 0 {
		p.logger.Warn("aborted-transaction index rebuilt from the log's markers", "topic", p.Topic, "partition", p.Index, "segments", n)
	}
	p.pruneTxnsLocked()
	return nil
}

// reset empties the producer state, keeping nothing.
func (ps *producerStates) reset() { *ps = producerStates{} }
