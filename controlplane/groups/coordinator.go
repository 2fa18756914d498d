package groups

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/internal/term"
)

// Config holds the group coordinator's settings (Kafka's group.* and offsets.* broker
// configs). Zero values take the defaults below, except InitialRebalanceDelay: zero
// means no delay (gregor-cp's flag defaults to Kafka's 3 s).
type Config struct {
	// InitialRebalanceDelay is group.initial.rebalance.delay.ms: how long a group's
	// first rebalance waits for more members to join.
	InitialRebalanceDelay time.Duration
	// MinSessionTimeout and MaxSessionTimeout bound the session timeouts members ask for
	// (group.min/max.session.timeout.ms; INVALID_SESSION_TIMEOUT outside).
	MinSessionTimeout, MaxSessionTimeout time.Duration
	// MaxSize bounds a group's members (group.max.size); 0 means no bound.
	MaxSize int
	// OffsetsRetention is how long an empty group keeps its committed offsets, and a
	// group without members (manual assignment) each offset after its commit
	// (offsets.retention.minutes).
	OffsetsRetention time.Duration
	// OffsetMetadataMaxBytes bounds a commit's metadata (offset.metadata.max.bytes); it
	// is held to offsetMetadataBytesLimit.
	OffsetMetadataMaxBytes int
}

// Defaults of Config.
const (
	DefaultMinSessionTimeout      = 6 * time.Second
	DefaultMaxSessionTimeout      = 30 * time.Minute
	DefaultOffsetsRetention       = 7 * 24 * time.Hour
	DefaultOffsetMetadataMaxBytes = 4096
	DefaultInitialRebalanceDelay  = 3 * time.Second
)

// Limits.
const (
	groupIDLenMax       = 1024
	memberBytesMax      = 1 << 20 // one member's metadata (all protocols) or assignment
	groupLoadWait       = 10 * time.Second
	groupExpiryInterval = time.Minute
	// groupExpiryIntervalMin bounds how often expiry runs when the retention is short
	// (tests).
	groupExpiryIntervalMin   = 10 * time.Millisecond
	groupOffsetsPerCommitMax = 1 << 16
	// offsetMetadataBytesLimit caps OffsetMetadataMaxBytes so that one committed offset,
	// its metadata JSON-escaped (up to 6 bytes a byte), fits one store transaction
	// (storeBatchBytesMax) on its own.
	offsetMetadataBytesLimit = 128 << 10
	groupLoadRetryMin        = 50 * time.Millisecond
	groupLoadRetryMax        = 2 * time.Second
)

func (c *Config) withDefaults() Config {
	out := *c
	if out.MinSessionTimeout <= 0 {
		out.MinSessionTimeout = DefaultMinSessionTimeout
	}
	if out.MaxSessionTimeout <= 0 {
		out.MaxSessionTimeout = DefaultMaxSessionTimeout
	}
	if out.OffsetsRetention <= 0 {
		out.OffsetsRetention = DefaultOffsetsRetention
	}
	if out.OffsetMetadataMaxBytes <= 0 {
		out.OffsetMetadataMaxBytes = DefaultOffsetMetadataMaxBytes
	}
	out.OffsetMetadataMaxBytes = min(out.OffsetMetadataMaxBytes, offsetMetadataBytesLimit)
	if out.InitialRebalanceDelay < 0 {
		out.InitialRebalanceDelay = 0
	}
	return out
}

