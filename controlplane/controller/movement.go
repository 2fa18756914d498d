package controller

// The controller's side of replica movement: completing reassignments once their new
// replicas are in sync, marking decommissioned nodes, starting the moves that empty
// decommissioned nodes and (with the balancer on) even out replicas and preferred
// leaderships, a few at a time; and the reassignments admins ask for through Kafka's
// AlterPartitionReassignments. Decisions are reassign.go's and plan.go's; writes are
// the controller's, fenced on its election key.

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// Defaults of replica movement.
const (
	// DefaultMovesInFlightMax bounds the reassignments in progress for the controller to
	// start more of its own (decommission, balancer): each new replica copies the whole
	// partition from its leader, and a few at a time keep that from crowding out the
	// clients' traffic.
	DefaultMovesInFlightMax = 4
	// DefaultDeadNodeDelay is how long a node that holds replicas must have been
	// unregistered before the balancer moves its replicas to other nodes: long enough
	// that a restart, or a machine's reboot, does not copy every partition it held.
	DefaultDeadNodeDelay = 10 * time.Minute
	// alterReassignmentsAttempts bounds the rounds of an AlterPartitionReassignments
	// request, as electOnRequestAttempts does for ElectLeaders.
	alterReassignmentsAttempts = 3
)

// minInsyncReplicas is topic's min.insync.replicas (1 if unset or unreadable).
func minInsyncReplicas(topic cluster.Topic) int {
	if v, err := strconv.Atoi(topic.Configs[cluster.ConfigMinInsyncReplicas]); err == nil && v > 0 {
		return v
	}
	return 1
}

// planInput is what the movement plans look at in snap: the partitions of existing
// topics, the nodes replicas may move to, and the nodes to empty: those being
// decommissioned, and the extra ones given (gone for good, with the balancer).
func planInput(snap *client.Snapshot, extra map[int32]bool) PlanInput {
	var in PlanInput
	for tp, st := range snap.Partitions {
		if _, ok := snap.Topics[tp.Topic]; ok {
			in.Partitions = append(in.Partitions, st)
		}
	}
	for id, b := range snap.Brokers {
		if !snap.Decommissioning(id) && !snap.InControlledShutdown(id) {
			in.Eligible = append(in.Eligible, b)
		}
	}
	slices.SortFunc(in.Eligible, func(a, b cluster.Broker) int { return int(a.ID) - int(b.ID) })
	in.Evacuate = map[int32]bool{}
	for id := range snap.Decommissions {
		in.Evacuate[id] = true
	}
	for id := range extra {
		in.Evacuate[id] = true
	}
	return in
}

// DecommissionBlocked returns, for each node of snap being decommissioned, why some of
// its replicas cannot move now (PlanEvacuation's reasons); nothing for a decommission
// that proceeds. Any control-plane member can tell, from its view.
func DecommissionBlocked(snap *client.Snapshot) map[int32][]string {
	_, blocked := PlanEvacuation(planInput(snap, nil))
	return blocked
}

// MovesInFlightMax is the bound on reassignments in progress for the controller to
// start moves of its own (Config.MovesInFlightMax).
func (c *Controller) MovesInFlightMax() int { return c.cfg.MovesInFlightMax }

// reassigningCount counts the partitions of snap with a reassignment in progress.
func reassigningCount(snap *client.Snapshot) int {
	n := 0
	for _, st := range snap.Partitions {
		if st.Reassigning() {
			n++
		}
	}
	return n
}

