package replica

import (
	"errors"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/segment"
)

// TestHighWatermarkModel checks the leader's high-watermark rule against a model: after
// every append, follower fetch and ISR change, the high watermark is the largest value
// the smallest log end offset over the ISR has had (unknown progress counting as
// nothing), never above the log end, and a move wakes the parked requests.
func TestHighWatermarkModel(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		m := newManager(t, t.TempDir())
		replicas := []int32{local, 2, 3, 4}
		st := leaderState(0, replicas...)
		st.ISR = []int32{local, 2, 3}
		p := lead(t, m, "t", st)
		// The model: each follower's log end offset (-1: unknown), the ISR, the high
		// watermark.
		leo := map[int32]int64{2: -1, 3: -1, 4: -1}
		isr := slices.Clone(st.ISR)
		var hw, end int64
		for step := range 300 {
			w := &countingWaiter{}
			p.AddWaiter(w)
			before := hw
			switch op := rng.IntN(10); {
			case op < 3:
				n := int32(1 + rng.IntN(5))
				appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, n, 0)))
				end += int64(n)
			case op < 9:
				id := int32(2 + rng.IntN(3))
				from := max(leo[id], 0)
				at := from + rng.Int64N(end-from+1)
				if !p.UpdateFollowerFetchState(id, BrokerEpochUnknown, at, int64(step+1)) {
					t.Fatalf("seed %d step %d: fetch of follower %d refused", seed, step, id)
				}
				leo[id] = at
			default:
				isr = []int32{local}
				for _, id := range []int32{2, 3, 4} {
					if rng.IntN(2) == 0 {
						isr = append(isr, id)
					}
				}
				st.ISR = isr
				lead(t, m, "t", st) // same epoch: progress kept
			}
			floor := end
			for _, id := range isr {
				if id != local {
					floor = min(floor, leo[id])
				}
			}
			hw = max(hw, floor)
			if got := p.HighWatermark(); got != hw {
				t.Fatalf("seed %d step %d: high watermark %d, model %d (ISR %v, progress %v, end %d)", seed, step, got, hw, isr, leo, end)
			}
			if hw != before && w.wakes.Load() == 0 {
				t.Fatalf("seed %d step %d: the high watermark moved and woke no one", seed, step)
			}
			checkInvariants(t, p)
			p.wakeWaiters()
		}
	}
}

// TestFollowerFetchState: the follower's log end offset and last caught-up time as
// Kafka's Replica.updateFetchState keeps them, and fetches that are not recorded.
func TestFollowerFetchState(t *testing.T) {
	m := newManager(t, t.TempDir())
	st := leaderState(0, local, 2)
	st.ISR = []int32{local} // outside the ISR: no caught-up time to start with
	p := lead(t, m, "t", st)
	appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 10, 0)))
	if p.UpdateFollowerFetchState(3, BrokerEpochUnknown, 0, 1) || p.UpdateFollowerFetchState(local, BrokerEpochUnknown, 0, 1) {
		t.Fatal("a fetch from a replica that is not an assigned follower was recorded")
	}
	r := p.Follower(2)
	p.UpdateFollowerFetchState(2, BrokerEpochUnknown, 4, 100) // behind: not caught up
	if r.LogEndOffset() != 4 || !r.LastCaughtUpTime().IsZero() {
		t.Fatalf("after a fetch behind: %d %v", r.LogEndOffset(), r.LastCaughtUpTime())
	}
	p.UpdateFollowerFetchState(2, BrokerEpochUnknown, 10, 200) // at the log end: caught up now
	if r.lastCaughtUpTimeNs.Load() != 200 {
		t.Fatalf("caught up at %d", r.lastCaughtUpTimeNs.Load())
	}
	appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 5, 0)))
	p.UpdateFollowerFetchState(2, BrokerEpochUnknown, 12, 300) // reached the end of its previous fetch: caught up then
	if r.lastCaughtUpTimeNs.Load() != 200 {
		t.Fatalf("caught up at %d, want 200", r.lastCaughtUpTimeNs.Load())
	}
	appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 5, 0)))
	p.UpdateFollowerFetchState(2, BrokerEpochUnknown, 15, 400) // reached the previous fetch's leader end (15)
	if r.lastCaughtUpTimeNs.Load() != 300 {
		t.Fatalf("caught up at %d, want 300", r.lastCaughtUpTimeNs.Load())
	}
	fst := leaderState(1, 2, local)
	fst.Leader = 2
	m.MakeFollower("t", 0, fst)
	if p.UpdateFollowerFetchState(2, BrokerEpochUnknown, 20, 500) {
		t.Fatal("a follower recorded a fetch")
	}
	// A new leader counts the followers in its ISR as caught up when it starts.
	before := time.Now()
	lead(t, m, "t", leaderState(2, local, 2))
	if r := p.Follower(2); r.LogEndOffset() != -1 || r.LastCaughtUpTime().Before(before) {
		t.Fatalf("ISR follower of a new leader: end %d, caught up %v (before %v)", r.LogEndOffset(), r.LastCaughtUpTime(), before)
	}
}

