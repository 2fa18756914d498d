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
	"bytes"
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/proto"
)

const listPartitionReassignmentsKey = int16(kmsg.ListPartitionReassignments)

// listReassignmentsRequestV0 is the v0 request's shape: timeout, topics (nullable)
// [name, partitions].
var listReassignmentsRequestV0 = proto.Shape{proto.Int32,
	proto.CompactArray(proto.CompactString, proto.CompactArray(proto.Int32), proto.Tags), proto.Tags}

func handleListPartitionReassignments(s *Server, r *request) error {
	frame := bytes.Clone(r.frame) // the frame views the inbound buffer
	req := kmsg.NewPtrListPartitionReassignmentsRequest()
	req.SetVersion(r.hdr.APIVersion)
	if err := proto.CheckShape(frame[r.hdr.Size:], listReassignmentsRequestV0); err != nil {
		return err
	}
	if err := req.ReadFrom(frame[r.hdr.Size:]); err != nil {
		return err
	}
	host := r.conn.ip
	var body []byte
	s.async(r, req.TimeoutMillis, func(ctx context.Context) (err error) {
		body, err = s.cp.ForwardGroupRequest(ctx, nil, host, frame)
		return err
	}, func(err error) {
		switch {
		case err == nil:
			writeResponseBody(r, body)
		case errors.Is(err, client.ErrGroupBadRequest):
			r.conn.closeRequested = true
		default:
			s.logger.Debug("ListPartitionReassignments not answered by the controller", "err", err)
			resp := req.ResponseKind().(*kmsg.ListPartitionReassignmentsResponse)
			msg := "no controller answered: " + err.Error()
			resp.ErrorCode, resp.ErrorMessage = kerr.RequestTimedOut.Code, &msg
			writeResponse(r, resp)
		}
	})
	return nil
}
