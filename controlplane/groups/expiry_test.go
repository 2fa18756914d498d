package groups

// Offset expiry (offsets.retention.minutes, KIP-211) on a fake clock: when an emptied
// group goes, when a Stable group loses offsets, manual commits, OffsetCommit v2-v4's
// own retention, commits in flight, and a failed expiry.

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

const retention = time.Hour

// emptied forms a one-member consumer group that commits t-0 at 9 and leaves: the group
// is Empty from the clock's now on.
func (h *harness) emptied(group string) {
	h.t.Helper()
	m := h.form(group, 1, time.Second)[0]
	h.mustCommit(group, m.id, m.gen, "t", 0, 9)
	lr := &kmsg.LeaveGroupRequest{Version: 3, Group: group, Members: []kmsg.LeaveGroupRequestMember{{MemberID: m.id}}}
	if resp := h.call(lr).(*kmsg.LeaveGroupResponse); resp.Members[0].ErrorCode != 0 {
		h.t.Fatalf("leave: %d", resp.Members[0].ErrorCode)
	}
	h.flush()
	if st := h.state(group); st != "Empty" {
		h.t.Fatalf("after the leave: %s", st)
	}
}

func TestOffsetsExpireRetentionAfterGroupEmpties(t *testing.T) {
	h := newHarness(t, delayConfig(), nil)
	h.emptied("eg")
	// An emptied consumer group stays one, with its offsets, for the retention period.
	h.advance(retention - time.Millisecond)
	h.expire()
	if got := h.fetch("eg", "t", 0); got != 9 {
		t.Fatalf("offset a moment before the retention: %d", got)
	}
	h.advance(time.Millisecond)
	h.expire()
	if st := h.state("eg"); st != "" {
		t.Fatalf("group past the retention: %s", st)
	}
	if h.st.has(cluster.GroupKey("eg")) || h.st.has(offsetKey("eg", "t", 0)) {
		t.Fatal("the group's keys were not deleted")
	}
	if got := h.co.metrics.groupsExpired.Get(); got != 1 {
		t.Fatalf("groups expired: %d", got)
	}
}

func TestStableGroupLosesUnsubscribedOffsets(t *testing.T) {
	cfg := delayConfig()
	cfg.MaxSessionTimeout = 2 * retention
	h := newHarness(t, cfg, nil)
	// A session longer than the retention: the member lives throughout.
	m := h.form("xg", 1, 2*retention)[0]
	h.mustCommit("xg", m.id, m.gen, "t", 0, 5)     // subscribed
	h.mustCommit("xg", m.id, m.gen, "other", 0, 7) // not subscribed
	h.advance(retention - time.Millisecond)
	h.expire()
	if got := h.fetch("xg", "other", 0); got != 7 {
		t.Fatalf("unsubscribed offset before its retention: %d", got)
	}
	h.advance(time.Millisecond)
	h.expire()
	if got := h.fetch("xg", "other", 0); got != -1 {
		t.Fatalf("unsubscribed offset past its retention: %d", got)
	}
	if got := h.fetch("xg", "t", 0); got != 5 {
		t.Fatalf("a Stable group lost the offset of a topic it subscribes to: %d", got)
	}
	if h.st.has(offsetKey("xg", "other", 0)) || !h.st.has(offsetKey("xg", "t", 0)) {
		t.Fatal("store keys do not match")
	}
}

func TestManualOffsetsExpireAfterCommit(t *testing.T) {
	h := newHarness(t, testConfig(), nil)
	h.mustCommit("manual", "", -1, "t", 0, 4)
	h.mustCommit("manual2", "", -1, "t", 0, 6)
	h.advance(40 * time.Minute)
	h.mustCommit("manual2", "", -1, "t", 0, 6) // recommitted within the retention
	h.advance(20 * time.Minute)
	h.expire()
	if got := h.fetch("manual", "t", 0); got != -1 {
		t.Fatalf("a manual offset outlived its retention: %d", got)
	}
	if st := h.state("manual"); st != "" {
		t.Fatalf("a manual group without offsets is kept: %s", st)
	}
	if got := h.fetch("manual2", "t", 0); got != 6 {
		t.Fatalf("a recommitted manual offset expired: %d", got)
	}
	h.advance(40 * time.Minute)
	h.expire()
	if got := h.fetch("manual2", "t", 0); got != -1 {
		t.Fatalf("the recommitted offset outlived its retention: %d", got)
	}
}

func TestCommitRetentionV2ToV4(t *testing.T) {
	h := newHarness(t, testConfig(), nil)
	commit := func(group string, version int16, retentionMs int64) {
		t.Helper()
		r := kmsg.NewPtrOffsetCommitRequest()
		r.Version, r.Group, r.Generation, r.RetentionTimeMillis = version, group, -1, retentionMs
		r.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: "t", Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: 0, Offset: 1}}}}
		if code := commitCode(h.call(r)); code != 0 {
			t.Fatalf("commit v%d: %d", version, code)
		}
	}
	commit("v2", 2, 100)
	commit("v4", 4, 200)
	commit("v2-default", 2, -1) // -1: the broker's retention
	commit("v5", 5, 100)        // v5 has no retention of its own: the field is ignored
	h.advance(99 * time.Millisecond)
	h.expire()
	if got := h.fetch("v2", "t", 0); got != 1 {
		t.Fatalf("v2 offset before its 100 ms: %d", got)
	}
	h.advance(time.Millisecond)
	h.expire()
	if got := h.fetch("v2", "t", 0); got != -1 {
		t.Fatalf("v2 offset after its 100 ms: %d", got)
	}
	if got := h.fetch("v4", "t", 0); got != 1 {
		t.Fatalf("v4 offset before its 200 ms: %d", got)
	}
	h.advance(100 * time.Millisecond)
	h.expire()
	if got := h.fetch("v4", "t", 0); got != -1 {
		t.Fatalf("v4 offset after its 200 ms: %d", got)
	}
	for _, g := range []string{"v2-default", "v5"} {
		if got := h.fetch(g, "t", 0); got != 1 {
			t.Fatalf("%s offset expired before the broker's retention: %d", g, got)
		}
	}
}

