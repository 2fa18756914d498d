package groups

// The coordinator's membership rules on a fake clock: sessions, heartbeats, the join
// and sync phases and their timeouts, the initial rebalance delay, static members and
// pending member ids.

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/internal/grouptest"
)

// delayConfig is testConfig with Kafka's initial rebalance delay scaled down: members
// joining together land in one first generation.
func delayConfig() Config {
	cfg := testConfig()
	cfg.InitialRebalanceDelay = 300 * time.Millisecond
	return cfg
}

func TestSessionExpiryRemovesMemberAndRebalances(t *testing.T) {
	h := newHarness(t, delayConfig(), nil)
	ms := h.form("g", 2, time.Second)
	a, b := ms[0], ms[1]

	// a heartbeats, b is silent: at b's session end it is removed and the group
	// rebalances without it.
	h.advance(600 * time.Millisecond)
	if code := h.heartbeat("g", a.id, a.gen); code != 0 {
		t.Fatalf("heartbeat: %d", code)
	}
	h.advance(399 * time.Millisecond)
	if st, ids := h.describe("g"); st != "Stable" || len(ids) != 2 {
		t.Fatalf("before the session ends: %s %v", st, ids)
	}
	h.advance(time.Millisecond)
	if st, ids := h.describe("g"); st != "PreparingRebalance" || len(ids) != 1 || ids[0] != a.id {
		t.Fatalf("after b's session ended: %s %v, want PreparingRebalance with %s", st, ids, a.id)
	}
	if got := h.co.metrics.sessionExpiries.Get(); got != 1 {
		t.Fatalf("session expiries: %d", got)
	}
	if code := h.heartbeat("g", a.id, a.gen); code != kerr.RebalanceInProgress.Code {
		t.Fatalf("a's heartbeat: %d, want REBALANCE_IN_PROGRESS", code)
	}
	if code := h.heartbeat("g", b.id, b.gen); code != kerr.UnknownMemberID.Code {
		t.Fatalf("b's heartbeat: %d, want UNKNOWN_MEMBER_ID", code)
	}
	// a rejoins: the only member, the next generation forms at once with a leading.
	r := joinReq("g", time.Second, "t")
	r.MemberID = a.id
	j := h.call(r).(*kmsg.JoinGroupResponse)
	if j.ErrorCode != 0 || j.Generation != a.gen+1 || j.LeaderID != a.id || len(j.Members) != 1 {
		t.Fatalf("rejoin: code %d generation %d leader %q members %d", j.ErrorCode, j.Generation, j.LeaderID, len(j.Members))
	}
}

func TestHeartbeatKeepsSession(t *testing.T) {
	h := newHarness(t, delayConfig(), nil)
	m := h.form("g", 1, time.Second)[0]
	for range 10 { // five sessions long
		h.advance(500 * time.Millisecond)
		if code := h.heartbeat("g", m.id, m.gen); code != 0 {
			t.Fatalf("heartbeat at %v: %d", h.clock.Since(time.Time{}), code)
		}
	}
	if st, ids := h.describe("g"); st != "Stable" || len(ids) != 1 {
		t.Fatalf("heartbeating member: %s %v", st, ids)
	}
	// Silent from here: gone one session after its last heartbeat, and the group with
	// no members is Empty in a new generation. (Advanced in two steps: a session check
	// that fires re-arms for what is left of the session as the clock then reads.)
	h.advance(500 * time.Millisecond)
	h.advance(499 * time.Millisecond)
	if st, _ := h.describe("g"); st != "Stable" {
		t.Fatalf("a session early: %s", st)
	}
	h.advance(time.Millisecond)
	if st, ids := h.describe("g"); st != "Empty" || len(ids) != 0 {
		t.Fatalf("after the session: %s %v", st, ids)
	}
}

