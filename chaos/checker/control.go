package checker

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/gregor-streaming/gregor/chaos/history"
)

// groupTP names a group's partition.
type groupTP struct {
	group string
	tp    tp
}

// commitIdx holds each group partition's commits in time order.
type commitIdx map[groupTP][]history.Commit

func (c *checker) commitIndex() commitIdx {
	idx := commitIdx{}
	for _, cm := range c.h.Commits {
		k := groupTP{cm.Group, tp{cm.Topic, cm.Partition}}
		idx[k] = append(idx[k], cm)
	}
	for _, cs := range idx {
		slices.SortStableFunc(cs, func(a, b history.Commit) int { return a.Time.Compare(b.Time) })
	}
	return idx
}

// at returns the group's committed offset for the partition at time t: the last
// commit at or before t; -1 if none.
func (idx commitIdx) at(group, topic string, part int32, t time.Time) int64 {
	cs := idx[groupTP{group, tp{topic, part}}]
	i, _ := slices.BinarySearchFunc(cs, t, func(c history.Commit, t time.Time) int {
		if c.Time.After(t) {
			return 1
		}
		return -1
	})
	if i == 0 {
		return -1
	}
	return cs[i-1].Offset
}

// checkCommits checks that no group's committed offset goes down: a commit sent after
// a higher one was acknowledged, or an offset fetched after it, must not be lower.
// Commits in flight together may be applied in either order (a client that retries a
// commit across a rebalance sends an old position under its new generation, which Kafka
// accepts too), so a lower commit that was sent before the higher one's answer is no
// regression — but what is committed may be the lower one from then on.
func (c *checker) checkCommits() {
	c.stats.Commits = len(c.h.Commits)
	idx := c.commitIndex()
	for k, cs := range idx {
		high := -1 // index in cs of the commit whose offset later ones must not go below
		for i, cur := range cs {
			if high >= 0 && cur.Offset < cs[high].Offset {
				prev := cs[high]
				sent := cur.Time
				if !cur.Call.IsZero() {
					sent = cur.Call
				}
				if !sent.After(prev.Time) {
					high = i // overlapping: either may stand
					continue
				}
				c.add(Anomaly{Kind: CommittedOffsetRegression, Topic: k.tp.topic, Partition: k.tp.part,
					Offset: cur.Offset,
					Detail: fmt.Sprintf("group %s: %s %d at %s, then %s %d at %s",
						k.group, commitWhat(prev), prev.Offset, prev.Time.Format(time.RFC3339Nano),
						commitWhat(cur), cur.Offset, cur.Time.Format(time.RFC3339Nano))})
				continue
			}
			high = i
		}
	}
}

// checkGenerations checks that no group commit sent after a commit of a later
// generation was acknowledged is itself acknowledged: a commit acknowledged at
// generation g means the group was at g or later from then on. Commits whose send time
// is not known, fetched offsets and generation-less commits are not judged.
func (c *checker) checkGenerations() {
	byGroup := map[string][]history.Commit{}
	for _, cm := range c.h.Commits {
		if !cm.Fetched && cm.Generation > 0 {
			byGroup[cm.Group] = append(byGroup[cm.Group], cm)
		}
	}
	for group, cs := range byGroup {
		slices.SortStableFunc(cs, func(a, b history.Commit) int { return a.Time.Compare(b.Time) })
		// top[i] is the commit of the highest generation among cs[:i+1].
		top := make([]int, len(cs))
		for i := range cs {
			top[i] = i
			if i > 0 && cs[top[i-1]].Generation >= cs[i].Generation {
				top[i] = top[i-1]
			}
		}
		for _, cm := range cs {
			if cm.Call.IsZero() {
				continue
			}
			// The commits acknowledged before cm was sent.
			n, _ := slices.BinarySearchFunc(cs, cm.Call, func(x history.Commit, t time.Time) int {
				if x.Time.Before(t) {
					return -1
				}
				return 1
			})
			if n == 0 {
				continue
			}
			if later := cs[top[n-1]]; later.Generation > cm.Generation {
				c.add(Anomaly{Kind: StaleGenerationCommit, Topic: cm.Topic, Partition: cm.Partition, Offset: cm.Offset,
					Detail: fmt.Sprintf("group %s: %s sent at %s, acknowledged at %s, after the commit %s of %s/%d was acknowledged at %s",
						group, commitWhat(cm), cm.Call.Format(time.RFC3339Nano), cm.Time.Format(time.RFC3339Nano),
						commitWhat(later), later.Topic, later.Partition, later.Time.Format(time.RFC3339Nano))})
			}
		}
	}
}