// reconcileMoves is the movement part of a reconcile pass, after the elections: it
// completes the reassignments that can complete, marks emptied nodes decommissioned,
// then starts moves up to the in-flight bound. Each step that writes ends the pass, so
// the next one decides on a view with its writes. The caller holds writeMu.
func (c *Controller) reconcileMoves(ctx context.Context, e *concurrency.Election, snap *client.Snapshot, now time.Time) (wrote bool) {
	var olds, nexts []cluster.PartitionState
	for tp, st := range snap.Partitions {
		topic, ok := snap.Topics[tp.Topic]
		if !ok || !st.Reassigning() {
			continue
		}
		nodes, _ := nodesFor(st, snap)
		if next, ok := CompleteReassignment(st, nodes, minInsyncReplicas(topic)); ok {
			olds, nexts = append(olds, st), append(nexts, next)
		}
	}
	if len(olds) > 0 {
		for start := 0; start < len(olds); start += electionTxnPartitionsMax {
			end := min(start+electionTxnPartitionsMax, len(olds))
			c.writeElections(ctx, e, olds[start:end], nexts[start:end])
		}
		for _, st := range olds {
			c.cfg.Logger.Info("reassignment complete", "partition", st.TopicPartition().String(), "replicas", st.TargetReplicas())
		}
		c.reassignmentsCompleted.Add(len(olds))
		return true
	}
	if c.markDecommissioned(ctx, e, snap, now) {
		return true
	}
	gone := c.goneNodes(snap, now)
	in := planInput(snap, gone)
	budget := c.cfg.MovesInFlightMax - reassigningCount(snap)
	moves, _ := PlanEvacuation(in)
	if c.cfg.AutoBalance && len(moves) == 0 {
		moves = PlanBalance(in, budget)
	}
	if len(moves) > budget {
		moves = moves[:max(budget, 0)]
	}
	if len(moves) > 0 {
		c.startMoves(ctx, e, snap, moves)
		return true
	}
	if c.cfg.AutoBalance && reassigningCount(snap) == 0 {
		if olds, nexts := PlanPreferred(in, c.cfg.MovesInFlightMax); len(olds) > 0 {
			c.writeElections(ctx, e, olds, nexts)
			for i, st := range olds {
				c.cfg.Logger.Info("preferred replica changed to balance leaderships", "partition", st.TopicPartition().String(),
					"replicas", nexts[i].Replicas)
			}
			return true
		}
	}
	return false
}

// startMoves starts the planned reassignments (Reassign) in one transaction per batch.
func (c *Controller) startMoves(ctx context.Context, e *concurrency.Election, snap *client.Snapshot, moves []Move) {
	var olds, nexts []cluster.PartitionState
	for _, m := range moves {
		st := snap.Partitions[m.TopicPartition]
		nodes, _ := nodesFor(st, snap)
		next, changed, code, _ := Reassign(st, m.Target, nodes, minInsyncReplicas(snap.Topics[m.Topic]))
		if code != nil || !changed {
			continue
		}
		olds, nexts = append(olds, st), append(nexts, next)
		c.cfg.Logger.Info("moving replicas", "partition", m.TopicPartition.String(), "from", st.Replicas, "to", m.Target)
	}
	for start := 0; start < len(olds); start += electionTxnPartitionsMax {
		end := min(start+electionTxnPartitionsMax, len(olds))
		c.writeElections(ctx, e, olds[start:end], nexts[start:end])
	}
	c.reassignmentsStarted.Add(len(olds))
}

// markDecommissioned marks each draining node that no partition names a replica any
// more: decommissioned, with the time. It reports whether it wrote.
func (c *Controller) markDecommissioned(ctx context.Context, e *concurrency.Election, snap *client.Snapshot, now time.Time) bool {
	wrote := false
	for id, d := range snap.Decommissions {
		if d.State != cluster.DecommissionDraining || holdsReplicas(snap, id) {
			continue
		}
		d.State, d.CompletedMs = cluster.DecommissionDone, now.UnixMilli()
		key := cluster.DecommissionKey(id)
		resp, err := c.conn.Client.Txn(ctx, "controller_decommissioned", []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(e.Key()), "=", e.Rev()),
			clientv3.Compare(clientv3.ModRevision(key), "=", d.ModRevision),
		}, []clientv3.Op{clientv3.OpPut(key, cluster.MustJSON(d))})
		if err != nil {
			c.cfg.Logger.Warn("controller write failed", "decommission", id, "err", err)
			continue
		}
		if resp.Succeeded {
			c.cfg.Logger.Info("node decommissioned: it holds no replica", "node", id)
			wrote = true
		}
	}
	return wrote
}

// holdsReplicas reports whether any partition of snap names node id a replica.
func holdsReplicas(snap *client.Snapshot, id int32) bool {
	for _, st := range snap.Partitions {
		if slices.Contains(st.Replicas, id) {
			return true
		}
	}
	return false
}

// goneNodes returns, with the balancer on, the nodes that hold replicas and have been
// unregistered for DeadNodeDelay: their replicas move to live nodes. The time each was
// first seen gone is kept per term, in memory (a new controller waits the delay again).
// The caller holds writeMu.
func (c *Controller) goneNodes(snap *client.Snapshot, now time.Time) map[int32]bool {
	if !c.cfg.AutoBalance {
		return nil
	}
	seen := map[int32]bool{}
	var gone map[int32]bool
	for _, st := range snap.Partitions {
		for _, id := range st.Replicas {
			if _, ok := snap.Brokers[id]; ok || seen[id] {
				continue
			}
			seen[id] = true
			since, ok := c.goneSince[id]
			if !ok {
				c.goneSince[id] = now
				since = now
			}
			if now.Sub(since) >= c.cfg.DeadNodeDelay {
				if gone == nil {
					gone = map[int32]bool{}
				}
				gone[id] = true
			}
		}
	}
	for id := range c.goneSince {
		if !seen[id] {
			delete(c.goneSince, id)
		}
	}
	return gone
}