func TestRebalanceTimeoutRemovesMembersThatDoNotRejoin(t *testing.T) {
	h := newHarness(t, delayConfig(), nil)
	// Sessions (10 s) outlast the rebalance timeout (2 s): only the latter removes b.
	ms := h.form("g", 2, 10*time.Second)
	a, b := ms[0], ms[1]

	c := joinReq("g", 10*time.Second, "t")
	c.MemberID = h.joinStep1(c)
	cJoin := h.send(c)
	if code := h.heartbeat("g", a.id, a.gen); code != kerr.RebalanceInProgress.Code {
		t.Fatalf("heartbeat: %d, want REBALANCE_IN_PROGRESS", code)
	}
	ra := joinReq("g", 10*time.Second, "t")
	ra.MemberID = a.id
	aJoin := h.send(ra)
	// b keeps heartbeating but does not rejoin.
	h.advance(1999 * time.Millisecond)
	if code := h.heartbeat("g", b.id, b.gen); code != kerr.RebalanceInProgress.Code {
		t.Fatalf("b's heartbeat: %d", code)
	}
	if aJoin.answered() || cJoin.answered() {
		t.Fatal("the join phase ended before the rebalance timeout with a member missing")
	}
	h.advance(time.Millisecond)
	ja, jc := aJoin.wait().(*kmsg.JoinGroupResponse), cJoin.wait().(*kmsg.JoinGroupResponse)
	if ja.ErrorCode != 0 || jc.ErrorCode != 0 || ja.Generation != a.gen+1 || jc.Generation != a.gen+1 {
		t.Fatalf("joins: codes %d/%d generations %d/%d", ja.ErrorCode, jc.ErrorCode, ja.Generation, jc.Generation)
	}
	leader := ja
	if jc.MemberID == jc.LeaderID {
		leader = jc
	}
	if len(leader.Members) != 2 {
		t.Fatalf("leader sees %d members, want a and c", len(leader.Members))
	}
	if code := h.heartbeat("g", b.id, b.gen); code != kerr.UnknownMemberID.Code {
		t.Fatalf("b after the rebalance timeout: %d, want UNKNOWN_MEMBER_ID", code)
	}
}

func TestSyncTimeoutRemovesMembersThatDoNotSync(t *testing.T) {
	h := newHarness(t, delayConfig(), nil)
	var joins []*pending
	for range 2 {
		r := joinReq("g", 10*time.Second, "t")
		r.MemberID = h.joinStep1(r)
		joins = append(joins, h.send(r))
	}
	h.advance(300 * time.Millisecond)
	h.advance(300 * time.Millisecond)
	j0, j1 := joins[0].wait().(*kmsg.JoinGroupResponse), joins[1].wait().(*kmsg.JoinGroupResponse)
	leader, follower := j0, j1
	if j1.MemberID == j1.LeaderID {
		leader, follower = j1, j0
	}
	// The follower syncs and waits for the leader's assignment, which never comes.
	fsync := h.send(grouptest.SyncRequest("g", follower.MemberID, follower.Generation, nil))
	h.advance(1999 * time.Millisecond)
	if fsync.answered() {
		t.Fatal("the follower's SyncGroup was answered before the leader's")
	}
	h.advance(time.Millisecond)
	if code := fsync.wait().(*kmsg.SyncGroupResponse).ErrorCode; code != kerr.RebalanceInProgress.Code {
		t.Fatalf("follower's sync at the timeout: %d, want REBALANCE_IN_PROGRESS", code)
	}
	if st, ids := h.describe("g"); st != "PreparingRebalance" || len(ids) != 1 || ids[0] != follower.MemberID {
		t.Fatalf("after the sync timeout: %s %v, want the follower alone", st, ids)
	}
	if code := h.heartbeat("g", leader.MemberID, leader.Generation); code != kerr.UnknownMemberID.Code {
		t.Fatalf("the leader that did not sync: %d, want UNKNOWN_MEMBER_ID", code)
	}
}

