package groups

// The classic consumer-group state machine, as Kafka's GroupCoordinator runs it:
//
//	Empty ──join──▶ PreparingRebalance ──all joined / rebalance timeout──▶ CompletingRebalance
//	  ▲                    ▲                                                     │
//	  │                    └──── join by leader, new metadata, leave, expiry ────┤ leader's SyncGroup
//	  └──── last member gone ◀──────────────────────────────────────────── Stable ◀┘
//
// Every method here runs with Coordinator.mu held; replies are queued to connection
// writers and never block. Timers take the lock themselves and check that what they were
// set for still holds.

import (
	"crypto/rand"
	"encoding/hex"
	"slices"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type topicPartition struct {
	topic     string
	partition int32
}

type groupState int8

const (
	stateEmpty groupState = iota
	statePreparingRebalance
	stateCompletingRebalance
	stateStable
	stateDead
)

func (s groupState) String() string {
	return [...]string{"Empty", "PreparingRebalance", "CompletingRebalance", "Stable", "Dead"}[s]
}

// consumerProtocolType is the protocol type of Kafka consumers: their metadata and
// assignments have a known format, which is checked.
const consumerProtocolType = "consumer"

// joinResult is what a JoinGroup is answered with.
type joinResult struct {
	code       int16
	memberID   string
	generation int32
	protocol   string
	protoType  string
	leader     string
	members    []kmsg.JoinGroupResponseMember
}

type member struct {
	id               string
	instanceID       *string
	clientID         string
	clientHost       string
	sessionTimeout   time.Duration
	rebalanceTimeout time.Duration
	protocols        []kmsg.JoinGroupRequestProtocol
	assignment       []byte
	awaitingJoin     func(joinResult)
	awaitingSync     func(code int16, assignment []byte)
	lastHeartbeat    time.Time
	heartbeatTimer   clockwork.Timer
	// sessionSeq names the armed session timer: a timer that fired while another was
	// being armed (its callback waiting for the lock) finds a newer number and does
	// nothing.
	sessionSeq uint64
	// persistedMetadata is the selected protocol's metadata of a member loaded from etcd.
	persistedMetadata []byte
}

// metadataFor returns the member's metadata for a protocol.
func (m *member) metadataFor(protocol string) []byte {
	for _, p := range m.protocols {
		if p.Name == protocol {
			return p.Metadata
		}
	}
	return m.persistedMetadata
}

// sameProtocols reports whether a rejoin carries the metadata the member has.
func (m *member) sameProtocols(ps []kmsg.JoinGroupRequestProtocol) bool {
	return slices.EqualFunc(m.protocols, ps, func(a, b kmsg.JoinGroupRequestProtocol) bool {
		return a.Name == b.Name && string(a.Metadata) == string(b.Metadata)
	})
}

type group struct {
	id           string
	state        groupState
	stateSince   time.Time
	generation   int32
	protocolType string
	protocol     string
	leader       string
	members      map[string]*member
	// pending are member ids handed out with MEMBER_ID_REQUIRED, awaiting their join.
	pending map[string]clockwork.Timer
	// static maps group.instance.id to the member id that holds it.
	static map[string]string
	// offsets are the committed offsets (durable: updated after the write).
	offsets map[topicPartition]offsetRecord
	// txnOffsets are the offsets committed in transactions not ended yet, by producer
	// id (durable: updated after the write; txn.go).
	txnOffsets map[int64]map[topicPartition]offsetRecord
	// pendingCommits counts the commits of each partition queued but not yet written:
	// expiry leaves those partitions (and the group) alone.
	pendingCommits map[topicPartition]int
	// offsetWrites counts the writes of the group's offsets (commits, deletes, expiry)
	// queued but not yet completed: an OffsetFetch waits for them.
	offsetWrites int
	// subscribed are the topics the members of a consumer group subscribe to, taken
	// from their metadata for the selected protocol when a generation is formed (as
	// Kafka's initNextGeneration); subscribedKnown is false when some member's metadata
	// is missing or does not parse — then nothing is expired or refused for it.
	subscribed      map[string]bool
	subscribedKnown bool

	joinTimer clockwork.Timer
	// joinDeadline bounds an initial delayed join (rebalance timeout); newMemberAdded
	// is set when a member joined during the delay.
	joinDeadline   time.Time
	initialDelay   bool
	newMemberAdded bool
	syncTimer      clockwork.Timer
	// timerSeq invalidates timers set for an earlier state.
	timerSeq uint64
	// persisted is set once a record exists in etcd (delete it with the group).
	persisted bool
}

func newGroup(id string, now time.Time) *group {
	return &group{id: id, state: stateEmpty, stateSince: now, members: map[string]*member{},
		pending: map[string]clockwork.Timer{}, static: map[string]string{}, offsets: map[topicPartition]offsetRecord{},
		pendingCommits: map[topicPartition]int{}, txnOffsets: map[int64]map[topicPartition]offsetRecord{}}
}

func (g *group) transition(s groupState, now time.Time) {
	g.state = s
	g.stateSince = now
	g.timerSeq++
}

// rebalanceTimeout is the longest rebalance timeout among members.
func (g *group) rebalanceTimeout() time.Duration {
	var d time.Duration
	for _, m := range g.members {
		d = max(d, m.rebalanceTimeout)
	}
	return d
}

// candidateProtocols are the protocols every member supports, in the order of the
// first member's preference (map order is random; sort members for determinism).
func (g *group) candidateProtocols() []string {
	var out []string
	first := true
	for _, m := range g.sortedMembers() {
		var names []string
		for _, p := range m.protocols {
			names = append(names, p.Name)
		}
		if first {
			out, first = names, false
			continue
		}
		out = slices.DeleteFunc(out, func(n string) bool { return !slices.Contains(names, n) })
	}
	return out
}

// supportsProtocols reports whether a member with these protocols may join.
func (g *group) supportsProtocols(protoType string, ps []kmsg.JoinGroupRequestProtocol) bool {
	if protoType == "" || len(ps) == 0 {
		return false
	}
	if len(g.members) == 0 {
		return true
	}
	if protoType != g.protocolType {
		return false
	}
	cands := g.candidateProtocols()
	for _, p := range ps {
		if slices.Contains(cands, p.Name) {
			return true
		}
	}
	return false
}

// selectProtocol picks the protocol with most votes: each member votes for its most
// preferred candidate.
func (g *group) selectProtocol() string {
	cands := g.candidateProtocols()
	votes := map[string]int{}
	for _, m := range g.members {
		for _, p := range m.protocols {
			if slices.Contains(cands, p.Name) {
				votes[p.Name]++
				break
			}
		}
	}
	best := ""
	for _, c := range cands {
		if best == "" || votes[c] > votes[best] {
			best = c
		}
	}
	return best
}

func (g *group) sortedMembers() []*member {
	ms := make([]*member, 0, len(g.members))
	for _, m := range g.members {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *member) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	return ms
}

func (g *group) allJoined() bool {
	if len(g.pending) > 0 {
		return false
	}
	for _, m := range g.members {
		if m.awaitingJoin == nil {
			return false
		}
	}
	return true
}

// newMemberID is Kafka's shape: the client id (or instance id) and a random suffix.
func newMemberID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:4]) + "-" + hex.EncodeToString(b[4:6]) + "-" +
		hex.EncodeToString(b[6:8]) + "-" + hex.EncodeToString(b[8:10]) + "-" + hex.EncodeToString(b[10:])
}