// Options is what a Coordinator is made of. Store is required; the rest have defaults.
type Options struct {
	Config Config
	// Store holds the groups and offsets beyond this term (EtcdStore on a control-plane
	// node); the coordinator closes it when it stops.
	Store Store
	// Clock is the only source of time: every deadline (sessions, rebalances, expiry)
	// is read from it and every timer armed on it. Nil means the real clock.
	Clock clockwork.Clock
	// Partitions reports whether a topic exists and its partition count: OffsetCommit
	// refuses partitions that do not exist. Nil means none exists.
	Partitions func(topic string) (int32, bool)
	// Logger receives the coordinator's logs; nil discards them.
	Logger *slog.Logger
	// Metrics counts rebalances, expiries and commits; nil keeps a private set.
	Metrics *Metrics
	// VerifyTxn asks the transaction coordinator whether producerID, at epoch, has
	// added group to its ongoing transaction id (TxnOffsetCommit): 0 or the Kafka code
	// to answer. It may take the transaction coordinator's lock (never the other way
	// round). Nil refuses every TxnOffsetCommit (COORDINATOR_NOT_AVAILABLE).
	VerifyTxn func(id string, producerID int64, epoch int16, group string) int16
}

// Coordinator is the group coordinator for one term of controllership: it holds the
// groups in memory, applies the Kafka group requests to them one at a time, and writes
// what must survive it through its Store. A new term starts a new Coordinator, which
// loads the groups back and carries on (members keep their ids and generation).
//
// Lock order: Coordinator.mu, then the Store's own lock. Store completions and timers
// take mu themselves, so neither is ever called back with mu held.
type Coordinator struct {
	cfg        Config
	clock      clockwork.Clock
	logger     *slog.Logger
	metrics    *Metrics
	store      Store
	partitions func(topic string) (int32, bool)
	verify     func(id string, producerID int64, epoch int16, group string) int16

	mu      sync.Mutex
	groups  map[string]*group
	stopped bool
	loaded  chan struct{}
	// loadErr is set (before loaded closes) when the term ended before loading.
	loadErr error
}

// New returns a coordinator that has not loaded yet: requests wait for Run to load
// (up to groupLoadWait) and are answered "not active" if it does not.
func New(opts Options) *Coordinator {
	if opts.Store == nil {
		panic("groups: New without a Store")
	}
	co := &Coordinator{cfg: opts.Config.withDefaults(), clock: opts.Clock, logger: opts.Logger,
		metrics: opts.Metrics, store: opts.Store, partitions: opts.Partitions, verify: opts.VerifyTxn,
		groups: map[string]*group{}, loaded: make(chan struct{})}
	if co.clock == nil {
		co.clock = clockwork.NewRealClock()
	}
	if co.logger == nil {
		co.logger = slog.New(slog.DiscardHandler)
	}
	if co.metrics == nil {
		co.metrics = NewMetrics(vm.NewSet())
	}
	if co.partitions == nil {
		co.partitions = func(string) (int32, bool) { return 0, false }
	}
	return co
}

// Run is the term: it loads the groups (retrying until ctx ends), calls loaded (the node
// publishes its listener there), expires offsets and groups every expiry interval until
// ctx ends, and then stops: whatever is still waiting is answered "not active".
func (co *Coordinator) Run(ctx context.Context, loaded func(ctx context.Context)) {
	defer co.stop()
	if err := term.Load(ctx, co.clock, co.logger, "loading groups failed; retrying",
		groupLoadRetryMin, groupLoadRetryMax, nil, co.load); err != nil {
		co.loadErr = err
		close(co.loaded)
		return
	}
	close(co.loaded)
	if loaded != nil {
		loaded(ctx)
	}
	co.logger.Info("group coordinator active", "groups", co.GroupCount())
	t := co.clock.NewTicker(co.expiryInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
			co.expire(co.clock.Now())
		}
	}
}

// expiryInterval is how often Run expires offsets: a quarter of the retention, within
// [groupExpiryIntervalMin, groupExpiryInterval].
func (co *Coordinator) expiryInterval() time.Duration {
	return min(groupExpiryInterval, max(co.cfg.OffsetsRetention/4, groupExpiryIntervalMin))
}

// GroupCount returns the number of groups held.
func (co *Coordinator) GroupCount() int {
	co.mu.Lock()
	defer co.mu.Unlock()
	return len(co.groups)
}