func commitWhat(c history.Commit) string {
	if c.Fetched {
		return "fetched"
	}
	return fmt.Sprintf("committed by %s (generation %d)", cmp.Or(c.Member, "?"), c.Generation)
}

// checkStates checks the control plane's partition history: a leader change elects a
// member of the previous ISR (unless the topic allows unclean election) and bumps the
// leader epoch, which never decreases.
func (c *checker) checkStates() {
	c.stats.States = len(c.h.States)
	unclean := map[string]bool{}
	for _, t := range c.h.UncleanAllowed {
		unclean[t] = true
	}
	by := map[tp][]history.PartitionState{}
	for _, s := range c.h.States {
		k := tp{s.Topic, s.Partition}
		by[k] = append(by[k], s)
	}
	for k, ss := range by {
		slices.SortStableFunc(ss, func(a, b history.PartitionState) int { return cmp.Compare(a.Revision, b.Revision) })
		for i := 1; i < len(ss); i++ {
			prev, cur := ss[i-1], ss[i]
			changed := cur.Leader != prev.Leader
			if changed && cur.Leader >= 0 && !slices.Contains(prev.ISR, cur.Leader) {
				if unclean[k.topic] {
					c.stats.UncleanAllowed++
				} else {
					c.add(Anomaly{Kind: UncleanElection, Topic: k.topic, Partition: k.part, Offset: -1,
						Detail: fmt.Sprintf("revision %d: leader %d (epoch %d) elected outside the ISR %v of revision %d",
							cur.Revision, cur.Leader, cur.LeaderEpoch, prev.ISR, prev.Revision)})
				}
			}
			if cur.LeaderEpoch < prev.LeaderEpoch || (changed && cur.LeaderEpoch == prev.LeaderEpoch) {
				c.add(Anomaly{Kind: EpochRegression, Topic: k.topic, Partition: k.part, Offset: -1,
					Detail: fmt.Sprintf("revision %d: leader %d epoch %d, after revision %d: leader %d epoch %d",
						cur.Revision, cur.Leader, cur.LeaderEpoch, prev.Revision, prev.Leader, prev.LeaderEpoch)})
			}
		}
	}
}

// ctrlState is the model's state of one partition: its leader, leader epoch and ISR
// (sorted, as text). The zero value, known false, is the state before any operation
// pinned it: the partition may exist before the history starts.
type ctrlState struct {
	known  bool
	leader int32
	epoch  int32
	isr    string
}

func (s ctrlState) String() string {
	if !s.known {
		return "?"
	}
	return fmt.Sprintf("leader %d epoch %d isr [%s]", s.leader, s.epoch, s.isr)
}

func stateOf(p history.PartitionState) ctrlState {
	isr := slices.Clone(p.ISR)
	slices.Sort(isr)
	parts := make([]string, len(isr))
	for i, id := range isr {
		parts[i] = strconv.Itoa(int(id))
	}
	return ctrlState{known: true, leader: p.Leader, epoch: p.LeaderEpoch, isr: strings.Join(parts, ",")}
}

// ctrlInput is one control-plane operation, as the model sees it. The operations
// carry everything in their input; their output is nil.
type ctrlInput struct {
	tp     tp
	write  bool
	ok     bool // for a write: acknowledged; !ok: it may or may not have happened
	st     ctrlState
	cas    bool
	expect ctrlState // for a CAS: the epoch and ISR compared (leader ignored)
}

