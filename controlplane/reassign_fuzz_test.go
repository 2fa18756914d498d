package controlplane

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// forwardedFrame encodes req (a flexible v0) with its request header v2, as a
// data-plane node forwards it.
func forwardedFrame(req kmsg.Request) []byte {
	b := kbin.AppendInt16(nil, req.Key())
	b = kbin.AppendInt16(b, req.GetVersion())
	b = kbin.AppendInt32(b, 7)
	id := "fuzz"
	b = kbin.AppendNullableString(b, &id)
	b = append(b, 0)
	return req.AppendTo(b)
}

// FuzzReassignmentRequests: any bytes forwarded as an AlterPartitionReassignments or a
// ListPartitionReassignments request either decode or are refused, without a panic or
// an allocation the bytes do not account for (the shape is checked first); what
// decodes encodes back to the same request. Seeds are requests with topics, with a
// cancel (null replicas) and with null topics.
func FuzzReassignmentRequests(f *testing.F) {
	alter := kmsg.NewPtrAlterPartitionAssignmentsRequest()
	alter.TimeoutMillis = 1000
	f.Add(forwardedFrame(alter))
	alter.Topics = []kmsg.AlterPartitionAssignmentsRequestTopic{{Topic: "t", Partitions: []kmsg.AlterPartitionAssignmentsRequestTopicPartition{
		{Partition: 0, Replicas: []int32{1, 2, 3}}, {Partition: 1, Replicas: nil}}}}
	f.Add(forwardedFrame(alter))
	list := kmsg.NewPtrListPartitionReassignmentsRequest()
	f.Add(forwardedFrame(list)) // null topics: every partition
	list.Topics = []kmsg.ListPartitionReassignmentsRequestTopic{{Topic: "t", Partitions: []int32{0, 2}}}
	f.Add(forwardedFrame(list))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !isReassignmentRequest(b) {
			return
		}
		var req kmsg.Request = kmsg.NewPtrAlterPartitionAssignmentsRequest()
		shape := alterReassignmentsRequestV0
		if b[1] == byte(kmsg.ListPartitionReassignments) {
			req, shape = kmsg.NewPtrListPartitionReassignmentsRequest(), listReassignmentsRequestV0
		}
		if err := parseForwarded(b, req, 0, shape); err != nil {
			return
		}
		again := req.ResponseKind().RequestKind()
		if err := parseForwarded(forwardedFrame(req), again, 0, shape); err != nil {
			t.Fatalf("re-encoded request does not decode: %v", err)
		}
		if !bytes.Equal(again.AppendTo(nil), req.AppendTo(nil)) {
			t.Fatal("decode(encode(x)) != x")
		}
	})
}
