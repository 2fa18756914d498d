package replica

import (
	"errors"
	"os"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/twmb/franz-go/pkg/kerr"
)

// local is the node id of the tests' manager.
const local = 1

func newManager(t *testing.T, dir string) *Manager {
	t.Helper()
	m := NewManager(Config{Dir: dir, NodeID: local, Logger: testutil.Quiet()})
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func logConfig() segment.Config { return segment.Config{Logger: testutil.Quiet()} }

// leaderState is the state of a partition local leads at epoch with the given ISR, all
// of it assigned.
func leaderState(epoch int32, isr ...int32) PartitionState {
	return PartitionState{
		LeaderAndIsr:      LeaderAndIsr{Leader: local, LeaderEpoch: epoch, ISR: isr},
		Replicas:          isr,
		MinInsyncReplicas: 1,
	}
}

func lead(t *testing.T, m *Manager, topic string, st PartitionState) *Partition {
	t.Helper()
	p, err := m.MakeLeader(topic, 0, st, nil, logConfig)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, p)
	return p
}

// checkInvariants checks what must hold of a partition at rest.
func checkInvariants(t *testing.T, p *Partition) {
	t.Helper()
	if hw, leo := p.HighWatermark(), p.Log().LogEndOffset(); hw < 0 || hw > leo {
		t.Fatalf("high watermark %d outside [0, log end offset %d]", hw, leo)
	}
	p.stateMu.RLock()
	defer p.stateMu.RUnlock()
	if int(p.isrSize.Load()) != len(p.isr) {
		t.Fatalf("isrSize %d, ISR %v", p.isrSize.Load(), p.isr)
	}
	if role, epoch := p.loadState(); (role != RoleLeader && len(p.followers) != 0) || (role == RoleNone && epoch != -1) {
		t.Fatalf("role %v epoch %d with followers %v", role, epoch, p.followers)
	}
}

// appendAsLeader appends each records as one request of one LeaderAppend.
func appendAsLeader(t *testing.T, p *Partition, records ...[]byte) []Assignment {
	t.Helper()
	var a LeaderAppend
	a.Begin(p)
	var out []Assignment
	for _, r := range records {
		out = append(out, a.Add(r))
	}
	if _, err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, p)
	return out
}

// TestRoleTransitions: the role and leader epoch after each change the controller can
// ask for, and what a request naming a leader epoch is answered.
func TestRoleTransitions(t *testing.T) {
	follow := func(epoch int32) PartitionState {
		st := leaderState(epoch, 2, local)
		st.Leader = 2
		return st
	}
	type step struct {
		do    func(m *Manager, p *Partition)
		role  Role
		epoch int32
	}
	makeLeader := func(epoch int32) step {
		return step{func(m *Manager, _ *Partition) { _, _ = m.MakeLeader("t", 0, leaderState(epoch, local), nil, logConfig) }, RoleLeader, epoch}
	}
	makeFollower := func(epoch int32) step {
		return step{func(m *Manager, _ *Partition) { m.MakeFollower("t", 0, follow(epoch)) }, RoleFollower, epoch}
	}
	resign := step{func(_ *Manager, p *Partition) { p.Resign() }, RoleNone, -1}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"lead", []step{makeLeader(3)}},
		{"lead again at a new epoch", []step{makeLeader(3), makeLeader(4)}},
		{"leader to follower", []step{makeLeader(3), makeFollower(4)}},
		{"follower to leader", []step{makeLeader(3), makeFollower(4), makeLeader(5)}},
		{"leader resigns", []step{makeLeader(3), resign}},
		{"resigned to leader", []step{makeLeader(3), resign, makeLeader(3)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager(t, t.TempDir())
			p := lead(t, m, "t", leaderState(0, local))
			for i, s := range tc.steps {
				s.do(m, p)
				checkInvariants(t, p)
				if m.Partition("t", 0) != p {
					t.Fatalf("step %d: the replica was replaced", i)
				}
				if p.Role() != s.role || p.LeaderEpoch() != s.epoch || p.IsLeader() != (s.role == RoleLeader) {
					t.Fatalf("step %d: role %v epoch %d leader %v, want %v %d", i, p.Role(), p.LeaderEpoch(), p.IsLeader(), s.role, s.epoch)
				}
			}
			last := tc.steps[len(tc.steps)-1]
			for _, c := range []struct {
				current int32
				want    int16
			}{
				{-1, 0},
				{last.epoch - 1, kerr.FencedLeaderEpoch.Code},
				{last.epoch, 0},
				{last.epoch + 1, kerr.UnknownLeaderEpoch.Code},
			} {
				want := c.want
				if last.role != RoleLeader {
					want = kerr.NotLeaderForPartition.Code
				}
				if got := p.CheckLeaderEpoch(c.current); got != want {
					t.Errorf("CheckLeaderEpoch(%d) = %d, want %d", c.current, got, want)
				}
			}
		})
	}
}