// ---- join ----

type joinRequest struct {
	req        *kmsg.JoinGroupRequest
	clientID   string
	clientHost string
	reply      func(joinResult)
}

func (co *Coordinator) join(g *group, jr joinRequest) {
	req := jr.req
	now := co.clock.Now()
	if g.state == stateDead {
		jr.reply(joinResult{code: kerr.CoordinatorNotAvailable.Code, memberID: req.MemberID})
		return
	}
	if !g.supportsProtocols(req.ProtocolType, req.Protocols) {
		jr.reply(joinResult{code: kerr.InconsistentGroupProtocol.Code, memberID: req.MemberID})
		return
	}
	if req.InstanceID != nil {
		if old, ok := g.static[*req.InstanceID]; ok && req.MemberID != "" && old != req.MemberID {
			jr.reply(joinResult{code: kerr.FencedInstanceID.Code, memberID: req.MemberID})
			return
		}
	}
	if req.MemberID == "" {
		co.joinUnknownMember(g, jr, now)
		return
	}
	if t, ok := g.pending[req.MemberID]; ok {
		t.Stop()
		delete(g.pending, req.MemberID)
		co.addMemberAndRebalance(g, jr, req.MemberID, now)
		return
	}
	m, ok := g.members[req.MemberID]
	if !ok {
		jr.reply(joinResult{code: kerr.UnknownMemberID.Code, memberID: req.MemberID})
		return
	}
	switch g.state {
	case statePreparingRebalance:
		co.updateMemberAndRebalance(g, m, jr, now)
	case stateCompletingRebalance:
		if m.sameProtocols(req.Protocols) {
			// The member missed the answer: give it the current generation again.
			jr.reply(g.joinResultFor(m, true))
			return
		}
		co.updateMemberAndRebalance(g, m, jr, now)
	case stateStable:
		if g.leader == m.id || !m.sameProtocols(req.Protocols) {
			// A leader's rejoin forces a rebalance (it saw metadata change).
			co.updateMemberAndRebalance(g, m, jr, now)
			return
		}
		jr.reply(g.joinResultFor(m, false))
	default: // Empty: no members, cannot happen for a known one
		jr.reply(joinResult{code: kerr.UnknownMemberID.Code, memberID: req.MemberID})
	}
}

