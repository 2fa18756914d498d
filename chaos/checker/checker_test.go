package checker

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/chaos/history"
)

// small is a clean history small enough to reason about.
func small() *history.History { return cleanHistory(1, 2, 60) }

// expectKinds fails unless r reports exactly the kinds want (each at least once).
func expectKinds(t *testing.T, r *Report, want ...string) {
	t.Helper()
	var got []string
	for k := range r.Counts {
		got = append(got, k)
	}
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	want = slices.Compact(want)
	if !slices.Equal(got, want) {
		t.Fatalf("kinds %v, want %v\n%s", got, want, r)
	}
	if r.OK() != (len(want) == 0) {
		t.Fatalf("OK() = %v with kinds %v", r.OK(), got)
	}
}

func TestClean(t *testing.T) {
	h := small()
	r := Check(h)
	expectKinds(t, r)
	s := r.Stats
	if s.Sends != 120 || s.SendsOK+s.SendsFail+s.SendsInfo != 120 || s.SendsOK == 0 || s.Polls == 0 || s.ValuesRead == 0 {
		t.Errorf("stats %+v", s)
	}
	if s.ControlResult != "Ok" || s.ControlOps != len(h.Control) {
		t.Errorf("control %q over %d ops", s.ControlResult, s.ControlOps)
	}
	if len(s.Availability) != 2 || s.MaxUnavailable <= 0 || s.MaxUnavailableAt == "" {
		t.Errorf("availability %+v, max %v at %q", s.Availability, s.MaxUnavailable, s.MaxUnavailableAt)
	}
	if s.Unseen != 0 || s.Lost != 0 || s.FinalRecords == 0 || s.Replicas != 6 {
		t.Errorf("stats %+v", s)
	}
	if !strings.HasPrefix(r.String(), "OK: no anomaly\n") {
		t.Errorf("String:\n%s", r)
	}
}

func TestEmpty(t *testing.T) {
	expectKinds(t, Check(&history.History{}))
}

func TestLostWrite(t *testing.T) {
	h := small()
	i := okSends(h)[10]
	removeValue(h, h.Sends[i].Value)
	r := Check(h)
	expectKinds(t, r, LostWrite)
	if a := r.Anomalies[0]; a.Value != h.Sends[i].Value || a.Offset != h.Sends[i].Offset || r.Stats.Lost != 1 {
		t.Errorf("anomaly %v, stats lost %d", a, r.Stats.Lost)
	}
	if !strings.Contains(r.String(), "lost-write") {
		t.Errorf("String:\n%s", r)
	}
}

func TestLostWriteAboveHighWatermark(t *testing.T) {
	h := small()
	// The last acknowledged send of partition 0 is only above the high watermark, and
	// no consumer read it.
	last := -1
	for _, i := range okSends(h) {
		if h.Sends[i].Partition == 0 {
			last = i
		}
	}
	s := h.Sends[last]
	for i := range h.Finals {
		if f := &h.Finals[i]; f.Partition == 0 {
			f.HighWatermark = s.Offset
		}
	}
	for i := range h.Polls {
		h.Polls[i].Records = slices.DeleteFunc(h.Polls[i].Records, func(r history.Record) bool { return r.Offset >= s.Offset && h.Polls[i].Partition == 0 })
	}
	r := Check(h)
	// Info sends that landed after it are in the same place: not anomalies.
	expectKinds(t, r, LostWrite)
	if r.Counts[LostWrite] != 1 || !strings.Contains(r.Anomalies[0].Detail, "above") {
		t.Errorf("%s", r)
	}
}

func TestLostAcks1(t *testing.T) {
	h := small()
	i := okSends(h)[10]
	h.Sends[i].Acks = 1
	removeValue(h, h.Sends[i].Value)
	r := Check(h)
	expectKinds(t, r)
	if r.Stats.LostAcks1 != 1 {
		t.Errorf("LostAcks1 %d", r.Stats.LostAcks1)
	}
	expectKinds(t, CheckWith(h, Options{Acks1LossIsAnomaly: true}), LostWrite)
}

// TestLostAcks1OffsetReused: a lost acks=1 write whose offset the next leader gave to
// another record is counted as lost, not also reported as an offset mismatch.
func TestLostAcks1OffsetReused(t *testing.T) {
	h := small()
	i := okSends(h)[10]
	h.Sends[i].Acks = 1
	lost := h.Sends[i].Value
	for fi := range h.Finals {
		for ri := range h.Finals[fi].Records {
			if h.Finals[fi].Records[ri].Value == lost {
				h.Finals[fi].Records[ri].Value = "unacknowledged-" + lost
			}
		}
	}
	for pi := range h.Polls {
		for ri := range h.Polls[pi].Records {
			if h.Polls[pi].Records[ri].Value == lost {
				h.Polls[pi].Records[ri].Value = "unacknowledged-" + lost
			}
		}
	}
	r := Check(h)
	expectKinds(t, r)
	if r.Stats.LostAcks1 != 1 {
		t.Errorf("LostAcks1 %d", r.Stats.LostAcks1)
	}
	expectKinds(t, CheckWith(h, Options{Acks1LossIsAnomaly: true}), LostWrite, OffsetMismatch)
}

