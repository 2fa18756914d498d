package replica

import (
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gregor-streaming/gregor/segment"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Role is what this node does for a partition.
type Role uint8

// The roles of a replica.
const (
	// RoleNone: the node neither leads nor follows. A replica starts so, and returns to
	// it when the controller's state names this node leader for an earlier process of
	// it, or when its topic is deleted.
	RoleNone Role = iota
	// RoleFollower: another node leads; this node's fetcher copies its log.
	RoleFollower
	// RoleLeader: this node leads: it takes produce, serves fetches and owns the high
	// watermark.
	RoleLeader
)

// String names the role.
func (r Role) String() string {
	switch r {
	case RoleLeader:
		return "leader"
	case RoleFollower:
		return "follower"
	default:
		return "none"
	}
}

// LeaderAndIsr is a partition's leadership as the controller decided it (Kafka's
// LeaderAndIsr).
type LeaderAndIsr struct {
	// Leader is the leading node's id, or -1 while the partition has none.
	Leader int32
	// LeaderEpoch counts leader changes; every batch carries the epoch it was led in.
	LeaderEpoch int32
	// ISR is the in-sync replica set.
	ISR []int32
	// PartitionEpoch counts every change of the leadership or the ISR: the version an
	// ISR change is compared against.
	PartitionEpoch int32
}

// PartitionState is what a node is told about one of its replicas (Kafka's
// LeaderAndIsrPartitionState): the leadership, the assignment and the topic's
// min.insync.replicas.
type PartitionState struct {
	LeaderAndIsr
	// Replicas is the assignment; Replicas[0] is the preferred leader.
	Replicas []int32
	// MinInsyncReplicas is the topic's min.insync.replicas: acks=all produce is refused
	// while the ISR is smaller.
	MinInsyncReplicas int
	// BrokerEpochs holds, for each of Replicas in its order, the replica's broker epoch
	// (its registration's mod revision) in the metadata view the state comes from:
	// BrokerNotRegistered when the view has no registration of it, BrokerEpochUnknown
	// when the caller does not know. Nil: all unknown. A leader records each follower's
	// fetches with the epoch they were made under and adds a follower to the ISR only
	// if that is its current one (KIP-903).
	BrokerEpochs []int64
	// TopicID is the topic's id (a new one at every creation of the name). A replica
	// whose directory belongs to another id — the topic was deleted and created again
	// while this node did not see it — is deleted and opened empty. "": not checked.
	TopicID string
}

// Broker epochs a follower's fetch state can hold besides a registration's.
const (
	// BrokerEpochUnknown: no epoch to compare (a Fetch before v15 names none, a state
	// without BrokerEpochs knows none): the check is skipped, as Kafka's -1 does.
	BrokerEpochUnknown int64 = -1
	// BrokerNotRegistered: the metadata view has no registration of the replica, or
	// shows it stopping (controlled shutdown); it may not join the ISR.
	BrokerNotRegistered int64 = -2
)

// Replica is the leader's view of one follower (Kafka's Replica): where the follower's
// log ends, as its fetches report, and when it last caught up with the leader's log
// end. Fields are atomics: the follower's fetches update them (one at a time: a follower
// has one fetcher per leader), the high watermark and ISR rules read them.
type Replica struct {
	// ID is the follower's node id.
	ID int32
	// logEndOffset is the follower's log end offset, -1 until it fetches.
	logEndOffset atomic.Int64
	// lastCaughtUpTimeNs is when the follower last reached the leader's log end (Unix
	// nanoseconds), 0 until it does.
	lastCaughtUpTimeNs atomic.Int64
	// lastFetchLeaderLEO and lastFetchTimeNs are the leader's log end offset and the
	// time at the follower's previous fetch: a fetch that reaches the former shows the
	// follower was caught up at the latter.
	lastFetchLeaderLEO atomic.Int64
	lastFetchTimeNs    atomic.Int64
	// viewBrokerEpoch is the follower's broker epoch in the leader's metadata view
	// (PartitionState.BrokerEpochs), updated at every state the leader applies.
	viewBrokerEpoch atomic.Int64
	// fetchBrokerEpoch is the broker epoch the follower's last recorded fetch was made
	// under: the fetch's own, else the view's when it was recorded; BrokerEpochUnknown
	// until it fetches.
	fetchBrokerEpoch atomic.Int64
	// logStartOffset is the follower's log start offset as its last fetch reported it
	// (Fetch v5+), -1 until it does: DeleteRecords waits on it (LowWatermark).
	logStartOffset atomic.Int64
}

func newReplica(id int32) *Replica {
	r := &Replica{ID: id}
	r.viewBrokerEpoch.Store(BrokerEpochUnknown)
	r.reset()
	return r
}

// reset forgets the follower's progress: a new leader knows nothing of it.
func (r *Replica) reset() {
	r.logEndOffset.Store(-1)
	r.lastCaughtUpTimeNs.Store(0)
	r.lastFetchLeaderLEO.Store(-1)
	r.lastFetchTimeNs.Store(0)
	r.fetchBrokerEpoch.Store(BrokerEpochUnknown)
	r.logStartOffset.Store(-1)
}

// updateFetchState records a fetch at fetchOffset made at nowNs under brokerEpoch while
// the leader's log ended at leaderLEO (Kafka's Replica.updateFetchStateOrThrow): the
// fetch offset is the follower's log end offset, and the follower was caught up now if
// it reached the leader's log end, or at its previous fetch if it reached where the
// log ended then. A fetch naming a broker epoch older than the view's comes from an
// earlier process of the follower: it is not recorded, and false is returned.
func (r *Replica) updateFetchState(brokerEpoch, fetchOffset, leaderLEO, nowNs int64) bool {
	view := r.viewBrokerEpoch.Load()
	if brokerEpoch < 0 {
		brokerEpoch = view
	} else if view >= 0 && brokerEpoch < view {
		return false
	}
	switch {
	case fetchOffset >= leaderLEO:
		r.caughtUpAt(nowNs)
	case fetchOffset >= r.lastFetchLeaderLEO.Load():
		r.caughtUpAt(r.lastFetchTimeNs.Load())
	}
	r.logEndOffset.Store(fetchOffset)
	r.lastFetchLeaderLEO.Store(leaderLEO)
	r.lastFetchTimeNs.Store(nowNs)
	r.fetchBrokerEpoch.Store(brokerEpoch)
	return true
}

// isrEligible reports whether the follower's recorded progress may make it an ISR
// member as far as its registration goes (Kafka's isBrokerEpochIsrEligible): it is
// registered, and its fetches were made under its current registration, or one of the
// two epochs is unknown.
func (r *Replica) isrEligible() bool {
	view, fetched := r.viewBrokerEpoch.Load(), r.fetchBrokerEpoch.Load()
	switch {
	case view == BrokerNotRegistered || fetched == BrokerNotRegistered:
		return false
	case view == BrokerEpochUnknown || fetched == BrokerEpochUnknown:
		return true
	}
	return view == fetched
}

// BrokerEpoch is the broker epoch the follower's last recorded fetch was made under
// (see PartitionState.BrokerEpochs), or BrokerEpochUnknown.
func (r *Replica) BrokerEpoch() int64 { return r.fetchBrokerEpoch.Load() }

// caughtUpAt moves the last caught-up time to ns, never backwards.
func (r *Replica) caughtUpAt(ns int64) {
	if ns > r.lastCaughtUpTimeNs.Load() {
		r.lastCaughtUpTimeNs.Store(ns)
	}
}

// LogEndOffset is the follower's log end offset as its last fetch reported it, or -1.
func (r *Replica) LogEndOffset() int64 { return r.logEndOffset.Load() }

// LastCaughtUpTime is when the follower last reached the leader's log end, or the zero
// time.
func (r *Replica) LastCaughtUpTime() time.Time {
	if ns := r.lastCaughtUpTimeNs.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Partition is one partition replica on this node (Kafka's kafka.cluster.Partition): its
// log, its role and leader epoch, the ISR and followers' progress, the high watermark,
// and the idempotent-producer state. See the package comment for who calls what.
//
// Concurrency: stateMu guards the leadership (written by role changes, rare); the append
// lock mu guards the producer state and serialises everything that moves the log end
// (appends as leader and as follower, truncation) with the high watermark; a role
// change holds it too while it stores the new role, so an append sees one role and
// epoch throughout and none lands once the node stopped leading. The hot path
// reads only atomics: role and leader epoch (packed in one word, so a reader never sees
// one without the other), ISR size, min.insync.replicas, high watermark.
//
// Lock order: Manager.mu, then stateMu, then mu, then the log's locks; waiters.mu is a
// leaf.
type Partition struct {
	// Topic and Index name the partition; fixed at creation.
	Topic string
	Index int32

	localID int32
	log     *segment.Log
	logger  *slog.Logger

	// stateMu guards the fields below it down to followers (Kafka's
	// leaderIsrUpdateLock).
	stateMu        sync.RWMutex
	leaderID       int32
	partitionEpoch int32
	replicas       []int32
	isr            []int32
	// expanding are the members an ISR change in flight adds, decided from partition
	// epoch expandingFrom (BeginISRExpansion): until the change is refused or the state
	// it wrote is applied, the high watermark counts them as in the ISR already (Kafka's
	// maximal ISR, KIP-497). The control plane may elect any member of the ISR it holds
	// — a reassignment's completion makes a member just added the leader at once — so
	// the high watermark must never pass the log end of a member the control plane may
	// already list while this leader does not know it yet.
	expanding     []int32
	expandingFrom int32
	// expandingCount is len(expanding), for the appends' high-watermark rule, which
	// runs without stateMu. Written under stateMu.
	expandingCount atomic.Int32
	// followers is the progress of every assigned replica but this node. Invariant:
	// non-empty only while leading.
	followers map[int32]*Replica
	// epochStartOffset is the log end offset when this node began leading at its
	// current leader epoch: a follower joins the ISR only once it has reached it.
	epochStartOffset int64
	// leaderSinceNs is when this node began leading at its current leader epoch (Unix
	// nanoseconds): a follower that never caught up under it has lagged since.
	leaderSinceNs int64

	// state packs the role (bits 32-39) and the leader epoch (bits 0-31). Written under
	// stateMu and mu both, so that an append (under mu) sees one role and epoch from
	// start to end. Invariant: the epoch is -1 in RoleNone.
	state atomic.Uint64
	// isrSize is len(isr), for the acks=all check without the lock. Written under
	// stateMu. Invariant: isrSize == len(isr).
	isrSize atomic.Int32
	// minInsyncReplicas is the topic's min.insync.replicas for acks=all.
	minInsyncReplicas atomic.Int32

	// mu is the append lock: appends, truncation and the producer state they check and
	// update.
	mu        sync.Mutex
	producers producerStates
	// txnGuards counts the transaction verifications begun (BeginTxnVerification): each
	// gets the next number as its guard. Guarded by mu.
	txnGuards uint64
	// txnBounds are the bounds of the last stable offset (txn.go), nil while no
	// transaction is open or unreplicated. Written under mu, read lock-free.
	txnBounds atomic.Pointer[txnBounds]
	// snapshotBase is the base offset of the segment the last producer snapshot was
	// taken in (snapshot.go): an append landing in another segment takes the next.
	// replayed is how many batches the last rebuild of the producer state replayed.
	// Guarded by mu.
	snapshotBase int64
	replayed     int
	// highWatermark: consumers read below it. A leader only raises it
	// (raiseHighWatermark: from appends under mu, from followers' fetches under
	// stateMu); a follower sets it from its leader's and lowers it as it truncates,
	// under mu. Read lock-free.
	// Invariant: 0 <= highWatermark <= log end offset.
	highWatermark atomic.Int64
	// checkpointedHW is the high watermark last handed out for a checkpoint.
	checkpointedHW atomic.Int64
	// fetcherLag is, on a follower, how far its log end was behind the leader's high
	// watermark as the last fetch response carried it (Kafka's FetcherLagMetrics).
	fetcherLag atomic.Int64

	waiters waiters

	// configs are the topic configs the log's settings were last made from. Guarded by
	// the Manager's mu.
	configs map[string]string
	// isrExpansionDue is set by a follower fetch that makes a follower outside the ISR
	// eligible to join it (TakeISRExpansionDue).
	isrExpansionDue atomic.Bool

	// topicID is the id of the topic the replica's directory belongs to ("" when no
	// caller named one). Guarded by the Manager's mu.
	topicID string
}

// newPartition makes the replica of an open log, in RoleNone, with its producer state
// rebuilt from the log.
func newPartition(topic string, index, localID int32, log *segment.Log, logger *slog.Logger) (*Partition, error) {
	p := &Partition{Topic: topic, Index: index, localID: localID, log: log, logger: logger, leaderID: -1}
	p.storeState(RoleNone, -1)
	if err := p.rebuildProducers(); err != nil {
		return nil, err
	}
	p.snapshotBase = log.ActiveBaseOffset()
	return p, nil
}

// Log is the partition's log. Reads, retention and checkpoints use it directly;
// everything that changes the log's end goes through the Partition.
func (p *Partition) Log() *segment.Log { return p.log }

func packState(role Role, epoch int32) uint64 { return uint64(role)<<32 | uint64(uint32(epoch)) }

func (p *Partition) storeState(role Role, epoch int32) { p.state.Store(packState(role, epoch)) }

// loadState is the role and leader epoch from one load.
func (p *Partition) loadState() (Role, int32) {
	s := p.state.Load()
	return Role(s >> 32), int32(uint32(s))
}

// IsLeader reports whether this node leads the partition.
func (p *Partition) IsLeader() bool { return Role(p.state.Load()>>32) == RoleLeader }

// Role is what this node does for the partition.
func (p *Partition) Role() Role {
	r, _ := p.loadState()
	return r
}

// LeaderEpoch is the partition's leader epoch as this node knows it (the epoch it leads
// with, or its leader's as a follower), or -1 in RoleNone.
func (p *Partition) LeaderEpoch() int32 {
	_, e := p.loadState()
	return e
}

// CheckLeaderEpoch answers whether a request naming currentLeaderEpoch (-1: none) may be
// served by this replica, as Kafka's checkCurrentLeaderEpoch does for a leader: 0, or
// NOT_LEADER_OR_FOLLOWER when this node does not lead, FENCED_LEADER_EPOCH when the
// client's epoch is older (it must refresh its metadata), UNKNOWN_LEADER_EPOCH when newer
// (this node has not learnt of it yet).
func (p *Partition) CheckLeaderEpoch(currentLeaderEpoch int32) int16 {
	role, epoch := p.loadState()
	switch {
	case role != RoleLeader:
		return kerr.NotLeaderForPartition.Code
	case currentLeaderEpoch >= 0 && currentLeaderEpoch < epoch:
		return kerr.FencedLeaderEpoch.Code
	case currentLeaderEpoch > epoch:
		return kerr.UnknownLeaderEpoch.Code
	}
	return 0
}

// UnderMinISR reports whether the ISR is smaller than min.insync.replicas, when
// acks=all produce is refused (NOT_ENOUGH_REPLICAS).
func (p *Partition) UnderMinISR() bool { return p.isrSize.Load() < p.minInsyncReplicas.Load() }

// HighWatermark is the offset below which records are committed: consumers read below
// it, acks=all produce completes once it passes the batch.
func (p *Partition) HighWatermark() int64 { return p.highWatermark.Load() }

// CheckpointHighWatermark returns the high watermark and whether it moved since the last
// call, for a caller that records it (batched) in the control plane.
func (p *Partition) CheckpointHighWatermark() (hw int64, moved bool) {
	hw = p.highWatermark.Load()
	return hw, p.checkpointedHW.Swap(hw) != hw
}

// LeaderAndIsr is the leadership as this node last learnt it; the ISR is a copy.
func (p *Partition) LeaderAndIsr() LeaderAndIsr {
	p.stateMu.RLock()
	defer p.stateMu.RUnlock()
	return LeaderAndIsr{Leader: p.leaderID, LeaderEpoch: p.LeaderEpoch(), ISR: slices.Clone(p.isr), PartitionEpoch: p.partitionEpoch}
}

// Replicas is the partition's assignment as this node last learnt it (a copy).
func (p *Partition) Replicas() []int32 {
	p.stateMu.RLock()
	defer p.stateMu.RUnlock()
	return slices.Clone(p.replicas)
}

// Follower is the leader's view of follower id, or nil when this node does not lead or
// id is not an assigned follower.
func (p *Partition) Follower(id int32) *Replica {
	p.stateMu.RLock()
	defer p.stateMu.RUnlock()
	return p.followers[id]
}

// makeLeader makes this node the partition's leader at st's epoch (Kafka's
// Partition.makeLeader). Followers' progress is kept for a follower still assigned
// under the same leader epoch and reset under a new one: a new leader knows nothing of
// where its followers are. With the ISR this node alone the high watermark becomes the
// log end offset.
func (p *Partition) makeLeader(st PartitionState) {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	role, epoch := p.loadState()
	newLeadership := role != RoleLeader || epoch != st.LeaderEpoch
	followers := make(map[int32]*Replica, len(st.Replicas))
	now := time.Now().UnixNano()
	for i, id := range st.Replicas {
		if id == p.localID {
			continue
		}
		r := p.followers[id]
		switch {
		case r == nil:
			r = newReplica(id)
		case newLeadership:
			r.reset()
		}
		epoch := BrokerEpochUnknown
		if i < len(st.BrokerEpochs) {
			epoch = st.BrokerEpochs[i]
		}
		r.viewBrokerEpoch.Store(epoch)
		if !newLeadership && p.followers[id] == r {
			followers[id] = r
			continue
		}
		if slices.Contains(st.ISR, id) {
			// A new leader counts its ISR as caught up now (Kafka's
			// resetReplicaState), so that it shrinks no one before they can fetch.
			r.caughtUpAt(now)
		}
		followers[id] = r
	}
	p.followers = followers
	// The append lock too: an append in progress finishes at the epoch it began with,
	// and this epoch starts at the log end it leaves.
	p.mu.Lock()
	if newLeadership {
		p.epochStartOffset = p.log.LogEndOffset()
		p.leaderSinceNs = now
	}
	p.setLeadership(st, p.localID)
	p.storeState(RoleLeader, st.LeaderEpoch)
	p.maybeIncrementHighWatermark(p.log.LogEndOffset())
	p.pruneTxnsLocked()
	p.mu.Unlock()
	p.advanceHighWatermarkLocked()
}

// MakeFollower records that another node (st.Leader) leads the partition at st's epoch
// (Kafka's Partition.makeFollower): this node refuses produce and fetch for it, and the
// requests parked on it are woken to answer so. Fetching from the leader is the data
// plane's (its replica fetchers call AppendAsFollower, TruncateTo and
// UpdateFollowerHighWatermark).
func (p *Partition) MakeFollower(st PartitionState) {
	p.stateMu.Lock()
	p.followers = nil
	p.setLeadership(st, st.Leader)
	p.storeRoleLocked(RoleFollower, st.LeaderEpoch)
	p.stateMu.Unlock()
	p.wakeWaiters()
}

// Resign leaves the partition in RoleNone: the controller's state names this node
// leader, but for an earlier process of it, so this one neither leads nor follows until
// the controller elects it. Parked requests are woken to answer so.
func (p *Partition) Resign() {
	p.resign()
	p.wakeWaiters()
}

func (p *Partition) resign() {
	p.stateMu.Lock()
	p.followers = nil
	p.storeRoleLocked(RoleNone, -1)
	p.stateMu.Unlock()
}

// storeRoleLocked stores a role and epoch under the append lock, so that an append in
// progress finishes first and the next one sees the new role (LeaderAppend.Begin). The
// caller holds stateMu.
func (p *Partition) storeRoleLocked(role Role, epoch int32) {
	p.mu.Lock()
	p.storeState(role, epoch)
	p.mu.Unlock()
}

// setLeadership stores st's leadership with leader as the leading node. The caller holds
// stateMu.
func (p *Partition) setLeadership(st PartitionState, leader int32) {
	if leader != p.localID || st.PartitionEpoch > p.expandingFrom {
		p.expanding = nil // the change was applied, or superseded, or this node follows
		p.expandingCount.Store(0)
	}
	p.leaderID = leader
	p.partitionEpoch = st.PartitionEpoch
	p.replicas = slices.Clone(st.Replicas)
	p.isr = slices.Clone(st.ISR)
	p.isrSize.Store(int32(len(p.isr)))
	p.minInsyncReplicas.Store(int32(st.MinInsyncReplicas))
}

// maybeIncrementHighWatermark applies the high-watermark rule after the log end moved to
// logEndOffset: while the ISR is this node alone (or empty), the high watermark is the
// log end offset; with followers in the ISR it stays until their progress moves it
// (advanceHighWatermarkLocked). The caller holds mu.
func (p *Partition) maybeIncrementHighWatermark(logEndOffset int64) {
	if p.isrSize.Load() <= 1 && p.expandingCount.Load() == 0 {
		p.raiseHighWatermark(logEndOffset)
	}
}

// raiseHighWatermark moves a leader's high watermark up to hw, never down, and reports
// whether it moved. Leaders move it from appends (under mu) and from followers' fetches
// (under stateMu only), hence the compare-and-swap; it goes down only as a follower
// truncates, under mu.
func (p *Partition) raiseHighWatermark(hw int64) bool {
	for {
		cur := p.highWatermark.Load()
		if hw <= cur {
			return false
		}
		if p.highWatermark.CompareAndSwap(cur, hw) {
			return true
		}
	}
}

// isrHighWatermark is the high-watermark rule for a leader: the smallest log end offset
// over the ISR (this node's own log end for itself), or -1 while an ISR member's
// progress is unknown. An ISR member without a Replica (not assigned, as in tests
// that name unknown replicas) is never known. The caller holds stateMu.
func (p *Partition) isrHighWatermark() int64 {
	hw := p.log.LogEndOffset()
	for _, id := range p.expanding {
		if r := p.followers[id]; r != nil {
			hw = min(hw, r.logEndOffset.Load())
		}
	}
	for _, id := range p.isr {
		if id == p.localID {
			continue
		}
		r := p.followers[id]
		if r == nil {
			return -1
		}
		hw = min(hw, r.logEndOffset.Load())
	}
	return hw
}

// advanceHighWatermarkLocked raises a leader's high watermark to the ISR's smallest log
// end offset and reports whether it moved. The caller holds stateMu (read or write).
func (p *Partition) advanceHighWatermarkLocked() bool {
	if Role(p.state.Load()>>32) != RoleLeader {
		return false
	}
	return p.raiseHighWatermark(p.isrHighWatermark())
}

// UpdateFollowerFetchState records a fetch from follower id at fetchOffset, made at
// nowNs under the follower's broker epoch brokerEpoch (Kafka's
// Partition.updateFollowerFetchState): the follower's log end offset, last caught-up
// time and broker epoch, then the high watermark, which moves to the smallest log end
// offset over the ISR. A move wakes the requests parked on the partition (consumer
// fetches, acks=all produces). brokerEpoch is the fetch's own (Fetch v15's
// ReplicaState), or BrokerEpochUnknown: the follower's epoch in this leader's metadata
// view is recorded then. It reports false, recording nothing, when this node does not
// lead, id is not an assigned follower, or brokerEpoch is older than the follower's
// registration in the view (a fetch of an earlier process of it). Lock-free but for
// stateMu's read lock; it allocates nothing.
func (p *Partition) UpdateFollowerFetchState(id int32, brokerEpoch, fetchOffset, nowNs int64) bool {
	p.stateMu.RLock()
	r := p.followers[id]
	if r == nil || !p.IsLeader() || !r.updateFetchState(brokerEpoch, fetchOffset, p.log.LogEndOffset(), nowNs) {
		p.stateMu.RUnlock()
		return false
	}
	moved := p.advanceHighWatermarkLocked()
	if fetchOffset >= p.highWatermark.Load() && fetchOffset >= p.epochStartOffset &&
		!slices.Contains(p.isr, id) && r.isrEligible() {
		p.isrExpansionDue.Store(true)
	}
	p.stateMu.RUnlock()
	if p.maybePruneTxns() {
		moved = true // the LSO moved: read_committed fetches wait on it
	}
	if moved {
		p.wakeWaiters()
	}
	return true
}

// UpdateFollowerLogStartOffset records the log start offset follower id's fetch
// reported (Kafka's Replica.logStartOffset) and, when it moved, wakes the requests
// parked on the partition: a DeleteRecords waits for the followers' log starts. It
// does nothing when this node does not lead or id is not an assigned follower.
func (p *Partition) UpdateFollowerLogStartOffset(id int32, logStartOffset int64) {
	p.stateMu.RLock()
	r := p.followers[id]
	moved := r != nil && p.IsLeader() && r.logStartOffset.Swap(logStartOffset) != logStartOffset
	p.stateMu.RUnlock()
	if moved {
		p.wakeWaiters()
	}
}

// LowWatermark is the smallest log start offset over this leader's log and its
// registered followers' as their fetches reported them (Kafka's lowWatermarkIfLeader;
// -1 while a registered follower has not reported one). ok is false when this node
// does not lead.
func (p *Partition) LowWatermark() (offset int64, ok bool) {
	p.stateMu.RLock()
	defer p.stateMu.RUnlock()
	if !p.IsLeader() {
		return 0, false
	}
	low := p.log.LogStartOffset()
	for _, r := range p.followers {
		if r.viewBrokerEpoch.Load() != BrokerNotRegistered {
			low = min(low, r.logStartOffset.Load())
		}
	}
	return low, true
}

// TakeISRExpansionDue reports, once, whether a follower fetch showed a follower outside
// the ISR that may join it now (ProposeISR would add it): Kafka expands the ISR on the
// follower's fetch, not at the next periodic check.
func (p *Partition) TakeISRExpansionDue() bool {
	return p.isrExpansionDue.Load() && p.isrExpansionDue.Swap(false)
}

// UnderReplicated reports whether this node leads the partition with an ISR smaller
// than its assignment (Kafka's UnderReplicatedPartitions).
func (p *Partition) UnderReplicated() bool {
	p.stateMu.RLock()
	defer p.stateMu.RUnlock()
	return p.IsLeader() && len(p.isr) < len(p.replicas)
}

// FollowerLag is how far follower id is behind this leader at nowNs: in offsets, the
// leader's log end offset minus the follower's as its last fetch reported it (the
// whole log, from its start, while it has not fetched under this leadership); in time,
// how long since it was last caught up (0 while its last fetch reached the log end;
// since this leadership began if it never caught up under it). ok is false when this
// node does not lead or id is not an assigned follower. For metrics: it takes the
// leadership's read lock.
func (p *Partition) FollowerLag(id int32, nowNs int64) (offsets int64, lag time.Duration, ok bool) {
	p.stateMu.RLock()
	defer p.stateMu.RUnlock()
	r := p.followers[id]
	if r == nil || !p.IsLeader() {
		return 0, 0, false
	}
	leo := p.log.LogEndOffset()
	end := max(r.logEndOffset.Load(), p.log.LogStartOffset())
	if end >= leo {
		return 0, 0, true
	}
	since := max(r.lastCaughtUpTimeNs.Load(), p.leaderSinceNs)
	return leo - end, time.Duration(max(nowNs-since, 0)), true
}

// FetcherLag is, on a follower, how far its log end offset was behind its leader's
// high watermark as the last fetch response carried it (Kafka's FetcherLagMetrics),
// or 0.
func (p *Partition) FetcherLag() int64 { return p.fetcherLag.Load() }

// ISRChange is an ISR change a leader proposes (Kafka's AlterPartition request for one
// partition).
type ISRChange struct {
	// From is the leadership decided from: the control plane's compare-and-swap checks
	// its epochs.
	From LeaderAndIsr
	// ISR is the new ISR.
	ISR []int32
	// BrokerEpochs maps each member ISR adds to the broker epoch its fetches were
	// recorded under, or BrokerEpochUnknown (KIP-903's BrokerState): the control plane
	// adds it only if that is still its registration. Nil when none is added.
	BrokerEpochs map[int32]int64
}

// ProposeISR decides the ISR this leader should have at nowNs (Kafka's maybeShrinkIsr
// and maybeExpandIsr): an ISR follower that has not caught up with the log end within
// maxLag leaves it; an assigned follower outside it whose log end offset has reached the
// high watermark and the start of this leader epoch joins it, if its fetches were made
// under its current registration (KIP-903: a follower that restarted may have lost what
// its earlier process fetched). ok is false when this node does not lead or nothing
// changes.
func (p *Partition) ProposeISR(nowNs int64, maxLag time.Duration) (change ISRChange, ok bool) {
	p.stateMu.RLock()
	defer p.stateMu.RUnlock()
	role, epoch := p.loadState()
	if role != RoleLeader || len(p.followers) == 0 {
		return ISRChange{}, false
	}
	leo, hw := p.log.LogEndOffset(), p.highWatermark.Load()
	isr := make([]int32, 0, len(p.replicas))
	var epochs map[int32]int64
	for _, id := range p.isr {
		r := p.followers[id]
		if id == p.localID || r == nil ||
			r.logEndOffset.Load() >= leo || nowNs-r.lastCaughtUpTimeNs.Load() <= int64(maxLag) {
			isr = append(isr, id)
		}
	}
	for _, id := range p.replicas {
		r := p.followers[id]
		if r == nil || slices.Contains(p.isr, id) {
			continue
		}
		if end := r.logEndOffset.Load(); end >= hw && end >= p.epochStartOffset && r.isrEligible() {
			isr = append(isr, id)
			if epochs == nil {
				epochs = map[int32]int64{}
			}
			epochs[id] = r.fetchBrokerEpoch.Load()
		}
	}
	if slices.Equal(isr, p.isr) {
		return ISRChange{}, false
	}
	from := LeaderAndIsr{Leader: p.leaderID, LeaderEpoch: epoch, ISR: slices.Clone(p.isr), PartitionEpoch: p.partitionEpoch}
	return ISRChange{From: from, ISR: isr, BrokerEpochs: epochs}, true
}

// BeginISRExpansion records that ch, which may add members to the ISR, is being sent:
// until EndISRExpansion or until a state of a newer partition epoch is applied, the high
// watermark is the smallest log end offset over the ISR and those members (see
// Partition.expanding). Call it before sending the change.
func (p *Partition) BeginISRExpansion(ch ISRChange) {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	p.expanding = nil
	for _, id := range ch.ISR {
		if !slices.Contains(p.isr, id) {
			p.expanding = append(p.expanding, id)
		}
	}
	p.expandingFrom = ch.From.PartitionEpoch
	p.expandingCount.Store(int32(len(p.expanding)))
}

// EndISRExpansion forgets the members the change decided from partition epoch from
// would have added: it was refused, or not sent.
func (p *Partition) EndISRExpansion(from int32) {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	if p.expandingFrom == from {
		p.expanding = nil
		p.expandingCount.Store(0)
	}
}

// maxWaitersPerPartition bounds a partition's waiter list (a flood of long polls).
const maxWaitersPerPartition = 10_000

// Waiter is a request parked on a partition until the partition changes (Kafka's
// delayed operations, as a partition sees them): dataplane's fetch and produce
// purgatory implements it.
type Waiter interface {
	// Wake is called, once per registration, after the partition's log end, high
	// watermark or role changed. It must not block: it hands the request to whatever
	// re-checks it, which registers it again with AddWaiter if it must wait on.
	Wake()
}

// waiters is a partition's list of parked requests.
type waiters struct {
	mu   sync.Mutex
	list []Waiter
}

// Waiters is the number of registrations in the partition's waiter list.
func (p *Partition) Waiters() int {
	p.waiters.mu.Lock()
	defer p.waiters.mu.Unlock()
	return len(p.waiters.list)
}

// AddWaiter parks w on the partition until its next change, and reports whether it did:
// past maxWaitersPerPartition, w is not registered (it waits for its deadline, or
// another partition's change).
func (p *Partition) AddWaiter(w Waiter) bool {
	p.waiters.mu.Lock()
	defer p.waiters.mu.Unlock()
	if len(p.waiters.list) >= maxWaitersPerPartition {
		return false
	}
	p.waiters.list = append(p.waiters.list, w)
	return true
}

// wakeWaiters wakes, and forgets, every request parked on p.
func (p *Partition) wakeWaiters() {
	p.waiters.mu.Lock()
	list := p.waiters.list
	p.waiters.list = nil
	p.waiters.mu.Unlock()
	for _, w := range list {
		w.Wake()
	}
}
