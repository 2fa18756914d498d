package controller

// Partition reassignment (KIP-455): the decisions, as pure functions of a partition's
// state and what is known of the nodes. A reassignment is kept in the partition's own
// state (cluster.PartitionState's AddingReplicas and RemovingReplicas), so that starting,
// completing and cancelling it are each one compare-and-swap of that value, fenced like
// the controller's elections.
//
// The life of one, as Kafka's KRaft controller runs it (PartitionReassignmentReplicas,
// PartitionReassignmentRevert, PartitionChangeBuilder):
//
//   - Begin: Replicas becomes the target followed by the original replicas not in it;
//     AddingReplicas are the target's new ones, RemovingReplicas the originals left out.
//     Every replica follows the leader; the new ones start empty and catch up, and the
//     leader adds each to the ISR once it has (AlterISR), as for any follower.
//   - Complete (the controller, once every adding replica is in the ISR): Replicas is the
//     target, the ISR loses the removed replicas, and if the leader was removed the
//     first in-sync target replica leads (new leader epoch). A node that is no longer a
//     replica stops following and deletes its log.
//   - Cancel (a request with null replicas) and a new target over one in progress revert
//     first: Replicas loses the adding replicas, the ISR too, and a leader among them
//     hands over to an original in-sync replica.

import (
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// ValidateTarget checks a requested replica list as Kafka's controller does
// (validateManualPartitionAssignment): not empty, no duplicates, at most
// cluster.ReplicationFactorMax replicas, every node registered (live: a reassignment
// to a dead node could never complete) and none being decommissioned (its replicas are
// being moved away). It returns INVALID_REPLICA_ASSIGNMENT and why, or nil.
func ValidateTarget(target []int32, live map[int32]cluster.Broker, decommissioning func(int32) bool) (*kerr.Error, string) {
	if len(target) == 0 {
		return kerr.InvalidReplicaAssignment, "The manual partition assignment includes an empty replica list."
	}
	if len(target) > cluster.ReplicationFactorMax {
		return kerr.InvalidReplicaAssignment, fmt.Sprintf("The manual partition assignment has %d replicas; at most %d are allowed.", len(target), cluster.ReplicationFactorMax)
	}
	for i, id := range target {
		if slices.Contains(target[:i], id) {
			return kerr.InvalidReplicaAssignment, "The manual partition assignment includes the partition with duplicate replicas."
		}
		if _, ok := live[id]; !ok {
			return kerr.InvalidReplicaAssignment, fmt.Sprintf("The manual partition assignment includes broker %d, but no such broker is registered.", id)
		}
		if decommissioning != nil && decommissioning(id) {
			return kerr.InvalidReplicaAssignment, fmt.Sprintf("The manual partition assignment includes broker %d, which is being decommissioned.", id)
		}
	}
	return nil, ""
}

// Reassign decides the state that starts moving a partition to target (validated by
// ValidateTarget). A reassignment in progress is reverted first (Revert), as Kafka
// does, so the new one is relative to the original replicas. A target that is the
// original set in another order only reorders Replicas; one that adds nothing completes
// at once where CompleteReassignment allows. The partition epoch is bumped once, the
// leader epoch once if the leader changes. It returns the new state and whether it
// differs from st, or the error the partition is answered with.
func Reassign(st cluster.PartitionState, target []int32, nodes Nodes, minISR int) (cluster.PartitionState, bool, *kerr.Error, string) {
	base := st.Clone()
	if st.Reassigning() {
		var code *kerr.Error
		var msg string
		if base, code, msg = revert(st, nodes); code != nil {
			return st, false, code, msg
		}
	}
	next := base.Clone()
	adding := without(target, base.Replicas)
	removing := without(base.Replicas, target)
	switch {
	case len(adding) == 0 && len(removing) == 0:
		next.Replicas = slices.Clone(target)
	default:
		next.Replicas = append(slices.Clone(target), removing...)
		next.AddingReplicas, next.RemovingReplicas = adding, removing
		if done, ok := complete(next, nodes, minISR); ok {
			next = done
		}
	}
	next, changed := bumpEpochs(st, next)
	return next, changed, nil, ""
}

// Cancel decides the state that ends a reassignment in progress without completing it
// (an AlterPartitionReassignments entry with null replicas): see Revert. Without one it
// answers NO_REASSIGNMENT_IN_PROGRESS.
func Cancel(st cluster.PartitionState, nodes Nodes) (cluster.PartitionState, *kerr.Error, string) {
	if !st.Reassigning() {
		return st, kerr.NoReassignmentInProgress, fmt.Sprintf("No reassignment is in progress for partition %s.", st.TopicPartition())
	}
	next, code, msg := revert(st, nodes)
	if code != nil {
		return st, code, msg
	}
	next, _ = bumpEpochs(st, next)
	return next, nil, ""
}

// revert undoes a reassignment in progress (Kafka's PartitionReassignmentRevert):
// Replicas without the adding replicas (in their order: the original set, as Kafka
// keeps it), the ISR without them, no reassignment; a leader among the adding replicas
// hands over to the first eligible in-sync replica left (offline if none). An ISR made
// only of adding replicas cannot be reverted without an unclean election, which Kafka
// refuses: so is it here (INVALID_REPLICA_ASSIGNMENT). Epochs are not bumped.
func revert(st cluster.PartitionState, nodes Nodes) (cluster.PartitionState, *kerr.Error, string) {
	next := st.Clone()
	next.Replicas = st.OriginalReplicas()
	next.ISR = without(st.ISR, st.AddingReplicas)
	next.AddingReplicas, next.RemovingReplicas = nil, nil
	if len(next.ISR) == 0 {
		return st, kerr.InvalidReplicaAssignment, fmt.Sprintf("Unable to revert partition assignment for %s because it would require an unclean leader election.", st.TopicPartition())
	}
	if st.Leader != cluster.NoLeader && !slices.Contains(next.ISR, st.Leader) {
		next.Leader = cluster.NoLeader
		if id, ok := firstEligible(next.Replicas, next.ISR, nodes); ok {
			next.Leader = id
		}
	}
	return next, nil, ""
}

// CompleteReassignment decides whether a reassignment in progress can complete, and
// the state that completes it (Kafka's maybeCompleteReassignment): every adding
// replica is in the ISR; the ISR without the removed replicas is not empty and, so
// that acks=all produce keeps working through the move, holds at least
// min(minISR, len(target)) members; and a leader remains: the current one if it stays
// in that ISR and may lead, else the first target replica in it that may (live, not in
// controlled shutdown) — the target's preferred replica when it is in sync. Then
// Replicas is the target, the ISR loses the removed replicas, and the reassignment
// fields are cleared; the partition epoch is bumped, the leader epoch too if the leader
// changed. It returns the new state and whether it completes; st is not modified.
func CompleteReassignment(st cluster.PartitionState, nodes Nodes, minISR int) (cluster.PartitionState, bool) {
	next, ok := complete(st, nodes, minISR)
	if !ok {
		return st, false
	}
	next, _ = bumpEpochs(st, next)
	return next, true
}

// complete is CompleteReassignment without the epoch bumps.
func complete(st cluster.PartitionState, nodes Nodes, minISR int) (cluster.PartitionState, bool) {
	if !st.Reassigning() || st.Leader == cluster.NoLeader {
		return st, false
	}
	for _, id := range st.AddingReplicas {
		if !slices.Contains(st.ISR, id) {
			return st, false
		}
	}
	target := st.TargetReplicas()
	isr := without(st.ISR, st.RemovingReplicas)
	if len(isr) == 0 || len(isr) < min(minISR, len(target)) {
		return st, false
	}
	leader := st.Leader
	if !slices.Contains(isr, leader) || !nodes.eligible(leader) {
		id, ok := firstEligible(target, isr, nodes)
		if !ok {
			return st, false
		}
		leader = id
	}
	next := st.Clone()
	next.Replicas = target
	next.ISR = isr
	next.Leader = leader
	next.AddingReplicas, next.RemovingReplicas = nil, nil
	return next, true
}

// bumpEpochs bumps next's partition epoch to st's plus one, and its leader epoch to
// st's plus one if the leader changed, unless next equals st (then it returns st and
// false): one write, one bump, whatever the steps that made next.
func bumpEpochs(st, next cluster.PartitionState) (cluster.PartitionState, bool) {
	if sameState(st, next) {
		return st, false
	}
	next.PartitionEpoch = st.PartitionEpoch + 1
	next.LeaderEpoch = st.LeaderEpoch
	if next.Leader != st.Leader {
		next.LeaderEpoch++
	}
	return next, true
}

// sameState reports whether two states hold the same assignment, leadership and ISR.
func sameState(a, b cluster.PartitionState) bool {
	return a.Leader == b.Leader && slices.Equal(a.Replicas, b.Replicas) && slices.Equal(a.ISR, b.ISR) &&
		slices.Equal(a.AddingReplicas, b.AddingReplicas) && slices.Equal(a.RemovingReplicas, b.RemovingReplicas)
}

// without returns the members of ids not in drop, in order, in a new slice (nil if
// none).
func without(ids, drop []int32) []int32 {
	var out []int32
	for _, id := range ids {
		if !slices.Contains(drop, id) {
			out = append(out, id)
		}
	}
	return out
}
