package grouptest

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Pending is a request handed to a coordinator whose answer may come later: its
// Response and NotActive are the two ends of the coordinator's Answer. They may be
// called with the coordinator's lock held, so neither blocks; a second answer to one
// request is a bug, and panics.
type Pending struct {
	req kmsg.Request
	ch  chan kmsg.Response // nil: "not active"
	n   atomic.Int32       // answers delivered
}

// NewPending returns the pending answer of req.
func NewPending(req kmsg.Request) *Pending {
	return &Pending{req: req, ch: make(chan kmsg.Response, 1)}
}

// Response delivers body, the encoded answer, decoded in the request's version; bytes
// that do not decode panic.
func (p *Pending) Response(body []byte) {
	resp := p.req.ResponseKind()
	resp.SetVersion(p.req.GetVersion())
	if err := resp.ReadFrom(body); err != nil {
		panic(fmt.Sprintf("coordinator answered %T with bytes that do not decode: %v", p.req, err))
	}
	p.deliver(resp)
}

// NotActive delivers the answer "not active".
func (p *Pending) NotActive() { p.deliver(nil) }

func (p *Pending) deliver(resp kmsg.Response) {
	if p.n.Add(1) > 1 {
		panic(fmt.Sprintf("%T answered twice", p.req))
	}
	p.ch <- resp
}

// Answered reports, without waiting, whether the answer has come.
func (p *Pending) Answered() bool { return p.n.Load() > 0 }

// Wait returns the answer, failing t if it is "not active" or does not come within d
// (a coordinator answers within microseconds once it has decided: a missing answer
// never comes).
func (p *Pending) Wait(t testing.TB, d time.Duration) kmsg.Response {
	t.Helper()
	select {
	case resp := <-p.ch:
		if resp == nil {
			t.Fatalf("%T answered not active", p.req)
		}
		return resp
	case <-time.After(d):
		t.Fatalf("%T not answered", p.req)
		return nil
	}
}

// WaitNotActive fails t unless the answer is "not active", within d.
func (p *Pending) WaitNotActive(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case resp := <-p.ch:
		if resp != nil {
			t.Fatalf("%T answered %+v, want not active", p.req, resp)
		}
	case <-time.After(d):
		t.Fatalf("%T not answered", p.req)
	}
}