func TestDuplicate(t *testing.T) {
	for _, idem := range []bool{true, false} {
		t.Run(fmt.Sprint("idempotent=", idem), func(t *testing.T) {
			h := small()
			i := okSends(h)[5]
			h.Sends[i].Idempotent = idem
			off := appendFinal(h, "t", h.Sends[i].Partition, h.Sends[i].Value)
			r := Check(h)
			if !idem {
				expectKinds(t, r)
				if r.Stats.DuplicatesNonIdempotent != 1 {
					t.Errorf("DuplicatesNonIdempotent %d", r.Stats.DuplicatesNonIdempotent)
				}
				return
			}
			expectKinds(t, r, Duplicate)
			if d := r.Anomalies[0].Detail; !strings.Contains(d, fmt.Sprintf("@%d", off)) {
				t.Errorf("detail %q lacks the second offset %d", d, off)
			}
		})
	}
}

// TestDuplicateAcrossEpochs: an idempotent producer's value at two offsets written under
// different producer epochs is the client's resend after an epoch bump, counted and not
// reported; under one epoch it is a duplicate the broker should have caught.
func TestDuplicateAcrossEpochs(t *testing.T) {
	for _, bumped := range []bool{true, false} {
		t.Run(fmt.Sprint("bumped=", bumped), func(t *testing.T) {
			h := small()
			i := okSends(h)[5]
			s := h.Sends[i]
			h.Sends[i].Idempotent = true
			off := appendFinal(h, "t", s.Partition, s.Value)
			second := int16(0)
			if bumped {
				second = 1
			}
			for fi := range h.Finals {
				f := &h.Finals[fi]
				if f.Partition != s.Partition {
					continue
				}
				for ri := range f.Records {
					switch f.Records[ri].Offset {
					case s.Offset:
						f.Records[ri].Idempotent, f.Records[ri].ProducerID, f.Records[ri].ProducerEpoch = true, 0, 0
					case off:
						f.Records[ri].Idempotent, f.Records[ri].ProducerID, f.Records[ri].ProducerEpoch = true, 0, second
					}
				}
			}
			r := Check(h)
			if !bumped {
				expectKinds(t, r, Duplicate)
				return
			}
			expectKinds(t, r)
			if r.Stats.DuplicatesAcrossEpochs != 1 {
				t.Errorf("DuplicatesAcrossEpochs %d", r.Stats.DuplicatesAcrossEpochs)
			}
		})
	}
}

func TestDuplicateInPolls(t *testing.T) {
	h := small()
	// A consumer reads the value of an idempotent send at a second offset, one the
	// final logs do not hold.
	i := okSends(h)[0]
	s := h.Sends[i]
	end := int64(0)
	for _, f := range h.Finals {
		if f.Partition == s.Partition {
			end = f.HighWatermark
		}
	}
	h.Polls = append(h.Polls, history.Poll{Consumer: "late", Topic: "t", Partition: s.Partition, Start: -1,
		Records: []history.Record{{Offset: end + 5, Value: s.Value}}, Time: h.End})
	expectKinds(t, Check(h), Duplicate)
}

func TestInconsistentOffsetsAcrossReplicas(t *testing.T) {
	h := small()
	h.Finals[1].Records[3].Value = "garbage"
	r := Check(h)
	expectKinds(t, r, InconsistentOffsets, ReplicaDivergence)
	if r.Stats.Unexpected != 1 {
		t.Errorf("Unexpected %d", r.Stats.Unexpected)
	}
}

func TestInconsistentOffsetsPolls(t *testing.T) {
	h := small()
	// Poll against final log.
	h.Polls[0].Records[0].Value = "garbage"
	h2 := small()
	// Poll against poll, at an offset no final log holds.
	h2.Polls = append(h2.Polls,
		history.Poll{Consumer: "x", Topic: "t", Partition: 1, Start: -1, Records: []history.Record{{Offset: 1000, Value: "v1"}}, Time: h2.End},
		history.Poll{Consumer: "y", Topic: "t", Partition: 1, Start: -1, Records: []history.Record{{Offset: 1000, Value: "v2"}}, Time: h2.End})
	for _, h := range []*history.History{h, h2} {
		r := Check(h)
		// The value that lost its read is read by the group consumer still.
		expectKinds(t, r, InconsistentOffsets)
		if r.Counts[InconsistentOffsets] != 1 {
			t.Errorf("%s", r)
		}
	}
}