// load builds the groups from the store. Members get a fresh session: they carry on if
// they heartbeat within it.
func (co *Coordinator) load(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, storeWriteTimeout)
	defer cancel()
	lg, err := loadGroups(lctx, co.store)
	if err != nil {
		return err
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	now := co.clock.Now()
	co.groups = lg.build(now)
	for _, g := range co.groups {
		for _, m := range g.members {
			co.heartbeat(g, m, now)
		}
	}
	return nil
}

// build makes the groups of what was loaded: those with members are Stable in their
// persisted generation (their sessions start when armed); the rest are Empty.
func (lg *loadedGroups) build(now time.Time) map[string]*group {
	groups := map[string]*group{}
	for name, rec := range lg.groups {
		g := newGroup(name, time.UnixMilli(rec.StateMs))
		g.generation, g.protocolType, g.protocol, g.leader = rec.Generation, rec.ProtocolType, rec.Protocol, rec.Leader
		g.persisted = true
		for _, mr := range rec.Members {
			m := &member{id: mr.ID, instanceID: mr.InstanceID, clientID: mr.ClientID, clientHost: mr.ClientHost,
				sessionTimeout:   time.Duration(mr.SessionTimeoutMs) * time.Millisecond,
				rebalanceTimeout: time.Duration(mr.RebalanceTimeout) * time.Millisecond,
				assignment:       mr.Assignment, persistedMetadata: mr.Metadata}
			if g.protocol != "" {
				m.protocols = []kmsg.JoinGroupRequestProtocol{{Name: g.protocol, Metadata: mr.Metadata}}
			}
			g.members[m.id] = m
			if m.instanceID != nil {
				g.static[*m.instanceID] = m.id
			}
		}
		if len(g.members) > 0 {
			g.state = stateStable
		}
		g.updateSubscribedTopics()
		groups[name] = g
	}
	for name, offs := range lg.offsets {
		g := groups[name]
		if g == nil {
			g = newGroup(name, now)
			groups[name] = g
		}
		g.offsets = offs
	}
	for name, byProducer := range lg.txnOffsets {
		g := groups[name]
		if g == nil {
			g = newGroup(name, now)
			groups[name] = g
		}
		g.txnOffsets = byProducer
	}
	return groups
}

// stop ends the term: pending joins and syncs are answered "not active" (their
// data-plane node resends to the next controller), timers stop, writes fail.
func (co *Coordinator) stop() {
	co.mu.Lock()
	co.stopped = true
	for _, g := range co.groups {
		stopTimer(g.joinTimer)
		stopTimer(g.syncTimer)
		for _, t := range g.pending {
			t.Stop()
		}
		for _, m := range g.members {
			stopTimer(m.heartbeatTimer)
			m.answerWaiting(notActiveCode)
		}
	}
	co.mu.Unlock()
	co.store.Close()
}

// notActiveCode is an internal marker inside the rules: the answer becomes
// Answer.NotActive.
const notActiveCode = term.NotActiveCode

// getGroup returns the group, creating it (Empty) when create is set.
func (co *Coordinator) getGroup(id string, create bool) *group {
	g := co.groups[id]
	if g == nil && create {
		g = newGroup(id, co.clock.Now())
		co.groups[id] = g
	}
	return g
}

// maybeForget drops an empty group that holds nothing worth keeping.
func (co *Coordinator) maybeForget(g *group) {
	if g.state == stateEmpty && len(g.members) == 0 && len(g.pending) == 0 && len(g.offsets) == 0 &&
		len(g.txnOffsets) == 0 && g.offsetWrites == 0 && !g.persisted {
		if co.groups[g.id] == g {
			delete(co.groups, g.id)
		}
		g.state = stateDead
	}
}