// joinResultFor is the current generation as member m sees it; the leader gets the
// member list when withMembers.
func (g *group) joinResultFor(m *member, withMembers bool) joinResult {
	res := joinResult{memberID: m.id, generation: g.generation, protocol: g.protocol,
		protoType: g.protocolType, leader: g.leader}
	if withMembers && g.leader == m.id {
		for _, x := range g.sortedMembers() {
			res.members = append(res.members, kmsg.JoinGroupResponseMember{
				MemberID: x.id, InstanceID: x.instanceID, ProtocolMetadata: x.metadataFor(g.protocol)})
		}
	}
	return res
}

func (co *Coordinator) joinUnknownMember(g *group, jr joinRequest, now time.Time) {
	req := jr.req
	if co.cfg.MaxSize > 0 && len(g.members)+len(g.pending) >= co.cfg.MaxSize {
		jr.reply(joinResult{code: kerr.GroupMaxSizeReached.Code})
		return
	}
	if req.InstanceID != nil {
		id := newMemberID(*req.InstanceID)
		if oldID, ok := g.static[*req.InstanceID]; ok {
			co.replaceStaticMember(g, g.members[oldID], id, jr, now)
			return
		}
		co.addMemberAndRebalance(g, jr, id, now)
		return
	}
	id := newMemberID(jr.clientID)
	if req.Version >= 4 {
		// Two-step join (KIP-394): the member learns its id, then joins with it; a
		// pending id not used within the session timeout is dropped.
		sess := time.Duration(req.SessionTimeoutMillis) * time.Millisecond
		g.pending[id] = co.clock.AfterFunc(sess, func() { co.expirePending(g, id) })
		jr.reply(joinResult{code: kerr.MemberIDRequired.Code, memberID: id})
		return
	}
	co.addMemberAndRebalance(g, jr, id, now)
}

func (co *Coordinator) expirePending(g *group, id string) {
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.stopped || co.groups[g.id] != g {
		return
	}
	if _, ok := g.pending[id]; !ok {
		return
	}
	delete(g.pending, id)
	if g.state == statePreparingRebalance {
		co.maybeCompleteJoin(g)
	}
	co.maybeForget(g)
}