func TestOffsetMismatch(t *testing.T) {
	h := small()
	ok := okSends(h)
	a, b := ok[0], ok[2] // both partition 0
	h.Sends[a].Offset, h.Sends[b].Offset = h.Sends[b].Offset, h.Sends[a].Offset
	r := Check(h)
	expectKinds(t, r, OffsetMismatch)
	if r.Counts[OffsetMismatch] != 2 {
		t.Errorf("%s", r)
	}
}

func TestNonmonotonicPoll(t *testing.T) {
	h := small()
	// The next poll of consumer a-0 re-reads the last record of its first poll.
	p := h.Polls[0]
	last := p.Records[len(p.Records)-1]
	h.Polls[1].Records = append([]history.Record{last}, h.Polls[1].Records...)
	h.Polls[1].Start = -1
	r := Check(h)
	expectKinds(t, r, NonmonotonicPoll)

	// Explicitly re-positioned: not an anomaly.
	h.Polls[1].Start = last.Offset
	expectKinds(t, Check(h))
}

func TestNonmonotonicWithinPoll(t *testing.T) {
	h := small()
	var p *history.Poll
	for i := range h.Polls {
		if len(h.Polls[i].Records) >= 3 {
			p = &h.Polls[i]
			break
		}
	}
	p.Records[1], p.Records[2] = p.Records[2], p.Records[1]
	r := Check(h)
	if r.Counts[NonmonotonicPoll] != 1 {
		t.Fatalf("%s", r)
	}
}

func TestNewGenerationMayGoBack(t *testing.T) {
	h := small()
	// g-2's first poll of partition 0 starts two records before the commit: a new
	// generation re-reads, which is no anomaly (at least once).
	var first int
	for i, p := range h.Polls {
		if p.Consumer == "g-2" && p.Partition == 0 {
			first = i
			break
		}
	}
	var before []history.Record
	for _, p := range h.Polls {
		if p.Consumer == "g-1" && p.Partition == 0 {
			before = append(before, p.Records...)
		}
	}
	h.Polls[first].Records = append(slices.Clone(before[len(before)-2:]), h.Polls[first].Records...)
	expectKinds(t, Check(h))
	// The same from g-1 staying in generation 1 is nonmonotonic.
	h.Polls[first].Consumer, h.Polls[first].Generation = "g-1", 1
	expectKinds(t, Check(h), NonmonotonicPoll)
}

func TestSameConsumerKeepsPositionAcrossGenerations(t *testing.T) {
	// g-1's last commit of partition 0 in generation 1 is dropped: the group's
	// committed offset is behind what g-1 read.
	build := func(consumer string) *history.History {
		h := small()
		last := -1
		for i, c := range h.Commits {
			if c.Member == "g-1" && c.Partition == 0 {
				last = i
			}
		}
		h.Commits = slices.Delete(h.Commits, last, last+1)
		for i := range h.Polls {
			if p := &h.Polls[i]; p.Consumer == "g-2" && p.Partition == 0 {
				p.Consumer = consumer
				if p.Generation == 2 {
					p.Start = -1 // judged against the commits the history holds
				}
			}
		}
		return h
	}
	// g-1 keeps the partition into generation 2 and goes on from its own position: it
	// read the records past the commit itself.
	expectKinds(t, Check(build("g-1")))
	// Another member taking over must start at the committed offset.
	expectKinds(t, Check(build("g-2")), PollSkip)
	// Unless it says where it started — the committed offset it fetched, from a commit
	// whose answer the history missed.
	h := build("g-2")
	for i := range h.Polls {
		if p := &h.Polls[i]; p.Consumer == "g-2" && p.Partition == 0 && p.Generation == 2 {
			p.Start = p.Records[0].Offset
			break
		}
	}
	expectKinds(t, Check(h))
}

func TestPollSkip(t *testing.T) {
	h := small()
	var p *history.Poll
	for i := range h.Polls {
		if q := &h.Polls[i]; q.Group == "" && len(q.Records) >= 3 {
			p = q
			break
		}
	}
	skipped := p.Records[1]
	p.Records = slices.Delete(p.Records, 1, 2)
	r := Check(h)
	// The group consumers still read the skipped value.
	expectKinds(t, r, PollSkip)
	if !strings.Contains(r.Anomalies[0].Detail, fmt.Sprintf("offset %d holds a record", skipped.Offset)) {
		t.Errorf("%s", r)
	}
}

func TestPollSkipAcrossPolls(t *testing.T) {
	h := small()
	// The next poll of a-0 claims to start where the previous ended but reads from
	// two records later.
	h.Polls[1].Records = h.Polls[1].Records[2:]
	if len(h.Polls[1].Records) == 0 {
		t.Skip("poll too short")
	}
	expectKinds(t, Check(h), PollSkip)
}