// TestMakeFollowerOpensNothing: a node follows only replicas it already has.
func TestMakeFollowerOpensNothing(t *testing.T) {
	dir := t.TempDir()
	m := newManager(t, dir)
	if p := m.MakeFollower("t", 0, leaderState(1, 2)); p != nil {
		t.Fatal("MakeFollower made a replica")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("MakeFollower created %v", entries)
	}
}

// TestLeadershipState: the ISR, assignment and followers' progress a leader keeps, and
// that a follower keeps no followers.
func TestLeadershipState(t *testing.T) {
	m := newManager(t, t.TempDir())
	st := leaderState(2, local, 2, 3)
	st.ISR, st.PartitionEpoch = []int32{local, 2}, 7
	p := lead(t, m, "t", st)
	got := p.LeaderAndIsr()
	if got.Leader != local || got.LeaderEpoch != 2 || !slices.Equal(got.ISR, []int32{local, 2}) || got.PartitionEpoch != 7 {
		t.Fatalf("LeaderAndIsr = %+v", got)
	}
	if !slices.Equal(p.Replicas(), []int32{local, 2, 3}) {
		t.Fatalf("Replicas = %v", p.Replicas())
	}
	st.ISR[0] = 9 // the caller's slices are not kept
	if p.LeaderAndIsr().ISR[0] != local {
		t.Fatal("the ISR aliases the caller's slice")
	}
	if p.Follower(local) != nil {
		t.Fatal("this node is its own follower")
	}
	f2, f3 := p.Follower(2), p.Follower(3)
	if f2 == nil || f3 == nil || f2.LogEndOffset() != -1 || !f3.LastCaughtUpTime().IsZero() {
		t.Fatalf("followers %+v %+v, want both unknown", f2, f3)
	}
	// Same leadership again: progress kept. A new epoch: reset.
	f2.logEndOffset.Store(5)
	lead(t, m, "t", st)
	if p.Follower(2) != f2 || f2.LogEndOffset() != 5 {
		t.Fatal("progress lost under the same leadership")
	}
	st.LeaderEpoch = 3
	lead(t, m, "t", st)
	if f2.LogEndOffset() != -1 {
		t.Fatal("progress kept under a new leader epoch")
	}
	st.Replicas = []int32{local, 2}
	lead(t, m, "t", st)
	if p.Follower(3) != nil {
		t.Fatal("an unassigned follower is kept")
	}
	fst := st
	fst.Leader = 2
	m.MakeFollower("t", 0, fst)
	checkInvariants(t, p)
	if p.Follower(2) != nil || p.LeaderAndIsr().Leader != 2 {
		t.Fatalf("follower keeps followers, or leader %d", p.LeaderAndIsr().Leader)
	}
}

// TestHighWatermarkRules: the high watermark after appends and role changes, by ISR.
func TestHighWatermarkRules(t *testing.T) {
	b := testBatch(hdr(-1, -1, -1, 3, 0))
	for _, tc := range []struct {
		name string
		isr  []int32
		want int64 // after two appends of three records
	}{
		{"ISR empty", nil, 6},
		{"ISR this node alone", []int32{local}, 6},
		{"ISR with a follower", []int32{local, 2}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager(t, t.TempDir())
			p := lead(t, m, "t", leaderState(0, tc.isr...))
			appendAsLeader(t, p, b)
			appendAsLeader(t, p, b)
			if hw := p.HighWatermark(); hw != tc.want {
				t.Fatalf("high watermark %d, want %d", hw, tc.want)
			}
			// The ISR shrinking to this node moves the high watermark to the log end.
			lead(t, m, "t", leaderState(1, local))
			if hw := p.HighWatermark(); hw != 6 {
				t.Fatalf("high watermark %d after the ISR shrank to this node, want 6", hw)
			}
		})
	}
}

