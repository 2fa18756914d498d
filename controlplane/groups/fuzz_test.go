package groups

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/internal/grouptest"
)

// FuzzGroupRequest: any bytes forwarded as a group request either decode or are
// refused; none panics. Seeds are real requests of every group API.
func FuzzGroupRequest(f *testing.F) {
	join := grouptest.JoinRequest("g", "", grouptest.ConsumerMeta("t"))
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Version, sync.Group, sync.MemberID = 3, "g", "m"
	sync.GroupAssignment = []kmsg.SyncGroupRequestGroupAssignment{{MemberID: "m", MemberAssignment: grouptest.ConsumerAssignment("t", 0)}}
	commit := kmsg.NewPtrOffsetCommitRequest()
	commit.Version, commit.Group = 7, "g"
	commit.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: "t", Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: 1, Offset: 5}}}}
	for _, r := range []kmsg.Request{join, sync, commit, &kmsg.HeartbeatRequest{Version: 3, Group: "g"},
		&kmsg.LeaveGroupRequest{Version: 3, Group: "g"}, &kmsg.OffsetFetchRequest{Version: 5, Group: "g"},
		&kmsg.ListGroupsRequest{Version: 2}, &kmsg.DescribeGroupsRequest{Version: 4, Groups: []string{"g"}},
		&kmsg.DeleteGroupsRequest{Version: 1, Groups: []string{"g"}}, &kmsg.OffsetDeleteRequest{Group: "g"}} {
		f.Add(grouptest.EncodeRequest(r, "fuzz"))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, req, err := ParseRequest(b, nil)
		if err != nil {
			return
		}
		switch r := req.(type) {
		case *kmsg.JoinGroupRequest:
			consumerMetadataValid(r.Protocols)
		case *kmsg.SyncGroupRequest:
			g := newGroup("g", time.Time{})
			g.protocolType = consumerProtocolType
			for _, a := range r.GroupAssignment {
				_ = (&Coordinator{}).checkAssignment(g, a.MemberAssignment)
			}
		}
	})
}