// replaceStaticMember gives a returning static member (known instance id, no member id)
// a new member id and fences the old one, as Kafka's updateStaticMemberAndRebalance
// does. In a Stable group whose selected protocol the new metadata keeps, the group
// carries on without a rebalance: the member is answered with the current generation
// and the current leader's id (the old id if it led), so that it does not take itself
// for the leader and compute an assignment a Stable group would not hand out; its
// assignment comes with its SyncGroup. Anything else rebalances. (Comparing the
// selected protocol, not the metadata bytes, matters: a restarted consumer's
// subscription usually differs in its owned partitions or generation.)
func (co *Coordinator) replaceStaticMember(g *group, old *member, newID string, jr joinRequest, now time.Time) {
	req := jr.req
	currentLeader := g.leader
	delete(g.members, old.id)
	old.answerWaiting(kerr.FencedInstanceID.Code)
	old.stopSession()
	oldID := old.id
	old.id = newID
	old.clientID, old.clientHost = jr.clientID, jr.clientHost
	g.members[newID] = old
	g.static[*req.InstanceID] = newID
	if g.leader == oldID {
		g.leader = newID
	}
	if g.state != stateStable {
		co.updateMemberAndRebalance(g, old, jr, now)
		return
	}
	previous := old.protocols
	old.protocols = req.Protocols
	if g.selectProtocol() != g.protocol {
		old.protocols = previous
		co.updateMemberAndRebalance(g, old, jr, now)
		return
	}
	old.sessionTimeout = time.Duration(req.SessionTimeoutMillis) * time.Millisecond
	old.rebalanceTimeout = rebalanceTimeoutOf(req)
	g.updateSubscribedTopics()
	co.heartbeat(g, old, now)
	res := joinResult{memberID: newID, generation: g.generation, protocol: g.protocol,
		protoType: g.protocolType, leader: currentLeader}
	co.persistGroup(g, func(code int16) {
		if code != 0 {
			res = joinResult{code: code, memberID: newID}
		}
		jr.reply(res)
	})
}

func rebalanceTimeoutOf(req *kmsg.JoinGroupRequest) time.Duration {
	if req.Version == 0 {
		return time.Duration(req.SessionTimeoutMillis) * time.Millisecond
	}
	return time.Duration(req.RebalanceTimeoutMillis) * time.Millisecond
}

func (co *Coordinator) addMemberAndRebalance(g *group, jr joinRequest, id string, now time.Time) {
	req := jr.req
	m := &member{id: id, instanceID: req.InstanceID, clientID: jr.clientID, clientHost: jr.clientHost}
	if len(g.members) == 0 {
		g.protocolType = req.ProtocolType
	}
	g.members[id] = m
	if req.InstanceID != nil {
		g.static[*req.InstanceID] = id
	}
	if g.state == statePreparingRebalance && g.initialDelay {
		g.newMemberAdded = true
	}
	co.updateMemberAndRebalance(g, m, jr, now)
}

// updateMemberAndRebalance records the member's join and moves the group to (or keeps
// it in) PreparingRebalance.
func (co *Coordinator) updateMemberAndRebalance(g *group, m *member, jr joinRequest, now time.Time) {
	req := jr.req
	if m.awaitingJoin != nil {
		// A second join replaces the first (the client gave up on it).
		m.awaitingJoin(joinResult{code: kerr.RebalanceInProgress.Code, memberID: m.id})
	}
	m.protocols = req.Protocols
	m.sessionTimeout = time.Duration(req.SessionTimeoutMillis) * time.Millisecond
	m.rebalanceTimeout = rebalanceTimeoutOf(req)
	m.awaitingJoin = jr.reply
	m.lastHeartbeat = now
	if g.state != statePreparingRebalance {
		co.prepareRebalance(g, now)
	}
	co.maybeCompleteJoin(g)
}

