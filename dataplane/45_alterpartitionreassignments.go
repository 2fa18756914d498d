package dataplane

// AlterPartitionReassignments, key 45, version 0 (flexible; KIP-455). Each partition
// names its target replicas, or null to cancel the reassignment in progress.
//
// Reassignments are the controller's: the request is forwarded as the client sent it to
// the active controller's internal listener, as ElectLeaders is (43_electleaders.go),
// and the controller answers with the response body once the reassignments are
// committed (controlplane/reassign_server.go; the per-partition codes are Kafka's:
// UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICA_ASSIGNMENT for an empty list, duplicates
// or a node not registered, NO_REASSIGNMENT_IN_PROGRESS for a cancel without one).
// This node then follows the new assignment through its metadata view (Reconcile). No
// controller to answer: every partition asked for, and the request, get
// REQUEST_TIMED_OUT.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/proto"
)

const alterPartitionReassignmentsKey = int16(kmsg.AlterPartitionAssignments)

// alterReassignmentsRequestV0 is the v0 request's shape: timeout, topics [name,
// partitions [partition, replicas (nullable)]].
var alterReassignmentsRequestV0 = proto.Shape{proto.Int32,
	proto.CompactArray(proto.CompactString, proto.CompactArray(proto.Int32, proto.CompactArray(proto.Int32), proto.Tags), proto.Tags),
	proto.Tags}

func handleAlterPartitionReassignments(s *Server, r *request) error {
	req := kmsg.NewPtrAlterPartitionAssignmentsRequest()
	frame, err := decodeForwarded(r, req, alterReassignmentsRequestV0)
	if err != nil {
		return err
	}
	s.forwardToController(r, frame, req.TimeoutMillis, "AlterPartitionReassignments", nil, func(msg string) kmsg.Response {
		resp := req.ResponseKind().(*kmsg.AlterPartitionAssignmentsResponse)
		code := kerr.RequestTimedOut.Code
		resp.ErrorCode, resp.ErrorMessage = code, &msg
		for _, t := range req.Topics {
			rt := kmsg.NewAlterPartitionAssignmentsResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewAlterPartitionAssignmentsResponseTopicPartition()
				rp.Partition, rp.ErrorCode, rp.ErrorMessage = p.Partition, code, &msg
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	})
	return nil
}