// record is the group's persisted form.
func (g *group) record() groupRecord {
	rec := groupRecord{Generation: g.generation, ProtocolType: g.protocolType, Protocol: g.protocol,
		Leader: g.leader, StateMs: g.stateSince.UnixMilli()}
	for _, m := range g.sortedMembers() {
		rec.Members = append(rec.Members, memberRecord{ID: m.id, InstanceID: m.instanceID, ClientID: m.clientID,
			ClientHost: m.clientHost, SessionTimeoutMs: int32(m.sessionTimeout / time.Millisecond),
			RebalanceTimeout: int32(m.rebalanceTimeout / time.Millisecond),
			Metadata:         m.metadataFor(g.protocol), Assignment: m.assignment})
	}
	return rec
}

// persistGroup writes the group's record; done (if set) runs with the lock held and a
// Kafka code: 0, NOT_COORDINATOR-like marker, or UNKNOWN_SERVER_ERROR if too large.
func (co *Coordinator) persistGroup(g *group, done func(code int16)) {
	rec := g.record()
	v := cluster.MustJSON(rec)
	if len(v) > groupRecordMax {
		for i := range rec.Members {
			rec.Members[i].Metadata = nil // only shown by DescribeGroups
		}
		v = cluster.MustJSON(rec)
	}
	if len(v) > groupRecordMax {
		if done != nil {
			done(kerr.UnknownServerError.Code)
		}
		return
	}
	g.persisted = true
	co.store.Submit([]Op{{Key: cluster.GroupKey(g.id), Value: v}}, func(err error) {
		if done == nil {
			if err != nil {
				co.logger.Warn("group write failed", "group", g.id, "err", err)
			}
			return
		}
		co.mu.Lock()
		defer co.mu.Unlock()
		done(storeCode(err))
	})
}

// storeCode maps a store error to what the client is told.
func storeCode(err error) int16 { return term.StoreCode(err) }

// expire drops expired offsets and the groups they leave behind, as Kafka's offset
// cleanup does (offsets.retention.minutes, KIP-211):
//
//   - a group of manually assigned consumers (no protocol type: it never had members)
//     loses each offset the retention period after its commit, and goes with the last;
//   - a group that had members and is now Empty loses its offsets the retention period
//     after it emptied, and goes with them;
//   - a Stable consumer group loses the offsets of topics no member subscribes to any
//     more, the retention period after their commit.
//
// An offset committed with an explicit retention (OffsetCommit v2-v4) expires at the
// time it named instead. A partition with a commit being written is left alone.
func (co *Coordinator) expire(now time.Time) {
	co.mu.Lock()
	defer co.mu.Unlock()
	for _, g := range co.groups {
		var since func(offsetRecord) time.Time
		var subscribed map[string]bool
		switch {
		case len(g.pending) > 0 || len(g.txnOffsets) > 0:
			continue // joining members, or offsets of a transaction not ended
		case g.state == stateEmpty && g.protocolType == "" && !g.persisted:
			// Manually assigned consumers only (a group record means members once,
			// written by a version that cleared the protocol type of an emptied group).
			since = func(o offsetRecord) time.Time { return time.UnixMilli(o.CommitMs) }
		case g.state == stateEmpty:
			if now.Sub(g.stateSince) >= co.cfg.OffsetsRetention && len(g.pendingCommits) == 0 &&
				!g.hasExplicitRetentionAfter(now) {
				co.deleteGroup(g, func(code int16) {
					if code == 0 {
						co.metrics.groupsExpired.Inc()
					}
				})
				continue
			}
			// Only offsets with a retention of their own (or, past the group's, not
			// under a commit) go before the group does.
			since = func(offsetRecord) time.Time { return g.stateSince }
		case g.state == stateStable && g.protocolType == consumerProtocolType && g.subscribedKnown:
			subscribed = g.subscribed
			since = func(o offsetRecord) time.Time { return time.UnixMilli(o.CommitMs) }
		default:
			continue
		}
		var gone []topicPartition
		for tp, o := range g.offsets {
			expired := now.Sub(since(o)) >= co.cfg.OffsetsRetention
			if o.ExpireMs > 0 {
				expired = now.UnixMilli() >= o.ExpireMs
			}
			if expired && g.pendingCommits[tp] == 0 && !subscribed[tp.topic] {
				gone = append(gone, tp)
			}
		}
		co.expireOffsets(g, gone)
		co.maybeForget(g)
	}
}