// TestProposeISR: a follower that does not catch up within the lag time leaves the
// ISR; one that reaches the high watermark and this epoch's start joins it; the leader
// stays; nothing is proposed when nothing changes or this node does not lead.
func TestProposeISR(t *testing.T) {
	const lag = time.Second
	m := newManager(t, t.TempDir())
	st := leaderState(3, local, 2, 3)
	st.ISR, st.PartitionEpoch = []int32{local, 2, 3}, 7
	p := lead(t, m, "t", st)
	start := time.Now().UnixNano()
	if _, ok := p.ProposeISR(start, lag); ok {
		t.Fatal("a change proposed for a new leader's ISR")
	}
	appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 4, 0)))
	p.UpdateFollowerFetchState(2, BrokerEpochUnknown, 4, start+int64(lag)) // 2 catches up, 3 never fetches
	ch, ok := p.ProposeISR(start+int64(lag)+1, lag)
	if from := ch.From; !ok || !slices.Equal(ch.ISR, []int32{local, 2}) || from.LeaderEpoch != 3 || from.PartitionEpoch != 7 ||
		!slices.Equal(from.ISR, st.ISR) || len(ch.BrokerEpochs) != 0 {
		t.Fatalf("shrink: %+v (%v)", ch, ok)
	}
	st.ISR, st.PartitionEpoch = ch.ISR, 8
	lead(t, m, "t", st) // the control plane's answer
	if hw := p.HighWatermark(); hw != 4 {
		t.Fatalf("high watermark %d after the shrink, want 4", hw)
	}
	p.TakeISRExpansionDue()
	p.UpdateFollowerFetchState(3, BrokerEpochUnknown, 2, start+int64(lag)+2) // behind the high watermark
	if ch, ok := p.ProposeISR(start+int64(lag)+3, lag); ok || p.TakeISRExpansionDue() {
		t.Fatalf("a follower behind the high watermark joins (or is due to): %v", ch.ISR)
	}
	p.UpdateFollowerFetchState(2, BrokerEpochUnknown, 4, start+int64(lag)+4) // in the ISR already
	if p.TakeISRExpansionDue() {
		t.Fatal("an ISR member's fetch made an expansion due")
	}
	p.UpdateFollowerFetchState(3, BrokerEpochUnknown, 4, start+int64(lag)+4)
	if !p.TakeISRExpansionDue() || p.TakeISRExpansionDue() {
		t.Fatal("a follower's fetch reaching the high watermark made an expansion due not exactly once")
	}
	if ch, ok := p.ProposeISR(start+int64(lag)+5, lag); !ok || !slices.Equal(ch.ISR, []int32{local, 2, 3}) ||
		!maps.Equal(ch.BrokerEpochs, map[int32]int64{3: BrokerEpochUnknown}) {
		t.Fatalf("expand: %+v (%v)", ch, ok)
	}
	fst := st
	fst.Leader = 2
	m.MakeFollower("t", 0, fst)
	if _, ok := p.ProposeISR(start+10*int64(lag), lag); ok {
		t.Fatal("a follower proposed an ISR")
	}
}