// prepareRebalance starts a join phase: members awaiting their assignment are told to
// rejoin, and the phase ends when every member has rejoined or at the rebalance
// timeout. An empty group first waits group.initial.rebalance.delay for more members.
func (co *Coordinator) prepareRebalance(g *group, now time.Time) {
	if g.state == stateCompletingRebalance {
		co.failAwaitingSync(g, kerr.RebalanceInProgress.Code)
	}
	wasEmpty := g.state == stateEmpty
	g.transition(statePreparingRebalance, now)
	stopTimer(g.syncTimer)
	stopTimer(g.joinTimer)
	seq := g.timerSeq
	timeout := g.rebalanceTimeout()
	if wasEmpty && co.cfg.InitialRebalanceDelay > 0 {
		g.initialDelay, g.newMemberAdded = true, false
		g.joinDeadline = now.Add(timeout)
		g.joinTimer = co.clock.AfterFunc(min(co.cfg.InitialRebalanceDelay, timeout), func() { co.joinTimeout(g, seq) })
		return
	}
	g.initialDelay = false
	g.joinTimer = co.clock.AfterFunc(timeout, func() { co.joinTimeout(g, seq) })
}

// joinTimeout ends a join phase: the initial delay extends while members keep
// arriving (within the rebalance timeout); otherwise members that did not rejoin are
// removed and the generation completes.
func (co *Coordinator) joinTimeout(g *group, seq uint64) {
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.stopped || co.groups[g.id] != g || g.timerSeq != seq || g.state != statePreparingRebalance {
		return
	}
	now := co.clock.Now()
	if g.initialDelay {
		remaining := g.joinDeadline.Sub(now)
		if g.newMemberAdded && remaining > 0 {
			g.newMemberAdded = false
			g.joinTimer = co.clock.AfterFunc(min(co.cfg.InitialRebalanceDelay, remaining), func() { co.joinTimeout(g, seq) })
			return
		}
		g.initialDelay = false
	}
	co.completeJoin(g, now)
}

// maybeCompleteJoin completes the join phase once everyone has rejoined (not during an
// initial delay, which exists to wait for more members).
func (co *Coordinator) maybeCompleteJoin(g *group) {
	if g.state == statePreparingRebalance && !g.initialDelay && g.allJoined() {
		co.completeJoin(g, co.clock.Now())
	}
}

func (co *Coordinator) completeJoin(g *group, now time.Time) {
	stopTimer(g.joinTimer)
	// Dynamic members that did not rejoin are out; static ones keep their place until
	// their session expires.
	for _, m := range g.sortedMembers() {
		if m.awaitingJoin == nil && m.instanceID == nil {
			co.removeMember(g, m)
		}
	}
	if len(g.members) > 0 && !g.hasJoinedLeader() {
		// Only static members that did not rejoin remain: wait for them (or for
		// their sessions to end) for another rebalance timeout.
		seq := g.timerSeq
		g.joinTimer = co.clock.AfterFunc(g.rebalanceTimeout(), func() { co.joinTimeout(g, seq) })
		return
	}
	g.generation++
	co.metrics.rebalances.Inc()
	if len(g.members) == 0 {
		// The protocol type stays, as in Kafka: ListGroups and DescribeGroups show an
		// empty consumer group as one, and offset expiry tells it from a group of
		// manually assigned consumers (which never had a protocol type).
		g.protocol, g.leader = "", ""
		g.updateSubscribedTopics() // none
		g.transition(stateEmpty, now)
		co.persistGroup(g, nil)
		co.maybeForget(g)
		return
	}
	g.protocol = g.selectProtocol()
	g.updateSubscribedTopics()
	g.transition(stateCompletingRebalance, now)
	for _, m := range g.sortedMembers() {
		if m.awaitingJoin == nil {
			continue // a static member yet to rejoin: it will be given the generation then
		}
		res := g.joinResultFor(m, true)
		m.awaitingJoin(res)
		m.awaitingJoin = nil
		co.heartbeat(g, m, now)
	}
	// Members that never send SyncGroup are removed after the rebalance timeout.
	seq := g.timerSeq
	g.syncTimer = co.clock.AfterFunc(g.rebalanceTimeout(), func() { co.syncTimeout(g, seq) })
}

