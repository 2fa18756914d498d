package controlplane

// Group coordination. The active controller runs every consumer group: data-plane
// nodes forward the Kafka group requests they receive to its internal listener
// (Config.Listen; protocol in controlplane/client/groups.go). Its groupRuntime holds the
// groups in memory and writes what must survive it to etcd through a groupStore; a new
// controller loads them back and carries on (members keep their ids and generation).
// Only the active controller answers; any other node answers "not active" and the
// data-plane node looks the coordinator up again.

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/gregor-streaming/gregor/controlplane/client"
)

// GroupConfig holds the group coordinator's settings (Kafka's group.* and offsets.*
// broker configs). Zero values take the defaults below, except InitialRebalanceDelay:
// zero means no delay (gregor-cp's flag defaults to Kafka's 3 s).
type GroupConfig struct {
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

// Defaults of GroupConfig.
const (
	DefaultGroupMinSessionTimeout = 6 * time.Second
	DefaultGroupMaxSessionTimeout = 30 * time.Minute
	DefaultOffsetsRetention       = 7 * 24 * time.Hour
	DefaultOffsetMetadataMaxBytes = 4096
	DefaultInitialRebalanceDelay  = 3 * time.Second
	groupIDLenMax                 = 1024
	memberBytesMax                = 1 << 20 // one member's metadata (all protocols) or assignment
	groupLoadWait                 = 10 * time.Second
	groupExpiryInterval           = time.Minute
	groupOffsetsPerCommitMax      = 1 << 16
	// offsetMetadataBytesLimit caps OffsetMetadataMaxBytes so that one committed offset,
	// its metadata JSON-escaped (up to 6 bytes a byte), fits one store transaction
	// (storeBatchBytesMax) on its own.
	offsetMetadataBytesLimit = 128 << 10
	groupLoadRetryMax        = 2 * time.Second
	hwCacheTTL               = time.Second
)

func (c *GroupConfig) withDefaults() GroupConfig {
	out := *c
	if out.MinSessionTimeout <= 0 {
		out.MinSessionTimeout = DefaultGroupMinSessionTimeout
	}
	if out.MaxSessionTimeout <= 0 {
		out.MaxSessionTimeout = DefaultGroupMaxSessionTimeout
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

// groupRuntime is the coordinator for one term of controllership.
type groupRuntime struct {
	s       *Server
	cfg     GroupConfig
	metrics *metrics
	store   *groupStore

	mu      sync.Mutex
	groups  map[string]*group
	stopped bool
	loaded  chan struct{}
	// loadErr is set (before loaded closes) when the term ended before loading.
	loadErr error
}

// runGroups is the coordinator for the term of controllership held by e: it loads the
// groups, publishes this node's internal listener, serves until ctx ends, and then
// fails whatever is still waiting with "not active".
func (s *Server) runGroups(ctx context.Context, sess *concurrency.Session, e *concurrency.Election) {
	rt := &groupRuntime{s: s, cfg: s.cfg.Groups.withDefaults(), metrics: s.metrics,
		groups: map[string]*group{}, loaded: make(chan struct{})}
	rt.store = newGroupStore(s.cli, e.Key(), e.Rev(), s.metrics.observeGroupStore)
	s.groupRT.Store(rt)
	defer func() {
		s.groupRT.CompareAndSwap(rt, nil)
		rt.stop()
	}()
	backoff := 50 * time.Millisecond
	for {
		err := rt.load(ctx)
		if err == nil {
			break
		}
		s.logger.Warn("loading groups failed; retrying", "err", err)
		sleepCtx(ctx, backoff)
		backoff = min(2*backoff, groupLoadRetryMax)
		if ctx.Err() != nil {
			rt.loadErr = errNotActive
			close(rt.loaded)
			return
		}
	}
	close(rt.loaded)
	if s.listener != nil {
		for ctx.Err() == nil {
			err := s.cli.PutGroupCoordinator(ctx, e.Key(), e.Rev(), sess.Lease(),
				client.GroupCoordinator{Name: s.cfg.Name, Addr: s.listener.Addr().String()})
			if err == nil {
				break
			}
			s.logger.Warn("publishing the group coordinator failed; retrying", "err", err)
			sleepCtx(ctx, backoff)
		}
	}
	s.logger.Info("group coordinator active", "groups", rt.groupCount())
	t := time.NewTicker(min(groupExpiryInterval, max(rt.cfg.OffsetsRetention/4, 10*time.Millisecond)))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rt.expire(time.Now())
		}
	}
}

func (rt *groupRuntime) groupCount() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return len(rt.groups)
}

