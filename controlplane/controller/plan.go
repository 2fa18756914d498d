package controller

// Planned replica movement: emptying nodes (decommission, and with the balancer nodes
// gone for good) and evening out replicas and preferred leaderships over the nodes. Each
// plan is a pure function of the partition states and the nodes; the controller starts
// what it plans as reassignments (Reassign), a few at a time, and writes preferred-order
// changes as it writes its elections.

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// PlanInput is what a movement plan looks at.
type PlanInput struct {
	// Partitions are the partition states, of existing topics only.
	Partitions []cluster.PartitionState
	// Eligible are the nodes replicas may move to: registered, not being decommissioned,
	// not in controlled shutdown.
	Eligible []cluster.Broker
	// Evacuate are the nodes every replica must move off.
	Evacuate map[int32]bool
}

// Move is a planned reassignment of one partition.
type Move struct {
	cluster.TopicPartition
	// Target is the replica list to reassign the partition to.
	Target []int32
}

// sortedStates returns the states ordered by topic and partition, so plans are
// deterministic.
func sortedStates(states []cluster.PartitionState) []cluster.PartitionState {
	out := slices.Clone(states)
	slices.SortFunc(out, func(a, b cluster.PartitionState) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	return out
}

// replicaCounts counts the replicas of each eligible node over the partitions' targets
// (a reassignment in progress counts as done).
func replicaCounts(in PlanInput) map[int32]int {
	counts := make(map[int32]int, len(in.Eligible))
	for _, b := range in.Eligible {
		counts[b.ID] = 0
	}
	for _, st := range in.Partitions {
		for _, id := range st.TargetReplicas() {
			if _, ok := counts[id]; ok {
				counts[id]++
			}
		}
	}
	return counts
}

// rackOf maps eligible nodes to their racks; a node without one is a rack of its own.
func rackOf(eligible []cluster.Broker) map[int32]string {
	racks := make(map[int32]string, len(eligible))
	for _, b := range eligible {
		racks[b.ID] = b.Rack
		if b.Rack == "" {
			racks[b.ID] = fmt.Sprintf("\x00%d", b.ID)
		}
	}
	return racks
}

// PlanEvacuation plans moving every replica off the nodes in in.Evacuate: for each
// partition with a replica there and no reassignment in progress, the target replaces
// each such replica, in place (the preferred order is kept), by an eligible node that
// is not a replica already, preferring a rack none of the partition's other replicas is
// on, then the node with the fewest replicas (counting the moves planned before), then
// the lowest id. blocked says, per evacuated node, why some of its replicas cannot move
// now: no eligible node left for a partition (too few live nodes for its replication
// factor), or a partition without a leader (a reassignment needs one to copy from).
func PlanEvacuation(in PlanInput) (moves []Move, blocked map[int32][]string) {
	if len(in.Evacuate) == 0 {
		return nil, nil
	}
	counts := replicaCounts(in)
	racks := rackOf(in.Eligible)
	block := func(id int32, why string) {
		if blocked == nil {
			blocked = map[int32][]string{}
		}
		blocked[id] = append(blocked[id], why)
	}
	for _, st := range sortedStates(in.Partitions) {
		var out []int32
		for _, id := range st.Replicas {
			if in.Evacuate[id] {
				out = append(out, id)
			}
		}
		if len(out) == 0 || st.Reassigning() {
			continue
		}
		if st.Leader == cluster.NoLeader {
			for _, id := range out {
				block(id, fmt.Sprintf("%s is offline: its replicas move once it has a leader", st.TopicPartition()))
			}
			continue
		}
		target := slices.Clone(st.Replicas)
		ok := true
		for i, id := range target {
			if !in.Evacuate[id] {
				continue
			}
			used := map[string]bool{}
			for _, other := range target {
				if !in.Evacuate[other] {
					used[racks[other]] = true
				}
			}
			best, found := int32(0), false
			for _, b := range in.Eligible {
				if slices.Contains(target, b.ID) {
					continue
				}
				if !found || better(b.ID, best, used, racks, counts) {
					best, found = b.ID, true
				}
			}
			if !found {
				block(id, fmt.Sprintf("%s (replication factor %d) has no eligible node left to move to: %d live nodes not decommissioned and not stopping",
					st.TopicPartition(), len(st.Replicas), len(in.Eligible)))
				ok = false
				break
			}
			target[i] = best
			counts[best]++
		}
		if ok {
			moves = append(moves, Move{TopicPartition: st.TopicPartition(), Target: target})
		}
	}
	return moves, blocked
}

// better reports whether node a is a better new replica than b: on a rack the
// partition does not use yet, then fewer replicas, then the lower id.
func better(a, b int32, used map[string]bool, racks map[int32]string, counts map[int32]int) bool {
	if ua, ub := used[racks[a]], used[racks[b]]; ua != ub {
		return !ua
	}
	if counts[a] != counts[b] {
		return counts[a] < counts[b]
	}
	return a < b
}

// PlanBalance plans at most max reassignments that even out the replicas over the
// eligible nodes: while the most loaded node holds two or more replicas more than the
// least loaded, one replica of a partition on the former and not on the latter moves
// there, in place, provided that keeps the partition on as many racks. Partitions with
// a reassignment in progress, or without a leader, or with a replica on a node that is
// not eligible, are left alone (evacuation, or the node's return, comes first).
func PlanBalance(in PlanInput, max int) []Move {
	if len(in.Eligible) < 2 || max <= 0 {
		return nil
	}
	counts := replicaCounts(in)
	racks := rackOf(in.Eligible)
	states := sortedStates(in.Partitions)
	planned := map[cluster.TopicPartition]bool{}
	var moves []Move
	evenOut(counts, max, func(hi, lo int32) bool {
		for _, st := range states {
			tp := st.TopicPartition()
			if planned[tp] || st.Reassigning() || st.Leader == cluster.NoLeader ||
				!slices.Contains(st.Replicas, hi) || slices.Contains(st.Replicas, lo) || !allEligible(st.Replicas, counts) {
				continue
			}
			target := slices.Clone(st.Replicas)
			target[slices.Index(target, hi)] = lo
			if rackCount(target, racks) < rackCount(st.Replicas, racks) {
				continue
			}
			moves = append(moves, Move{TopicPartition: tp, Target: target})
			planned[tp] = true
			return true
		}
		return false
	})
	return moves
}

// PlanPreferred plans at most max changes of preferred replica (the order of Replicas,
// the same set) that even out preferred leaderships over the eligible nodes: while one
// node is the preferred replica of two or more partitions more than another that holds
// an in-sync replica of one of them, that one is moved first. Preferred-leader election
// (automatic, or ElectLeaders) then moves the leaderships. It returns the changed
// states with the partition epoch bumped; partitions with a reassignment in progress are
// left alone.
func PlanPreferred(in PlanInput, max int) (olds, nexts []cluster.PartitionState) {
	if len(in.Eligible) < 2 || max <= 0 {
		return nil, nil
	}
	counts := make(map[int32]int, len(in.Eligible))
	for _, b := range in.Eligible {
		counts[b.ID] = 0
	}
	states := sortedStates(in.Partitions)
	for _, st := range states {
		if len(st.Replicas) > 0 {
			if _, ok := counts[st.Replicas[0]]; ok {
				counts[st.Replicas[0]]++
			}
		}
	}
	planned := map[cluster.TopicPartition]bool{}
	evenOut(counts, max, func(hi, lo int32) bool {
		for _, st := range states {
			if planned[st.TopicPartition()] || st.Reassigning() || len(st.Replicas) == 0 || st.Replicas[0] != hi ||
				!slices.Contains(st.ISR, lo) {
				continue
			}
			next := st.Clone()
			next.Replicas = append([]int32{lo}, without(st.Replicas, []int32{lo})...)
			next.PartitionEpoch++
			olds, nexts = append(olds, st), append(nexts, next)
			planned[st.TopicPartition()] = true
			return true
		}
		return false
	})
	return olds, nexts
}

// evenOut moves one unit of counts at a time, at most max times, from the node with
// the most to the one with the fewest (extremes) while they differ by two or more:
// move(hi, lo) plans one such change, or reports that none is left to plan. The
// balance of replicas and that of preferred leaderships even out alike.
func evenOut(counts map[int32]int, max int, move func(hi, lo int32) bool) {
	for range max {
		hi, lo := extremes(counts)
		if counts[hi]-counts[lo] <= 1 || !move(hi, lo) {
			return
		}
		counts[hi]--
		counts[lo]++
	}
}

// extremes returns the node with the most count (the highest id among equals) and the
// one with the fewest (the lowest id among equals).
func extremes(counts map[int32]int) (hi, lo int32) {
	first := true
	for id, n := range counts {
		if first {
			hi, lo, first = id, id, false
			continue
		}
		if n > counts[hi] || (n == counts[hi] && id > hi) {
			hi = id
		}
		if n < counts[lo] || (n == counts[lo] && id < lo) {
			lo = id
		}
	}
	return hi, lo
}

// allEligible reports whether every replica is an eligible node (a key of counts).
func allEligible(replicas []int32, counts map[int32]int) bool {
	for _, id := range replicas {
		if _, ok := counts[id]; !ok {
			return false
		}
	}
	return true
}

// rackCount is the number of distinct racks of replicas.
func rackCount(replicas []int32, racks map[int32]string) int {
	seen := map[string]bool{}
	for _, id := range replicas {
		seen[racks[id]] = true
	}
	return len(seen)
}
