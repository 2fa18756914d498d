package replica

import (
	"cmp"
	"math"
	"slices"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Idempotent producers (KIP-98): per partition, each producer id's epoch and the
// sequence ranges and offsets of its last five batches (Kafka's ProducerStateManager,
// without transactions). A retried batch (same sequences) is answered with the offset it
// got the first time and not written again; a gap in the sequence is refused. The state
// is rebuilt from the log's batch headers when the partition opens, so it survives
// restarts, and after a truncation; a follower keeps it from the batches it appends, so
// a retry after a failover is still recognised.

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
}

func (s *producerState) last() *producerBatch {
	return &s.batches[(s.next+producerBatchesKept-1)%producerBatchesKept]
}

func (s *producerState) add(b producerBatch) {
	s.batches[s.next] = b
	s.next = (s.next + 1) % producerBatchesKept
	s.n = min(s.n+1, producerBatchesKept)
}

// producerStates maps producer ids to their state. The partition's append lock (mu)
// guards it.
type producerStates struct {
	m map[int64]*producerState
}

// check classifies a validated batch: a duplicate of a recent batch (dup is its
// record), an error code, or fine to append (nil, 0).
func (ps *producerStates) check(h *proto.RecordBatchHeader) (dup *producerBatch, code int16) {
	if h.ProducerID < 0 {
		return nil, 0
	}
	lastSeq := addSeq(h.BaseSequence, h.LastOffsetDelta)
	st := ps.m[h.ProducerID]
	switch {
	case st == nil:
		if h.BaseSequence != 0 {
			return nil, kerr.UnknownProducerID.Code
		}
		return nil, 0
	case h.ProducerEpoch < st.epoch:
		return nil, kerr.InvalidProducerEpoch.Code
	case h.ProducerEpoch > st.epoch:
		if h.BaseSequence != 0 {
			return nil, kerr.OutOfOrderSequenceNumber.Code
		}
		return nil, 0
	}
	for i := 0; i < st.n; i++ {
		b := &st.batches[i]
		if b.firstSeq == h.BaseSequence && b.lastSeq == lastSeq {
			return b, 0
		}
	}
	if st.n > 0 && h.BaseSequence != addSeq(st.last().lastSeq, 1) {
		return nil, kerr.OutOfOrderSequenceNumber.Code
	}
	return nil, 0
}

// update records a batch written at firstOffset: by a leader before its append (so the
// next batch of the same append is checked against it), by a follower or a rebuild with
// the offsets the batch carries.
func (ps *producerStates) update(h *proto.RecordBatchHeader, firstOffset int64) {
	if h.ProducerID < 0 {
		return
	}
	if ps.m == nil {
		ps.m = map[int64]*producerState{}
	}
	st := ps.m[h.ProducerID]
	if st == nil || h.ProducerEpoch != st.epoch {
		st = &producerState{epoch: h.ProducerEpoch}
		ps.m[h.ProducerID] = st
	}
	st.lastTimestamp = h.MaxTimestamp
	st.add(producerBatch{
		firstSeq: h.BaseSequence, lastSeq: addSeq(h.BaseSequence, h.LastOffsetDelta),
		firstOffset: firstOffset, lastOffset: firstOffset + int64(h.LastOffsetDelta),
	})
}

// ProducerSnapshot is one idempotent producer's state on a partition, as
// DescribeProducers describes it.
type ProducerSnapshot struct {
	ProducerID    int64
	ProducerEpoch int16
	// LastSequence is the sequence number of the producer's last record.
	LastSequence int32
	// LastTimestamp is the largest timestamp of its last batch.
	LastTimestamp int64
}

// Producers lists the partition's idempotent producers' state, by producer id.
func (p *Partition) Producers() []ProducerSnapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ProducerSnapshot, 0, len(p.producers.m))
	for id, st := range p.producers.m {
		if st.n == 0 {
			continue
		}
		out = append(out, ProducerSnapshot{ProducerID: id, ProducerEpoch: st.epoch, LastSequence: st.last().lastSeq, LastTimestamp: st.lastTimestamp})
	}
	slices.SortFunc(out, func(a, b ProducerSnapshot) int { return cmp.Compare(a.ProducerID, b.ProducerID) })
	return out
}

// rebuild replays the log's batch headers.
func (ps *producerStates) rebuild(log *segment.Log) error {
	return log.ScanBatchHeaders(log.LogStartOffset(), func(h *proto.RecordBatchHeader) bool {
		ps.update(h, h.BaseOffset)
		return true
	})
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
func (ps *producerStates) checkRecords(records []byte) (code int16, dupFirst, dupLast int64) {
	dupFirst, dupLast = -1, -1
	batches := 0
	for pos := 0; pos < len(records); batches++ {
		h, err := proto.ParseRecordBatchHeader(records[pos:])
		if err != nil || h.Size() > len(records)-pos {
			return kerr.CorruptMessage.Code, -1, -1
		}
		dup, c := ps.check(&h)
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
