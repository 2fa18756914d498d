package replica

import (
	"cmp"
	"math"
	"slices"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Idempotent and transactional producers (KIP-98): per partition, each producer id's
// epoch and the sequence ranges and offsets of its last five batches, and, for a
// transactional producer, the first offset of its open transaction here and the epoch of
// the coordinator that wrote its last marker (Kafka's ProducerStateManager). A retried
// batch (same sequences) is answered with the offset it got the first time and not
// written again; a gap in the sequence is refused. A producer's first transactional
// batch opens its transaction on the partition; the marker (a control batch the
// coordinator has the leader write, WriteTxnMarkers) closes it. The state is rebuilt from
// the log's batch headers and markers when the partition opens, so it survives restarts,
// and after a truncation; a follower keeps it from the batches it appends, so a retry
// after a failover is still recognised and the new leader knows the open transactions.
// txn.go has the transactions' side: the last stable offset and the aborted index.

// producerBatchesKept is how many recent batches per producer are remembered (clients
// keep at most five in flight).
const producerBatchesKept = 5

type producerBatch struct {
	firstSeq, lastSeq       int32
	firstOffset, lastOffset int64
}

type producerState struct {
	epoch int16
	// lastTimestamp is the largest timestamp of the producer's last batch.
	lastTimestamp int64
	// batches is a ring of the last batches, newest at (next-1) mod producerBatchesKept.
	batches [producerBatchesKept]producerBatch
	n, next int
	// txnFirst is the first offset of the producer's open transaction on the partition,
	// -1 when none.
	txnFirst int64
	// coordinatorEpoch is the coordinator epoch of the producer's last marker, -1 before
	// any.
	coordinatorEpoch int32
}

func newProducerState(epoch int16) *producerState {
	return &producerState{epoch: epoch, txnFirst: -1, coordinatorEpoch: -1}
}

// setEpoch moves the producer to epoch; a new epoch starts its sequences again (Kafka's
// maybeUpdateProducerEpoch), its transaction and coordinator epoch stay.
func (s *producerState) setEpoch(epoch int16) {
	if s.epoch != epoch {
		s.epoch, s.n, s.next = epoch, 0, 0
	}
}

func (s *producerState) last() *producerBatch {
	return &s.batches[(s.next+producerBatchesKept-1)%producerBatchesKept]
}

func (s *producerState) add(b producerBatch) {
	s.batches[s.next] = b
	s.next = (s.next + 1) % producerBatchesKept
	s.n = min(s.n+1, producerBatchesKept)
}

// producerStates maps producer ids to their state, with the partition's open and
// recently closed transactions. The partition's append lock (mu) guards it.
type producerStates struct {
	m map[int64]*producerState
	// ongoing maps each producer with an open transaction to its first offset (Kafka's
	// ongoingTxns).
	ongoing map[int64]int64
	// completed are the transactions whose marker is written but may not be below the
	// high watermark yet (Kafka's unreplicatedTxns), in marker order: they hold the last
	// stable offset until it passes their marker.
	completed []completedTxn
	// verifying holds, per producer, the transaction verification started for its first
	// transactional batch (KIP-890): the batch may open a transaction only with its
	// guard.
	verifying map[int64]txnVerification
	// txnChanged is set whenever ongoing or completed changes, so that the partition
	// publishes new bounds for the last stable offset.
	txnChanged bool
}

// completedTxn is a closed transaction: producer, first offset and marker offset.
type completedTxn struct {
	producerID, first, marker int64
}

// txnVerification is a verification in flight or confirmed: the epoch verified and the
// guard handed to the append.
type txnVerification struct {
	epoch int16
	guard uint64
	// lowestSeq is the lowest first sequence of the batches waiting for it.
	lowestSeq int32
}

// check classifies a validated batch: a duplicate of a recent batch (dup is its
// record), an error code, or fine to append (nil, 0).
func (ps *producerStates) check(h *proto.RecordBatchHeader) (dup *producerBatch, code int16) {
	return ps.checkGuarded(h, 0)
}

// checkGuarded is check for a batch whose transaction may have been verified with the
// coordinator under guard (0: none). Kafka's order: a control batch from a client and a
// transactional batch without a producer id are invalid records; then the epoch and
// sequence rules (a retry is a duplicate whatever the transaction's state); then the
// transaction's: a transactional batch continues its producer's open transaction at the
// same epoch, or opens one if verified (INVALID_TXN_STATE otherwise), and a plain batch
// may not come while its producer has a transaction open.
func (ps *producerStates) checkGuarded(h *proto.RecordBatchHeader, guard uint64) (dup *producerBatch, code int16) {
	txnal := h.Attributes&(proto.AttrTransactional|proto.AttrControl) != 0
	if txnal && (h.IsControl() || h.ProducerID < 0) {
		return nil, kerr.InvalidRecord.Code
	}
	if h.ProducerID < 0 {
		return nil, 0
	}
	if len(ps.verifying) > 0 {
		if v, ok := ps.verifying[h.ProducerID]; ok && h.BaseSequence > v.lowestSeq {
			return nil, kerr.OutOfOrderSequenceNumber.Code // a verified batch below it comes first
		}
	}
	lastSeq := addSeq(h.BaseSequence, h.LastOffsetDelta)
	st := ps.m[h.ProducerID]
	switch {
	case st == nil:
		if h.BaseSequence != 0 {
			return nil, kerr.UnknownProducerID.Code
		}
	case h.ProducerEpoch < st.epoch:
		return nil, kerr.InvalidProducerEpoch.Code
	case h.ProducerEpoch > st.epoch:
		if h.BaseSequence != 0 {
			return nil, kerr.OutOfOrderSequenceNumber.Code
		}
	default:
		for i := 0; i < st.n; i++ {
			b := &st.batches[i]
			if b.firstSeq == h.BaseSequence && b.lastSeq == lastSeq {
				return b, 0
			}
		}
		if st.n > 0 && h.BaseSequence != addSeq(st.last().lastSeq, 1) {
			return nil, kerr.OutOfOrderSequenceNumber.Code
		}
	}
	switch {
	case txnal:
		return nil, ps.checkTxn(st, h, guard)
	case st != nil && st.txnFirst >= 0:
		return nil, kerr.InvalidTxnState.Code
	}
	return nil, 0
}

// checkTxn is the transaction rule for a transactional batch of a known-valid epoch
// (KIP-890 part 1, Kafka's hasOngoingTransaction and verification guard): it continues
// the producer's open transaction at the same epoch, or opens one if its verification
// under guard, at its epoch, is the one recorded.
func (ps *producerStates) checkTxn(st *producerState, h *proto.RecordBatchHeader, guard uint64) int16 {
	if st != nil && st.txnFirst >= 0 && st.epoch == h.ProducerEpoch {
		return 0
	}
	if v, ok := ps.verifying[h.ProducerID]; ok && guard != 0 && v.guard == guard && v.epoch == h.ProducerEpoch {
		return 0
	}
	return kerr.InvalidTxnState.Code
}

// update records a data batch written at firstOffset: by a leader before its append (so
// the next batch of the same append is checked against it), by a follower or a rebuild
// with the offsets the batch carries. A transactional batch of a producer without an
// open transaction opens one there.
func (ps *producerStates) update(h *proto.RecordBatchHeader, firstOffset int64) {
	if h.ProducerID < 0 {
		return
	}
	if ps.m == nil {
		ps.m = map[int64]*producerState{}
	}
	st := ps.m[h.ProducerID]
	if st == nil {
		st = newProducerState(h.ProducerEpoch)
		ps.m[h.ProducerID] = st
	}
	st.setEpoch(h.ProducerEpoch)
	st.lastTimestamp = h.MaxTimestamp
	st.add(producerBatch{
		firstSeq: h.BaseSequence, lastSeq: addSeq(h.BaseSequence, h.LastOffsetDelta),
		firstOffset: firstOffset, lastOffset: firstOffset + int64(h.LastOffsetDelta),
	})
	if h.Attributes&proto.AttrTransactional != 0 && st.txnFirst < 0 {
		st.txnFirst = firstOffset
		if ps.ongoing == nil {
			ps.ongoing = map[int64]int64{}
		}
		ps.ongoing[h.ProducerID] = firstOffset
		delete(ps.verifying, h.ProducerID)
		ps.txnChanged = true
	}
}

// ProducerSnapshot is one idempotent producer's state on a partition, as
// DescribeProducers describes it.
type ProducerSnapshot struct {
	ProducerID    int64
	ProducerEpoch int16
	// LastSequence is the sequence number of the producer's last record, -1 if none
	// since its epoch began.
	LastSequence int32
	// LastTimestamp is the largest timestamp of its last batch.
	LastTimestamp int64
	// CoordinatorEpoch is the epoch of the coordinator of its last marker, -1 if none.
	CoordinatorEpoch int32
	// CurrentTxnStartOffset is the first offset of its open transaction, -1 if none.
	CurrentTxnStartOffset int64
}

// Producers lists the partition's idempotent producers' state, by producer id.
func (p *Partition) Producers() []ProducerSnapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ProducerSnapshot, 0, len(p.producers.m))
	for id, st := range p.producers.m {
		if st.n == 0 && st.txnFirst < 0 && st.coordinatorEpoch < 0 {
			continue
		}
		snap := ProducerSnapshot{ProducerID: id, ProducerEpoch: st.epoch, LastSequence: -1, LastTimestamp: st.lastTimestamp,
			CoordinatorEpoch: st.coordinatorEpoch, CurrentTxnStartOffset: st.txnFirst}
		if st.n > 0 {
			snap.LastSequence = st.last().lastSeq
		}
		out = append(out, snap)
	}
	slices.SortFunc(out, func(a, b ProducerSnapshot) int { return cmp.Compare(a.ProducerID, b.ProducerID) })
	return out
}

// addSeq adds to a sequence number, wrapping past MaxInt32 to 0 as Kafka does.
func addSeq(seq, n int32) int32 {
	if s := int64(seq) + int64(n); s > math.MaxInt32 {
		return int32(s - math.MaxInt32 - 1)
	} else {
		return int32(s)
	}
}

// checkRecords runs the checks over one request's records, batch by batch: an error
// code, or the offsets of the batch a retry duplicates (dupFirst ≥ 0), or neither. A
// duplicate must come alone: a retry resends exactly what was sent, so a duplicate
// beside other batches means the producer lost track of its sequence.
func (ps *producerStates) checkRecords(records []byte, guard uint64) (code int16, dupFirst, dupLast int64) {
	dupFirst, dupLast = -1, -1
	batches := 0
	for pos := 0; pos < len(records); batches++ {
		h, err := proto.ParseRecordBatchHeader(records[pos:])
		if err != nil || h.Size() > len(records)-pos {
			return kerr.CorruptMessage.Code, -1, -1
		}
		dup, c := ps.checkGuarded(&h, guard)
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
