package controlplane

// Group rules that Kafka's coordinator has and a review found missing: a restarted
// static member keeps the group Stable though its subscription bytes changed, is not
// told it leads, and its new session still expires; offsets expire by the rules of
// KIP-211 (unsubscribed topics of a Stable group, OffsetCommit v2-v4's own retention),
// an emptied group keeps its protocol type; a commit too large for one etcd transaction
// is written in several.

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/internal/grouptest"
)

func TestGroupStaticMemberReplacement(t *testing.T) {
	c := newGroupCluster(t, func(g *GroupConfig) { g.InitialRebalanceDelay = 300 * time.Millisecond })
	c.registerDP(1, "", 2*time.Second)
	gt := newGroupTester(t, c)
	gt.createTopic("s", 2)

	// userData makes a subscription whose bytes differ from the last one (as a
	// restarted consumer's usually do: owned partitions, generation) on the same topic.
	static := func(instance, memberID, userData string) *kmsg.JoinGroupRequest {
		m := kmsg.NewConsumerMemberMetadata()
		m.Topics, m.UserData = []string{"s"}, []byte(userData)
		r := grouptest.JoinRequest("rg", memberID, m.AppendTo(nil))
		r.InstanceID = kmsg.StringPtr(instance)
		return r
	}
	var a, b *kmsg.JoinGroupResponse
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a = gt.call(static("i-a", "", "")).(*kmsg.JoinGroupResponse) }()
	go func() { defer wg.Done(); b = gt.call(static("i-b", "", "")).(*kmsg.JoinGroupResponse) }()
	wg.Wait()
	if a.ErrorCode != 0 || b.ErrorCode != 0 || a.Generation != b.Generation {
		t.Fatalf("joins: %d/%d generations %d/%d", a.ErrorCode, b.ErrorCode, a.Generation, b.Generation)
	}
	gen := a.Generation
	leader, follower, leaderInst, followerInst := a, b, "i-a", "i-b"
	if b.MemberID == b.LeaderID {
		leader, follower, leaderInst, followerInst = b, a, "i-b", "i-a"
	}
	assign := map[string][]byte{leader.MemberID: grouptest.ConsumerAssignment("s", 0), follower.MemberID: grouptest.ConsumerAssignment("s", 1)}
	go gt.sync("rg", follower.MemberID, gen, nil)
	if s := gt.sync("rg", leader.MemberID, gen, assign); s.ErrorCode != 0 {
		t.Fatalf("sync: %d", s.ErrorCode)
	}

	// Each restarts with new subscription bytes: same generation, no rebalance, told
	// the current leader's id (the leader its old one) with no member list, and its
	// assignment from SyncGroup.
	rejoin := func(inst string, was *kmsg.JoinGroupResponse, part int32) *kmsg.JoinGroupResponse {
		t.Helper()
		back := gt.call(static(inst, "", "restarted")).(*kmsg.JoinGroupResponse)
		if back.ErrorCode != 0 || back.Generation != gen || back.MemberID == was.MemberID {
			t.Fatalf("%s rejoin: code %d generation %d (want %d) member %q", inst, back.ErrorCode, back.Generation, gen, back.MemberID)
		}
		if back.LeaderID == back.MemberID || len(back.Members) != 0 {
			t.Fatalf("%s rejoin: leader %q, %d members: a replaced static member must not assign", inst, back.LeaderID, len(back.Members))
		}
		if s := gt.sync("rg", back.MemberID, gen, nil); s.ErrorCode != 0 || string(s.MemberAssignment) != string(grouptest.ConsumerAssignment("s", part)) {
			t.Fatalf("%s rejoin sync: %d %x", inst, s.ErrorCode, s.MemberAssignment)
		}
		return back
	}
	newFollower := rejoin(followerInst, follower, 1)
	if newFollower.LeaderID != leader.MemberID {
		t.Fatalf("follower told leader %q, want %q", newFollower.LeaderID, leader.MemberID)
	}
	newLeader := rejoin(leaderInst, leader, 0)
	if newLeader.LeaderID != leader.MemberID {
		t.Fatalf("restarted leader told leader %q, want its old id %q", newLeader.LeaderID, leader.MemberID)
	}
	if code := gt.heartbeat("rg", newFollower.MemberID, gen); code != 0 {
		t.Fatalf("follower heartbeat: %d (a static rejoin must not rebalance)", code)
	}

	// The restarted follower dies (no more heartbeats): its session (1 s) still ends,
	// and the group rebalances without it.
	checkFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		switch code := gt.heartbeat("rg", newLeader.MemberID, gen); code {
		case kerr.RebalanceInProgress.Code:
			return nil
		case 0:
			return fmt.Errorf("the silent restarted member is still in the group")
		default:
			return fmt.Errorf("leader heartbeat: %d", code)
		}
	})
}

