package controlplane

// The requests a data-plane node forwards to the active controller as its client sent
// them (ElectLeaders, elect_server.go; AlterPartitionReassignments and
// ListPartitionReassignments, reassign_server.go) are read and answered alike on the
// internal listener; what each does in between is its own.

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/proto"
)

// Bounds of a forwarded request's run.
const (
	// forwardedTimeoutDefault bounds a request that gives no timeout of its own;
	// forwardedTimeoutMax bounds any.
	forwardedTimeoutDefault = 30 * time.Second
	forwardedTimeoutMax     = 5 * time.Minute
)

// parseForwarded reads a forwarded request: its header (v1, or v2 for a flexible
// version), then its body into req, whose key it must have, at a version up to
// maxVersion. A flexible version's body is checked against shape before kmsg decodes
// it (see proto.CheckShape).
func parseForwarded(b []byte, req kmsg.Request, maxVersion int16, shape proto.Shape) error {
	r := kbin.Reader{Src: b}
	key, version := r.Int16(), r.Int16()
	_ = r.Int32() // the client's correlation id: the data-plane node answers it
	_ = r.NullableString()
	if err := r.Complete(); err != nil {
		return err
	}
	if key != req.Key() || version < 0 || version > maxVersion {
		return fmt.Errorf("not a %s request of a version served", kmsg.NameForKey(req.Key()))
	}
	req.SetVersion(version)
	if req.IsFlexible() {
		for n := r.Uvarint(); n > 0 && r.Ok(); n-- {
			r.Uvarint()
			r.Span(int(r.Uvarint()))
		}
		if err := r.Complete(); err != nil {
			return err
		}
		if err := proto.CheckShape(r.Src, shape); err != nil {
			return err
		}
	}
	return req.ReadFrom(r.Src)
}

// requestTimeout is a request's timeout within the bounds above.
func requestTimeout(ms int32) time.Duration {
	d := forwardedTimeoutDefault
	if ms > 0 {
		d = time.Duration(ms) * time.Millisecond
	}
	return min(d, forwardedTimeoutMax)
}

// runForwarded runs a forwarded request on a goroutine of its own, within its timeout
// (timeoutMs): it writes to etcd, and the connection's reader goes on with the
// requests behind it. run's answer is given as replyForwarded gives it.
func runForwarded(timeoutMs int32, reply func(status byte, body []byte), run func(ctx context.Context) (resp kmsg.Response, notActive bool)) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout(timeoutMs))
		defer cancel()
		resp, notActive := run(ctx)
		replyForwarded(reply, resp, notActive)
	}()
}

// replyForwarded answers a forwarded request with resp's body, or "not active" when
// this node is not the active controller (any more): the data-plane node then resends
// the request to the one it looks up again.
func replyForwarded(reply func(status byte, body []byte), resp kmsg.Response, notActive bool) {
	if notActive {
		reply(client.GroupStatusNotActive, nil)
		return
	}
	reply(client.GroupStatusOK, resp.AppendTo(nil))
}
