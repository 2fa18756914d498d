package controller

import (
	"fmt"
	"math/rand"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// checkInvariants fails unless st keeps the partition state's invariants: the leader is
// offline or in the ISR, the ISR within the replicas, the adding and removing replicas
// disjoint subsets of the replicas, no duplicates.
func checkInvariants(t *testing.T, st cluster.PartitionState) {
	t.Helper()
	if st.Leader != cluster.NoLeader && !slices.Contains(st.ISR, st.Leader) {
		t.Fatalf("leader %d not in ISR %v", st.Leader, st.ISR)
	}
	for _, set := range [][]int32{st.ISR, st.AddingReplicas, st.RemovingReplicas} {
		for _, id := range set {
			if !slices.Contains(st.Replicas, id) {
				t.Fatalf("%d of %v not a replica of %v", id, set, st.Replicas)
			}
		}
	}
	for _, id := range st.AddingReplicas {
		if slices.Contains(st.RemovingReplicas, id) {
			t.Fatalf("%d both adding and removing", id)
		}
	}
	for i, id := range st.Replicas {
		if slices.Contains(st.Replicas[:i], id) {
			t.Fatalf("duplicate replica in %v", st.Replicas)
		}
	}
}

func TestValidateTarget(t *testing.T) {
	live := liveSet(1, 2, 3, 4)
	draining := func(id int32) bool { return id == 4 }
	tests := []struct {
		name   string
		target []int32
		ok     bool
	}{
		{"valid", []int32{3, 2, 1}, true},
		{"empty", []int32{}, false},
		{"duplicates", []int32{1, 2, 1}, false},
		{"dead node", []int32{1, 2, 9}, false},
		{"negative id", []int32{-1, 2}, false},
		{"draining node", []int32{1, 4}, false},
		{"too many", make([]int32, cluster.ReplicationFactorMax+1), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := ValidateTarget(tc.target, live, draining)
			if (code == nil) != tc.ok {
				t.Fatalf("code %v (%s), want ok=%v", code, msg, tc.ok)
			}
			if code != nil && (code != kerr.InvalidReplicaAssignment || msg == "") {
				t.Fatalf("code %v msg %q, want INVALID_REPLICA_ASSIGNMENT with a message", code, msg)
			}
		})
	}
	if _, msg := ValidateTarget([]int32{1, 9}, live, nil); msg != "The manual partition assignment includes broker 9, but no such broker is registered." {
		t.Fatalf("dead node message %q", msg)
	}
}