func TestPollSkipAcrossGenerations(t *testing.T) {
	h := small()
	// g-2 starts three records after the committed offset it fetched.
	for i, p := range h.Polls {
		if p.Consumer == "g-2" && p.Partition == 0 {
			if len(p.Records) < 4 {
				t.Skip("poll too short")
			}
			h.Polls[i].Records = p.Records[3:]
			h.Polls[i].Start = p.Records[0].Offset // where it fetched the committed offset
			break
		}
	}
	expectKinds(t, Check(h), PollSkip)
}

func TestGapIsNotSkip(t *testing.T) {
	h := small()
	// Offsets 5 and 6 of partition 0 hold no data record (control batches): their
	// sends were indeterminate and did not land.
	for i := range h.Sends {
		if s := &h.Sends[i]; s.Partition == 0 && (s.Offset == 5 || s.Offset == 6) {
			s.Outcome, s.Offset, s.Err = history.Info, -1, "timeout"
		}
	}
	del := func(r history.Record) bool { return r.Offset == 5 || r.Offset == 6 }
	for i := range h.Finals {
		if h.Finals[i].Partition == 0 {
			h.Finals[i].Records = slices.DeleteFunc(h.Finals[i].Records, del)
		}
	}
	for i := range h.Polls {
		if h.Polls[i].Partition == 0 {
			h.Polls[i].Records = slices.DeleteFunc(h.Polls[i].Records, del)
		}
	}
	expectKinds(t, Check(h))
}

func TestUnseen(t *testing.T) {
	h := small()
	// No consumer reads the last record of partition 1.
	var end int64
	for _, f := range h.Finals {
		if f.Partition == 1 {
			end = f.Records[len(f.Records)-1].Offset
		}
	}
	v := ""
	for i := range h.Polls {
		if p := &h.Polls[i]; p.Partition == 1 {
			p.Records = slices.DeleteFunc(p.Records, func(r history.Record) bool {
				if r.Offset == end {
					v = r.Value
				}
				return r.Offset == end
			})
		}
	}
	acked := slices.ContainsFunc(h.Sends, func(s history.Send) bool { return s.Value == v && s.Outcome == history.OK })
	if !acked {
		t.Skip("last record not acknowledged")
	}
	r := Check(h)
	expectKinds(t, r, Unseen)
	h.ConsumersDrained = false
	r = Check(h)
	expectKinds(t, r)
	if r.Stats.Unseen != 1 {
		t.Errorf("Unseen %d", r.Stats.Unseen)
	}
}

func TestReadOfFailedWrite(t *testing.T) {
	h := small()
	i := okSends(h)[7]
	h.Sends[i].Outcome, h.Sends[i].Offset, h.Sends[i].Err = history.Fail, -1, "NOT_ENOUGH_REPLICAS"
	expectKinds(t, Check(h), ReadOfFailedWrite)

	// Only in a final log (no poll) is still a read.
	h = small()
	i = okSends(h)[7]
	h.Sends[i].Outcome, h.Sends[i].Offset = history.Fail, -1
	h.ConsumersDrained = false
	v := h.Sends[i].Value
	for j := range h.Polls {
		h.Polls[j].Records = slices.DeleteFunc(h.Polls[j].Records, func(r history.Record) bool { return r.Value == v })
	}
	r := Check(h)
	if r.Counts[ReadOfFailedWrite] != 1 {
		t.Errorf("%s", r)
	}
}

func TestReplicaDivergence(t *testing.T) {
	h := small()
	// Node 3 of partition 0 lacks offset 2, below every high watermark.
	f := &h.Finals[2]
	if f.Node != 3 || f.Partition != 0 {
		t.Fatal("layout")
	}
	f.Records = slices.DeleteFunc(f.Records, func(r history.Record) bool { return r.Offset == 2 })
	r := Check(h)
	expectKinds(t, r, ReplicaDivergence)
	if a := r.Anomalies[0]; a.Offset != 2 || !strings.Contains(a.Detail, "node 3") {
		t.Errorf("%v", a)
	}
}

func TestReplicaDivergenceAboveHighWatermark(t *testing.T) {
	h := small()
	// Above the high watermark, replicas may differ: an old leader's uncommitted
	// tail, a follower behind.
	for i := range h.Finals {
		f := &h.Finals[i]
		if f.Partition != 0 {
			continue
		}
		switch f.Node {
		case 1:
			f.Records = append(f.Records, history.Record{Offset: f.HighWatermark, Value: "tail-1"})
		case 2:
			f.Records = append(f.Records,
				history.Record{Offset: f.HighWatermark, Value: "tail-2"}, history.Record{Offset: f.HighWatermark + 1, Value: "tail-2b"})
		case 3:
			// A follower behind: a shorter log and a lower high watermark.
			f.Records = f.Records[:len(f.Records)-3]
			f.HighWatermark = f.Records[len(f.Records)-1].Offset + 1
		}
	}
	r := Check(h)
	expectKinds(t, r)
	if r.Stats.Unexpected != 3 {
		t.Errorf("Unexpected %d", r.Stats.Unexpected)
	}
}

