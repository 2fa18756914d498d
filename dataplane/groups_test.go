package dataplane

import (
	"encoding/binary"
	"fmt"
	"net"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/proto"
)

func brokersOf(ids ...int32) map[int32]cluster.Broker {
	m := map[int32]cluster.Broker{}
	for _, id := range ids {
		m[id] = cluster.Broker{ID: id, Host: "127.0.0.1", Port: 9000 + id}
	}
	return m
}

// coordinators maps each of n group ids to its coordinator among brokers.
func coordinators(t *testing.T, brokers map[int32]cluster.Broker, n int) map[string]int32 {
	t.Helper()
	out := make(map[string]int32, n)
	for i := range n {
		g := fmt.Sprintf("group-%d", i)
		b, ok := groupCoordinator(brokers, g)
		if !ok {
			t.Fatalf("no coordinator for %s among %d brokers", g, len(brokers))
		}
		out[g] = b.ID
	}
	return out
}

// TestGroupCoordinatorRendezvous: the choice is a pure function of the group and the
// live ids (pinned, since nodes of different versions must agree), spreads groups
// evenly, and a node's death or arrival moves only the groups it loses or takes.
func TestGroupCoordinatorRendezvous(t *testing.T) {
	if _, ok := groupCoordinator(nil, "g"); ok {
		t.Fatal("a coordinator among no brokers")
	}
	// Pinned: a change of the weight function reassigns every group during a rolling
	// upgrade, when old and new nodes would answer FindCoordinator differently. (The
	// values were checked against an independent implementation of FNV-1a and fmix64.)
	for _, c := range []struct {
		group string
		id    int32
		want  uint64
	}{{"", 1, 0x78abdeba62484eee}, {"orders", 1, 0x11500c99f081a575}, {"orders", 2, 0xf734d0ec6092f3b2}} {
		if got := rendezvousWeight(c.group, c.id); got != c.want {
			t.Errorf("rendezvousWeight(%q, %d) = %#x, want %#x", c.group, c.id, got, c.want)
		}
	}

	const groups = 6000
	five := coordinators(t, brokersOf(1, 2, 3, 4, 5), groups)
	if again := coordinators(t, brokersOf(5, 4, 3, 2, 1), groups); !reflect.DeepEqual(five, again) {
		t.Fatal("the choice depends on more than the group and the ids")
	}
	perNode := map[int32]int{}
	for _, id := range five {
		perNode[id]++
	}
	for id := int32(1); id <= 5; id++ { // 1200 expected; 5 standard deviations is about 150
		if n := perNode[id]; n < 1000 || n > 1400 {
			t.Errorf("node %d coordinates %d of %d groups", id, n, groups)
		}
	}

	withoutThree := coordinators(t, brokersOf(1, 2, 4, 5), groups)
	for g, id := range five {
		if id != 3 && withoutThree[g] != id {
			t.Fatalf("%s moved from live node %d to %d when node 3 died", g, id, withoutThree[g])
		}
	}
	withSix := coordinators(t, brokersOf(1, 2, 3, 4, 5, 6), groups)
	moved := 0
	for g, id := range five {
		if withSix[g] != id {
			if withSix[g] != 6 {
				t.Fatalf("%s moved from %d to %d when node 6 joined", g, id, withSix[g])
			}
			moved++
		}
	}
	if moved < groups/6-200 || moved > groups/6+200 {
		t.Errorf("node 6 took %d of %d groups", moved, groups)
	}
}

// TestFindCoordinatorNoLiveNode: a node whose view has no live node (here: no control
// plane at all) answers COORDINATOR_NOT_AVAILABLE, which clients retry.
func TestFindCoordinatorNoLiveNode(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s)
	for v := int16(0); v <= 2; v++ {
		req := kmsg.NewPtrFindCoordinatorRequest()
		req.CoordinatorKey = "g"
		resp := roundTrip(t, c, req, v, int32(v)).(*kmsg.FindCoordinatorResponse)
		if resp.ErrorCode != kerr.CoordinatorNotAvailable.Code || resp.NodeID != -1 || (v >= 1) != (resp.ErrorMessage != nil) {
			t.Fatalf("v%d: %+v", v, resp)
		}
	}
}