// TestReassignLifecycle walks a reassignment of [1 2 3] to [4 2 5]: begin (replicas
// target ∪ original, adding and removing, epochs), no completion until every adding
// replica is in the ISR, then completion with the removed leader replaced by the target's
// first replica and a new leader epoch.
func TestReassignLifecycle(t *testing.T) {
	nodes := Nodes{Live: liveSet(1, 2, 3, 4, 5)}
	st := cluster.PartitionState{Topic: "t", Replicas: []int32{1, 2, 3}, Leader: 1, LeaderEpoch: 4, ISR: []int32{1, 2, 3}, PartitionEpoch: 7}
	next, changed, code, msg := Reassign(st, []int32{4, 2, 5}, nodes, 2)
	if code != nil || !changed {
		t.Fatalf("Reassign: %v %s changed=%v", code, msg, changed)
	}
	checkInvariants(t, next)
	if !slices.Equal(next.Replicas, []int32{4, 2, 5, 1, 3}) || !slices.Equal(next.AddingReplicas, []int32{4, 5}) ||
		!slices.Equal(next.RemovingReplicas, []int32{1, 3}) {
		t.Fatalf("begun: %+v", next)
	}
	if next.Leader != 1 || next.LeaderEpoch != 4 || next.PartitionEpoch != 8 || !slices.Equal(next.ISR, []int32{1, 2, 3}) {
		t.Fatalf("begun: leadership or epochs changed: %+v", next)
	}
	if !slices.Equal(next.TargetReplicas(), []int32{4, 2, 5}) || !slices.Equal(next.OriginalReplicas(), []int32{2, 1, 3}) {
		t.Fatalf("target %v original %v", next.TargetReplicas(), next.OriginalReplicas())
	}
	if _, ok := CompleteReassignment(next, nodes, 2); ok {
		t.Fatal("completed with no adding replica in sync")
	}
	half := next.Clone()
	half.ISR = append(half.ISR, 4)
	if _, ok := CompleteReassignment(half, nodes, 2); ok {
		t.Fatal("completed with 5 not in sync")
	}
	full := half.Clone()
	full.ISR = append(full.ISR, 5)
	done, ok := CompleteReassignment(full, nodes, 2)
	if !ok {
		t.Fatal("not completed with every adding replica in sync")
	}
	checkInvariants(t, done)
	if !slices.Equal(done.Replicas, []int32{4, 2, 5}) || !slices.Equal(done.ISR, []int32{2, 4, 5}) || done.Reassigning() {
		t.Fatalf("completed: %+v", done)
	}
	if done.Leader != 4 || done.LeaderEpoch != full.LeaderEpoch+1 || done.PartitionEpoch != full.PartitionEpoch+1 {
		t.Fatalf("completed: leader %d epoch %d/%d, want the target's first, 4, with new epochs", done.Leader, done.LeaderEpoch, done.PartitionEpoch)
	}
	// The target's first replica cannot lead (stopping): the next in-sync target one does.
	stopping := Nodes{Live: liveSet(1, 2, 3, 4, 5), ShuttingDown: map[int32]bool{4: true}}
	if done, ok := CompleteReassignment(full, stopping, 2); !ok || done.Leader != 2 {
		t.Fatalf("with 4 stopping: %v leader %d, want 2", ok, done.Leader)
	}
}

func TestCompleteReassignmentRules(t *testing.T) {
	nodes := Nodes{Live: liveSet(1, 2, 3, 4)}
	base := cluster.PartitionState{Topic: "t", Replicas: []int32{4, 2, 1}, AddingReplicas: []int32{4}, RemovingReplicas: []int32{1},
		Leader: 2, LeaderEpoch: 1, ISR: []int32{2, 1, 4}, PartitionEpoch: 3}
	tests := []struct {
		name   string
		mod    func(*cluster.PartitionState)
		minISR int
		nodes  Nodes
		ok     bool
		leader int32
	}{
		{"leader kept when it stays", nil, 1, nodes, true, 2},
		{"adding replica out of sync", func(s *cluster.PartitionState) { s.ISR = []int32{2, 1} }, 1, nodes, false, 0},
		// ISR {1, 4} minus the removed 1 leaves 4 alone, below min.insync.replicas 2 of a
		// target of 2: acks=all would stop, so it waits for 2 to catch up.
		{"would drop ISR below min.insync.replicas", func(s *cluster.PartitionState) { s.ISR = []int32{1, 4}; s.Leader = 1 }, 2, nodes, false, 0},
		{"same ISR, min.insync.replicas 1", func(s *cluster.PartitionState) { s.ISR = []int32{1, 4}; s.Leader = 1 }, 1, nodes, true, 4},
		{"offline partition waits", func(s *cluster.PartitionState) { s.Leader = cluster.NoLeader }, 1, nodes, false, 0},
		{"no eligible leader left", func(s *cluster.PartitionState) { s.ISR = []int32{1, 4}; s.Leader = 1 }, 1,
			Nodes{Live: liveSet(1, 2, 3)}, false, 0},
		{"min.insync.replicas above the target's size", func(s *cluster.PartitionState) {
			s.Replicas, s.AddingReplicas, s.RemovingReplicas, s.ISR = []int32{4, 2, 1}, []int32{4}, []int32{2, 1}, []int32{2, 1, 4}
		}, 3, nodes, true, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := base.Clone()
			if tc.mod != nil {
				tc.mod(&st)
			}
			before := st.Clone()
			got, ok := CompleteReassignment(st, tc.nodes, tc.minISR)
			if ok != tc.ok {
				t.Fatalf("complete = %v, want %v (%+v)", ok, tc.ok, got)
			}
			if !sameState(st, before) {
				t.Fatal("input modified")
			}
			if !ok {
				return
			}
			checkInvariants(t, got)
			if got.Leader != tc.leader {
				t.Fatalf("leader %d, want %d", got.Leader, tc.leader)
			}
			wantLE := st.LeaderEpoch
			if got.Leader != st.Leader {
				wantLE++
			}
			if got.LeaderEpoch != wantLE || got.PartitionEpoch != st.PartitionEpoch+1 {
				t.Fatalf("epochs %d/%d", got.LeaderEpoch, got.PartitionEpoch)
			}
		})
	}
}

