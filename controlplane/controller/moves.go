package controller

// Planned leadership moves: controlled shutdown, preferred-leader election (automatic,
// and on request through Kafka's ElectLeaders), and unclean election on request. The
// decisions are pure functions of a partition's state and what is known of the nodes;
// the controller writes them as it writes its other elections, fenced on its election
// key, every leader change with a new leader epoch.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// Defaults and limits of the planned moves.
const (
	// DefaultLeaderRebalanceDelay is how long a partition's preferred replica must have
	// been able to lead (live, in the ISR, not stopping) before the controller moves
	// the leadership back to it (Config.LeaderRebalanceDelay).
	DefaultLeaderRebalanceDelay = 10 * time.Second
	// electOnRequestAttempts bounds the rounds of an ElectLeaders request: a round loses
	// a partition only to a concurrent write of its state (an AlterISR), after which the
	// decision is taken again on the newer state.
	electOnRequestAttempts = 3
)

// Nodes is what an election knows of the data-plane nodes, for one partition.
type Nodes struct {
	// Live are the nodes that count as live for the partition (registered, and not
	// restarted since the state was written: see liveFor).
	Live map[int32]cluster.Broker
	// ShuttingDown are the nodes in controlled shutdown: never elected leader, and taken
	// out of every ISR that keeps a member without them.
	ShuttingDown map[int32]bool
}

func (n Nodes) live(id int32) bool { _, ok := n.Live[id]; return ok }

// eligible reports whether id may be elected leader: live and not stopping.
func (n Nodes) eligible(id int32) bool { return n.live(id) && !n.ShuttingDown[id] }

// ElectLeader is Elect for nodes none of which is in controlled shutdown.
func ElectLeader(st cluster.PartitionState, live map[int32]cluster.Broker, unclean bool) (cluster.PartitionState, bool) {
	return Elect(st, Nodes{Live: live}, unclean)
}

// Elect decides the next state of a partition given the nodes, the way Kafka's KRaft
// controller does when brokers are fenced or enter controlled shutdown:
//
//   - the ISR target is its live members that are not stopping; if that would leave it
//     empty, its live members (a stopping node that is the last in sync stays in, so
//     that it is elected cleanly when it returns);
//   - leader live and not stopping: it keeps leading; the ISR becomes the target
//     (partition epoch bumped if that changes it);
//   - leader dead, absent or stopping, and an eligible (live, not stopping) ISR member
//     exists: the first in replica order (preferred order) leads; the ISR becomes the
//     target. A stopping leader thus hands over to another in-sync node;
//   - no eligible ISR member, unclean election allowed: the first eligible replica leads
//     with ISR {itself} — data the old ISR had may be lost, which the topic accepted;
//   - otherwise the partition goes offline (leader NoLeader); the ISR is kept so that
//     when one of its members returns, or stops stopping, it is elected cleanly. A node
//     in controlled shutdown that is the only in-sync replica thus gives its
//     leadership up: it leads nothing when it stops, and nothing is acknowledged
//     meanwhile that it alone would hold.
//
// Every leader change bumps the leader epoch; every change bumps the partition epoch.
// It returns the new state and whether anything changed; st is not modified.
func Elect(st cluster.PartitionState, nodes Nodes, unclean bool) (cluster.PartitionState, bool) {
	var liveISR, target []int32
	for _, id := range st.ISR {
		if nodes.live(id) {
			liveISR = append(liveISR, id)
			if !nodes.ShuttingDown[id] {
				target = append(target, id)
			}
		}
	}
	if len(target) == 0 {
		target = liveISR
	}
	next := st.Clone()
	if st.Leader != cluster.NoLeader && nodes.eligible(st.Leader) {
		if slices.Equal(target, st.ISR) {
			return st, false
		}
		next.ISR = target
		next.PartitionEpoch++
		return next, true
	}
	if leader, ok := firstEligible(st.Replicas, liveISR, nodes); ok {
		next.Leader = leader
		next.ISR = target
		next.LeaderEpoch++
		next.PartitionEpoch++
		return next, true
	}
	if unclean {
		for _, id := range st.Replicas {
			if nodes.eligible(id) {
				next.Leader = id
				next.ISR = []int32{id}
				next.LeaderEpoch++
				next.PartitionEpoch++
				return next, true
			}
		}
	}
	if st.Leader == cluster.NoLeader {
		return st, false
	}
	next.Leader = cluster.NoLeader
	next.LeaderEpoch++
	next.PartitionEpoch++
	return next, true
}