// sampleGroupRequest is a request of the forwarded API key at version, and how many
// group-scoped error codes its refusal carries.
func sampleGroupRequest(key, version int16) (kmsg.Request, int) {
	switch key {
	case int16(kmsg.JoinGroup):
		req := kmsg.NewPtrJoinGroupRequest()
		req.Group, req.SessionTimeoutMillis, req.RebalanceTimeoutMillis, req.ProtocolType = "g", 6000, 6000, "consumer"
		req.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range", Metadata: []byte{0, 1}}}
		return req, 1
	case int16(kmsg.SyncGroup):
		req := kmsg.NewPtrSyncGroupRequest()
		req.Group, req.Generation, req.MemberID = "g", 1, "m"
		req.GroupAssignment = []kmsg.SyncGroupRequestGroupAssignment{{MemberID: "m", MemberAssignment: []byte{1}}}
		return req, 1
	case int16(kmsg.Heartbeat):
		req := kmsg.NewPtrHeartbeatRequest()
		req.Group, req.Generation, req.MemberID = "g", 1, "m"
		return req, 1
	case int16(kmsg.LeaveGroup):
		req := kmsg.NewPtrLeaveGroupRequest()
		req.Group, req.MemberID = "g", "m"
		req.Members = []kmsg.LeaveGroupRequestMember{{MemberID: "m"}}
		return req, 1
	case int16(kmsg.OffsetCommit):
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Group = "g"
		for _, topic := range []string{"t", "u"} {
			rt := kmsg.OffsetCommitRequestTopic{Topic: topic}
			for p := range int32(2) {
				rt.Partitions = append(rt.Partitions, kmsg.OffsetCommitRequestTopicPartition{Partition: p, Offset: 5, Metadata: kmsg.StringPtr("m")})
			}
			req.Topics = append(req.Topics, rt)
		}
		return req, 4
	case int16(kmsg.OffsetFetch):
		req := kmsg.NewPtrOffsetFetchRequest()
		req.Group = "g"
		req.Topics = []kmsg.OffsetFetchRequestTopic{{Topic: "t", Partitions: []int32{0, 1}}}
		if version >= 2 {
			return req, 3 // and the top-level code
		}
		return req, 2
	case listGroupsKey:
		return kmsg.NewPtrListGroupsRequest(), 1
	case int16(kmsg.DescribeGroups):
		req := kmsg.NewPtrDescribeGroupsRequest()
		req.Groups = []string{"g", "h"}
		return req, 2
	case int16(kmsg.DeleteGroups):
		req := kmsg.NewPtrDeleteGroupsRequest()
		req.Groups = []string{"g", "h"}
		return req, 2
	case int16(kmsg.OffsetDelete):
		req := kmsg.NewPtrOffsetDeleteRequest()
		req.Group = "g"
		req.Topics = []kmsg.OffsetDeleteRequestTopic{{Topic: "t", Partitions: []kmsg.OffsetDeleteRequestTopicPartition{{Partition: 0}}}}
		return req, 1
	case initProducerIDKey: // forwarded with a transactional id only
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID, req.TransactionTimeoutMillis = kmsg.StringPtr("tx"), 1000
		return req, 1
	case int16(kmsg.AddPartitionsToTxn):
		req := kmsg.NewPtrAddPartitionsToTxnRequest()
		req.TransactionalID, req.ProducerID = "tx", 5
		req.Topics = []kmsg.AddPartitionsToTxnRequestTopic{{Topic: "t", Partitions: []int32{0, 1}}}
		return req, 2
	case int16(kmsg.AddOffsetsToTxn):
		req := kmsg.NewPtrAddOffsetsToTxnRequest()
		req.TransactionalID, req.ProducerID, req.Group = "tx", 5, "g"
		return req, 1
	case int16(kmsg.EndTxn):
		req := kmsg.NewPtrEndTxnRequest()
		req.TransactionalID, req.ProducerID, req.Commit = "tx", 5, true
		return req, 1
	case int16(kmsg.TxnOffsetCommit):
		req := kmsg.NewPtrTxnOffsetCommitRequest()
		req.TransactionalID, req.Group, req.ProducerID = "tx", "g", 5
		req.Topics = []kmsg.TxnOffsetCommitRequestTopic{{Topic: "t", Partitions: []kmsg.TxnOffsetCommitRequestTopicPartition{{Partition: 0, Offset: 1}, {Partition: 1, Offset: 2}}}}
		return req, 2
	case int16(kmsg.DescribeTransactions):
		req := kmsg.NewPtrDescribeTransactionsRequest()
		req.TransactionalIDs = []string{"a", "b"}
		return req, 2
	case listTransactionsKey:
		return kmsg.NewPtrListTransactionsRequest(), 1
	}
	panic(fmt.Sprintf("no sample %s request", kmsg.NameForKey(key)))
}