func TestCommittedOffsetRegression(t *testing.T) {
	h := small()
	last := h.Commits[len(h.Commits)-1]
	back := last
	back.Offset, back.Time = last.Offset-3, last.Time.Add(time.Millisecond)
	h.Commits = append(h.Commits, back)
	r := Check(h)
	expectKinds(t, r, CommittedOffsetRegression)
	// A fetched offset lower than the committed one is a regression too.
	h = small()
	fetched := last
	fetched.Fetched, fetched.Member, fetched.Offset, fetched.Time = true, "", 0, last.Time.Add(time.Millisecond)
	h.Commits = append(h.Commits, fetched)
	expectKinds(t, Check(h), CommittedOffsetRegression)
	// A lower commit sent before the higher one was acknowledged overlapped it: the
	// coordinator may apply them in either order.
	h = small()
	back = last
	back.Offset, back.Call, back.Time = last.Offset-3, last.Time.Add(-time.Millisecond), last.Time.Add(time.Millisecond)
	h.Commits = append(h.Commits, back)
	expectKinds(t, Check(h))
	// Sent after it, it is a regression.
	back.Call = last.Time.Add(time.Microsecond)
	h.Commits[len(h.Commits)-1] = back
	expectKinds(t, Check(h), CommittedOffsetRegression)
}

func TestStaleGenerationCommit(t *testing.T) {
	h := small()
	var last, firstLater history.Commit
	for _, c := range h.Commits {
		if c.Time.After(last.Time) {
			last = c
		}
		if c.Generation == 2 && (firstLater.Time.IsZero() || c.Time.Before(firstLater.Time)) {
			firstLater = c
		}
	}
	if last.Generation != 2 || firstLater.Time.IsZero() {
		t.Fatalf("small(): last commit %+v, first of generation 2 %+v", last, firstLater)
	}
	// Generation 1's member commits again, sent after generation 2's commit was
	// acknowledged: the coordinator must have refused it.
	stale := last
	stale.Member, stale.Generation = "g-1", 1
	stale.Call, stale.Time = last.Time.Add(time.Millisecond), last.Time.Add(2*time.Millisecond)
	h.Commits = append(h.Commits, stale)
	expectKinds(t, Check(h), StaleGenerationCommit)
	// Sent before any commit of generation 2 was acknowledged, acknowledged after: the
	// coordinator may have handled it first.
	h = small()
	stale.Call = firstLater.Time.Add(-time.Millisecond)
	h.Commits = append(h.Commits, stale)
	expectKinds(t, Check(h))
	// The send time unknown: not judged.
	h = small()
	stale.Call = time.Time{}
	h.Commits = append(h.Commits, stale)
	expectKinds(t, Check(h))
}

func statesHistory(topic string, unclean bool, states ...history.PartitionState) *history.History {
	h := &history.History{Topics: []string{topic}}
	if unclean {
		h.UncleanAllowed = []string{topic}
	}
	for i, s := range states {
		s.Topic, s.Revision, s.Time = topic, int64(10*(i+1)), t0.Add(time.Duration(i)*time.Second)
		h.States = append(h.States, s)
	}
	// Recorded out of order: the checker orders by revision.
	slices.Reverse(h.States)
	return h
}

func TestUncleanElection(t *testing.T) {
	states := []history.PartitionState{
		{Leader: 1, LeaderEpoch: 3, ISR: []int32{1, 2}, Replicas: []int32{1, 2, 3}},
		{Leader: -1, LeaderEpoch: 4, ISR: []int32{1}, Replicas: []int32{1, 2, 3}},
		{Leader: 3, LeaderEpoch: 5, ISR: []int32{3}, Replicas: []int32{1, 2, 3}},
	}
	r := Check(statesHistory("strict", false, states...))
	expectKinds(t, r, UncleanElection)
	r = Check(statesHistory("loose", true, states...))
	expectKinds(t, r)
	if r.Stats.UncleanAllowed != 1 {
		t.Errorf("UncleanAllowed %d", r.Stats.UncleanAllowed)
	}
	// A clean election within the ISR.
	states[2].Leader, states[2].ISR = 1, []int32{1}
	expectKinds(t, Check(statesHistory("strict", false, states...)))
}

func TestEpochRegression(t *testing.T) {
	base := []history.PartitionState{
		{Leader: 1, LeaderEpoch: 3, ISR: []int32{1, 2}},
		{Leader: 1, LeaderEpoch: 3, ISR: []int32{1}},
	}
	expectKinds(t, Check(statesHistory("t", false, base...)))
	// Lower.
	down := slices.Clone(base)
	down[1].LeaderEpoch = 2
	expectKinds(t, Check(statesHistory("t", false, down...)), EpochRegression)
	// A leader change keeping the epoch.
	same := []history.PartitionState{
		{Leader: 1, LeaderEpoch: 3, ISR: []int32{1, 2}},
		{Leader: 2, LeaderEpoch: 3, ISR: []int32{1, 2}},
	}
	expectKinds(t, Check(statesHistory("t", false, same...)), EpochRegression)
}