// firstEligible returns the first eligible member of isr in replica order; a member
// outside the replicas (a corrupt state) only if no replica is eligible.
func firstEligible(replicas, isr []int32, nodes Nodes) (int32, bool) {
	for _, id := range replicas {
		if slices.Contains(isr, id) && nodes.eligible(id) {
			return id, true
		}
	}
	for _, id := range isr {
		if nodes.eligible(id) {
			return id, true
		}
	}
	return cluster.NoLeader, false
}

// PreferredLeader moves the leadership of a partition to its preferred replica
// (Replicas[0], Kafka's preferred leader) if that replica can take it: it does not lead
// already, and it is live, not in controlled shutdown and in the ISR. The leader epoch
// and the partition epoch are bumped; the ISR is unchanged. It returns the new state
// and whether it moved; st is not modified.
func PreferredLeader(st cluster.PartitionState, nodes Nodes) (cluster.PartitionState, bool) {
	if len(st.Replicas) == 0 {
		return st, false
	}
	preferred := st.Replicas[0]
	if st.Leader == preferred || !nodes.eligible(preferred) || !slices.Contains(st.ISR, preferred) {
		return st, false
	}
	next := st.Clone()
	next.Leader = preferred
	next.LeaderEpoch++
	next.PartitionEpoch++
	return next, true
}

// ElectionType is the kind of election an ElectLeaders request asks for (Kafka's
// ElectionType).
type ElectionType int8

// Election types, as Kafka numbers them on the wire.
const (
	ElectionPreferred ElectionType = 0
	ElectionUnclean   ElectionType = 1
)

// ElectOnRequest decides an election an admin asked for, as Kafka's controller does
// (ReplicationControlManager.electLeader):
//
//   - preferred: ELECTION_NOT_NEEDED if the preferred replica leads already; else it
//     leads if it can (PreferredLeader); else PREFERRED_LEADER_NOT_AVAILABLE;
//   - unclean: ELECTION_NOT_NEEDED if the partition has a leader; else the first
//     eligible ISR member leads, or else the first eligible replica, alone in the ISR,
//     whatever the topic's unclean.leader.election.enable (the admin asked); else
//     ELIGIBLE_LEADERS_NOT_AVAILABLE.
//
// It returns the new state, or the error the partition is answered with.
func ElectOnRequest(st cluster.PartitionState, nodes Nodes, typ ElectionType) (cluster.PartitionState, *kerr.Error) {
	switch typ {
	case ElectionPreferred:
		if len(st.Replicas) > 0 && st.Leader == st.Replicas[0] {
			return st, kerr.ElectionNotNeeded
		}
		if next, ok := PreferredLeader(st, nodes); ok {
			return next, nil
		}
		return st, kerr.PreferredLeaderNotAvailable
	case ElectionUnclean:
		if st.Leader != cluster.NoLeader {
			return st, kerr.ElectionNotNeeded
		}
		if next, ok := Elect(st, nodes, true); ok && next.Leader != cluster.NoLeader {
			return next, nil
		}
		return st, kerr.EligibleLeadersNotAvailable
	}
	return st, kerr.InvalidRequest
}

// nodesFor returns what an election of st knows of the nodes in snap: the nodes live
// for it (liveFor) and those in controlled shutdown.
func nodesFor(st cluster.PartitionState, snap *client.Snapshot) (Nodes, []int32) {
	live, stale := liveFor(st, snap.Brokers)
	var shutting map[int32]bool
	for id := range snap.ShuttingDown {
		if snap.InControlledShutdown(id) {
			if shutting == nil {
				shutting = map[int32]bool{}
			}
			shutting[id] = true
		}
	}
	return Nodes{Live: live, ShuttingDown: shutting}, stale
}