// hasExplicitRetentionAfter reports whether one of g's offsets was committed with a
// retention (OffsetCommit v2-v4) that has not passed yet.
func (g *group) hasExplicitRetentionAfter(now time.Time) bool {
	for _, o := range g.offsets {
		if o.ExpireMs > now.UnixMilli() {
			return true
		}
	}
	return false
}

// expireOffsets deletes g's offsets of gone.
func (co *Coordinator) expireOffsets(g *group, gone []topicPartition) {
	if len(gone) == 0 {
		return
	}
	ops := make([]Op, len(gone))
	for i, tp := range gone {
		ops[i] = Op{Key: cluster.OffsetKey(g.id, tp.topic, tp.partition), Delete: true}
	}
	g.offsetWrites++
	co.submitChunked(ops, func(errs []error) {
		co.mu.Lock()
		defer co.mu.Unlock()
		g.offsetWrites--
		n := 0
		for i, tp := range gone {
			// A commit queued since is written after this delete, and its completion
			// (which comes after this one) puts it back here.
			if errs[i] == nil {
				delete(g.offsets, tp)
				n++
			}
		}
		co.metrics.offsetsExpired.Add(n)
		co.maybeForget(g)
	})
}

// deleteGroup removes an empty group and its offsets; done runs with the lock held.
func (co *Coordinator) deleteGroup(g *group, done func(code int16)) {
	emptySince := g.stateSince
	g.transition(stateDead, co.clock.Now())
	co.store.Submit([]Op{{Key: cluster.GroupKey(g.id), Delete: true}, {Key: cluster.GroupOffsetsPrefix(g.id), Delete: true, Prefix: true}}, func(err error) {
		co.mu.Lock()
		defer co.mu.Unlock()
		code := storeCode(err)
		if code == 0 {
			if co.groups[g.id] == g {
				delete(co.groups, g.id)
			}
		} else if g.state == stateDead {
			g.transition(stateEmpty, emptySince) // not deleted: still there, as empty as before
		}
		done(code)
	})
}

// validGroupID applies Kafka's rule (non-empty) and our length bound.
func validGroupID(id string) bool { return id != "" && len(id) <= groupIDLenMax }

// ---- offsets ----

type commitPartition struct {
	tp   topicPartition
	rec  offsetRecord
	code int16
}