// load builds the groups from etcd. Members get a fresh session: they carry on if they
// heartbeat within it.
func (rt *groupRuntime) load(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, storeWriteTimeout)
	defer cancel()
	lg, err := loadGroups(lctx, rt.s.ec)
	if err != nil {
		return err
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	now := time.Now()
	rt.groups = lg.build(now)
	for _, g := range rt.groups {
		for _, m := range g.members {
			rt.heartbeat(g, m, now)
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
	return groups
}

// stop ends the term: pending joins and syncs are answered "not active" (their
// data-plane node resends to the next controller), timers stop, writes fail.
func (rt *groupRuntime) stop() {
	rt.mu.Lock()
	rt.stopped = true
	for _, g := range rt.groups {
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
	rt.mu.Unlock()
	rt.store.close()
}

// notActiveCode is an internal marker: the reply becomes GroupStatusNotActive.
const notActiveCode int16 = -32768

// getGroup returns the group, creating it (Empty) when create is set.
func (rt *groupRuntime) getGroup(id string, create bool) *group {
	g := rt.groups[id]
	if g == nil && create {
		g = newGroup(id, time.Now())
		rt.groups[id] = g
	}
	return g
}

// maybeForget drops an empty group that holds nothing worth keeping.
func (rt *groupRuntime) maybeForget(g *group) {
	if g.state == stateEmpty && len(g.members) == 0 && len(g.pending) == 0 && len(g.offsets) == 0 &&
		g.offsetWrites == 0 && !g.persisted {
		if rt.groups[g.id] == g {
			delete(rt.groups, g.id)
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
func (rt *groupRuntime) persistGroup(g *group, done func(code int16)) {
	rec := g.record()
	v := mustJSON(rec)
	if len(v) > groupRecordMax {
		for i := range rec.Members {
			rec.Members[i].Metadata = nil // only shown by DescribeGroups
		}
		v = mustJSON(rec)
	}
	if len(v) > groupRecordMax {
		if done != nil {
			done(kerr.UnknownServerError.Code)
		}
		return
	}
	g.persisted = true
	rt.store.submit([]storeOp{{key: groupKey(g.id), value: v}}, func(err error) {
		if done == nil {
			if err != nil {
				rt.s.logger.Warn("group write failed", "group", g.id, "err", err)
			}
			return
		}
		rt.mu.Lock()
		defer rt.mu.Unlock()
		done(storeCode(err))
	})
}

// storeCode maps a store error to what the client is told.
func storeCode(err error) int16 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errNotActive):
		return notActiveCode
	default:
		return kerr.CoordinatorNotAvailable.Code // etcd trouble: retriable
	}
}

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
func (rt *groupRuntime) expire(now time.Time) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, g := range rt.groups {
		var since func(offsetRecord) time.Time
		var subscribed map[string]bool
		switch {
		case len(g.pending) > 0:
			continue
		case g.state == stateEmpty && g.protocolType == "" && !g.persisted:
			// Manually assigned consumers only (a group record means members once,
			// written by a version that cleared the protocol type of an emptied group).
			since = func(o offsetRecord) time.Time { return time.UnixMilli(o.CommitMs) }
		case g.state == stateEmpty:
			if now.Sub(g.stateSince) >= rt.cfg.OffsetsRetention && len(g.pendingCommits) == 0 &&
				!g.hasExplicitRetentionAfter(now) {
				rt.deleteGroup(g, func(code int16) {
					if code == 0 {
						rt.metrics.groupsExpired.Inc()
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
			expired := now.Sub(since(o)) >= rt.cfg.OffsetsRetention
			if o.ExpireMs > 0 {
				expired = now.UnixMilli() >= o.ExpireMs
			}
			if expired && g.pendingCommits[tp] == 0 && !subscribed[tp.topic] {
				gone = append(gone, tp)
			}
		}
		rt.expireOffsets(g, gone)
		rt.maybeForget(g)
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
func (rt *groupRuntime) expireOffsets(g *group, gone []topicPartition) {
	if len(gone) == 0 {
		return
	}
	ops := make([]storeOp, len(gone))
	for i, tp := range gone {
		ops[i] = storeOp{key: offsetKey(g.id, tp), del: true}
	}
	g.offsetWrites++
	rt.submitChunked(ops, func(errs []error) {
		rt.mu.Lock()
		defer rt.mu.Unlock()
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
		rt.metrics.offsetsExpired.Add(n)
		rt.maybeForget(g)
	})
}

// deleteGroup removes an empty group and its offsets; done runs with the lock held.
func (rt *groupRuntime) deleteGroup(g *group, done func(code int16)) {
	emptySince := g.stateSince
	g.transition(stateDead, time.Now())
	rt.store.submit([]storeOp{{key: groupKey(g.id), del: true}, {key: offsetsPrefix(g.id), del: true, prefix: true}}, func(err error) {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		code := storeCode(err)
		if code == 0 {
			if rt.groups[g.id] == g {
				delete(rt.groups, g.id)
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
func (rt *groupRuntime) commitOffsets(req *kmsg.OffsetCommitRequest, reply func(all int16, codes []int16)) {
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
	g := rt.getGroup(req.Group, req.Generation < 0)
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
		rt.heartbeat(g, g.members[req.MemberID], time.Now())
	}
	snap := rt.s.snapshot()
	now := time.Now().UnixMilli()
	// OffsetCommit v2-v4 may name its own retention (-1: the broker's).
	expireMs := int64(0)
	if req.Version >= 2 && req.Version <= 4 && req.RetentionTimeMillis >= 0 {
		expireMs = now + req.RetentionTimeMillis
	}
	var ops []storeOp
	seen := map[topicPartition]int{}
	opOf := make([]int, len(parts)) // the op that writes each partition (-1: none)
	i := 0
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			cp := &parts[i]
			opOf[i] = -1
			i++
			meta := ""
			if p.Metadata != nil {
				meta = *p.Metadata
			}
			topic, ok := snap.Topics[t.Topic]
			switch {
			case !ok || p.Partition < 0 || p.Partition >= topic.Partitions:
				cp.code = kerr.UnknownTopicOrPartition.Code
				continue
			case len(meta) > rt.cfg.OffsetMetadataMaxBytes:
				cp.code = kerr.OffsetMetadataTooLarge.Code
				continue
			}
			cp.rec = offsetRecord{Offset: p.Offset, LeaderEpoch: p.LeaderEpoch, Metadata: meta, CommitMs: now, ExpireMs: expireMs}
			if j, dup := seen[cp.tp]; dup {
				ops[j].value = mustJSON(cp.rec) // the last of a partition named twice wins
				opOf[i-1] = j
				continue
			}
			seen[cp.tp] = len(ops)
			opOf[i-1] = len(ops)
			ops = append(ops, storeOp{key: offsetKey(g.id, cp.tp), value: mustJSON(cp.rec)})
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
	start := time.Now()
	rt.submitChunked(ops, func(errs []error) {
		rt.mu.Lock()
		defer rt.mu.Unlock()
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
		if rt.groups[g.id] == g {
			for k, cp := range parts {
				if cp.code == 0 && opCodes[opOf[k]] == 0 {
					g.offsets[cp.tp] = cp.rec
				}
			}
		}
		rt.metrics.offsetCommits.Add(written)
		rt.metrics.commitLatency.UpdateDuration(start)
		reply(0, codes(parts, opOf, opCodes))
	})
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
func (rt *groupRuntime) submitChunked(ops []storeOp, done func(errs []error)) {
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
		rt.store.submit(chunk, func(err error) {
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
func chunkOps(ops []storeOp) [][]storeOp {
	var chunks [][]storeOp
	start, bytes := 0, 0
	for i, o := range ops {
		size := len(o.key) + len(o.value)
		if i > start && (i-start >= storeBatchOpsMax || bytes+size > storeBatchBytesMax) {
			chunks = append(chunks, ops[start:i:i])
			start, bytes = i, 0
		}
		bytes += size
	}
	return append(chunks, ops[start:])
}

// fetchOffsets answers OffsetFetch: the requested partitions (all committed ones when
// topics is nil), -1 where nothing is committed.
func (rt *groupRuntime) fetchOffsets(req *kmsg.OffsetFetchRequest, resp *kmsg.OffsetFetchResponse) {
	g := rt.groups[req.Group]
	if !validGroupID(req.Group) {
		resp.ErrorCode = kerr.InvalidGroupID.Code
		g = nil
	}
	lookup := func(tp topicPartition) kmsg.OffsetFetchResponseTopicPartition {
		p := kmsg.NewOffsetFetchResponseTopicPartition()
		p.Partition = tp.partition
		p.Offset, p.LeaderEpoch = -1, -1
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
			rt := kmsg.NewOffsetFetchResponseTopic()
			rt.Topic = topic
			for _, tp := range tps {
				rt.Partitions = append(rt.Partitions, lookup(tp))
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return
	}
	for _, t := range req.Topics {
		rt := kmsg.NewOffsetFetchResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rt.Partitions = append(rt.Partitions, lookup(topicPartition{t.Topic, p}))
		}
		resp.Topics = append(resp.Topics, rt)
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
func (rt *groupRuntime) deleteOffsets(req *kmsg.OffsetDeleteRequest, reply func(code int16, codes map[topicPartition]int16)) {
	g := rt.groups[req.Group]
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
	var ops []storeOp
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
					ops = append(ops, storeOp{key: offsetKey(g.id, tp), del: true})
					gone = append(gone, tp)
				}
			}
		}
	}
	if len(ops) == 0 {
		reply(0, codes)
		return
	}
	g.offsetWrites++
	rt.submitChunked(ops, func(errs []error) {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		g.offsetWrites--
		for i, tp := range gone {
			code := storeCode(errs[i])
			if code == notActiveCode {
				reply(code, nil)
				return
			}
			if code == 0 {
				delete(g.offsets, tp)
			}
			codes[tp] = code
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

// ---- lag ----

// GroupView is one group as /v1/cluster shows it.
type GroupView struct {
	Group        string            `json:"group"`
	State        string            `json:"state"`
	Generation   int32             `json:"generation"`
	ProtocolType string            `json:"protocolType,omitempty"`
	Protocol     string            `json:"protocol,omitempty"`
	Leader       string            `json:"leader,omitempty"`
	Members      []GroupMemberView `json:"members"`
	Offsets      []GroupOffsetView `json:"offsets"`
	TotalLag     int64             `json:"totalLag"`
}

// GroupMemberView is one member of a group.
type GroupMemberView struct {
	ID         string             `json:"id"`
	InstanceID string             `json:"instanceId,omitempty"`
	ClientID   string             `json:"clientId"`
	ClientHost string             `json:"clientHost"`
	Assignment map[string][]int32 `json:"assignment,omitempty"`
}

// GroupOffsetView is one committed offset and the partition's lag behind the high
// watermark last checkpointed by its leader (at most about a second old).
type GroupOffsetView struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	// HighWatermark is -1 when no checkpoint is known; Lag is then -1 too.
	HighWatermark int64  `json:"highWatermark"`
	Lag           int64  `json:"lag"`
	Metadata      string `json:"metadata,omitempty"`
}

// views describes every group with its lag against hws.
func (rt *groupRuntime) views(hws map[topicPartition]int64) []GroupView {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	var out []GroupView
	for _, id := range sortedKeys(rt.groups) {
		g := rt.groups[id]
		v := GroupView{Group: id, State: g.state.String(), Generation: g.generation, ProtocolType: g.protocolType,
			Protocol: g.protocol, Leader: g.leader, Members: []GroupMemberView{}, Offsets: []GroupOffsetView{}}
		for _, m := range g.sortedMembers() {
			mv := GroupMemberView{ID: m.id, ClientID: m.clientID, ClientHost: m.clientHost}
			if m.instanceID != nil {
				mv.InstanceID = *m.instanceID
			}
			if g.protocolType == consumerProtocolType && len(m.assignment) > 0 {
				var a kmsg.ConsumerMemberAssignment
				if a.ReadFrom(m.assignment) == nil {
					mv.Assignment = map[string][]int32{}
					for _, t := range a.Topics {
						mv.Assignment[t.Topic] = append(mv.Assignment[t.Topic], t.Partitions...)
					}
				}
			}
			v.Members = append(v.Members, mv)
		}
		for tp, o := range g.offsets {
			ov := GroupOffsetView{Topic: tp.topic, Partition: tp.partition, Offset: o.Offset, Metadata: o.Metadata, HighWatermark: -1, Lag: -1}
			if hw, ok := hws[tp]; ok {
				ov.HighWatermark, ov.Lag = hw, max(0, hw-o.Offset)
				v.TotalLag += ov.Lag
			}
			v.Offsets = append(v.Offsets, ov)
		}
		slices.SortFunc(v.Offsets, func(a, b GroupOffsetView) int {
			if a.Topic != b.Topic {
				if a.Topic < b.Topic {
					return -1
				}
				return 1
			}
			return int(a.Partition - b.Partition)
		})
		out = append(out, v)
	}
	return out
}

// highWatermarks reads the leaders' HW checkpoints (cached for hwCacheTTL), keeping
// only those of the topics' current incarnation.
func (s *Server) highWatermarks(ctx context.Context) map[topicPartition]int64 {
	s.hwMu.Lock()
	defer s.hwMu.Unlock()
	if time.Since(s.hwAt) < hwCacheTTL && s.hwCache != nil {
		return s.hwCache
	}
	out := map[topicPartition]int64{}
	snap := s.snapshot()
	resp, err := s.ec.Get(ctx, client.HWPrefix, clientv3.WithPrefix())
	if err == nil && snap != nil {
		for _, kv := range resp.Kvs {
			tp, ok := parseHWKey(string(kv.Key))
			if !ok {
				continue
			}
			var cp client.HWCheckpoint
			if json.Unmarshal(kv.Value, &cp) != nil {
				continue
			}
			if t, ok := snap.Topics[tp.topic]; ok && t.ID == cp.TopicID {
				out[tp] = cp.HighWatermark
			}
		}
	}
	s.hwCache, s.hwAt = out, time.Now()
	return out
}

// parseHWKey splits HWPrefix/<topic>/<partition>.
func parseHWKey(key string) (topicPartition, bool) {
	rest := key[len(client.HWPrefix):]
	for i := len(rest) - 1; i >= 0; i-- {
		if rest[i] == '/' {
			p, err := strconv.ParseInt(rest[i+1:], 10, 32)
			if err != nil {
				return topicPartition{}, false
			}
			return topicPartition{rest[:i], int32(p)}, true
		}
	}
	return topicPartition{}, false
}

// groupViewsFromStore describes groups from etcd, for a node that is not the active
// coordinator: the last persisted generation, members and offsets.
func (s *Server) groupViewsFromStore(ctx context.Context, hws map[topicPartition]int64) ([]GroupView, error) {
	lg, err := loadGroups(ctx, s.ec)
	if err != nil {
		return nil, err
	}
	rt := &groupRuntime{groups: lg.build(time.Now())}
	return rt.views(hws), nil
}