func TestCancelAndReplace(t *testing.T) {
	nodes := Nodes{Live: liveSet(1, 2, 3, 4, 5)}
	idle := cluster.PartitionState{Topic: "t", Replicas: []int32{1, 2, 3}, Leader: 1, LeaderEpoch: 2, ISR: []int32{1, 2, 3}, PartitionEpoch: 5}
	if _, code, _ := Cancel(idle, nodes); code != kerr.NoReassignmentInProgress {
		t.Fatalf("cancel without a reassignment: %v", code)
	}
	moving, _, _, _ := Reassign(idle, []int32{4, 5, 3}, nodes, 1)
	// 4 caught up and leads (a preferred election moved it there); cancel reverts.
	moving.ISR = append(moving.ISR, 4)
	moving.Leader, moving.LeaderEpoch = 4, moving.LeaderEpoch+1
	reverted, code, msg := Cancel(moving, nodes)
	if code != nil {
		t.Fatalf("cancel: %v %s", code, msg)
	}
	checkInvariants(t, reverted)
	if reverted.Reassigning() || !slices.Equal(sortedIDs(reverted.Replicas), []int32{1, 2, 3}) || slices.Contains(reverted.ISR, 4) {
		t.Fatalf("reverted: %+v", reverted)
	}
	if reverted.Leader == 4 || reverted.LeaderEpoch != moving.LeaderEpoch+1 || reverted.PartitionEpoch != moving.PartitionEpoch+1 {
		t.Fatalf("reverted leadership: %+v", reverted)
	}
	// A new target over one in progress is relative to the original replicas.
	again, changed, code, _ := Reassign(moving, []int32{1, 2, 5}, nodes, 1)
	if code != nil || !changed {
		t.Fatalf("replace: %v", code)
	}
	checkInvariants(t, again)
	if !slices.Equal(again.AddingReplicas, []int32{5}) || !slices.Equal(again.RemovingReplicas, []int32{3}) || slices.Contains(again.Replicas, 4) {
		t.Fatalf("replaced: %+v", again)
	}
	// Reverting an ISR of adding replicas only would take an unclean election: refused.
	lost := moving.Clone()
	lost.ISR, lost.Leader = []int32{4}, 4
	if _, code, _ := Cancel(lost, nodes); code != kerr.InvalidReplicaAssignment {
		t.Fatalf("cancel needing an unclean election: %v", code)
	}
	// A reorder of the same replicas changes only the order; a shrink completes at once.
	re, changed, code, _ := Reassign(idle, []int32{3, 1, 2}, nodes, 1)
	if code != nil || !changed || re.Reassigning() || !slices.Equal(re.Replicas, []int32{3, 1, 2}) || re.PartitionEpoch != idle.PartitionEpoch+1 {
		t.Fatalf("reorder: %+v", re)
	}
	shrunk, _, code, _ := Reassign(idle, []int32{2, 3}, nodes, 2)
	if code != nil || shrunk.Reassigning() || !slices.Equal(shrunk.Replicas, []int32{2, 3}) || shrunk.Leader != 2 {
		t.Fatalf("shrink: %+v", shrunk)
	}
	if _, changed, _, _ := Reassign(idle, []int32{1, 2, 3}, nodes, 1); changed {
		t.Fatal("a reassignment to the current replicas changed the state")
	}
}

