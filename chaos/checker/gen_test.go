package checker

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/gregor-streaming/gregor/chaos/history"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// clock hands out increasing times.
type clock struct {
	rng *rand.Rand
	now time.Time
}

func (c *clock) tick() time.Time {
	c.now = c.now.Add(time.Duration(1+c.rng.IntN(3)) * time.Millisecond)
	return c.now
}

// cleanHistory builds a run with no anomaly: sends to topic "t" (ok, some failed, some
// indeterminate that did or did not land, some offsets left empty as a control batch
// would), three agreeing replicas, an assigned consumer reading each partition to its
// end, a group whose second generation takes over from the first's commits, and a
// control plane electing within the ISR with linearizable operations.
func cleanHistory(seed int64, parts, perPart int) *history.History {
	rng := rand.New(rand.NewPCG(uint64(seed), 7))
	c := &clock{rng: rng, now: t0}
	h := &history.History{Seed: seed, Scenario: "clean", Topics: []string{"t"}, ConsumersDrained: true, Start: t0}
	logs := make([][]history.Record, parts)
	next := make([]int64, parts)
	for i := range perPart {
		for p := range parts {
			s := history.Send{
				Producer: "idem-1", Idempotent: true, Acks: -1, Topic: "t", Partition: int32(p),
				Value: fmt.Sprintf("t-%d-%d", p, i), Outcome: history.OK, Offset: -1, Start: c.tick(),
			}
			if i%2 == 1 {
				s.Producer, s.Idempotent = "plain-1", false
			}
			s.End = c.tick()
			switch r := rng.IntN(100); {
			case r < 3:
				s.Outcome, s.Err = history.Fail, "NOT_ENOUGH_REPLICAS"
			case r < 6:
				s.Outcome, s.Err = history.Info, "timeout"
				if rng.IntN(2) == 0 {
					logs[p] = append(logs[p], history.Record{Offset: next[p], Value: s.Value})
					next[p]++
				}
			default:
				s.Offset = next[p]
				logs[p] = append(logs[p], history.Record{Offset: next[p], Value: s.Value})
				next[p]++
			}
			if rng.IntN(40) == 0 {
				next[p]++ // an offset that holds no data record
			}
			h.Sends = append(h.Sends, s)
		}
	}
	for p := range parts {
		for node := int32(1); node <= 3; node++ {
			h.Finals = append(h.Finals, history.ReplicaLog{
				Node: node, Topic: "t", Partition: int32(p), HighWatermark: next[p], Records: slices.Clone(logs[p]),
			})
		}
	}
	// The assigned consumers: each reads its partition to the end.
	for p := range parts {
		pos := int64(0)
		for i := 0; i < len(logs[p]); {
			n := min(1+rng.IntN(20), len(logs[p])-i)
			recs := slices.Clone(logs[p][i : i+n])
			h.Polls = append(h.Polls, history.Poll{
				Consumer: fmt.Sprintf("a-%d", p), Topic: "t", Partition: int32(p), Records: recs, Start: pos, Time: c.tick(),
			})
			pos = recs[n-1].Offset + 1
			i += n
		}
	}
	// The group: g-1 in generation 1 reads the first half of each partition and
	// commits; g-2 in generation 2 goes on from the commits.
	for p := range parts {
		half := len(logs[p]) / 2
		pos := int64(0)
		for i := 0; i < half; {
			n := min(1+rng.IntN(10), half-i)
			recs := slices.Clone(logs[p][i : i+n])
			h.Polls = append(h.Polls, history.Poll{
				Consumer: "g-1", Group: "g", Generation: 1, Topic: "t", Partition: int32(p), Records: recs, Start: pos, Time: c.tick(),
			})
			pos = recs[n-1].Offset + 1
			h.Commits = append(h.Commits, history.Commit{
				Group: "g", Member: "g-1", Generation: 1, Topic: "t", Partition: int32(p), Offset: pos, Time: c.tick(),
			})
			i += n
		}
		for i := half; i < len(logs[p]); {
			n := min(1+rng.IntN(10), len(logs[p])-i)
			recs := slices.Clone(logs[p][i : i+n])
			h.Polls = append(h.Polls, history.Poll{
				Consumer: "g-2", Group: "g", Generation: 2, Topic: "t", Partition: int32(p), Records: recs, Start: pos, Time: c.tick(),
			})
			pos = recs[n-1].Offset + 1
			h.Commits = append(h.Commits, history.Commit{
				Group: "g", Member: "g-2", Generation: 2, Topic: "t", Partition: int32(p), Offset: pos, Time: c.tick(),
			})
			i += n
		}
	}
	// The control plane: per partition a creation, then ISR changes and clean
	// elections, each a CAS on the previous state, with reads around them.
	rev := int64(0)
	for p := range parts {
		st := history.PartitionState{Topic: "t", Partition: int32(p), Leader: 1, LeaderEpoch: 0,
			ISR: []int32{1, 2, 3}, Replicas: []int32{1, 2, 3}}
		var expect *history.PartitionState
		for range 6 {
			rev++
			st.Revision, st.Time = rev, c.tick()
			h.States = append(h.States, st)
			call := c.tick()
			// A read concurrent with the write may see either state.
			readCall := c.tick()
			ret := c.tick()
			h.Control = append(h.Control, history.ControlOp{
				Client: "controller", Topic: "t", Partition: int32(p), Write: true, Ok: true,
				State: st, Expect: expect, Call: call, Return: ret,
			})
			seen := st
			if expect != nil && rng.IntN(2) == 0 {
				seen = *expect
			}
			h.Control = append(h.Control, history.ControlOp{
				Client: fmt.Sprintf("watcher-%d", rng.IntN(3)), Topic: "t", Partition: int32(p),
				State: seen, Call: readCall, Return: c.tick(),
			})
			prev := st
			prev.ISR = slices.Clone(st.ISR)
			expect = &prev
			next := prev
			if len(st.ISR) > 1 && rng.IntN(2) == 0 {
				// A clean election: the next ISR member leads, with a new epoch.
				next.ISR = slices.DeleteFunc(slices.Clone(st.ISR), func(id int32) bool { return id == st.Leader })
				next.Leader = next.ISR[0]
				next.LeaderEpoch++
			} else if len(st.ISR) < 3 {
				next.ISR = []int32{1, 2, 3}
			} else {
				next.ISR = slices.Clone(st.ISR[:2])
				if !slices.Contains(next.ISR, next.Leader) {
					next.ISR = append(next.ISR, next.Leader)
				}
			}
			st = next
		}
	}
	h.End = c.tick()
	return h
}

// okSends returns the indexes of the acknowledged sends.
func okSends(h *history.History) []int {
	var out []int
	for i, s := range h.Sends {
		if s.Outcome == history.OK {
			out = append(out, i)
		}
	}
	return out
}

// removeValue deletes value v from every final log and poll.
func removeValue(h *history.History, v string) {
	del := func(r history.Record) bool { return r.Value == v }
	for i := range h.Finals {
		h.Finals[i].Records = slices.DeleteFunc(h.Finals[i].Records, del)
	}
	for i := range h.Polls {
		h.Polls[i].Records = slices.DeleteFunc(h.Polls[i].Records, del)
	}
}

// appendFinal appends value v at the end of every replica of topic/partition, above
// their current high watermark, and raises it.
func appendFinal(h *history.History, topic string, part int32, v string) int64 {
	var off int64
	for i := range h.Finals {
		f := &h.Finals[i]
		if f.Topic != topic || f.Partition != part {
			continue
		}
		off = f.HighWatermark
		f.Records = append(f.Records, history.Record{Offset: off, Value: v})
		f.HighWatermark++
	}
	return off
}
