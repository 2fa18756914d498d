package replica

import (
	"errors"
	"fmt"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/twmb/franz-go/pkg/kerr"
)

// LeaderAppend appends the records of several produce requests to a leader's log with
// one write (Kafka's appendRecordsToLeader, for all the requests of one pass of a
// connection): Begin takes the partition's append lock, Add checks one request's
// records against the idempotent-producer state and assigns their offsets, Commit
// writes what was accepted, moves the high watermark, releases the lock and wakes the
// requests parked on the partition.
//
// A LeaderAppend is reusable scratch: keep one per connection, so that steady-state
// appends allocate nothing. It is not safe for concurrent use. Between Begin and Commit
// the caller holds the partition's append lock: it must call Commit, and take no other
// partition's lock meanwhile.
type LeaderAppend struct {
	p *Partition
	// epoch is the leader epoch written into the batches: the partition's when Begin
	// took the append lock, which every role change also takes, so it cannot change
	// before Commit.
	epoch int32
	// refused is NOT_LEADER_OR_FOLLOWER when the node did not lead the partition once
	// Begin held the append lock (0 otherwise): every Add is then refused.
	refused int16
	// next is the offset the next accepted records get. Offsets are known before the
	// write: the partition's appends all hold its append lock, so the log end offset
	// cannot move meanwhile.
	next int64
	// first is the offset the first accepted records got.
	first int64
	parts [][]byte
}

// Assignment is LeaderAppend.Add's decision on one request's records.
type Assignment struct {
	// ErrorCode is the Kafka error that refuses the records, 0 if none.
	ErrorCode int16
	// Duplicate is set for a producer's retry of a recent batch: it is not written
	// again, and the offsets are those it got the first time.
	Duplicate bool
	// FirstOffset and LastOffset are the records' offsets, -1 when refused.
	FirstOffset, LastOffset int64
}

// Begin starts an append to p, taking its append lock. The role and leader epoch are
// read under that lock: a role change takes it too, so an append that raced a loss of
// leadership (the produce path's leader check passed just before it) is refused with
// NOT_LEADER_OR_FOLLOWER instead of landing with a stale epoch, and a leader's log
// holds no batch written after it stopped leading.
func (a *LeaderAppend) Begin(p *Partition) {
	if a.p != nil {
		panic("replica: LeaderAppend.Begin before the previous Commit")
	}
	p.mu.Lock()
	role, epoch := p.loadState()
	a.epoch, a.refused = epoch, 0
	if role != RoleLeader {
		a.refused = kerr.NotLeaderForPartition.Code
	}
	a.p = p
	a.next = p.log.LogEndOffset()
	a.first = a.next
	a.parts = a.parts[:0]
}

// Add checks one request's records (validated batches) against the idempotent-producer
// rules and, if they are to be written, assigns their offsets and records them in the
// producer state, so that the next Add of the same append sees them.
func (a *LeaderAppend) Add(records []byte) Assignment { return a.AddVerified(records, 0) }

// AddVerified is Add for records whose first transactional batch was verified with the
// transaction coordinator under guard (Partition.BeginTxnVerification; 0: none): that
// batch may then open its producer's transaction on the partition (KIP-890 part 1).
func (a *LeaderAppend) AddVerified(records []byte, guard uint64) Assignment {
	p := a.p
	if a.refused != 0 {
		return Assignment{ErrorCode: a.refused, FirstOffset: -1, LastOffset: -1}
	}
	code, dupFirst, dupLast := p.producers.checkRecords(records, guard)
	switch {
	case code != 0:
		return Assignment{ErrorCode: code, FirstOffset: -1, LastOffset: -1}
	case dupFirst >= 0:
		return Assignment{Duplicate: true, FirstOffset: dupFirst, LastOffset: dupLast}
	}
	first := a.next
	for pos := 0; pos < len(records); {
		h, _ := proto.ParseRecordBatchHeader(records[pos:])
		p.producers.update(&h, a.next)
		a.next += int64(h.RecordCount)
		pos += h.Size()
	}
	a.parts = append(a.parts, records)
	return Assignment{FirstOffset: first, LastOffset: a.next - 1}
}

// Commit writes the records Add accepted with one append, with the leader epoch, and
// releases the append lock. With nothing accepted it writes nothing and returns a zero
// AppendInfo. On error nothing was written (or not where the offsets were assigned): the
// producer state is rebuilt from the log and every accepted request must be failed.
func (a *LeaderAppend) Commit() (segment.AppendInfo, error) {
	p := a.p
	if p == nil {
		panic("replica: LeaderAppend.Commit without Begin")
	}
	a.p = nil
	if len(a.parts) == 0 {
		p.mu.Unlock()
		return segment.AppendInfo{}, nil
	}
	// Transactions the records open count before any of their bytes can be read (by a
	// follower, whose fetch moves the high watermark without this lock).
	p.publishTxnBounds()
	info, err := p.log.AppendValidated(a.parts, a.epoch)
	clear(a.parts) // the records belong to the requests' buffers
	a.parts = a.parts[:0]
	if err == nil && info.FirstOffset != a.first {
		err = fmt.Errorf("replica: append landed at %d, not the expected %d", info.FirstOffset, a.first)
	}
	if err != nil {
		if rerr := p.rebuildProducers(); rerr != nil {
			p.logger.Error("rebuild producer state", "err", rerr)
		}
		p.mu.Unlock()
		return segment.AppendInfo{}, err
	}
	p.maybeIncrementHighWatermark(info.LastOffset + 1)
	p.pruneTxnsLocked()
	p.maybeSnapshot(info.SegmentBaseOffset)
	p.mu.Unlock()
	p.wakeWaiters()
	return info, nil
}

