package controlplane_test

// Group rules end to end, where etcd or the wire is part of the rule: a commit too large
// for one etcd transaction is written in several; LeaveGroup and DeleteGroups answer as
// Kafka's do. (The rules of sessions, rebalances, static members and offset expiry are
// unit-tested on a fake clock in package groups.)

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/internal/grouptest"
)

// TestGroupCommitLargerThanOneTransaction commits more than one etcd request can hold
// (1,100 partitions with 4,000 bytes of metadata each: ~4.5 MB against etcd's 4 MiB):
// the commit is written in several transactions, every partition acknowledged and
// fetched back.
func TestGroupCommitLargerThanOneTransaction(t *testing.T) {
	const parts = 1100
	c := newControlPlane(t, 1)
	c.FakeDP(t, 1, 2*time.Second)
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
	c := newControlPlane(t, 1)
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