// TestProposeISRBrokerEpochs (KIP-903): a follower joins the ISR only on fetches made
// under its current registration, as the leader's view shows it, and the proposal
// carries that epoch; a fetch naming an older epoch than the view's is not recorded;
// a follower the view does not show registered never joins.
func TestProposeISRBrokerEpochs(t *testing.T) {
	const lag = time.Second
	m := newManager(t, t.TempDir())
	st := leaderState(1, local, 2, 3)
	st.ISR, st.BrokerEpochs = []int32{local}, []int64{10, 20, BrokerNotRegistered}
	p := lead(t, m, "t", st)
	appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 4, 0)))
	now := time.Now().UnixNano()
	// Both caught up; 2's fetch is recorded under its view epoch, 3 is not registered.
	for _, id := range []int32{2, 3} {
		if !p.UpdateFollowerFetchState(id, BrokerEpochUnknown, 4, now) {
			t.Fatalf("fetch of %d refused", id)
		}
	}
	if ch, ok := p.ProposeISR(now, lag); !ok || !slices.Equal(ch.ISR, []int32{local, 2}) || !maps.Equal(ch.BrokerEpochs, map[int32]int64{2: 20}) {
		t.Fatalf("expand: %+v (%v)", ch, ok)
	}
	// 2 registers again (epoch 25): the fetches of its earlier process do not count.
	st.BrokerEpochs = []int64{10, 25, BrokerNotRegistered}
	lead(t, m, "t", st)
	if ch, ok := p.ProposeISR(now, lag); ok {
		t.Fatalf("a follower joins on its earlier process's fetches: %+v", ch)
	}
	if p.UpdateFollowerFetchState(2, 20, 4, now) {
		t.Fatal("a fetch under an epoch older than the view's was recorded")
	}
	if !p.UpdateFollowerFetchState(2, 25, 4, now) || p.Follower(2).BrokerEpoch() != 25 {
		t.Fatal("a fetch under the current epoch was not recorded")
	}
	if ch, ok := p.ProposeISR(now, lag); !ok || !slices.Equal(ch.ISR, []int32{local, 2}) || !maps.Equal(ch.BrokerEpochs, map[int32]int64{2: 25}) {
		t.Fatalf("expand after a fetch of the new process: %+v (%v)", ch, ok)
	}
	// A fetch naming a newer epoch than the view knows is recorded, but 2 joins only
	// once the view shows that registration.
	if !p.UpdateFollowerFetchState(2, 30, 4, now) {
		t.Fatal("a fetch under a newer epoch was refused")
	}
	if ch, ok := p.ProposeISR(now, lag); ok {
		t.Fatalf("joins before the view shows its registration: %+v", ch)
	}
	st.BrokerEpochs = []int64{10, 30, 40}
	lead(t, m, "t", st)
	p.UpdateFollowerFetchState(3, BrokerEpochUnknown, 4, now)
	if ch, ok := p.ProposeISR(now, lag); !ok || !slices.Equal(ch.ISR, []int32{local, 2, 3}) || !maps.Equal(ch.BrokerEpochs, map[int32]int64{2: 30, 3: 40}) {
		t.Fatalf("expand once registered: %+v (%v)", ch, ok)
	}
}

// TestFollowerReplication: a follower opened by Follow appends its leader's batches,
// takes its high watermark from the leader's (never past its own log end), refuses
// appends once it leads, and truncates fully to a leader's log start.
func TestFollowerReplication(t *testing.T) {
	leaderM, followerM := newManager(t, t.TempDir()), newManager(t, t.TempDir())
	leader := lead(t, leaderM, "t", leaderState(5, local))
	appendAsLeader(t, leader, testBatch(hdr(-1, -1, -1, 3, 0)), testBatch(hdr(-1, -1, -1, 2, 0)))
	fst := leaderState(5, 2, local)
	fst.Leader = 2
	f, err := followerM.Follow("t", 0, fst, nil, logConfig)
	if err != nil {
		t.Fatal(err)
	}
	if f.Role() != RoleFollower || f.LatestEpoch() != -1 {
		t.Fatalf("role %v, latest epoch %d", f.Role(), f.LatestEpoch())
	}
	bytes := logBytes(t, leader)
	if _, err := f.AppendAsFollower(bytes); err != nil {
		t.Fatal(err)
	}
	if f.Log().LogEndOffset() != 5 || f.LatestEpoch() != 5 {
		t.Fatalf("follower log end %d, latest epoch %d", f.Log().LogEndOffset(), f.LatestEpoch())
	}
	f.UpdateFollowerHighWatermark(9)
	if f.HighWatermark() != 5 {
		t.Fatalf("high watermark %d, want 5 (its log end)", f.HighWatermark())
	}
	f.UpdateFollowerHighWatermark(3)
	if f.HighWatermark() != 3 {
		t.Fatalf("high watermark %d, want the leader's 3", f.HighWatermark())
	}
	if err := f.TruncateFullyAndStartAt(20); err != nil {
		t.Fatal(err)
	}
	if f.Log().LogStartOffset() != 20 || f.Log().LogEndOffset() != 20 || f.HighWatermark() != 20 {
		t.Fatalf("after the full truncation: start %d end %d hw %d", f.Log().LogStartOffset(), f.Log().LogEndOffset(), f.HighWatermark())
	}
	checkInvariants(t, f)
	lead(t, followerM, "t", leaderState(6, local))
	if _, err := f.AppendAsFollower(bytes); !errors.Is(err, ErrNotFollower) {
		t.Fatalf("an append as follower to a leader: %v", err)
	}
}