// ctl builds control-plane operations on t/0; times in milliseconds.
func ctl(client string, write, ok bool, st state, expect *state, call, ret int) history.ControlOp {
	op := history.ControlOp{Client: client, Topic: "t", Partition: 0, Write: write, Ok: ok, State: st.ps(),
		Call: t0.Add(time.Duration(call) * time.Millisecond), Return: t0.Add(time.Duration(ret) * time.Millisecond)}
	if expect != nil {
		e := expect.ps()
		op.Expect = &e
	}
	return op
}

type state struct {
	leader, epoch int32
	isr           []int32
}

func (s state) ps() history.PartitionState {
	return history.PartitionState{Topic: "t", Leader: s.leader, LeaderEpoch: s.epoch, ISR: s.isr, Replicas: []int32{1, 2, 3}}
}

var (
	sA = state{1, 0, []int32{1, 2, 3}}
	sB = state{1, 0, []int32{1, 2}}
	sC = state{2, 1, []int32{2}}
)

func TestNonlinearizableStaleRead(t *testing.T) {
	h := &history.History{Control: []history.ControlOp{
		ctl("w", true, true, sA, nil, 0, 10),
		ctl("w", true, true, sB, &sA, 20, 30),
		ctl("r", false, true, sA, nil, 40, 50), // reads what was overwritten before its call
	}}
	r := Check(h)
	expectKinds(t, r, NonlinearizableControl)
	if a := r.Anomalies[0]; a.Topic != "t" || a.Partition != 0 || r.Stats.ControlResult != "Illegal" {
		t.Errorf("%v, result %q", a, r.Stats.ControlResult)
	}
}

func TestNonlinearizableDoubleCAS(t *testing.T) {
	h := &history.History{Control: []history.ControlOp{
		ctl("w0", true, true, sA, nil, 0, 10),
		ctl("w1", true, true, sB, &sA, 20, 40),
		ctl("w2", true, true, sC, &sA, 25, 45), // both compared against sA and won
	}}
	dir := t.TempDir()
	path := filepath.Join(dir, "control.html")
	r := CheckWith(h, Options{VisualizePath: path})
	expectKinds(t, r, NonlinearizableControl)
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		t.Errorf("visualization: %v", err)
	}
}

func TestLinearizableConcurrent(t *testing.T) {
	h := &history.History{Control: []history.ControlOp{
		ctl("w0", true, true, sA, nil, 0, 10),
		// Two concurrent CAS from sA: one is acknowledged, the other timed out (it may
		// or may not have happened: here it did not, as its expectation no longer held).
		ctl("w1", true, true, sB, &sA, 20, 40),
		ctl("w2", true, false, sC, &sA, 22, 30),
		// Reads concurrent with the acknowledged CAS see either side of it.
		ctl("r1", false, true, sA, nil, 21, 35),
		ctl("r2", false, true, sB, nil, 25, 38),
		ctl("r1", false, true, sB, nil, 50, 60),
		// A timed-out blind write that did take effect, seen long after it gave up.
		ctl("w3", true, false, sC, nil, 70, 75),
		ctl("r2", false, true, sC, nil, 90, 95),
		// A CAS on the state the timed-out write left.
		ctl("w1", true, true, sA, &sC, 100, 110),
		ctl("r1", false, true, sA, nil, 120, 130),
	}}
	r := Check(h)
	expectKinds(t, r)
	if r.Stats.ControlResult != "Ok" {
		t.Errorf("result %q", r.Stats.ControlResult)
	}
	// The partition may exist before the history: a first read pins its state.
	h = &history.History{Control: []history.ControlOp{
		ctl("r", false, true, sB, nil, 0, 5),
		ctl("w", true, true, sC, &sB, 10, 20),
	}}
	expectKinds(t, Check(h))
}

func TestPartitionedModel(t *testing.T) {
	h := &history.History{Control: []history.ControlOp{
		ctl("w", true, true, sA, nil, 0, 10),
		ctl("r", false, true, sA, nil, 20, 30),
	}}
	other := h.Control[1]
	other.Partition, other.State = 1, sB.ps()
	other.State.Partition = 1
	h.Control = append(h.Control, other)
	parts := ControlModel.Partition(ControlOperations(h.Control))
	if len(parts) != 2 || len(parts[0]) != 2 || len(parts[1]) != 1 {
		t.Fatalf("partitions %v", parts)
	}
	// On its own partition, a read of sB is the first op: linearizable.
	expectKinds(t, Check(h))
}