// ErrNotFollower: a follower's append or truncation reached a replica that no longer
// follows (the controller made it leader meanwhile).
var ErrNotFollower = errors.New("replica: not a follower")

// AppendAsFollower appends batches fetched from the leader as they are, with the
// leader's offsets and leader epochs (segment.Log.AppendAsFollower), and keeps the
// idempotent-producer state from them, so that this node, once leader, recognises a
// retried batch.
func (p *Partition) AppendAsFollower(records []byte) (segment.AppendInfo, error) {
	return p.appendAsFollower(func() (segment.AppendInfo, error) {
		info, err := p.log.AppendAsFollower(records)
		if err == nil {
			p.trackProducers(records)
			p.maybeSnapshot(info.SegmentBaseOffset)
		}
		return info, err
	})
}

// StageFollowerAppend begins a follower append of n bytes whose records reach the log's
// file before they are validated (segment.Log.StageFollowerAppend): the replica fetcher
// splices them from its socket with the StagedAppend's Write, then hands it to
// AppendStagedAsFollower, or aborts it. Staging takes no lock of the partition's: it
// may wait for the network, and another change to the log overtakes it.
func (p *Partition) StageFollowerAppend(n int) (*segment.StagedAppend, error) {
	if p.Role() != RoleFollower {
		return nil, ErrNotFollower
	}
	return p.log.StageFollowerAppend(n)
}

// AppendStagedAsFollower commits a staged follower append with AppendAsFollower's
// rules and effects: validated where it lies, appended with the leader's offsets and
// epochs, the producer state kept from its batches. It ends st: on error nothing of it
// is in the log.
func (p *Partition) AppendStagedAsFollower(st *segment.StagedAppend) (segment.AppendInfo, error) {
	info, err := p.appendAsFollower(func() (segment.AppendInfo, error) {
		info, err := st.Commit(p.trackProducers)
		if err == nil {
			p.maybeSnapshot(info.SegmentBaseOffset)
		}
		return info, err
	})
	st.Abort() // not committed if the role check refused it
	return info, err
}

// appendAsFollower runs a follower's log append under the append lock, if this replica
// still follows.
func (p *Partition) appendAsFollower(appendLog func() (segment.AppendInfo, error)) (segment.AppendInfo, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Role() != RoleFollower {
		return segment.AppendInfo{}, ErrNotFollower
	}
	return appendLog()
}

// trackProducers keeps the producer state from batches a follower appended (validated
// by the append): sequences, and transactions opened and closed by markers, whose
// aborts go into the aborted index as on the leader. The caller holds the append lock.
func (p *Partition) trackProducers(records []byte) {
	for pos := 0; pos < len(records); {
		h, _ := proto.ParseRecordBatchHeader(records[pos:])
		if h.Attributes&proto.AttrControl != 0 {
			p.trackMarker(records[pos:pos+h.Size()], &h)
		} else {
			p.producers.update(&h, h.BaseOffset)
		}
		pos += h.Size()
	}
	p.pruneTxnsLocked()
}

// TruncateTo cuts the log before the batch holding offset (a follower truncating to the
// leader's end offset for its epoch, segment.Log.TruncateTo) and returns the new log end
// offset. The high watermark follows it down, and the producer state is rebuilt from
// what remains.
func (p *Partition) TruncateTo(offset int64) (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	before := p.log.LogEndOffset()
	leo, err := p.log.TruncateTo(offset)
	if err != nil || leo == before {
		return leo, err
	}
	if p.highWatermark.Load() > leo {
		p.highWatermark.Store(leo)
	}
	return leo, p.rebuildProducers()
}

// UpdateFollowerHighWatermark sets a follower's high watermark from its leader's, as a
// fetch response carries it: the smaller of the leader's and this log's end (Kafka's
// follower rule), so that it never passes the log end offset. How far the log end is
// behind the leader's is kept as the fetcher's lag (FetcherLag).
func (p *Partition) UpdateFollowerHighWatermark(leaderHW int64) {
	p.mu.Lock()
	if p.Role() == RoleFollower {
		leo := p.log.LogEndOffset()
		p.highWatermark.Store(max(min(leaderHW, leo), 0))
		p.fetcherLag.Store(max(leaderHW-leo, 0))
		p.pruneTxnsLocked()
	}
	p.mu.Unlock()
}

// TruncateFullyAndStartAt empties the log and starts it at offset (a follower whose
// leader's log starts past this one's end), with the high watermark and the producer
// state.
func (p *Partition) TruncateFullyAndStartAt(offset int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.log.TruncateFullyAndStartAt(offset); err != nil {
		return err
	}
	p.highWatermark.Store(offset)
	p.producers.reset()
	p.producers.txnChanged = true
	p.publishTxnBounds()
	removeSnapshotsAbove(p.log.Dir(), -1)
	p.snapshotBase = p.log.ActiveBaseOffset()
	return nil
}

// LatestEpoch is the newest leader epoch this replica's log holds batches of (its
// leader-epoch cache's last), or -1: what a new follower asks its leader the end of.
func (p *Partition) LatestEpoch() int32 { return p.log.LatestEpoch() }

// EndOffsetForEpoch answers OffsetForLeaderEpoch for this replica: the largest leader
// epoch ≤ epoch its log knows and the offset where that epoch ended (the log end offset
// for the latest), or (-1, -1).
func (p *Partition) EndOffsetForEpoch(epoch int32) (int32, int64) {
	return p.log.EndOffsetForEpoch(epoch)
}
