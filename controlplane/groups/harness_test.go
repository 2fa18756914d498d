package groups

// The unit-test harness: a Coordinator on a fake clock and an in-memory store, driven
// through Handle as the node drives it, with no etcd, no TCP and no sleeps. Time moves
// only when a test advances it; advance returns once every timer it made due has run.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/internal/grouptest"
	"github.com/gregor-streaming/gregor/controlplane/internal/kvstore"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// settleWait bounds, in real time, waiting for something the coordinator does on its
// own goroutines (a timer's callback, a store completion): it takes microseconds, so
// reaching this bound means it never happens.
const settleWait = 10 * time.Second

// ---- clock ----

// testClock is a fake clock that knows which AfterFunc callbacks are due and not yet
// finished, so that advance can wait for them: the coordinator's timers run their
// callbacks on goroutines of their own, and a test must not look before they are done.
type testClock struct {
	*clockwork.FakeClock
	mu     sync.Mutex
	timers []*testTimer
}

type testTimer struct {
	clockwork.Timer
	c  *testClock
	at time.Time
	// over is set once the callback has returned or the timer was stopped before firing.
	over bool
}

func (tt *testTimer) Stop() bool {
	stopped := tt.Timer.Stop()
	if stopped {
		tt.c.mu.Lock()
		tt.over = true
		tt.c.mu.Unlock()
	}
	return stopped
}

func (c *testClock) AfterFunc(d time.Duration, f func()) clockwork.Timer {
	tt := &testTimer{c: c, at: c.Now().Add(d)}
	c.mu.Lock()
	c.timers = append(c.timers, tt)
	c.mu.Unlock()
	tt.Timer = c.FakeClock.AfterFunc(d, func() {
		f()
		c.mu.Lock()
		tt.over = true
		c.mu.Unlock()
	})
	return tt
}

// busy returns the number of timers due (at or before now) whose callbacks have not
// finished, forgetting those that are over.
func (c *testClock) busy() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timers = slices.DeleteFunc(c.timers, func(tt *testTimer) bool { return tt.over })
	now, n := c.Now(), 0
	for _, tt := range c.timers {
		if !tt.at.After(now) {
			n++
		}
	}
	return n
}

// ---- store ----

// memStore is a Store in memory with the contract of EtcdStore (kvstore.Mem): requests
// complete in order, on the writer's goroutine, each whole or not at all. A test can
// hold the writer (requests queue up, as behind a slow etcd) and make ops fail.
type memStore struct{ *kvstore.Mem }

func newMemStore() *memStore { return &memStore{kvstore.NewMem(nil)} }

// hold stops the writer before its next request; release lets it go on.
func (st *memStore) hold()    { st.Hold() }
func (st *memStore) release() { st.Release() }

// setFail makes requests holding an op f refuses fail (nil: none fails).
func (st *memStore) setFail(f func(Op) error) { st.SetFail(f) }

// idle reports whether everything submitted has completed.
func (st *memStore) idle() bool { return st.Idle() }

func (st *memStore) has(key string) bool {
	_, ok := st.Get(key)
	return ok
}

// ---- harness ----

// harness is one coordinator under test.
type harness struct {
	t     *testing.T
	clock *testClock
	st    *memStore
	co    *Coordinator
}

// testConfig is the coordinator's configuration in these tests: sessions may be short
// (the requests of grouptest ask for 1 s) and first rebalances do not wait.
func testConfig() Config {
	return Config{MinSessionTimeout: 100 * time.Millisecond, OffsetsRetention: time.Hour}
}