func TestReportOrderAndString(t *testing.T) {
	h := small()
	for _, i := range okSends(h)[:8] {
		removeValue(h, h.Sends[i].Value)
	}
	h.Finals[1].Records[40].Value = "garbage"
	r := Check(h)
	r2 := Check(h)
	if !slices.Equal(r.Anomalies, r2.Anomalies) {
		t.Error("anomalies not in a stable order")
	}
	s := r.String()
	if !strings.HasPrefix(s, "NOT OK") || !strings.Contains(s, "... and 3 more") || strings.Count(s, "\n  lost-write t/") != Examples {
		t.Errorf("String:\n%s", s)
	}
	total := 0
	for _, n := range r.Counts {
		total += n
	}
	if total != len(r.Anomalies) {
		t.Errorf("counts %v for %d anomalies", r.Counts, len(r.Anomalies))
	}
}

func TestAvailability(t *testing.T) {
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	send := func(v string, o history.Outcome, start, end int) history.Send {
		return history.Send{Producer: "p", Topic: "t", Value: v, Outcome: o, Offset: -1, Start: at(start), End: at(end)}
	}
	h := &history.History{Sends: []history.Send{
		send("a", history.OK, 0, 10),
		send("b", history.Info, 10, 500), // attempts go on without an ack
		send("c", history.OK, 500, 510),
		send("d", history.OK, 2000, 2010), // nothing attempted between 510 and 2000
		send("e", history.Fail, 2010, 2100),
	}}
	for i := range h.Sends {
		if h.Sends[i].Outcome == history.OK {
			h.Sends[i].Offset = int64(i)
		}
	}
	h.Sends[3].Offset = 2
	r := Check(h)
	a := r.Stats.Availability[0]
	if a.Longest != 500*time.Millisecond || !a.From.Equal(at(10)) || a.Attempts != 5 || a.OK != 3 {
		t.Errorf("%+v", a)
	}
	if r.Stats.MaxUnavailable != a.Longest || r.Stats.MaxUnavailableAt != "t/0" {
		t.Errorf("max %v at %q", r.Stats.MaxUnavailable, r.Stats.MaxUnavailableAt)
	}
}

func TestLargeClean(t *testing.T) {
	parts, per := 8, 12_500 // 100k sends
	if testing.Short() {
		per = 1_000
	}
	h := cleanHistory(42, parts, per)
	start := time.Now()
	r := Check(h)
	t.Logf("%d sends, %d polls, %d final records checked in %v", r.Stats.Sends, r.Stats.Polls, r.Stats.FinalRecords, time.Since(start))
	expectKinds(t, r)
}

// mutations plant one anomaly each in a clean history; they return the kind that
// must be reported, or "" when the history did not allow it.
var mutations = map[string]func(h *history.History, rng *rand.Rand) string{
	"lose": func(h *history.History, rng *rand.Rand) string {
		ok := okSends(h)
		removeValue(h, h.Sends[ok[rng.IntN(len(ok))]].Value)
		return LostWrite
	},
	"duplicate": func(h *history.History, rng *rand.Rand) string {
		ok := okSends(h)
		s := h.Sends[ok[rng.IntN(len(ok))]]
		if !s.Idempotent {
			return ""
		}
		appendFinal(h, s.Topic, s.Partition, s.Value)
		return Duplicate
	},
	"fail": func(h *history.History, rng *rand.Rand) string {
		ok := okSends(h)
		s := &h.Sends[ok[rng.IntN(len(ok))]]
		s.Outcome, s.Offset = history.Fail, -1
		return ReadOfFailedWrite
	},
	"diverge": func(h *history.History, rng *rand.Rand) string {
		f := &h.Finals[rng.IntN(len(h.Finals))]
		f.Records[rng.IntN(len(f.Records))].Value = "planted"
		return ReplicaDivergence
	},
	"skip": func(h *history.History, rng *rand.Rand) string {
		p := &h.Polls[rng.IntN(len(h.Polls))]
		if len(p.Records) < 3 {
			return ""
		}
		i := 1 + rng.IntN(len(p.Records)-2)
		p.Records = slices.Delete(p.Records, i, i+1)
		return PollSkip
	},
	"reorder": func(h *history.History, rng *rand.Rand) string {
		p := &h.Polls[rng.IntN(len(h.Polls))]
		if len(p.Records) < 2 {
			return ""
		}
		i := rng.IntN(len(p.Records) - 1)
		p.Records[i], p.Records[i+1] = p.Records[i+1], p.Records[i]
		return NonmonotonicPoll
	},
	"commit": func(h *history.History, rng *rand.Rand) string {
		c := h.Commits[rng.IntN(len(h.Commits))]
		if c.Offset == 0 {
			return ""
		}
		c.Offset, c.Time = c.Offset-1, h.End
		h.Commits = append(h.Commits, c)
		return CommittedOffsetRegression
	},
	"epoch": func(h *history.History, rng *rand.Rand) string {
		i := 1 + rng.IntN(len(h.States)-1)
		if h.States[i].Partition != h.States[i-1].Partition {
			return ""
		}
		h.States[i].LeaderEpoch = h.States[i-1].LeaderEpoch - 1
		return EpochRegression
	},
	"stale-read": func(h *history.History, rng *rand.Rand) string {
		// A read, after everything, of the partition's first state.
		op := h.Control[0]
		op.Write, op.Ok, op.Expect, op.Client = false, true, nil, "late"
		op.Call, op.Return = h.End, h.End.Add(time.Millisecond)
		h.Control = append(h.Control, op)
		return NonlinearizableControl
	},
}