// TestHighWatermarkCheckpoint: a checkpoint is due only when the high watermark moved.
func TestHighWatermarkCheckpoint(t *testing.T) {
	m := newManager(t, t.TempDir())
	p := lead(t, m, "t", leaderState(0, local))
	if _, moved := p.CheckpointHighWatermark(); moved {
		t.Fatal("an empty log's high watermark moved")
	}
	appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 2, 0)))
	if hw, moved := p.CheckpointHighWatermark(); hw != 2 || !moved {
		t.Fatalf("after an append: %d moved %v", hw, moved)
	}
	if _, moved := p.CheckpointHighWatermark(); moved {
		t.Fatal("moved twice for one append")
	}
}

// TestLeaderAppend: offsets and the leader epoch assigned, producers' retries answered
// with their first offsets and not written again, refused records taking no offsets;
// and the producer state rebuilt from the log when the replica opens again.
func TestLeaderAppend(t *testing.T) {
	dir := t.TempDir()
	m := newManager(t, dir)
	p := lead(t, m, "t", leaderState(4, local))
	plain := testBatch(hdr(-1, -1, -1, 2, 0))
	b0, b1 := testBatch(hdr(42, 0, 0, 3, 0)), testBatch(hdr(42, 0, 3, 2, 0))
	got := appendAsLeader(t, p,
		plain,
		b0,
		testBatch(hdr(42, 0, 0, 3, 0)),  // a retry of b0 in the same append
		testBatch(hdr(42, 0, 9, 1, 0)),  // a gap
		testBatch(hdr(43, 0, 5, 1, 0)),  // an unknown producer mid-sequence
		testBatch(hdr(42, -1, 3, 1, 0)), // a stale epoch
		b1,
	)
	want := []Assignment{
		{FirstOffset: 0, LastOffset: 1},
		{FirstOffset: 2, LastOffset: 4},
		{Duplicate: true, FirstOffset: 2, LastOffset: 4},
		{ErrorCode: kerr.OutOfOrderSequenceNumber.Code, FirstOffset: -1, LastOffset: -1},
		{ErrorCode: kerr.UnknownProducerID.Code, FirstOffset: -1, LastOffset: -1},
		{ErrorCode: kerr.InvalidProducerEpoch.Code, FirstOffset: -1, LastOffset: -1},
		{FirstOffset: 5, LastOffset: 6},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("assignments\n got %+v\nwant %+v", got, want)
	}
	if leo := p.Log().LogEndOffset(); leo != 7 {
		t.Fatalf("log end offset %d, want 7", leo)
	}
	if epochs := p.Log().LeaderEpochs(); len(epochs) != 1 || epochs[0].Epoch != 4 || epochs[0].StartOffset != 0 {
		t.Fatalf("leader epochs %+v, want epoch 4 from 0", epochs)
	}
	if err := p.Log().ScanBatchHeaders(0, func(h *proto.RecordBatchHeader) bool {
		if h.PartitionLeaderEpoch != 4 {
			t.Errorf("batch at %d carries epoch %d", h.BaseOffset, h.PartitionLeaderEpoch)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}

	// A restart: the producer state comes back from the log.
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m2 := newManager(t, dir)
	p2 := lead(t, m2, "t", leaderState(5, local))
	got = appendAsLeader(t, p2, b1, testBatch(hdr(42, 0, 5, 1, 0)))
	want = []Assignment{{Duplicate: true, FirstOffset: 5, LastOffset: 6}, {FirstOffset: 7, LastOffset: 7}}
	if !slices.Equal(got, want) {
		t.Fatalf("after reopening\n got %+v\nwant %+v", got, want)
	}
}

// TestLeaderAppendNothingAccepted: an append of refused records only writes nothing and
// releases the lock.
func TestLeaderAppendNothingAccepted(t *testing.T) {
	m := newManager(t, t.TempDir())
	p := lead(t, m, "t", leaderState(0, local))
	var a LeaderAppend
	a.Begin(p)
	if as := a.Add(testBatch(hdr(7, 0, 3, 1, 0))); as.ErrorCode != kerr.UnknownProducerID.Code {
		t.Fatalf("assignment %+v", as)
	}
	if info, err := a.Commit(); err != nil || info.Batches != 0 {
		t.Fatalf("commit: %+v %v", info, err)
	}
	appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 1, 0))) // the lock was released
	if leo := p.Log().LogEndOffset(); leo != 1 {
		t.Fatalf("log end offset %d", leo)
	}
}