// newHarness starts a coordinator with cfg on a fake clock and an empty memory store
// (or st, when given: a later term over what an earlier one wrote). Every topic has
// four partitions.
func newHarness(t *testing.T, cfg Config, st *memStore) *harness {
	t.Helper()
	if st == nil {
		st = newMemStore()
	}
	h := &harness{t: t, clock: &testClock{FakeClock: clockwork.NewFakeClock()}, st: st}
	h.co = New(Options{Config: cfg, Store: st, Clock: h.clock, Logger: testutil.Quiet(),
		Partitions: func(string) (int32, bool) { return 4, true }})
	if err := h.co.load(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(h.co.loaded)
	t.Cleanup(h.co.stop)
	return h
}

// advance moves the clock by d and waits until every timer that came due has run.
func (h *harness) advance(d time.Duration) {
	h.t.Helper()
	h.clock.Advance(d)
	h.waitFor("due timers to run", func() error {
		if n := h.clock.busy(); n > 0 {
			return fmt.Errorf("%d timer callbacks due", n)
		}
		return nil
	})
}

// flush waits until the store has completed everything submitted.
func (h *harness) flush() {
	h.t.Helper()
	h.waitFor("the store to complete its writes", func() error {
		if !h.st.idle() {
			return errors.New("store busy")
		}
		return nil
	})
}

// expire runs the offset expiry at the clock's now and waits for its writes.
func (h *harness) expire() {
	h.t.Helper()
	h.co.expire(h.clock.Now())
	h.flush()
}

func (h *harness) waitFor(what string, cond func() error) {
	h.t.Helper()
	if err := testutil.Eventually(settleWait, cond); err != nil {
		h.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// pending is a request whose answer may come later.
type pending struct {
	*grouptest.Pending
	h *harness
}

// send applies req (as the node does, through Handle) and returns its pending answer.
func (h *harness) send(req kmsg.Request) *pending {
	p := &pending{Pending: grouptest.NewPending(req), h: h}
	hdr := Header{Key: req.Key(), Version: req.GetVersion(), ClientID: "test-client"}
	h.co.Handle(hdr, "127.0.0.9", req, Answer{Response: p.Response, NotActive: p.NotActive})
	return p
}

// answered reports whether the answer has come, without waiting.
func (p *pending) answered() bool { return p.Answered() }

// wait returns the answer, failing the test if it does not come.
func (p *pending) wait() kmsg.Response {
	p.h.t.Helper()
	return p.Wait(p.h.t, settleWait)
}

// call sends req and waits for its answer.
func (h *harness) call(req kmsg.Request) kmsg.Response {
	h.t.Helper()
	return h.send(req).wait()
}

// joinStep1 does the first step of a two-step join and returns the member id given.
func (h *harness) joinStep1(r *kmsg.JoinGroupRequest) string {
	h.t.Helper()
	r.MemberID = ""
	resp := h.call(r).(*kmsg.JoinGroupResponse)
	if resp.ErrorCode != kerr.MemberIDRequired.Code || resp.MemberID == "" {
		h.t.Fatalf("first join step: code %d member %q", resp.ErrorCode, resp.MemberID)
	}
	return resp.MemberID
}

// joinReq is a join of a consumer of topics with the given session timeout.
func joinReq(group string, session time.Duration, topics ...string) *kmsg.JoinGroupRequest {
	r := grouptest.JoinRequest(group, "", grouptest.ConsumerMeta(topics...))
	r.SessionTimeoutMillis = int32(session / time.Millisecond)
	return r
}

func (h *harness) heartbeat(group, member string, gen int32) int16 {
	h.t.Helper()
	return h.call(grouptest.HeartbeatRequest(group, member, gen)).(*kmsg.HeartbeatResponse).ErrorCode
}

// commit commits one offset (OffsetCommit v7; generation -1 and no member for a
// consumer outside group management) and returns its pending answer.
func (h *harness) commit(group, member string, gen int32, topic string, part int32, offset int64) *pending {
	r := kmsg.NewPtrOffsetCommitRequest()
	r.Version = 7
	r.Group, r.MemberID, r.Generation = group, member, gen
	r.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: topic, Partitions: []kmsg.OffsetCommitRequestTopicPartition{
		{Partition: part, Offset: offset, LeaderEpoch: -1}}}}
	return h.send(r)
}

// mustCommit commits and fails the test unless the commit succeeds.
func (h *harness) mustCommit(group, member string, gen int32, topic string, part int32, offset int64) {
	h.t.Helper()
	if code := commitCode(h.commit(group, member, gen, topic, part, offset).wait()); code != 0 {
		h.t.Fatalf("commit %s %s-%d: code %d", group, topic, part, code)
	}
}

func commitCode(resp kmsg.Response) int16 {
	return resp.(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode
}

// fetch returns the committed offset of one partition (-1: none).
func (h *harness) fetch(group, topic string, part int32) int64 {
	h.t.Helper()
	r := kmsg.NewPtrOffsetFetchRequest()
	r.Version = 5
	r.Group = group
	r.Topics = []kmsg.OffsetFetchRequestTopic{{Topic: topic, Partitions: []int32{part}}}
	resp := h.call(r).(*kmsg.OffsetFetchResponse)
	if resp.ErrorCode != 0 {
		h.t.Fatalf("offset fetch %s: code %d", group, resp.ErrorCode)
	}
	return resp.Topics[0].Partitions[0].Offset
}

// describe returns a group's state and member ids, as DescribeGroups shows them.
func (h *harness) describe(group string) (string, []string) {
	h.t.Helper()
	r := kmsg.NewPtrDescribeGroupsRequest()
	r.Groups = []string{group}
	g := h.call(r).(*kmsg.DescribeGroupsResponse).Groups[0]
	var ids []string
	for _, m := range g.Members {
		ids = append(ids, m.MemberID)
	}
	return g.State, ids
}

// joined is one joined member's view of its generation.
type joined struct {
	id, leader string
	gen        int32
}

// form joins n consumers of topic "t" to group together (the configuration must have
// an initial rebalance delay, which lets them all into the first generation), syncs
// them with the leader's assignment of one partition each, and returns them in join
// order.
func (h *harness) form(group string, n int, session time.Duration) []joined {
	h.t.Helper()
	if h.co.cfg.InitialRebalanceDelay == 0 {
		h.t.Fatal("form needs an initial rebalance delay")
	}
	var joins []*pending
	for range n {
		r := joinReq(group, session, "t")
		r.MemberID = h.joinStep1(r)
		joins = append(joins, h.send(r))
	}
	// The delay is extended while members keep arriving; all have: two delays end it.
	h.advance(h.co.cfg.InitialRebalanceDelay)
	h.advance(h.co.cfg.InitialRebalanceDelay)
	ms := make([]joined, n)
	assign := map[string][]byte{}
	for i, p := range joins {
		j := p.wait().(*kmsg.JoinGroupResponse)
		if j.ErrorCode != 0 {
			h.t.Fatalf("join %d: code %d", i, j.ErrorCode)
		}
		ms[i] = joined{id: j.MemberID, leader: j.LeaderID, gen: j.Generation}
		assign[j.MemberID] = grouptest.ConsumerAssignment("t", int32(i))
	}
	var syncs []*pending
	for _, m := range ms {
		a := assign
		if m.id != m.leader {
			a = nil
		}
		syncs = append(syncs, h.send(grouptest.SyncRequest(group, m.id, m.gen, a)))
	}
	for i, p := range syncs {
		if s := p.wait().(*kmsg.SyncGroupResponse); s.ErrorCode != 0 || string(s.MemberAssignment) != string(assign[ms[i].id]) {
			h.t.Fatalf("sync %d: code %d assignment %x", i, s.ErrorCode, s.MemberAssignment)
		}
	}
	return ms
}

// state returns a group's state ("" if the coordinator holds no such group).
func (h *harness) state(group string) string {
	h.co.mu.Lock()
	defer h.co.mu.Unlock()
	if g := h.co.groups[group]; g != nil {
		return g.state.String()
	}
	return ""
}

// offsetKey is the store key of a committed offset.
func offsetKey(group, topic string, part int32) string { return cluster.OffsetKey(group, topic, part) }