// ReassignmentRequest is one partition of an AlterPartitionReassignments request.
type ReassignmentRequest struct {
	cluster.TopicPartition
	// Target is the replica list to move to; nil cancels the reassignment in progress.
	Target []int32
}

// ReassignmentResult is the outcome of one ReassignmentRequest.
type ReassignmentResult struct {
	cluster.TopicPartition
	// Err is nil if the reassignment started (or was cancelled), else Kafka's error.
	Err *kerr.Error
	// Message says more about Err (empty if nil).
	Message string
}

// AlterReassignments starts or cancels the reassignments an admin asked for (Kafka's
// AlterPartitionReassignments), each decided by Reassign or Cancel on the partition's
// state and written like the controller's elections, fenced on its election key; it
// answers once they are committed and this node's view shows them, so a
// ListPartitionReassignments that follows sees them. Refusals per partition:
// UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICA_ASSIGNMENT (ValidateTarget, or a revert
// that needs an unclean election), NO_REASSIGNMENT_IN_PROGRESS (a cancel without one),
// INVALID_REQUEST (a partition listed twice), REQUEST_TIMED_OUT (its state kept changing
// under it). It fails with ErrNotController on a node that is not the active
// controller, and with ctx's error.
func (c *Controller) AlterReassignments(ctx context.Context, reqs []ReassignmentRequest) ([]ReassignmentResult, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	term := c.term.Load()
	if term == nil {
		return nil, ErrNotController
	}
	snap := c.conn.View.Snapshot()
	results := make([]ReassignmentResult, len(reqs))
	pending := make([]int, 0, len(reqs))
	seen := make(map[cluster.TopicPartition]bool, len(reqs))
	for i, r := range reqs {
		results[i].TopicPartition = r.TopicPartition
		if seen[r.TopicPartition] {
			results[i].Err, results[i].Message = kerr.InvalidRequest, fmt.Sprintf("partition %s is listed twice", r.TopicPartition)
			continue
		}
		seen[r.TopicPartition] = true
		pending = append(pending, i)
	}
	var lastRev int64
	started, cancelled := 0, 0
	for attempt := 0; attempt < alterReassignmentsAttempts && len(pending) > 0; attempt++ {
		var olds, nexts []cluster.PartitionState
		var idx []int
		for _, i := range pending {
			r := reqs[i]
			st, ok := snap.Partitions[r.TopicPartition]
			topic, topicOK := snap.Topics[r.Topic]
			if !ok || !topicOK {
				results[i].Err, results[i].Message = kerr.UnknownTopicOrPartition, fmt.Sprintf("no partition %s", r.TopicPartition)
				continue
			}
			nodes, _ := nodesFor(st, snap)
			var next cluster.PartitionState
			if r.Target == nil {
				var code *kerr.Error
				if next, code, results[i].Message = Cancel(st, nodes); code != nil {
					results[i].Err = code
					continue
				}
			} else {
				if code, msg := ValidateTarget(r.Target, snap.Brokers, snap.Decommissioning); code != nil {
					results[i].Err, results[i].Message = code, msg
					continue
				}
				var changed bool
				var code *kerr.Error
				if next, changed, code, results[i].Message = Reassign(st, r.Target, nodes, minInsyncReplicas(topic)); code != nil {
					results[i].Err = code
					continue
				}
				if !changed {
					continue // already so: nothing to write
				}
			}
			olds, nexts, idx = append(olds, st), append(nexts, next), append(idx, i)
		}
		pending = pending[:0]
		committed, rev, err := c.writeRequested(ctx, term, olds, nexts)
		if err != nil {
			return nil, err
		}
		lastRev = max(lastRev, rev)
		for j, ok := range committed {
			i := idx[j]
			switch {
			case !ok:
				pending = append(pending, i)
			case reqs[i].Target == nil:
				cancelled++
			default:
				started++
			}
		}
		if len(pending) == 0 {
			break
		}
		if c.term.Load() != term {
			return nil, ErrNotController
		}
		if snap, err = c.conn.View.WaitRevision(ctx, lastRev); err != nil {
			return nil, err
		}
	}
	for _, i := range pending {
		results[i].Err = kerr.RequestTimedOut
		results[i].Message = "the partition's state kept changing during the reassignment"
	}
	c.reassignmentsStarted.Add(started)
	c.reassignmentsCancelled.Add(cancelled)
	if lastRev > 0 {
		if _, err := c.conn.View.WaitRevision(ctx, lastRev); err != nil {
			return nil, err
		}
	}
	return results, nil
}
