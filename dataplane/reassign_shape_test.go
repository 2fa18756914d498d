package dataplane

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/proto"
)

// TestReassignmentRequestShapes: kmsg's encodings of AlterPartitionReassignments and
// ListPartitionReassignments v0, with and without content, have the shapes the handlers
// check, and a body cut short does not.
func TestReassignmentRequestShapes(t *testing.T) {
	alter := kmsg.NewPtrAlterPartitionAssignmentsRequest()
	alter.Topics = []kmsg.AlterPartitionAssignmentsRequestTopic{{Topic: "t", Partitions: []kmsg.AlterPartitionAssignmentsRequestTopicPartition{
		{Partition: 0, Replicas: []int32{1, 2, 3}}, {Partition: 1}}}}
	alter.Topics[0].UnknownTags.Set(4, []byte("x"))
	list := kmsg.NewPtrListPartitionReassignmentsRequest()
	listSome := kmsg.NewPtrListPartitionReassignmentsRequest()
	listSome.Topics = []kmsg.ListPartitionReassignmentsRequestTopic{{Topic: "t", Partitions: []int32{0, 1}}}
	for _, tc := range []struct {
		name  string
		req   kmsg.Request
		shape proto.Shape
	}{
		{"alter empty", kmsg.NewPtrAlterPartitionAssignmentsRequest(), alterReassignmentsRequestV0},
		{"alter", alter, alterReassignmentsRequestV0},
		{"list all", list, listReassignmentsRequestV0},
		{"list some", listSome, listReassignmentsRequestV0},
	} {
		body := tc.req.AppendTo(nil)
		if err := proto.CheckShape(body, tc.shape); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if err := proto.CheckShape(body[:len(body)-2], tc.shape); err == nil {
			t.Errorf("%s: a truncated body passes", tc.name)
		}
	}
}