// hasJoinedLeader keeps the leader if it rejoined, else elects the first member that
// did; it reports whether there is one.
func (g *group) hasJoinedLeader() bool {
	if m, ok := g.members[g.leader]; ok && m.awaitingJoin != nil {
		return true
	}
	for _, m := range g.sortedMembers() {
		if m.awaitingJoin != nil {
			g.leader = m.id
			return true
		}
	}
	return false
}

// ---- sync ----

type syncRequest struct {
	req   *kmsg.SyncGroupRequest
	reply func(code int16, assignment []byte)
}

func (co *Coordinator) sync(g *group, sr syncRequest) {
	req := sr.req
	m, ok := g.members[req.MemberID]
	switch {
	case g.state == stateDead:
		sr.reply(kerr.CoordinatorNotAvailable.Code, nil)
		return
	case !g.instanceMatches(req.InstanceID, req.MemberID):
		sr.reply(kerr.FencedInstanceID.Code, nil)
		return
	case !ok:
		sr.reply(kerr.UnknownMemberID.Code, nil)
		return
	case req.Generation != g.generation:
		sr.reply(kerr.IllegalGeneration.Code, nil)
		return
	case req.ProtocolType != nil && *req.ProtocolType != g.protocolType,
		req.Protocol != nil && *req.Protocol != g.protocol:
		sr.reply(kerr.InconsistentGroupProtocol.Code, nil)
		return
	}
	switch g.state {
	case statePreparingRebalance:
		sr.reply(kerr.RebalanceInProgress.Code, nil)
	case stateStable:
		co.heartbeat(g, m, co.clock.Now())
		sr.reply(0, m.assignment)
	case stateCompletingRebalance:
		if m.awaitingSync != nil {
			m.awaitingSync(kerr.RebalanceInProgress.Code, nil)
		}
		m.awaitingSync = sr.reply
		co.heartbeat(g, m, co.clock.Now())
		if g.leader != m.id {
			return
		}
		assignments := map[string][]byte{}
		for _, a := range req.GroupAssignment {
			if err := co.checkAssignment(g, a.MemberAssignment); err != nil {
				m.awaitingSync = nil
				sr.reply(kerr.InvalidRequest.Code, nil)
				return
			}
			assignments[a.MemberID] = a.MemberAssignment
		}
		gen := g.generation
		for id, x := range g.members {
			x.assignment = assignments[id]
		}
		co.persistGroup(g, func(code int16) {
			if g.state != stateCompletingRebalance || g.generation != gen {
				return // a rebalance began meanwhile: those waiting were answered
			}
			if code != 0 {
				co.failAwaitingSync(g, code)
				co.prepareRebalance(g, co.clock.Now())
				return
			}
			stopTimer(g.syncTimer)
			g.transition(stateStable, co.clock.Now())
			for _, x := range g.members {
				if x.awaitingSync != nil {
					x.awaitingSync(0, x.assignment)
					x.awaitingSync = nil
				}
			}
		})
	default: // Empty
		sr.reply(kerr.UnknownMemberID.Code, nil)
	}
}

// checkAssignment bounds an assignment and, for consumers, checks its format.
func (co *Coordinator) checkAssignment(g *group, b []byte) error {
	if len(b) > memberBytesMax {
		return kerr.InvalidRequest
	}
	if g.protocolType == consumerProtocolType && len(b) > 0 {
		var a kmsg.ConsumerMemberAssignment
		if err := a.ReadFrom(b); err != nil {
			return kerr.InvalidRequest
		}
	}
	return nil
}

// syncTimeout removes the members that did not send SyncGroup in time and rebalances.
func (co *Coordinator) syncTimeout(g *group, seq uint64) {
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.stopped || co.groups[g.id] != g || g.timerSeq != seq || g.state != stateCompletingRebalance {
		return
	}
	for _, m := range g.sortedMembers() {
		if m.awaitingSync == nil {
			co.removeMember(g, m)
		}
	}
	co.prepareRebalance(g, co.clock.Now())
	co.maybeCompleteJoin(g)
}