// planPreferred returns the partitions of snap whose leadership may move back to their
// preferred replica: Elect leaves them as they are (the reconcile pass changes the
// others first), and PreferredLeader would move them. nexts are their moved states.
func planPreferred(snap *client.Snapshot) (olds, nexts []cluster.PartitionState) {
	for tp, st := range snap.Partitions {
		topic, ok := snap.Topics[tp.Topic]
		if !ok || st.Leader == cluster.NoLeader {
			continue
		}
		nodes, _ := nodesFor(st, snap)
		if _, changed := Elect(st, nodes, topic.UncleanLeaderElection()); changed {
			continue
		}
		if next, ok := PreferredLeader(st, nodes); ok {
			olds = append(olds, st)
			nexts = append(nexts, next)
		}
	}
	return olds, nexts
}

// rebalance moves leaderships back to preferred replicas that have been able to take
// them for the rebalance delay (Kafka's auto.leader.rebalance.enable). The delay runs
// from the first pass that saw the partition movable and restarts whenever a pass
// does not: a node that restarts leads again only once it has caught up (the leader
// adds it to the ISR) and stayed up and in sync that long, so a node that keeps
// crashing does not pull leaderships back and forth. It is kept per term, in memory:
// a new controller waits the delay again.
func (c *Controller) rebalance(ctx context.Context, e *concurrency.Election, snap *client.Snapshot, now time.Time) {
	olds, nexts := planPreferred(snap)
	movable := make(map[cluster.TopicPartition]bool, len(olds))
	var dueOlds, dueNexts []cluster.PartitionState
	for i, st := range olds {
		tp := st.TopicPartition()
		movable[tp] = true
		since, ok := c.preferredSince[tp]
		if !ok {
			c.preferredSince[tp] = now
			since = now
		}
		if now.Sub(since) >= c.cfg.LeaderRebalanceDelay {
			dueOlds, dueNexts = append(dueOlds, st), append(dueNexts, nexts[i])
		}
	}
	for tp := range c.preferredSince {
		if !movable[tp] {
			delete(c.preferredSince, tp)
		}
	}
	for start := 0; start < len(dueOlds); start += electionTxnPartitionsMax {
		end := min(start+electionTxnPartitionsMax, len(dueOlds))
		c.writeElections(ctx, e, dueOlds[start:end], dueNexts[start:end])
	}
	for _, st := range dueOlds {
		delete(c.preferredSince, st.TopicPartition())
	}
}

// writeRequested writes the changes an admin request decided (ElectLeaders,
// AlterReassignments) the way the reconcile pass writes its own (writeElections): in
// transactions of at most electionTxnPartitionsMax partitions, fenced on the term, a
// batch that loses a race retried one partition at a time so one conflict does not
// hold up the rest. Unlike the pass it stops at the first error, which fails the
// request, and it reports which changes were committed (the others are decided again
// on a newer view) and the newest revision written.
func (c *Controller) writeRequested(ctx context.Context, term *concurrency.Election, olds, nexts []cluster.PartitionState) (committed []bool, lastRev int64, err error) {
	committed = make([]bool, len(olds))
	for start := 0; start < len(olds); start += electionTxnPartitionsMax {
		end := min(start+electionTxnPartitionsMax, len(olds))
		ok, rev, err := c.electionTxn(ctx, term, olds[start:end], nexts[start:end])
		if err != nil {
			return nil, 0, err
		}
		lastRev = max(lastRev, rev)
		if ok {
			for j := start; j < end; j++ {
				committed[j] = true
			}
			continue
		}
		for j := start; j < end; j++ {
			ok, rev, err := c.electionTxn(ctx, term, olds[j:j+1], nexts[j:j+1])
			if err != nil {
				return nil, 0, err
			}
			lastRev = max(lastRev, rev)
			committed[j] = ok
		}
	}
	return committed, lastRev, nil
}