// TestCommitRetentionOutlivesEmptyGroup: an emptied group past the retention whose
// offset was committed with a longer retention of its own keeps that offset, and
// itself, until then.
func TestCommitRetentionOutlivesEmptyGroup(t *testing.T) {
	h := newHarness(t, delayConfig(), nil)
	h.emptied("eg")
	r := kmsg.NewPtrOffsetCommitRequest()
	r.Version, r.Group, r.Generation, r.RetentionTimeMillis = 2, "eg", -1, int64(2*retention/time.Millisecond)
	r.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: "t", Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: 1, Offset: 3}}}}
	if code := commitCode(h.call(r)); code != 0 {
		t.Fatalf("commit: %d", code)
	}
	h.advance(retention)
	h.expire()
	if got := h.fetch("eg", "t", 0); got != -1 {
		t.Fatalf("offset without a retention of its own outlived the group's: %d", got)
	}
	if got := h.fetch("eg", "t", 1); got != 3 || h.state("eg") != "Empty" {
		t.Fatalf("offset with a longer retention: %d, group %q", got, h.state("eg"))
	}
	h.advance(retention)
	h.expire()
	if st := h.state("eg"); st != "" {
		t.Fatalf("group after every retention passed: %s", st)
	}
}

func TestNoExpiryWhileCommitInFlight(t *testing.T) {
	h := newHarness(t, delayConfig(), nil)
	h.mustCommit("m", "", -1, "t", 0, 1)
	h.emptied("eg")
	h.advance(retention)
	// Both a manual offset and an emptied group are due; a commit to each is being
	// written when expiry runs.
	h.st.hold()
	mc := h.commit("m", "", -1, "t", 0, 2)
	ec := h.commit("eg", "", -1, "t", 0, 10)
	h.co.expire(h.clock.Now())
	h.st.release()
	if code := commitCode(mc.wait()); code != 0 {
		t.Fatalf("manual commit: %d", code)
	}
	if code := commitCode(ec.wait()); code != 0 {
		t.Fatalf("commit to the emptied group: %d", code)
	}
	h.flush()
	if got := h.fetch("m", "t", 0); got != 2 || !h.st.has(offsetKey("m", "t", 0)) {
		t.Fatalf("an offset committed while expiry ran was lost: %d", got)
	}
	if got := h.fetch("eg", "t", 0); got != 10 || h.state("eg") != "Empty" || !h.st.has(cluster.GroupKey("eg")) {
		t.Fatalf("emptied group with a commit in flight: offset %d state %q", got, h.state("eg"))
	}
}

func TestFailedExpiryKeepsTimeGroupEmptied(t *testing.T) {
	h := newHarness(t, delayConfig(), nil)
	h.emptied("eg")
	emptiedAt := h.clock.Now()
	h.advance(retention)
	errEtcd := errors.New("etcd unavailable")
	h.st.setFail(func(o Op) error {
		if o.Key == cluster.GroupKey("eg") {
			return errEtcd
		}
		return nil
	})
	h.expire()
	if st := h.state("eg"); st != "Empty" || !h.st.has(cluster.GroupKey("eg")) {
		t.Fatalf("after a failed delete: state %q", st)
	}
	h.co.mu.Lock()
	since := h.co.groups["eg"].stateSince
	h.co.mu.Unlock()
	if !since.Equal(emptiedAt) {
		t.Fatalf("the group emptied at %v; after a failed expiry it says %v", emptiedAt, since)
	}
	// The next pass, with the store back, deletes it without waiting another period.
	h.st.setFail(nil)
	h.expire()
	if st := h.state("eg"); st != "" || h.st.has(cluster.GroupKey("eg")) {
		t.Fatalf("after the store came back: state %q", st)
	}
}

// TestRunExpiresOnItsTicker: Run loads, calls loaded, and runs expiry on the clock's
// ticker (a quarter of the retention at most).
func TestRunExpiresOnItsTicker(t *testing.T) {
	clock := &testClock{FakeClock: clockwork.NewFakeClock()}
	st := newMemStore()
	co := New(Options{Config: testConfig(), Store: st, Clock: clock, Partitions: func(string) (int32, bool) { return 1, true }})
	h := &harness{t: t, clock: clock, st: st, co: co}
	ctx, cancel := context.WithCancel(context.Background())
	loaded, done := make(chan struct{}), make(chan struct{})
	go func() { defer close(done); co.Run(ctx, func(context.Context) { close(loaded) }) }()
	defer func() { cancel(); <-done }()
	select {
	case <-loaded:
	case <-time.After(settleWait):
		t.Fatal("Run did not load")
	}
	h.mustCommit("m", "", -1, "t", 0, 1)
	// The ticker is armed once Run is past loaded; expiry runs at the first tick after
	// the retention.
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(retention + co.expiryInterval())
	h.waitFor("the offset to expire", func() error {
		if st.has(offsetKey("m", "t", 0)) {
			return errors.New("offset still stored")
		}
		return nil
	})
}