func TestJoinSyncRoundWithSeveralMembers(t *testing.T) {
	h := newHarness(t, delayConfig(), nil)
	const n = 3
	var joins []*pending
	for range n {
		r := joinReq("g", time.Second, "t")
		r.MemberID = h.joinStep1(r)
		joins = append(joins, h.send(r))
	}
	h.advance(300 * time.Millisecond)
	h.advance(300 * time.Millisecond)
	var answers []*kmsg.JoinGroupResponse
	for _, p := range joins {
		answers = append(answers, p.wait().(*kmsg.JoinGroupResponse))
	}
	leaders := 0
	for _, j := range answers {
		if j.ErrorCode != 0 || j.Generation != 1 || *j.Protocol != "range" || j.LeaderID != answers[0].LeaderID {
			t.Fatalf("join: %+v", j)
		}
		if j.MemberID == j.LeaderID {
			leaders++
			if len(j.Members) != n {
				t.Fatalf("leader got %d members, want %d", len(j.Members), n)
			}
		} else if len(j.Members) != 0 {
			t.Fatalf("a follower got %d members", len(j.Members))
		}
	}
	if leaders != 1 {
		t.Fatalf("%d leaders", leaders)
	}
	assign := map[string][]byte{}
	for i, j := range answers {
		assign[j.MemberID] = grouptest.ConsumerAssignment("t", int32(i))
	}
	// Followers sync first and wait for the leader's assignment.
	syncs := map[string]*pending{}
	for _, j := range answers {
		if j.MemberID != j.LeaderID {
			syncs[j.MemberID] = h.send(grouptest.SyncRequest("g", j.MemberID, 1, nil))
		}
	}
	for id, p := range syncs {
		if p.answered() {
			t.Fatalf("follower %s answered before the leader synced", id)
		}
	}
	leaderID := answers[0].LeaderID
	syncs[leaderID] = h.send(grouptest.SyncRequest("g", leaderID, 1, assign))
	for id, p := range syncs {
		if s := p.wait().(*kmsg.SyncGroupResponse); s.ErrorCode != 0 || string(s.MemberAssignment) != string(assign[id]) {
			t.Fatalf("sync %s: code %d assignment %x", id, s.ErrorCode, s.MemberAssignment)
		}
	}
	if st, ids := h.describe("g"); st != "Stable" || len(ids) != n {
		t.Fatalf("after the round: %s %v", st, ids)
	}
	if !h.st.has(cluster.GroupKey("g")) {
		t.Fatal("the Stable generation was not written")
	}
}

func TestInitialDelayExtendsWhileMembersArrive(t *testing.T) {
	h := newHarness(t, delayConfig(), nil)
	ra := joinReq("g", time.Second, "t")
	ra.MemberID = h.joinStep1(ra)
	aJoin := h.send(ra)
	h.advance(200 * time.Millisecond)
	rb := joinReq("g", time.Second, "t")
	rb.MemberID = h.joinStep1(rb)
	bJoin := h.send(rb)
	// The delay ends at 300 ms, but b arrived during it: it extends by another delay.
	h.advance(100 * time.Millisecond)
	if aJoin.answered() || bJoin.answered() {
		t.Fatal("the first generation formed while members were still arriving")
	}
	h.advance(299 * time.Millisecond)
	if aJoin.answered() {
		t.Fatal("the extension ended early")
	}
	h.advance(time.Millisecond)
	ja, jb := aJoin.wait().(*kmsg.JoinGroupResponse), bJoin.wait().(*kmsg.JoinGroupResponse)
	if ja.ErrorCode != 0 || jb.ErrorCode != 0 || ja.Generation != 1 || jb.Generation != 1 {
		t.Fatalf("joins: codes %d/%d generations %d/%d", ja.ErrorCode, jb.ErrorCode, ja.Generation, jb.Generation)
	}
}