func TestGroupOffsetExpiryRules(t *testing.T) {
	const retention = 3 * time.Second
	c := newGroupCluster(t, func(g *GroupConfig) { g.OffsetsRetention = retention })
	c.registerDP(1, "", 2*time.Second)
	gt := newGroupTester(t, c)
	gt.createTopic("sub", 1)
	gt.createTopic("other", 1)

	j := gt.join("xg", grouptest.ConsumerMeta("sub"))
	if s := gt.sync("xg", j.MemberID, j.Generation, map[string][]byte{j.MemberID: grouptest.ConsumerAssignment("sub", 0)}); s.ErrorCode != 0 {
		t.Fatalf("sync: %d", s.ErrorCode)
	}
	stop := make(chan struct{})
	beats := make(chan int16, 1)
	go func() { // the member lives throughout
		defer close(beats)
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if code := gt.heartbeat("xg", j.MemberID, j.Generation); code != 0 {
				beats <- code
				return
			}
		}
	}()
	var once sync.Once
	stopBeats := func() {
		once.Do(func() {
			close(stop)
			if code, ok := <-beats; ok {
				t.Errorf("heartbeat: %d", code)
			}
		})
	}
	defer stopBeats()
	for topic, off := range map[string]int64{"sub": 5, "other": 7} {
		if code := gt.commit("xg", j.MemberID, j.Generation, topic, 0, off, ""); code != 0 {
			t.Fatalf("commit %s: %d", topic, code)
		}
	}
	// OffsetCommit v2 with its own retention (100 ms), and one without.
	v2 := kmsg.NewPtrOffsetCommitRequest()
	v2.Version, v2.Group, v2.Generation, v2.RetentionTimeMillis = 2, "short", -1, 100
	v2.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: "sub", Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: 0, Offset: 1}}}}
	if code := gt.call(v2).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode; code != 0 {
		t.Fatalf("v2 commit: %d", code)
	}
	committed := time.Now()
	if code := gt.commit("plain", "", -1, "sub", 0, 2, ""); code != 0 {
		t.Fatalf("plain commit: %d", code)
	}
	checkFor(t, 2*retention, 50*time.Millisecond, func() error {
		if got := gt.fetch("short", "sub", 0); got[0].Offset != -1 {
			return fmt.Errorf("an offset committed with a 100 ms retention is still there: %+v", got[0])
		}
		return nil
	})
	if time.Since(committed) < retention {
		if got := gt.fetch("plain", "sub", 0); got[0].Offset != 2 {
			t.Fatalf("an offset expired before the broker's retention: %+v", got[0])
		}
	}
	// The live consumer group loses the offset of the topic it does not subscribe to,
	// and keeps the other.
	checkFor(t, 4*retention, 50*time.Millisecond, func() error {
		if got := gt.fetch("xg", "other", 0); got[0].Offset != -1 {
			return fmt.Errorf("the unsubscribed topic's offset is still there: %+v", got[0])
		}
		return nil
	})
	if got := gt.fetch("xg", "sub", 0); got[0].Offset != 5 {
		t.Fatalf("the subscribed topic's offset of a live group expired: %+v", got[0])
	}

	// An emptied consumer group stays a consumer group (ListGroups, DescribeGroups).
	stopBeats()
	lr := &kmsg.LeaveGroupRequest{Version: 3, Group: "xg", Members: []kmsg.LeaveGroupRequestMember{{MemberID: j.MemberID}}}
	gt.call(lr)
	dr := kmsg.NewPtrDescribeGroupsRequest()
	dr.Groups = []string{"xg"}
	if g := gt.call(dr).(*kmsg.DescribeGroupsResponse).Groups[0]; g.State != "Empty" || g.ProtocolType != "consumer" {
		t.Fatalf("emptied group: state %s protocol type %q", g.State, g.ProtocolType)
	}
	lg := gt.call(kmsg.NewPtrListGroupsRequest()).(*kmsg.ListGroupsResponse)
	for _, g := range lg.Groups {
		if g.Group == "xg" && g.ProtocolType != "consumer" {
			t.Fatalf("ListGroups: %+v", g)
		}
	}
	// Nobody subscribes to anything in an emptied group: its offsets may be deleted.
	od := &kmsg.OffsetDeleteRequest{Group: "xg", Topics: []kmsg.OffsetDeleteRequestTopic{{Topic: "sub", Partitions: []kmsg.OffsetDeleteRequestTopicPartition{{Partition: 0}}}}}
	if resp := gt.call(od).(*kmsg.OffsetDeleteResponse); resp.ErrorCode != 0 || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("OffsetDelete in the emptied group: %+v", resp)
	}
	if got := gt.fetch("xg", "sub", 0); got[0].Offset != -1 {
		t.Fatalf("deleted offset still there: %+v", got[0])
	}
}