func (co *Coordinator) failAwaitingSync(g *group, code int16) {
	for _, m := range g.members {
		m.assignment = nil
		if m.awaitingSync != nil {
			m.awaitingSync(code, nil)
			m.awaitingSync = nil
		}
	}
}

// ---- membership ----

// instanceMatches reports whether a request's instance id (if any) belongs to memberID.
func (g *group) instanceMatches(instanceID *string, memberID string) bool {
	if instanceID == nil {
		return true
	}
	id, ok := g.static[*instanceID]
	return !ok || id == memberID
}

// heartbeat renews m's session and (re)arms its expiry.
func (co *Coordinator) heartbeat(g *group, m *member, now time.Time) {
	m.lastHeartbeat = now
	if m.heartbeatTimer == nil {
		co.armSession(g, m, m.sessionTimeout)
	}
}

func (co *Coordinator) armSession(g *group, m *member, d time.Duration) {
	m.sessionSeq++
	seq := m.sessionSeq
	m.heartbeatTimer = co.clock.AfterFunc(d, func() { co.sessionCheck(g, m, seq) })
}

// stopSession disarms m's session timer; the next heartbeat arms a new one.
func (m *member) stopSession() {
	stopTimer(m.heartbeatTimer)
	m.heartbeatTimer = nil
	m.sessionSeq++
}

// sessionCheck expires m if its session has passed; members waiting for a join or sync
// answer are kept: the join phase and the wait for the leader's SyncGroup are bounded by
// the rebalance timeout, which removes those that do not show up. (An abandoned
// two-step join is a pending id, dropped after one session timeout.)
func (co *Coordinator) sessionCheck(g *group, m *member, seq uint64) {
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.stopped || co.groups[g.id] != g || g.members[m.id] != m || m.sessionSeq != seq {
		return
	}
	now := co.clock.Now()
	left := m.lastHeartbeat.Add(m.sessionTimeout).Sub(now)
	keep := left > 0 || m.awaitingSync != nil || m.awaitingJoin != nil
	if keep {
		co.armSession(g, m, max(left, 10*time.Millisecond))
		return
	}
	m.heartbeatTimer = nil
	co.metrics.sessionExpiries.Inc()
	co.logger.Info("group member session expired", "group", g.id, "member", m.id)
	co.removeMemberAndUpdate(g, m)
}

// removeMemberAndUpdate removes m (leave or expiry) and moves the group on.
func (co *Coordinator) removeMemberAndUpdate(g *group, m *member) {
	co.removeMember(g, m)
	co.membersLeft(g)
}

// membersLeft moves the group on after members left: a new generation without them.
func (co *Coordinator) membersLeft(g *group) {
	switch g.state {
	case stateStable, stateCompletingRebalance:
		co.prepareRebalance(g, co.clock.Now())
		co.maybeCompleteJoin(g)
	case statePreparingRebalance:
		co.maybeCompleteJoin(g)
	}
}

// answerWaiting answers the member's pending JoinGroup and SyncGroup with code.
func (m *member) answerWaiting(code int16) {
	if m.awaitingJoin != nil {
		m.awaitingJoin(joinResult{code: code, memberID: m.id})
		m.awaitingJoin = nil
	}
	if m.awaitingSync != nil {
		m.awaitingSync(code, nil)
		m.awaitingSync = nil
	}
}

func (co *Coordinator) removeMember(g *group, m *member) {
	m.answerWaiting(kerr.UnknownMemberID.Code)
	m.stopSession()
	delete(g.members, m.id)
	if m.instanceID != nil && g.static[*m.instanceID] == m.id {
		delete(g.static, *m.instanceID)
	}
}

func stopTimer(t clockwork.Timer) {
	if t != nil {
		t.Stop()
	}
}
