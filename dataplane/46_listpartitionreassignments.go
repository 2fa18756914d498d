package dataplane

// ListPartitionReassignments, key 46, version 0 (flexible; KIP-455): the partitions
// being reassigned, with their replicas and the replicas being added and removed; null
// topics mean every partition being reassigned.
//
// Forwarded to the active controller as AlterPartitionReassignments is
// (45_alterpartitionreassignments.go), which answers from its view, so a list that
// follows an alter sees it. No controller to answer: the request gets
// REQUEST_TIMED_OUT.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/proto"
)

const listPartitionReassignmentsKey = int16(kmsg.ListPartitionReassignments)

// listReassignmentsRequestV0 is the v0 request's shape: timeout, topics (nullable)
// [name, partitions].
var listReassignmentsRequestV0 = proto.Shape{proto.Int32,
	proto.CompactArray(proto.CompactString, proto.CompactArray(proto.Int32), proto.Tags), proto.Tags}

func handleListPartitionReassignments(s *Server, r *request) error {
	req := kmsg.NewPtrListPartitionReassignmentsRequest()
	frame, err := decodeForwarded(r, req, listReassignmentsRequestV0)
	if err != nil {
		return err
	}
	s.forwardToController(r, frame, req.TimeoutMillis, "ListPartitionReassignments", nil, func(msg string) kmsg.Response {
		resp := req.ResponseKind().(*kmsg.ListPartitionReassignmentsResponse)
		resp.ErrorCode, resp.ErrorMessage = kerr.RequestTimedOut.Code, &msg
		return resp
	})
	return nil
}