// TestLeaderAppendFailure: an append that does not land where the offsets were
// assigned (here because something wrote to the log behind the partition's back) fails,
// and the producer state is rebuilt as the log has it.
func TestLeaderAppendFailure(t *testing.T) {
	m := newManager(t, t.TempDir())
	p := lead(t, m, "t", leaderState(0, local))
	appendAsLeader(t, p, testBatch(hdr(42, 0, 0, 1, 0)))
	var a LeaderAppend
	a.Begin(p)
	if as := a.Add(testBatch(hdr(42, 0, 1, 1, 0))); as.FirstOffset != 1 {
		t.Fatalf("assignment %+v", as)
	}
	if _, err := p.Log().AppendValidated([][]byte{testBatch(hdr(-1, -1, -1, 1, 0))}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Commit(); err == nil {
		t.Fatal("an append that landed elsewhere succeeded")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	retry := hdr(42, 0, 1, 1, 0)
	if dup, code := p.producers.check(&retry); dup == nil || dup.firstOffset != 2 || code != 0 {
		t.Fatalf("producer state not rebuilt from the log: dup %+v code %d", dup, code)
	}
}

// TestLeaderAppendAllocations: a reused LeaderAppend allocates nothing of its own.
func TestLeaderAppendAllocations(t *testing.T) {
	m := newManager(t, t.TempDir())
	p := lead(t, m, "t", leaderState(0, local))
	records := testBatch(hdr(-1, -1, -1, 4, 0))
	var a LeaderAppend
	run := func() {
		a.Begin(p)
		a.Add(records)
		a.Add(records)
		if _, err := a.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	run()
	var direct float64
	parts := [][]byte{records, records}
	direct = testing.AllocsPerRun(50, func() {
		if _, err := p.Log().AppendValidated(parts, 0); err != nil {
			t.Fatal(err)
		}
	})
	if n := testing.AllocsPerRun(50, run); n > direct {
		t.Fatalf("%v allocations per append, the log's own append makes %v", n, direct)
	}
}

// TestAppendAsFollower: a follower keeps the leader's offsets and epochs, and the
// producer state from what it appends, so that as leader it knows a retry.
func TestAppendAsFollower(t *testing.T) {
	m := newManager(t, t.TempDir())
	p := lead(t, m, "t", leaderState(0, local))
	fst := leaderState(3, 2, local)
	fst.Leader = 2
	m.MakeFollower("t", 0, fst)
	retried := hdr(42, 0, 0, 2, 10)
	retried.PartitionLeaderEpoch = 3
	first := hdr(-1, -1, -1, 10, 0)
	first.PartitionLeaderEpoch = 2
	if _, err := p.AppendAsFollower(concat(testBatch(first), testBatch(retried))); err != nil {
		t.Fatal(err)
	}
	if leo := p.Log().LogEndOffset(); leo != 12 {
		t.Fatalf("log end offset %d, want 12", leo)
	}
	if epochs := p.Log().LeaderEpochs(); len(epochs) != 2 || epochs[1].Epoch != 3 || epochs[1].StartOffset != 10 {
		t.Fatalf("leader epochs %+v", epochs)
	}
	if _, err := p.AppendAsFollower(testBatch(hdr(-1, -1, -1, 1, 5))); !errors.Is(err, segment.ErrInvalidAppendOffset) {
		t.Fatalf("an append below the log end: %v", err)
	}
	checkInvariants(t, p)
	lead(t, m, "t", leaderState(4, local))
	got := appendAsLeader(t, p, testBatch(hdr(42, 0, 0, 2, 0)))
	if want := (Assignment{Duplicate: true, FirstOffset: 10, LastOffset: 11}); got[0] != want {
		t.Fatalf("retry after the failover: %+v, want %+v", got[0], want)
	}
}

// TestTruncateTo: truncation takes the high watermark and the producer state down with
// the log.
func TestTruncateTo(t *testing.T) {
	m := newManager(t, t.TempDir())
	p := lead(t, m, "t", leaderState(0, local))
	appendAsLeader(t, p, testBatch(hdr(42, 0, 0, 2, 0)))
	appendAsLeader(t, p, testBatch(hdr(42, 0, 2, 2, 0)))
	if hw := p.HighWatermark(); hw != 4 {
		t.Fatalf("high watermark %d", hw)
	}
	if epoch, end := p.EndOffsetForEpoch(0); epoch != 0 || end != 4 {
		t.Fatalf("EndOffsetForEpoch(0) = %d, %d", epoch, end)
	}
	for _, tc := range []struct {
		to, leo, hw int64
	}{
		{9, 4, 4}, // past the end: nothing changes
		{2, 2, 2},
	} {
		leo, err := p.TruncateTo(tc.to)
		if err != nil || leo != tc.leo || p.HighWatermark() != tc.hw {
			t.Fatalf("TruncateTo(%d) = %d, %v; high watermark %d; want %d, %d", tc.to, leo, err, p.HighWatermark(), tc.leo, tc.hw)
		}
		checkInvariants(t, p)
	}
	// The batch cut off is gone from the producer state: the producer's retry of it is
	// written again, not answered as a duplicate.
	got := appendAsLeader(t, p, testBatch(hdr(42, 0, 2, 2, 0)))
	if want := (Assignment{FirstOffset: 2, LastOffset: 3}); got[0] != want {
		t.Fatalf("retry of a truncated batch: %+v, want %+v", got[0], want)
	}
}

// countingWaiter counts its wakes.
type countingWaiter struct{ wakes atomic.Int32 }

func (w *countingWaiter) Wake() { w.wakes.Add(1) }

// TestWaiters: parked requests are woken once per registration by appends and role
// changes, and not by refused appends.
func TestWaiters(t *testing.T) {
	m := newManager(t, t.TempDir())
	p := lead(t, m, "t", leaderState(0, local))
	fst := leaderState(1, 2, local)
	fst.Leader = 2
	for _, tc := range []struct {
		name string
		do   func()
		want int32
	}{
		{"append", func() { appendAsLeader(t, p, testBatch(hdr(-1, -1, -1, 1, 0))) }, 1},
		{"refused append", func() { appendAsLeader(t, p, testBatch(hdr(5, 0, 7, 1, 0))) }, 0},
		{"become follower", func() { m.MakeFollower("t", 0, fst) }, 1},
		{"become leader", func() { lead(t, m, "t", leaderState(2, local)) }, 1},
		{"resign", func() { p.Resign() }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &countingWaiter{}
			p.AddWaiter(w)
			tc.do()
			tc.do()
			if n := w.wakes.Load(); n != tc.want {
				t.Fatalf("woken %d times, want %d", n, tc.want)
			}
			p.wakeWaiters() // leave none for the next case
		})
	}
}

// TestWaitersBounded: past the bound a waiter is not registered.
func TestWaitersBounded(t *testing.T) {
	m := newManager(t, t.TempDir())
	p := lead(t, m, "t", leaderState(0, local))
	w := &countingWaiter{}
	for range maxWaitersPerPartition + 5 {
		p.AddWaiter(w)
	}
	p.wakeWaiters()
	if n := w.wakes.Load(); n != maxWaitersPerPartition {
		t.Fatalf("woken %d times, want %d", n, maxWaitersPerPartition)
	}
}

// TestUnderMinISR: acks=all is refused while the ISR is smaller than
// min.insync.replicas.
func TestUnderMinISR(t *testing.T) {
	for _, tc := range []struct {
		isr    []int32
		minISR int
		under  bool
	}{
		{[]int32{local}, 1, false},
		{[]int32{local}, 2, true},
		{[]int32{local, 2}, 2, false},
		{[]int32{local, 2}, 3, true},
	} {
		m := newManager(t, t.TempDir())
		st := leaderState(0, tc.isr...)
		st.MinInsyncReplicas = tc.minISR
		if p := lead(t, m, "t", st); p.UnderMinISR() != tc.under {
			t.Errorf("ISR %v, min.insync.replicas %d: UnderMinISR %v", tc.isr, tc.minISR, !tc.under)
		}
	}
}