func TestPlantedAlwaysFlagged(t *testing.T) {
	n := 60
	if testing.Short() {
		n = 15
	}
	names := make([]string, 0, len(mutations))
	for name := range mutations {
		names = append(names, name)
	}
	slices.Sort(names)
	for seed := range n {
		h := cleanHistory(int64(seed), 3, 40)
		if r := Check(h); !r.OK() {
			t.Fatalf("seed %d: clean history flagged:\n%s", seed, r)
		}
		for _, name := range names {
			h := cleanHistory(int64(seed), 3, 40)
			rng := rand.New(rand.NewPCG(uint64(seed), 99))
			kind := mutations[name](h, rng)
			if kind == "" {
				continue
			}
			if r := Check(h); r.Counts[kind] == 0 {
				t.Errorf("seed %d, %s: %s not reported:\n%s", seed, name, kind, r)
			}
		}
	}
}

// watchHistory is a control-plane history shaped as a long chaos run records it: per
// partition, writes seen on a watch (known only to follow the run's start) chained by
// compare-and-swap, and linearizable reads of every partition every 250 ms.
func watchHistory(parts int, d time.Duration) *history.History {
	h := &history.History{Start: t0}
	rng := rand.New(rand.NewPCG(3, 4))
	type cur struct{ st history.PartitionState }
	sts := make([]cur, parts)
	rev := int64(0)
	for p := range sts {
		rev++
		st := history.PartitionState{Topic: "t", Partition: int32(p), Leader: 1, ISR: []int32{1, 2, 3},
			Replicas: []int32{1, 2, 3}, Revision: rev}
		sts[p].st = st
		h.Control = append(h.Control, history.ControlOp{Client: "watch", Topic: "t", Partition: int32(p),
			Write: true, Ok: true, State: st, Call: t0, Return: t0.Add(time.Millisecond)})
	}
	for at := 10 * time.Millisecond; at < d; at += 250 * time.Millisecond {
		// Some partitions change state just before the read, seen on the watch after it.
		for p := range sts {
			if rng.IntN(11) != 0 {
				continue
			}
			rev++
			prev := sts[p].st
			next := prev
			next.Revision = rev
			next.LeaderEpoch++
			next.Leader = prev.ISR[rng.IntN(len(prev.ISR))]
			sts[p].st = next
			h.Control = append(h.Control, history.ControlOp{Client: "watch", Topic: "t", Partition: int32(p),
				Write: true, Ok: true, State: next, Expect: &prev, Call: t0, Return: t0.Add(at + 3*time.Millisecond)})
		}
		for p := range sts {
			h.Control = append(h.Control, history.ControlOp{Client: "state-reader", Topic: "t", Partition: int32(p),
				Ok: true, State: sts[p].st, Call: t0.Add(at), Return: t0.Add(at + 2*time.Millisecond)})
		}
	}
	return h
}

func TestControlLongWatchHistory(t *testing.T) {
	h := watchHistory(6, 30*time.Minute)
	began := time.Now()
	r := CheckWith(h, Options{ControlTimeout: time.Minute})
	if r.Stats.ControlResult != "Ok" || len(r.Anomalies) != 0 {
		t.Fatalf("result %q after %v over %d ops: %v", r.Stats.ControlResult, time.Since(began), len(h.Control), r.Anomalies)
	}
	t.Logf("%d control ops judged in %v", len(h.Control), time.Since(began))

	// A read that begins after a newer state was seen and returns the older one.
	var w history.ControlOp
	for _, op := range h.Control {
		if op.Write && op.Expect != nil {
			w = op
		}
	}
	stale := history.ControlOp{Client: "state-reader-2", Topic: "t", Partition: w.Partition, Ok: true,
		State: *w.Expect, Call: w.Return.Add(time.Millisecond), Return: w.Return.Add(2 * time.Millisecond)}
	h.Control = append(h.Control, stale)
	r = CheckWith(h, Options{ControlTimeout: time.Minute})
	expectKinds(t, r, NonlinearizableControl)
}