func (in ctrlInput) String() string {
	switch {
	case !in.write:
		return "read " + in.st.String()
	case in.cas:
		s := fmt.Sprintf("cas epoch %d isr [%s] -> %s", in.expect.epoch, in.expect.isr, in.st)
		if !in.ok {
			s += " (unknown)"
		}
		return s
	default:
		s := "write " + in.st.String()
		if !in.ok {
			s += " (unknown)"
		}
		return s
	}
}

// step is the model: the states a partition may be in after the operation.
func step(state, input, _ any) []any {
	s, in := state.(ctrlState), input.(ctrlInput)
	if !in.write {
		if !s.known || s == in.st {
			return []any{in.st}
		}
		return nil
	}
	matches := !in.cas || !s.known || (s.epoch == in.expect.epoch && s.isr == in.expect.isr)
	switch {
	case in.ok && matches:
		return []any{in.st}
	case in.ok:
		return nil
	case matches:
		return []any{s, in.st}
	default:
		return []any{s}
	}
}

func partitionOps(ops []porcupine.Operation) [][]porcupine.Operation {
	by := map[tp][]porcupine.Operation{}
	var order []tp
	for _, op := range ops {
		k := op.Input.(ctrlInput).tp
		if _, ok := by[k]; !ok {
			order = append(order, k)
		}
		by[k] = append(by[k], op)
	}
	out := make([][]porcupine.Operation, len(order))
	for i, k := range order {
		out[i] = by[k]
	}
	return out
}

func partitionEvents(evs []porcupine.Event) [][]porcupine.Event {
	keyOf := map[int]tp{}
	by := map[tp][]porcupine.Event{}
	var order []tp
	for _, e := range evs {
		if e.Kind == porcupine.CallEvent {
			keyOf[e.Id] = e.Value.(ctrlInput).tp
		}
		k := keyOf[e.Id]
		if _, ok := by[k]; !ok {
			order = append(order, k)
		}
		by[k] = append(by[k], e)
	}
	out := make([][]porcupine.Event, len(order))
	for i, k := range order {
		out[i] = by[k]
	}
	return out
}

// ControlModel is the porcupine model of the control plane's partition states: per
// partition (Partition and PartitionEvent split by topic and partition) a register of
// (leader, leader epoch, ISR) with reads, blind writes and compare-and-swap writes on
// (leader epoch, ISR). A write that was not acknowledged may or may not have taken
// effect. Its operations are those built by ControlOperations.
var ControlModel = (&porcupine.NondeterministicModel{
	Partition:      partitionOps,
	PartitionEvent: partitionEvents,
	Init:           func() []any { return []any{ctrlState{}} },
	Step:           step,
	Hash: func(s any) uint64 {
		h := fnv.New64a()
		fmt.Fprint(h, s)
		return h.Sum64()
	},
	DescribeOperation: func(input, _ any) string { return input.(ctrlInput).String() },
	DescribeState:     func(s any) string { return s.(ctrlState).String() },
}).ToModel()

// ControlOperations turns the control-plane operations of a run into porcupine
// operations for ControlModel. A write that was not acknowledged may take effect at
// any time after its call, so its return is put after every other operation. A read
// counts as the observation of its State whatever its Ok.
//
// A write whose revision is known cannot have taken effect before any operation that
// saw an older revision of its partition: its call is moved up to the latest call among
// those. This is sound (such a read was linearized at or after its call, and the write
// after it) and keeps a long run's check small: a write observed on a watch is otherwise
// only known to have happened some time after the run began.
func ControlOperations(ops []history.ControlOp) []porcupine.Operation {
	calls := earliestCalls(ops)
	var last int64
	for _, op := range ops {
		last = max(last, op.Return.UnixNano(), op.Call.UnixNano())
	}
	clients := map[string]int{}
	out := make([]porcupine.Operation, 0, len(ops))
	for i, op := range ops {
		id, ok := clients[op.Client]
		if !ok {
			id = len(clients)
			clients[op.Client] = id
		}
		in := ctrlInput{tp: tp{op.Topic, op.Partition}, write: op.Write, ok: op.Ok || !op.Write, st: stateOf(op.State)}
		if op.Expect != nil {
			in.cas, in.expect = true, stateOf(*op.Expect)
		}
		call := max(op.Call.UnixNano(), calls[i])
		ret := op.Return.UnixNano()
		if op.Write && !op.Ok {
			ret = last + 1
		}
		out = append(out, porcupine.Operation{
			ClientId: id, Input: in, Call: call, Return: max(ret, call),
			Metadata: op.Client,
		})
	}
	return out
}