// commitOffsets validates and writes an OffsetCommit; reply gets one code per
// partition in request order (or one code for all when all is set).
func (co *Coordinator) commitOffsets(req *kmsg.OffsetCommitRequest, reply func(all int16, codes []int16)) {
	var parts []commitPartition
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			parts = append(parts, commitPartition{tp: topicPartition{t.Topic, p.Partition}})
		}
	}
	if !validGroupID(req.Group) {
		reply(kerr.InvalidGroupID.Code, nil)
		return
	}
	if len(parts) > groupOffsetsPerCommitMax {
		reply(kerr.InvalidRequest.Code, nil)
		return
	}
	g := co.getGroup(req.Group, req.Generation < 0)
	switch {
	case g == nil:
		reply(kerr.IllegalGeneration.Code, nil)
		return
	case g.state == stateDead:
		reply(kerr.CoordinatorNotAvailable.Code, nil)
		return
	case req.Generation < 0 && g.state == stateEmpty:
		// A consumer outside group management (manual assignment) commits freely.
	case !g.instanceMatches(req.InstanceID, req.MemberID):
		reply(kerr.FencedInstanceID.Code, nil)
		return
	case g.members[req.MemberID] == nil:
		reply(kerr.UnknownMemberID.Code, nil)
		return
	case req.Generation != g.generation:
		reply(kerr.IllegalGeneration.Code, nil)
		return
	case g.state == stateCompletingRebalance:
		// A current member that has not had its assignment yet (Kafka's answer: the
		// member knows the generation, so it only has to wait for the rebalance).
		reply(kerr.RebalanceInProgress.Code, nil)
		return
	default:
		co.heartbeat(g, g.members[req.MemberID], co.clock.Now())
	}
	now := co.clock.Now().UnixMilli()
	// OffsetCommit v2-v4 may name its own retention (-1: the broker's).
	expireMs := int64(0)
	if req.Version >= 2 && req.Version <= 4 && req.RetentionTimeMillis >= 0 {
		expireMs = now + req.RetentionTimeMillis
	}
	var ops []Op
	seen := map[topicPartition]int{}
	opOf := make([]int, len(parts)) // the op that writes each partition (-1: none)
	i := 0
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			cp := &parts[i]
			opOf[i] = -1
			i++
			meta, code := co.checkOffset(t.Topic, p.Partition, p.Metadata)
			if code != 0 {
				cp.code = code
				continue
			}
			cp.rec = offsetRecord{Offset: p.Offset, LeaderEpoch: p.LeaderEpoch, Metadata: meta, CommitMs: now, ExpireMs: expireMs}
			if j, dup := seen[cp.tp]; dup {
				ops[j].Value = cluster.MustJSON(cp.rec) // the last of a partition named twice wins
				opOf[i-1] = j
				continue
			}
			seen[cp.tp] = len(ops)
			opOf[i-1] = len(ops)
			ops = append(ops, Op{Key: cluster.OffsetKey(g.id, cp.tp.topic, cp.tp.partition), Value: cluster.MustJSON(cp.rec)})
		}
	}
	if len(ops) == 0 {
		reply(0, codes(parts, opOf, nil))
		return
	}
	// Until the write completes, expiry leaves these partitions alone and the group is
	// not forgotten: the acknowledged commit must be what stays.
	for tp := range seen {
		g.pendingCommits[tp]++
	}
	g.offsetWrites++
	start := co.clock.Now()
	co.submitChunked(ops, func(errs []error) {
		co.mu.Lock()
		defer co.mu.Unlock()
		g.offsetWrites--
		for tp := range seen {
			if g.pendingCommits[tp]--; g.pendingCommits[tp] <= 0 {
				delete(g.pendingCommits, tp)
			}
		}
		opCodes := make([]int16, len(errs))
		written := 0
		for j, err := range errs {
			if opCodes[j] = storeCode(err); opCodes[j] == notActiveCode {
				reply(notActiveCode, nil) // resent to the next controller whole
				return
			} else if opCodes[j] == 0 {
				written++
			}
		}
		if co.groups[g.id] == g {
			for k, cp := range parts {
				if cp.code == 0 && opCodes[opOf[k]] == 0 {
					g.offsets[cp.tp] = cp.rec
				}
			}
		}
		co.metrics.offsetCommits.Add(written)
		co.metrics.commitLatency.Update(co.clock.Since(start).Seconds())
		reply(0, codes(parts, opOf, opCodes))
	})
}

// checkOffset checks a partition's offset commit (OffsetCommit, TxnOffsetCommit): it
// returns the commit's metadata ("" when null) and 0, or the code to answer the
// partition with when its topic or partition does not exist or its metadata is too
// large.
func (co *Coordinator) checkOffset(topic string, partition int32, metadata *string) (meta string, code int16) {
	if metadata != nil {
		meta = *metadata
	}
	partitions, ok := co.partitions(topic)
	switch {
	case !ok || partition < 0 || partition >= partitions:
		return meta, kerr.UnknownTopicOrPartition.Code
	case len(meta) > co.cfg.OffsetMetadataMaxBytes:
		return meta, kerr.OffsetMetadataTooLarge.Code
	}
	return meta, 0
}