// TestGroupCommitLargerThanOneTransaction commits more than one etcd request can hold
// (1,100 partitions with 4,000 bytes of metadata each: ~4.5 MB against etcd's 4 MiB):
// the commit is written in several transactions, every partition acknowledged and
// fetched back.
func TestGroupCommitLargerThanOneTransaction(t *testing.T) {
	const parts = 1100
	c := newTestCluster(t, 1)
	c.registerDP(1, "", 2*time.Second)
	gt := newGroupTester(t, c)
	gt.createTopic("big", parts)

	meta := strings.Repeat("m", 4000)
	r := kmsg.NewPtrOffsetCommitRequest()
	r.Version, r.Group, r.Generation = 7, "bulk", -1
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = "big"
	for p := range int32(parts) {
		rt.Partitions = append(rt.Partitions, kmsg.OffsetCommitRequestTopicPartition{Partition: p, Offset: int64(p) + 10, Metadata: &meta, LeaderEpoch: -1})
	}
	r.Topics = append(r.Topics, rt)
	resp := gt.call(r).(*kmsg.OffsetCommitResponse)
	for _, p := range resp.Topics[0].Partitions {
		if p.ErrorCode != 0 {
			t.Fatalf("partition %d: %d", p.Partition, p.ErrorCode)
		}
	}
	all := make([]int32, parts)
	for p := range all {
		all[p] = int32(p)
	}
	got := gt.fetch("bulk", "big", all...)
	for p := range int32(parts) {
		if got[p].Offset != int64(p)+10 || got[p].Metadata == nil || *got[p].Metadata != meta {
			t.Fatalf("partition %d: offset %d", p, got[p].Offset)
		}
	}
}

// TestGroupLeaveAndDeleteAsKafka: LeaveGroup v3 to an unknown group answers each member
// (v0-2 at the top level); DeleteGroups deletes an Empty group that only holds pending
// member ids, and answers a group named twice once.
func TestGroupLeaveAndDeleteAsKafka(t *testing.T) {
	c := newTestCluster(t, 1)
	gt := newGroupTester(t, c)

	lr := &kmsg.LeaveGroupRequest{Version: 3, Group: "ghost", Members: []kmsg.LeaveGroupRequestMember{{MemberID: "m1"}, {MemberID: "m2"}}}
	resp := gt.call(lr).(*kmsg.LeaveGroupResponse)
	if resp.ErrorCode != 0 || len(resp.Members) != 2 || resp.Members[0].ErrorCode != kerr.UnknownMemberID.Code || resp.Members[1].MemberID != "m2" {
		t.Fatalf("v3 leave of an unknown group: %+v", resp)
	}
	lr1 := &kmsg.LeaveGroupRequest{Version: 1, Group: "ghost", MemberID: "m1"}
	if code := gt.call(lr1).(*kmsg.LeaveGroupResponse).ErrorCode; code != kerr.UnknownMemberID.Code {
		t.Fatalf("v1 leave of an unknown group: %d", code)
	}

	if first := gt.call(grouptest.JoinRequest("pending-only", "", grouptest.ConsumerMeta("x"))).(*kmsg.JoinGroupResponse); first.ErrorCode != kerr.MemberIDRequired.Code {
		t.Fatalf("first join step: %d", first.ErrorCode)
	}
	dr := kmsg.NewPtrDeleteGroupsRequest()
	dr.Groups = []string{"pending-only", "pending-only", "nope"}
	got := gt.call(dr).(*kmsg.DeleteGroupsResponse).Groups
	if len(got) != 2 || got[0].Group != "pending-only" || got[0].ErrorCode != 0 || got[1].Group != "nope" || got[1].ErrorCode != kerr.GroupIDNotFound.Code {
		t.Fatalf("delete: %+v", got)
	}
	for _, g := range gt.call(kmsg.NewPtrListGroupsRequest()).(*kmsg.ListGroupsResponse).Groups {
		if g.Group == "pending-only" {
			t.Fatalf("deleted group still listed: %+v", g)
		}
	}
}