// earliestCalls returns, for each acknowledged write of ops with a known revision, the
// latest call (in Unix nanoseconds) among the operations on its partition that saw or
// wrote an older revision; 0 for the other operations.
func earliestCalls(ops []history.ControlOp) []int64 {
	out := make([]int64, len(ops))
	by := map[tp][]int{}
	for i, op := range ops {
		if op.State.Revision > 0 && (!op.Write || op.Ok) {
			k := tp{op.Topic, op.Partition}
			by[k] = append(by[k], i)
		}
	}
	for _, idx := range by {
		slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(ops[a].State.Revision, ops[b].State.Revision) })
		var before, cur int64 // the latest call below the current revision, and at it
		rev := int64(-1)
		for _, i := range idx {
			op := ops[i]
			if op.State.Revision != rev {
				before, rev = max(before, cur), op.State.Revision
			}
			call := op.Call.UnixNano()
			if op.Write {
				// Never past its own return: a read that began after the write was
				// seen and still returned an older revision must stay a stale read.
				call = min(max(call, before), op.Return.UnixNano())
				out[i] = call
			}
			cur = max(cur, call)
		}
	}
	return out
}

// checkControl checks that the control-plane operations are linearizable, and
// localizes a failure to its partitions.
func (c *checker) checkControl() {
	st := &c.stats
	st.ControlOps = len(c.h.Control)
	if len(c.h.Control) == 0 {
		return
	}
	ops := ControlOperations(c.h.Control)
	deadline := time.Now().Add(c.opts.ControlTimeout)
	res := porcupine.CheckOperationsTimeout(ControlModel, ops, c.opts.ControlTimeout)
	st.ControlResult = string(res)
	switch res {
	case porcupine.Ok:
		return
	case porcupine.Unknown:
		st.Notes = append(st.Notes, fmt.Sprintf("the control-plane linearizability check timed out after %v: not judged", c.opts.ControlTimeout))
		return
	}
	// Illegal: find the partitions that are, each with what time is left (at least a
	// second), the smallest first.
	parts := partitionOps(ops)
	slices.SortStableFunc(parts, func(a, b []porcupine.Operation) int { return cmp.Compare(len(a), len(b)) })
	var bad []porcupine.Operation
	found := 0
	for _, p := range parts {
		k := p[0].Input.(ctrlInput).tp
		left := max(time.Until(deadline), time.Second)
		switch porcupine.CheckOperationsTimeout(ControlModel, p, left) {
		case porcupine.Illegal:
			found++
			bad = append(bad, p...)
			c.add(Anomaly{Kind: NonlinearizableControl, Topic: k.topic, Partition: k.part, Offset: -1,
				Detail: fmt.Sprintf("%d operations on the partition's state have no linearization", len(p))})
		case porcupine.Unknown:
			st.ControlUnknown++
			st.Notes = append(st.Notes, fmt.Sprintf("the linearizability check of %s's control-plane operations timed out", k))
		}
	}
	if found == 0 {
		c.add(Anomaly{Kind: NonlinearizableControl, Offset: -1,
			Detail: "the control-plane operations have no linearization (no single partition could be blamed in time)"})
		bad = ops
	}
	if path := c.opts.VisualizePath; path != "" {
		_, info := porcupine.CheckOperationsVerbose(ControlModel, bad, max(time.Until(deadline), time.Second))
		if err := porcupine.VisualizePath(ControlModel, info, path); err != nil {
			st.Notes = append(st.Notes, fmt.Sprintf("visualization not written: %v", err))
		} else {
			st.Notes = append(st.Notes, "visualization of the nonlinearizable control-plane operations: "+filepath.Clean(path))
		}
	}
}