// codes are an OffsetCommit's answers in request order: a partition's own refusal, else
// the outcome of the op that wrote it.
func codes(parts []commitPartition, opOf []int, opCodes []int16) []int16 {
	out := make([]int16, len(parts))
	for i, cp := range parts {
		out[i] = cp.code
		if out[i] == 0 && opOf[i] >= 0 && opCodes != nil {
			out[i] = opCodes[opOf[i]]
		}
	}
	return out
}

// submitChunked queues ops as as many store requests as one etcd transaction's bounds
// need (a commit of thousands of partitions, or an expiry of thousands of offsets,
// would otherwise be refused by etcd every time); done gets each op's outcome once the
// last has completed (the store completes requests in order).
func (co *Coordinator) submitChunked(ops []Op, done func(errs []error)) {
	errs := make([]error, len(ops))
	chunks := chunkOps(ops)
	// Counted rather than "the last chunk's callback": a stopped store fails each
	// request on a goroutine of its own, in no order.
	var remaining atomic.Int32
	remaining.Store(int32(len(chunks)))
	first := 0
	for _, chunk := range chunks {
		lo := first
		first += len(chunk)
		co.store.Submit(chunk, func(err error) {
			for j := range chunk {
				errs[lo+j] = err
			}
			if remaining.Add(-1) == 0 {
				done(errs)
			}
		})
	}
}

// chunkOps splits ops into runs within the store's per-transaction bounds (a single op
// above the byte bound goes alone: offset metadata is bounded well below etcd's request
// limit).
func chunkOps(ops []Op) [][]Op {
	var chunks [][]Op
	start, bytes := 0, 0
	for i, o := range ops {
		size := len(o.Key) + len(o.Value)
		if i > start && (i-start >= storeBatchOpsMax || bytes+size > storeBatchBytesMax) {
			chunks = append(chunks, ops[start:i:i])
			start, bytes = i, 0
		}
		bytes += size
	}
	return append(chunks, ops[start:])
}