// TestLagAndHealth: a leader's view of each follower's lag (offsets behind its log end,
// time since last caught up), the under-replicated state, and a follower's lag behind
// its leader's high watermark.
func TestLagAndHealth(t *testing.T) {
	m := newManager(t, t.TempDir())
	st := leaderState(0, local, 2, 3)
	st.ISR = []int32{local, 2}
	began := time.Now().UnixNano()
	p := lead(t, m, "t", st)
	appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 10, 0)))
	if !p.UnderReplicated() {
		t.Fatal("ISR smaller than the assignment, not under-replicated")
	}
	now := time.Now().UnixNano()
	// Never fetched: the whole log, since the leadership began (or, for an ISR member,
	// since it was counted caught up then).
	for _, id := range []int32{2, 3} {
		offsets, lag, ok := p.FollowerLag(id, now)
		if !ok || offsets != 10 || lag < 0 || lag > time.Duration(now-began) {
			t.Fatalf("follower %d before fetching: %d %v %v (leading for %v)", id, offsets, lag, ok, time.Duration(now-began))
		}
	}
	p.UpdateFollowerFetchState(2, BrokerEpochUnknown, 10, now)
	if offsets, lag, ok := p.FollowerLag(2, now+5); !ok || offsets != 0 || lag != 0 {
		t.Fatalf("caught up: %d %v %v", offsets, lag, ok)
	}
	appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 5, 0)))
	if offsets, lag, ok := p.FollowerLag(2, now+int64(time.Second)); !ok || offsets != 5 || lag != time.Second {
		t.Fatalf("behind by one append: %d %v %v", offsets, lag, ok)
	}
	if _, _, ok := p.FollowerLag(local, now); ok {
		t.Fatal("a lag for the leader itself")
	}
	st.ISR = []int32{local, 2, 3}
	lead(t, m, "t", st)
	if p.UnderReplicated() {
		t.Fatal("full ISR, under-replicated")
	}
	fst := leaderState(1, 2, local, 3)
	fst.Leader = 2
	m.MakeFollower("t", 0, fst)
	if _, _, ok := p.FollowerLag(2, now); ok || p.UnderReplicated() {
		t.Fatal("a follower reports followers' lag or under-replication")
	}
	p.UpdateFollowerHighWatermark(20)
	if p.FetcherLag() != 5 || p.HighWatermark() != 15 {
		t.Fatalf("fetcher lag %d, high watermark %d; want 5, 15", p.FetcherLag(), p.HighWatermark())
	}
	p.UpdateFollowerHighWatermark(12)
	if p.FetcherLag() != 0 {
		t.Fatalf("fetcher lag %d with the leader's high watermark below the log end", p.FetcherLag())
	}
}