// TestGroupAPIsAdvertised: the forwarded APIs are exactly those advertised with the
// forwarding handler, each with a refusal.
func TestGroupAPIsAdvertised(t *testing.T) {
	forward := reflect.ValueOf(handleGroupRequest).Pointer()
	n := 0
	for _, a := range apis {
		// InitProducerId is forwarded by its own handler, when it has a transactional id.
		if reflect.ValueOf(a.handle).Pointer() == forward || a.key == initProducerIDKey {
			n++
			if groupRefusals[a.key] == nil {
				t.Errorf("%s is forwarded without a refusal", kmsg.NameForKey(a.key))
			}
		}
	}
	if n != len(groupRefusals) {
		t.Errorf("%d APIs forwarded, %d refusals", n, len(groupRefusals))
	}
}

// TestMalformedGroupRequestCloses: a group request that does not decode closes the
// connection before anything is forwarded, at every version; the node serves on.
func TestMalformedGroupRequestCloses(t *testing.T) {
	s := startServer(t, Config{})
	for _, a := range apis {
		if groupRefusals[a.key] == nil {
			continue
		}
		for v := a.min; v <= a.max; v++ {
			req, _ := sampleGroupRequest(a.key, v)
			frame := frameRequest(req, v, 1)
			hdr, err := proto.ParseRequestHeader(frame[4:])
			if err != nil {
				t.Fatal(err)
			}
			if len(frame) == 4+hdr.Size {
				continue // an empty body (ListGroups before v4) cannot be malformed
			}
			t.Run(fmt.Sprintf("%s/v%d", kmsg.NameForKey(a.key), v), func(t *testing.T) {
				c := dial(t, s)
				frame := frame[:len(frame)-1] // the last field is cut short
				binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
				if _, err := c.Write(frame); err != nil {
					t.Fatal(err)
				}
				expectClosed(t, c)
			})
		}
	}
	checkServes(t, s)
	if got := s.metrics.groupForwards.Get(); got != 0 {
		t.Fatalf("%d malformed requests forwarded", got)
	}
}

// TestPostedCloseClosesConnection: a function posted to a connection's loop can close
// it, as a forwarded request the coordinator could not decode does
// (client.ErrGroupBadRequest).
func TestPostedCloseClosesConnection(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s)
	checkServesOn(t, c)
	s.connMu.Lock()
	if len(s.conns) != 1 {
		s.connMu.Unlock()
		t.Fatalf("%d connections", len(s.conns))
	}
	var cs *connState
	for cs = range s.conns {
	}
	s.connMu.Unlock()
	if !cs.post(func() { cs.closeRequested = true }) {
		t.Fatal("post refused on an open connection")
	}
	expectClosed(t, c)
	checkServes(t, s)
}

// checkServesOn asserts that c gets an ApiVersions answer.
func checkServesOn(t testing.TB, c net.Conn) {
	t.Helper()
	resp := roundTrip(t, c, kmsg.NewPtrApiVersionsRequest(), 3, 7).(*kmsg.ApiVersionsResponse)
	if resp.ErrorCode != 0 {
		t.Fatalf("ApiVersions: code %d", resp.ErrorCode)
	}
}