// fetchOffsets answers OffsetFetch: the requested partitions (all committed ones when
// topics is nil), -1 where nothing is committed. With require_stable (v7, KIP-447), a
// partition whose offset a transaction not ended yet holds pending is answered
// UNSTABLE_OFFSET_COMMIT, as Kafka does: the consumer asks again, and starts from that
// transaction's offset if it commits (a consumer taking a partition over from a member
// whose transaction is being committed must not start from the offset before it).
func (co *Coordinator) fetchOffsets(req *kmsg.OffsetFetchRequest, resp *kmsg.OffsetFetchResponse) {
	g := co.groups[req.Group]
	if !validGroupID(req.Group) {
		resp.ErrorCode = kerr.InvalidGroupID.Code
		g = nil
	}
	lookup := func(tp topicPartition) kmsg.OffsetFetchResponseTopicPartition {
		p := kmsg.NewOffsetFetchResponseTopicPartition()
		p.Partition = tp.partition
		p.Offset, p.LeaderEpoch = -1, -1
		if g != nil && req.RequireStable && g.txnPending(tp) {
			p.ErrorCode = kerr.UnstableOffsetCommit.Code
			p.Metadata = kmsg.StringPtr("")
			return p
		}
		if g != nil {
			if o, ok := g.offsets[tp]; ok {
				p.Offset, p.LeaderEpoch = o.Offset, o.LeaderEpoch
				p.Metadata = kmsg.StringPtr(o.Metadata)
			}
		}
		if p.Metadata == nil {
			p.Metadata = kmsg.StringPtr("")
		}
		return p
	}
	if req.Topics == nil {
		if g == nil {
			return
		}
		byTopic := map[string][]topicPartition{}
		for tp := range g.offsets {
			byTopic[tp.topic] = append(byTopic[tp.topic], tp)
		}
		for _, topic := range sortedKeys(byTopic) {
			tps := byTopic[topic]
			slices.SortFunc(tps, func(a, b topicPartition) int { return int(a.partition - b.partition) })
			ft := kmsg.NewOffsetFetchResponseTopic()
			ft.Topic = topic
			for _, tp := range tps {
				ft.Partitions = append(ft.Partitions, lookup(tp))
			}
			resp.Topics = append(resp.Topics, ft)
		}
		return
	}
	for _, t := range req.Topics {
		ft := kmsg.NewOffsetFetchResponseTopic()
		ft.Topic = t.Topic
		for _, p := range t.Partitions {
			ft.Partitions = append(ft.Partitions, lookup(topicPartition{t.Topic, p}))
		}
		resp.Topics = append(resp.Topics, ft)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// deleteOffsets answers OffsetDelete: an empty group loses the named offsets; a
// consumer group with members keeps those of topics its members subscribe to.
func (co *Coordinator) deleteOffsets(req *kmsg.OffsetDeleteRequest, reply func(code int16, codes map[topicPartition]int16)) {
	g := co.groups[req.Group]
	switch {
	case !validGroupID(req.Group):
		reply(kerr.InvalidGroupID.Code, nil)
		return
	case g == nil || g.state == stateDead:
		reply(kerr.GroupIDNotFound.Code, nil)
		return
	case len(g.members) > 0 && !g.subscribedKnown:
		// Not a consumer group, or one whose subscriptions are not known: like
		// Kafka, only an empty one loses offsets.
		reply(kerr.NonEmptyGroup.Code, nil)
		return
	}
	subscribed := g.subscribed
	codes := map[topicPartition]int16{}
	var ops []Op
	var gone []topicPartition
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			tp := topicPartition{t.Topic, p.Partition}
			if subscribed[t.Topic] {
				codes[tp] = kerr.GroupSubscribedToTopic.Code
				continue
			}
			if _, ok := g.offsets[tp]; ok && codes[tp] == 0 {
				if !slices.Contains(gone, tp) {
					ops = append(ops, Op{Key: cluster.OffsetKey(g.id, tp.topic, tp.partition), Delete: true})
					gone = append(gone, tp)
				}
			}
		}
	}
	if len(ops) == 0 {
		reply(0, codes)
		return
	}
	co.writeOffsets(g, ops, gone, codes, func(tp topicPartition) { delete(g.offsets, tp) }, reply)
}

// writeOffsets submits ops, the writes of g's offsets of tps (one each), counted in
// g.offsetWrites while in flight. Once they are done, with the lock held, each
// partition's code goes in codes and stored is called for each one written; reply then
// gets 0 and codes, or notActiveCode and nil at the first write refused because the
// term is over.
func (co *Coordinator) writeOffsets(g *group, ops []Op, tps []topicPartition, codes map[topicPartition]int16,
	stored func(tp topicPartition), reply func(code int16, codes map[topicPartition]int16)) {
	g.offsetWrites++
	co.submitChunked(ops, func(errs []error) {
		co.mu.Lock()
		defer co.mu.Unlock()
		g.offsetWrites--
		for i, tp := range tps {
			code := storeCode(errs[i])
			if code == notActiveCode {
				reply(notActiveCode, nil)
				return
			}
			codes[tp] = code
			if code == 0 {
				stored(tp)
			}
		}
		reply(0, codes)
	})
}

// updateSubscribedTopics computes subscribed from the members' metadata for the
// selected protocol.
func (g *group) updateSubscribedTopics() {
	g.subscribed, g.subscribedKnown = map[string]bool{}, g.protocolType == consumerProtocolType
	if !g.subscribedKnown {
		return
	}
	for _, m := range g.members {
		var md kmsg.ConsumerMemberMetadata
		b := m.metadataFor(g.protocol)
		if len(b) == 0 || md.ReadFrom(b) != nil {
			g.subscribed, g.subscribedKnown = map[string]bool{}, false
			return
		}
		for _, t := range md.Topics {
			g.subscribed[t] = true
		}
	}
}