// TestStagedFollowerAppendMatchesCopy: a follower that commits its leader's batches as
// staged appends (the splice path) ends with the log, leader epochs and idempotent-
// producer state of one that appends them from a buffer; a staged append refuses to
// land once the replica leads, and leaves nothing.
func TestStagedFollowerAppendMatchesCopy(t *testing.T) {
	leaderM := newManager(t, t.TempDir())
	leader := lead(t, leaderM, "t", leaderState(3, local))
	appendAsLeader(t, leader, testBatch(hdr(7, 0, 0, 3, 0)), testBatch(hdr(8, 1, 0, 2, 0)))
	lead(t, leaderM, "t", leaderState(4, local))
	appendAsLeader(t, leader, testBatch(hdr(7, 0, 3, 1, 0)), testBatch(hdr(-1, -1, -1, 4, 0)))
	records := logBytes(t, leader)

	fst := leaderState(4, 2, local)
	fst.Leader = 2
	follow := func() (*Manager, *Partition) {
		m := newManager(t, t.TempDir())
		p, err := m.Follow("t", 0, fst, nil, logConfig)
		if err != nil {
			t.Fatal(err)
		}
		return m, p
	}
	_, byCopy := follow()
	stageM, byStage := follow()
	if _, err := byCopy.AppendAsFollower(records); err != nil {
		t.Fatal(err)
	}
	stage := func(p *Partition) *segment.StagedAppend {
		t.Helper()
		st, err := p.StageFollowerAppend(len(records))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Write(func(fd int, off *int64) error {
			n, err := syscall.Pwrite(fd, records, *off)
			*off += int64(n)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return st
	}
	if _, err := byStage.AppendStagedAsFollower(stage(byStage)); err != nil {
		t.Fatal(err)
	}
	if a, b := byStage.Log().LogEndOffset(), byCopy.Log().LogEndOffset(); a != 10 || a != b {
		t.Fatalf("log ends: staged %d, copied %d", a, b)
	}
	if a, b := byStage.Log().LeaderEpochs(), byCopy.Log().LeaderEpochs(); !slices.Equal(a, b) || len(a) != 2 {
		t.Fatalf("epochs: staged %+v, copied %+v", a, b)
	}
	if !reflect.DeepEqual(byStage.producers, byCopy.producers) || len(byStage.producers.m) != 2 {
		t.Fatalf("producer state: staged %+v, copied %+v", byStage.producers, byCopy.producers)
	}
	checkInvariants(t, byStage)

	// Staged as follower, led before the commit: refused, nothing kept.
	st := stage(byStage)
	lead(t, stageM, "t", leaderState(5, local))
	if _, err := byStage.AppendStagedAsFollower(st); !errors.Is(err, ErrNotFollower) {
		t.Fatalf("staged append to a leader: %v", err)
	}
	if byStage.Log().LogEndOffset() != 10 {
		t.Fatalf("log end %d after a refused staged append", byStage.Log().LogEndOffset())
	}
	if _, err := byStage.StageFollowerAppend(10); !errors.Is(err, ErrNotFollower) {
		t.Fatalf("staging on a leader: %v", err)
	}
}

// logBytes is a replica's whole log (up to 1 MiB), as a follower fetches it.
func logBytes(t *testing.T, p *Partition) []byte {
	t.Helper()
	regions, err := p.Log().Read(nil, 0, 1<<20, p.Log().LogEndOffset(), true)
	if err != nil {
		t.Fatal(err)
	}
	defer segment.ReleaseRegions(regions)
	var out []byte
	for _, rg := range regions {
		b := make([]byte, rg.Length)
		if _, err := syscall.Pread(rg.File.Fd(), b, rg.Position); err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

// TestHighWatermarkWaitsForISRExpansion (KIP-497's maximal ISR): while an ISR change
// that adds a follower is in flight, the high watermark does not pass that follower's
// log end, even with the ISR it knows all caught up, because the control plane may
// already hold the follower in the ISR and elect it; a refused change, or the applied
// state, lifts that.
func TestHighWatermarkWaitsForISRExpansion(t *testing.T) {
	const lag = time.Second
	m := newManager(t, t.TempDir())
	st := leaderState(1, local, 2, 3)
	st.ISR, st.PartitionEpoch = []int32{local, 2}, 5
	p := lead(t, m, "t", st)
	now := time.Now().UnixNano()
	appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 4, 0)))
	p.UpdateFollowerFetchState(2, BrokerEpochUnknown, 4, now)
	p.UpdateFollowerFetchState(3, BrokerEpochUnknown, 4, now) // caught up: joins
	ch, ok := p.ProposeISR(now+1, lag)
	if !ok || !slices.Equal(ch.ISR, []int32{local, 2, 3}) {
		t.Fatalf("expand: %+v %v", ch, ok)
	}
	p.BeginISRExpansion(ch)
	appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 4, 0)))
	p.UpdateFollowerFetchState(2, BrokerEpochUnknown, 8, now+2) // the known ISR is at 8
	if hw := p.HighWatermark(); hw != 4 {
		t.Fatalf("high watermark %d with 3 joining at 4, want 4", hw)
	}
	p.EndISRExpansion(ch.From.PartitionEpoch) // refused
	p.UpdateFollowerFetchState(2, BrokerEpochUnknown, 8, now+3)
	if hw := p.HighWatermark(); hw != 8 {
		t.Fatalf("high watermark %d after the change was refused, want 8", hw)
	}
	// Single-member ISR: appends do not move the high watermark past a joining member.
	st1 := leaderState(2, local, 2)
	st1.ISR, st1.PartitionEpoch = []int32{local}, 9
	p = lead(t, m, "t", st1)
	p.UpdateFollowerFetchState(2, BrokerEpochUnknown, 8, now+4)
	ch, ok = p.ProposeISR(now+5, lag)
	if !ok {
		t.Fatal("no expansion proposed")
	}
	p.BeginISRExpansion(ch)
	appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 2, 0)))
	if hw := p.HighWatermark(); hw != 8 {
		t.Fatalf("high watermark %d after an append with 2 joining at 8, want 8", hw)
	}
	st1.ISR, st1.PartitionEpoch = ch.ISR, 10
	lead(t, m, "t", st1) // the applied state: 2 is in the ISR the leader knows
	p.UpdateFollowerFetchState(2, BrokerEpochUnknown, 10, now+6)
	if hw := p.HighWatermark(); hw != 10 {
		t.Fatalf("high watermark %d once applied, want 10", hw)
	}
}
