package dataplane

import (
	"bytes"
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/proto"
)

// decodeForwarded reads a request the active controller answers (ElectLeaders,
// AlterPartitionReassignments, ListPartitionReassignments) into req, checking a
// flexible version's body against shape, and returns the frame to forward: a copy, as
// the frame views the inbound buffer and the forward outlives this request's turn.
func decodeForwarded(r *request, req kmsg.Request, shape proto.Shape) ([]byte, error) {
	frame := bytes.Clone(r.frame)
	req.SetVersion(r.hdr.APIVersion)
	if req.IsFlexible() {
		if err := proto.CheckShape(frame[r.hdr.Size:], shape); err != nil {
			return nil, err
		}
	}
	if err := req.ReadFrom(frame[r.hdr.Size:]); err != nil {
		return nil, err
	}
	return frame, nil
}

// forwardToController sends frame, as the client sent it, to the active controller's
// internal listener from a goroutine, the way group requests go (11_groups.go), and
// answers with the controller's response body. answered, if not nil, runs on that
// goroutine once the controller has answered (ElectLeaders waits there for its view). A
// request the controller finds malformed closes the connection, as one found malformed
// here would. No controller to answer: the request is answered with unanswered(msg),
// which gives every partition asked for, and the request, REQUEST_TIMED_OUT with msg.
func (s *Server) forwardToController(r *request, frame []byte, timeoutMs int32, api string,
	answered func(ctx context.Context, body []byte), unanswered func(msg string) kmsg.Response) {
	host := r.conn.ip
	var body []byte
	s.async(r, timeoutMs, func(ctx context.Context) (err error) {
		body, err = s.cp.ForwardGroupRequest(ctx, nil, host, frame)
		if err == nil && answered != nil {
			answered(ctx, body)
		}
		return err
	}, func(err error) {
		switch {
		case err == nil:
			writeResponseBody(r, body)
		case errors.Is(err, client.ErrGroupBadRequest):
			r.conn.closeRequested = true
		default:
			s.logger.Debug(api+" not answered by the controller", "err", err)
			writeResponse(r, unanswered("no controller answered: "+err.Error()))
		}
	})
}
