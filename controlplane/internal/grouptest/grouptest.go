// Package grouptest builds the Kafka group requests the group coordinator's tests send,
// for the unit tests of package groups and the end-to-end tests of the control-plane
// node alike, and holds Pending, the awaited answer of a request that the unit tests of
// both coordinators (package groups, package txn) hand to Handle.
package grouptest

import (
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ConsumerMeta is a consumer's subscription to topics (JoinGroup metadata).
func ConsumerMeta(topics ...string) []byte {
	m := kmsg.NewConsumerMemberMetadata()
	m.Topics = topics
	return m.AppendTo(nil)
}

// ConsumerAssignment is a consumer's assignment of parts of one topic (SyncGroup).
func ConsumerAssignment(topic string, parts ...int32) []byte {
	a := kmsg.NewConsumerMemberAssignment()
	at := kmsg.NewConsumerMemberAssignmentTopic()
	at.Topic, at.Partitions = topic, parts
	a.Topics = append(a.Topics, at)
	return a.AppendTo(nil)
}

// JoinRequest is a JoinGroup v5 of a consumer with protocol "range", a 1 s session and
// a 2 s rebalance timeout.
func JoinRequest(group, memberID string, meta []byte) *kmsg.JoinGroupRequest {
	r := kmsg.NewPtrJoinGroupRequest()
	r.Version = 5
	r.Group, r.MemberID, r.ProtocolType = group, memberID, "consumer"
	r.SessionTimeoutMillis, r.RebalanceTimeoutMillis = 1000, 2000
	p := kmsg.NewJoinGroupRequestProtocol()
	p.Name, p.Metadata = "range", meta
	r.Protocols = append(r.Protocols, p)
	return r
}

// EncodeRequest is req as a data-plane node forwards it: a request header v1
// (correlation id 7, clientID; v2, with no tagged fields, for a flexible version) and
// the body.
func EncodeRequest(req kmsg.Request, clientID string) []byte {
	b := kbin.AppendInt16(nil, req.Key())
	b = kbin.AppendInt16(b, req.GetVersion())
	b = kbin.AppendInt32(b, 7)
	b = kbin.AppendNullableString(b, &clientID)
	if req.IsFlexible() {
		b = append(b, 0) // request header v2: no tagged fields
	}
	return req.AppendTo(b)
}

// SyncRequest is a SyncGroup v3; assign (the leader's) goes in member id order.
func SyncRequest(group, member string, gen int32, assign map[string][]byte) *kmsg.SyncGroupRequest {
	r := kmsg.NewPtrSyncGroupRequest()
	r.Version = 3
	r.Group, r.MemberID, r.Generation = group, member, gen
	for _, id := range slices.Sorted(maps.Keys(assign)) {
		ga := kmsg.NewSyncGroupRequestGroupAssignment()
		ga.MemberID, ga.MemberAssignment = id, assign[id]
		r.GroupAssignment = append(r.GroupAssignment, ga)
	}
	return r
}

// HeartbeatRequest is a Heartbeat v3.
func HeartbeatRequest(group, member string, gen int32) *kmsg.HeartbeatRequest {
	r := kmsg.NewPtrHeartbeatRequest()
	r.Version = 3
	r.Group, r.MemberID, r.Generation = group, member, gen
	return r
}