func TestStaticMemberRejoinKeepsGeneration(t *testing.T) {
	h := newHarness(t, delayConfig(), nil)
	static := func(instance, userData string) *kmsg.JoinGroupRequest {
		md := kmsg.NewConsumerMemberMetadata()
		md.Topics, md.UserData = []string{"t"}, []byte(userData)
		r := grouptest.JoinRequest("sg", "", md.AppendTo(nil))
		r.InstanceID = kmsg.StringPtr(instance)
		return r
	}
	// Static members join without the MEMBER_ID_REQUIRED step.
	aJoin, bJoin := h.send(static("i-a", "")), h.send(static("i-b", ""))
	h.advance(300 * time.Millisecond)
	h.advance(300 * time.Millisecond)
	ja, jb := aJoin.wait().(*kmsg.JoinGroupResponse), bJoin.wait().(*kmsg.JoinGroupResponse)
	leader, follower, followerInst := ja, jb, "i-b"
	if jb.MemberID == jb.LeaderID {
		leader, follower, followerInst = jb, ja, "i-a"
	}
	assign := map[string][]byte{leader.MemberID: grouptest.ConsumerAssignment("t", 0), follower.MemberID: grouptest.ConsumerAssignment("t", 1)}
	fsync := h.send(grouptest.SyncRequest("sg", follower.MemberID, 1, nil))
	if s := h.call(grouptest.SyncRequest("sg", leader.MemberID, 1, assign)).(*kmsg.SyncGroupResponse); s.ErrorCode != 0 {
		t.Fatalf("leader sync: %d", s.ErrorCode)
	}
	fsync.wait()

	// The follower restarts with other subscription bytes: a new member id, the same
	// generation, the current leader named, no member list, and its old assignment.
	back := h.call(static(followerInst, "restarted")).(*kmsg.JoinGroupResponse)
	if back.ErrorCode != 0 || back.Generation != 1 || back.MemberID == follower.MemberID ||
		back.LeaderID != leader.MemberID || len(back.Members) != 0 {
		t.Fatalf("static rejoin: %+v", back)
	}
	if s := h.call(grouptest.SyncRequest("sg", back.MemberID, 1, nil)).(*kmsg.SyncGroupResponse); s.ErrorCode != 0 || string(s.MemberAssignment) != string(assign[follower.MemberID]) {
		t.Fatalf("static rejoin sync: %d %x", s.ErrorCode, s.MemberAssignment)
	}
	old := kmsg.NewPtrHeartbeatRequest()
	old.Version, old.Group, old.MemberID, old.Generation, old.InstanceID = 3, "sg", follower.MemberID, 1, kmsg.StringPtr(followerInst)
	if code := h.call(old).(*kmsg.HeartbeatResponse).ErrorCode; code != kerr.FencedInstanceID.Code {
		t.Fatalf("the old incarnation: %d, want FENCED_INSTANCE_ID", code)
	}
	if code := h.heartbeat("sg", leader.MemberID, 1); code != 0 {
		t.Fatalf("leader heartbeat: %d (a static rejoin must not rebalance)", code)
	}
	// The restarted member's session still ends: the leader heartbeats, it does not.
	h.advance(600 * time.Millisecond)
	if code := h.heartbeat("sg", leader.MemberID, 1); code != 0 {
		t.Fatalf("leader heartbeat: %d", code)
	}
	h.advance(400 * time.Millisecond)
	if st, ids := h.describe("sg"); st != "PreparingRebalance" || len(ids) != 1 || ids[0] != leader.MemberID {
		t.Fatalf("after the restarted member's session: %s %v", st, ids)
	}
}

func TestPendingMemberExpires(t *testing.T) {
	h := newHarness(t, testConfig(), nil)
	r := joinReq("pg", 200*time.Millisecond, "t")
	id := h.joinStep1(r)
	h.advance(199 * time.Millisecond)
	if h.state("pg") != "Empty" {
		t.Fatalf("group with a pending member: %q", h.state("pg"))
	}
	h.advance(time.Millisecond)
	if st := h.state("pg"); st != "" {
		t.Fatalf("a group holding only an expired pending id is kept: %s", st)
	}
	r.MemberID = id
	if code := h.call(r).(*kmsg.JoinGroupResponse).ErrorCode; code != kerr.UnknownMemberID.Code {
		t.Fatalf("second step after expiry: %d, want UNKNOWN_MEMBER_ID", code)
	}
}