// ErrNotController is returned by ElectLeaders on a node that is not the active
// controller.
var ErrNotController = errors.New("controller: not the active controller")

// ElectionResult is the outcome of an ElectLeaders request for one partition.
type ElectionResult struct {
	cluster.TopicPartition
	// Err is nil if the partition got its new leader, else Kafka's error for it.
	Err *kerr.Error
	// Message says more about Err (empty if nil).
	Message string
}

// ElectLeaders runs the elections an admin asked for (Kafka's ElectLeaders) on the
// given partitions, or on every partition if all is set; then a preferred election
// leaves out the partitions that need none, as Kafka does. The elections are written
// like the controller's own, fenced on its election key, and answered once committed.
// It fails with ErrNotController on a node that is not the active controller, and with
// ctx's error; a partition whose state kept changing under it is answered
// REQUEST_TIMED_OUT.
func (c *Controller) ElectLeaders(ctx context.Context, typ ElectionType, parts []cluster.TopicPartition, all bool) ([]ElectionResult, error) {
	// One writer at a time: the reconcile pass and requests decide from the view and
	// write, and each must see what the other wrote.
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	term := c.term.Load()
	if term == nil {
		return nil, ErrNotController
	}
	snap := c.conn.View.Snapshot()
	if all {
		parts = parts[:0]
		for tp := range snap.Partitions {
			if _, ok := snap.Topics[tp.Topic]; ok {
				parts = append(parts, tp)
			}
		}
		sort.Slice(parts, func(i, j int) bool {
			if parts[i].Topic != parts[j].Topic {
				return parts[i].Topic < parts[j].Topic
			}
			return parts[i].Partition < parts[j].Partition
		})
	}
	results := make([]ElectionResult, len(parts))
	pending := make([]int, 0, len(parts))
	for i, tp := range parts {
		results[i].TopicPartition = tp
		pending = append(pending, i)
	}
	for attempt := 0; attempt < electOnRequestAttempts && len(pending) > 0; attempt++ {
		var olds, nexts []cluster.PartitionState
		var idx []int
		for _, i := range pending {
			tp := parts[i]
			st, ok := snap.Partitions[tp]
			if _, topicOK := snap.Topics[tp.Topic]; !ok || !topicOK {
				results[i].Err = kerr.UnknownTopicOrPartition
				results[i].Message = fmt.Sprintf("no partition %s", tp)
				continue
			}
			nodes, _ := nodesFor(st, snap)
			next, kerrErr := ElectOnRequest(st, nodes, typ)
			if kerrErr != nil {
				results[i].Err = kerrErr
				continue
			}
			olds, nexts, idx = append(olds, st), append(nexts, next), append(idx, i)
		}
		pending = pending[:0]
		committed, lastRev, err := c.writeRequested(ctx, term, olds, nexts)
		if err != nil {
			return nil, err
		}
		for j, ok := range committed {
			if !ok {
				pending = append(pending, idx[j])
			}
		}
		if len(pending) == 0 {
			break
		}
		// Lost to a concurrent write (or the term ended): decide again on a view that
		// includes it.
		if c.term.Load() != term {
			return nil, ErrNotController
		}
		if snap, err = c.conn.View.WaitRevision(ctx, lastRev); err != nil {
			return nil, err
		}
	}
	for _, i := range pending {
		results[i].Err = kerr.RequestTimedOut
		results[i].Message = "the partition's state kept changing during the election"
	}
	if all && typ == ElectionPreferred {
		kept := results[:0]
		for _, r := range results {
			if r.Err != kerr.ElectionNotNeeded {
				kept = append(kept, r)
			}
		}
		results = kept
	}
	for i := range results {
		if results[i].Err != nil && results[i].Message == "" {
			results[i].Message = results[i].Err.Description
		}
	}
	return results, nil
}