func sortedIDs(ids []int32) []int32 {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

// model is a cluster for the plan tests: partitions over nodes with racks.
type model struct {
	brokers []cluster.Broker
	states  []cluster.PartitionState
}

func newModel(nodes int, racks int, partitions, rf int, seed int64) *model {
	m := &model{}
	for i := 1; i <= nodes; i++ {
		b := cluster.Broker{ID: int32(i)}
		if racks > 0 {
			b.Rack = fmt.Sprintf("r%d", i%racks)
		}
		m.brokers = append(m.brokers, b)
	}
	rng := rand.New(rand.NewSource(seed))
	for p := range partitions {
		perm := rng.Perm(nodes)[:rf]
		if seed == 0 { // round robin: even counts
			perm = perm[:0]
			for j := range rf {
				perm = append(perm, (p+j)%nodes)
			}
		}
		var replicas []int32
		for _, i := range perm {
			replicas = append(replicas, int32(i+1))
		}
		m.states = append(m.states, cluster.PartitionState{Topic: "t", Partition: int32(p), Replicas: replicas,
			Leader: replicas[0], ISR: slices.Clone(replicas)})
	}
	return m
}

// apply completes the moves at once in the model, as the controller eventually does.
func (m *model) apply(moves []Move) {
	for _, mv := range moves {
		for i := range m.states {
			if m.states[i].TopicPartition() == mv.TopicPartition {
				m.states[i].Replicas = slices.Clone(mv.Target)
				m.states[i].ISR = slices.Clone(mv.Target)
				m.states[i].Leader = mv.Target[0]
			}
		}
	}
}

func (m *model) counts() map[int32]int {
	c := map[int32]int{}
	for _, st := range m.states {
		for _, id := range st.Replicas {
			c[id]++
		}
	}
	return c
}

// TestPlanEvacuation: decommissioning a node of a model cluster moves all its replicas
// away, in place, onto distinct eligible nodes, spreading over racks, and evens the
// counts; with too few nodes it says it is blocked.
func TestPlanEvacuation(t *testing.T) {
	m := newModel(5, 3, 40, 3, 1)
	var eligible []cluster.Broker
	for _, b := range m.brokers {
		if b.ID != 5 {
			eligible = append(eligible, b)
		}
	}
	racksBefore := map[cluster.TopicPartition]int{}
	racks := rackOf(m.brokers)
	for _, st := range m.states {
		racksBefore[st.TopicPartition()] = rackCount(st.Replicas, racks)
	}
	moves, blocked := PlanEvacuation(PlanInput{Partitions: m.states, Eligible: eligible, Evacuate: map[int32]bool{5: true}})
	if len(blocked) != 0 {
		t.Fatalf("blocked: %v", blocked)
	}
	held := m.counts()[5]
	if len(moves) != held {
		t.Fatalf("%d moves for %d replicas on node 5", len(moves), held)
	}
	for _, mv := range moves {
		var old cluster.PartitionState
		for _, st := range m.states {
			if st.TopicPartition() == mv.TopicPartition {
				old = st
			}
		}
		if slices.Contains(mv.Target, 5) || len(mv.Target) != len(old.Replicas) || len(sortedIDs(mv.Target)) != len(slices.Compact(sortedIDs(mv.Target))) {
			t.Fatalf("move %v: target %v from %v", mv.TopicPartition, mv.Target, old.Replicas)
		}
		for i, id := range old.Replicas {
			if id != 5 && mv.Target[i] != id {
				t.Fatalf("move %v: kept replica %d moved position: %v → %v", mv.TopicPartition, id, old.Replicas, mv.Target)
			}
		}
		if rackCount(mv.Target, racks) < min(racksBefore[mv.TopicPartition], 3) {
			t.Fatalf("move %v lost a rack: %v", mv.TopicPartition, mv.Target)
		}
	}
	m.apply(moves)
	if c := m.counts(); c[5] != 0 {
		t.Fatalf("after evacuation: counts %v", c)
	}
	// Without racks, from even counts, the moved replicas keep them even.
	even := newModel(5, 0, 40, 3, 0)
	moves, _ = PlanEvacuation(PlanInput{Partitions: even.states, Eligible: even.brokers[:4], Evacuate: map[int32]bool{5: true}})
	even.apply(moves)
	c := even.counts()
	lo, hi := c[1], c[1]
	for id := int32(1); id <= 4; id++ {
		lo, hi = min(lo, c[id]), max(hi, c[id])
	}
	if c[5] != 0 || hi-lo > 1 {
		t.Fatalf("after evacuation: counts %v", c)
	}
	// Three nodes left for RF 3 after taking two away: each partition on both is blocked.
	small := newModel(4, 0, 6, 3, 2)
	_, blocked = PlanEvacuation(PlanInput{Partitions: small.states, Eligible: small.brokers[:2], Evacuate: map[int32]bool{3: true, 4: true}})
	if len(blocked[3])+len(blocked[4]) == 0 {
		t.Fatal("not blocked with 2 eligible nodes for RF 3")
	}
	// A partition without a leader is blocked too, and one being reassigned is left alone.
	off := newModel(4, 0, 2, 2, 3)
	off.states[0].Leader = cluster.NoLeader
	off.states[1].AddingReplicas = []int32{off.states[1].Replicas[0]}
	ev := map[int32]bool{}
	for _, id := range off.states[0].Replicas {
		ev[id] = true
	}
	moves, blocked = PlanEvacuation(PlanInput{Partitions: off.states, Eligible: off.brokers, Evacuate: ev})
	for _, mv := range moves {
		t.Fatalf("planned %v for an offline or moving partition", mv)
	}
	if len(blocked) == 0 {
		t.Fatal("offline partition not reported blocked")
	}
}

// TestPlanBalance: a node joins an unbalanced model cluster; balancing in rounds of at
// most max moves converges to counts within one of each other, keeps every partition's
// rack count, and then plans nothing more.
func TestPlanBalance(t *testing.T) {
	for seed := int64(1); seed <= 5; seed++ {
		m := newModel(4, 0, 30, 3, seed)
		m.brokers = append(m.brokers, cluster.Broker{ID: 5}) // joined, empty
		rounds := 0
		for {
			moves := PlanBalance(PlanInput{Partitions: m.states, Eligible: m.brokers}, 3)
			if len(moves) > 3 {
				t.Fatalf("%d moves, max 3", len(moves))
			}
			if len(moves) == 0 {
				break
			}
			m.apply(moves)
			if rounds++; rounds > 50 {
				t.Fatal("balancing does not converge")
			}
		}
		c := m.counts()
		lo, hi := c[1], c[1]
		for _, b := range m.brokers {
			lo, hi = min(lo, c[b.ID]), max(hi, c[b.ID])
		}
		if hi-lo > 1 {
			t.Fatalf("seed %d: balanced counts %v", seed, c)
		}
		// Then leaderships: preferred replicas even out, in-sync ones only.
		for {
			olds, nexts := PlanPreferred(PlanInput{Partitions: m.states, Eligible: m.brokers}, 4)
			if len(olds) == 0 {
				break
			}
			for i, o := range olds {
				if !slices.Equal(sortedIDs(o.Replicas), sortedIDs(nexts[i].Replicas)) || nexts[i].PartitionEpoch != o.PartitionEpoch+1 {
					t.Fatalf("reorder changed the set: %v → %v", o.Replicas, nexts[i].Replicas)
				}
				for j := range m.states {
					if m.states[j].TopicPartition() == o.TopicPartition() {
						m.states[j] = nexts[i]
					}
				}
			}
			if rounds++; rounds > 100 {
				t.Fatal("preferred balancing does not converge")
			}
		}
		pc := map[int32]int{}
		for _, st := range m.states {
			pc[st.Replicas[0]]++
		}
		lo, hi = pc[1], pc[1]
		for _, b := range m.brokers {
			lo, hi = min(lo, pc[b.ID]), max(hi, pc[b.ID])
		}
		if hi-lo > 1 {
			t.Fatalf("seed %d: preferred leaders %v", seed, pc)
		}
	}
}
