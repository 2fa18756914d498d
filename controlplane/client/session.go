package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// A registered node also holds a session with the control plane: one gRPC stream, on
// the members' etcd client port, that stays open as long as the process lives. When a
// process dies its kernel closes the connection at once, and the member holding the
// stream revokes the node's registration instead of waiting out its lease: a crashed
// leader's partitions move within a fraction of a second, while the lease, which can
// then stay long enough that a loaded node is never fenced by mistake, still covers what
// closes no connection (a paused process, a lost host, a network partition).
//
// A stream that breaks while the process lives (a member restarting, a connection
// reset) is opened again at once, on any member; the member that saw it break waits its
// grace for that before it revokes, and revokes only if no later session of the same
// registration was opened meanwhile and the registration is still the one the session
// named.
//
// A revocation the node did not see coming must not let it act as a leader after its
// leaderships moved, so the session bounds SafeUntil as the lease does: the node sends a
// heartbeat every interval the member asks for and the member answers each, and since
// the member revokes no earlier than its grace after the break, which it notices after
// it answered, the node is safe until the send time of its last answered heartbeat (or
// hello) plus the grace. A healthy stream is never revoked, whatever its heartbeats'
// timing: a stall only makes the node refuse writes until its next answer.

// SessionMethod is the session stream's gRPC method, served by every control-plane
// member next to etcd's own services.
const SessionMethod = "/gregor.v1.Liveness/Session"

// SessionStreamDesc describes the session stream: the node sends a SessionHello, the
// member answers with a SessionTerms once the session is recorded, and then the node
// sends an empty heartbeat every Terms.Heartbeat and the member answers each with an
// empty message, until one side ends the stream.
var SessionStreamDesc = grpc.StreamDesc{StreamName: "Session", ClientStreams: true, ServerStreams: true}

// SessionHello opens a session: the registration it keeps watch over.
type SessionHello struct {
	ID    int32 `json:"id"`
	Epoch int64 `json:"epoch"`
	Lease int64 `json:"lease"`
}

// SessionTerms is the member's answer to a hello: how long it waits after a break
// before revoking, and how often it asks for heartbeats.
type SessionTerms struct {
	Grace     time.Duration `json:"grace_ns"`
	Heartbeat time.Duration `json:"heartbeat_ns"`
}

// EncodeSessionTerms encodes terms as a hello is.
func EncodeSessionTerms(t SessionTerms) *wrapperspb.BytesValue {
	b, _ := json.Marshal(t)
	return wrapperspb.Bytes(b)
}

// decodeSessionTerms decodes the member's terms.
func decodeSessionTerms(m *wrapperspb.BytesValue) (SessionTerms, error) {
	var t SessionTerms
	if err := json.Unmarshal(m.GetValue(), &t); err != nil {
		return t, fmt.Errorf("client: session terms: %w", err)
	}
	if t.Grace <= 0 || t.Heartbeat <= 0 || t.Heartbeat > t.Grace {
		return t, fmt.Errorf("client: session terms: invalid %+v", t)
	}
	return t, nil
}

// EncodeSessionHello and DecodeSessionHello are the hello's wire form: JSON in a
// google.protobuf.BytesValue, so that no generated code is needed on either side.
func EncodeSessionHello(h SessionHello) *wrapperspb.BytesValue {
	b, _ := json.Marshal(h) // plain integers: cannot fail
	return wrapperspb.Bytes(b)
}

// DecodeSessionHello decodes a hello; a malformed one is an error.
func DecodeSessionHello(m *wrapperspb.BytesValue) (SessionHello, error) {
	var h SessionHello
	if err := json.Unmarshal(m.GetValue(), &h); err != nil {
		return h, fmt.Errorf("client: session hello: %w", err)
	}
	if h.ID < 0 || h.Epoch <= 0 || h.Lease == 0 {
		return h, fmt.Errorf("client: session hello: invalid %+v", h)
	}
	return h, nil
}

// Session retry pacing: a broken stream is opened again at once, then with a backoff
// that doubles up to sessionRetryMax while members refuse or cannot be reached.
const (
	sessionRetryMin = 10 * time.Millisecond
	sessionRetryMax = time.Second
	// sessionHelloTimeout bounds the wait for a member to record a session.
	sessionHelloTimeout = 5 * time.Second
	// sessionStable is how long a session must have lasted for the backoff to reset.
	sessionStable = 5 * time.Second
	// sessionPendingMax bounds the heartbeats awaiting an answer.
	sessionPendingMax = 64
)

var errSessionStalled = errors.New("client: session: the member answers no heartbeat")

// holdSession keeps the registration's session open until ctx ends or the member says
// the registration is gone. It dials the members in turn, each attempt on a connection
// of its own, so that a session never waits on the etcd client's balancer.
func (r *Registration) holdSession(kctx context.Context) {
	defer close(r.sessionDone)
	ctx, cancel := context.WithCancel(kctx)
	defer cancel()
	defer context.AfterFunc(r.c.closed, cancel)()
	endpoints := r.c.etcd.Endpoints()
	if len(endpoints) == 0 {
		return
	}
	hello := SessionHello{ID: r.broker.ID, Epoch: r.broker.Epoch, Lease: int64(r.lease)}
	backoff := sessionRetryMin
	unimplemented := false
	for i := 0; ; i++ {
		started := time.Now()
		err := r.session(ctx, endpoints[i%len(endpoints)], hello)
		if ctx.Err() != nil {
			return
		}
		switch code := status.Code(err); {
		case code == codes.FailedPrecondition:
			// The member says the registration is no longer this one: Lost follows.
			r.c.logger.Warn("session refused: the registration changed", slog.Int("broker", int(r.broker.ID)), slog.Any("err", err))
			return
		case code == codes.Unimplemented:
			if !unimplemented {
				r.c.logger.Warn("a control-plane member serves no session: a crash of this node is noticed only when its lease expires there",
					slog.String("endpoint", endpoints[i%len(endpoints)]))
				unimplemented = true
			}
		default:
			r.c.logger.Debug("session ended", slog.Int("broker", int(r.broker.ID)), slog.Any("err", err))
		}
		if time.Since(started) > sessionStable {
			backoff = sessionRetryMin
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, sessionRetryMax)
	}
}

// session opens one session on endpoint and returns when it ends.
func (r *Registration) session(ctx context.Context, endpoint string, hello SessionHello) error {
	target := strings.TrimPrefix(strings.TrimPrefix(endpoint, "http://"), "https://")
	conn, err := grpc.NewClient("passthrough:///"+target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepAliveTime, Timeout: keepAliveTimeout}))
	if err != nil {
		return err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := conn.NewStream(sctx, &SessionStreamDesc, SessionMethod)
	if err != nil {
		return err
	}
	sent := time.Now()
	if err := st.SendMsg(EncodeSessionHello(hello)); err != nil {
		return err
	}
	// The answer is awaited with a bound: a member that cannot reach its quorum never
	// records the session, and another member may.
	var m wrapperspb.BytesValue
	recorded := make(chan error, 1)
	go func() { recorded <- st.RecvMsg(&m) }()
	t := time.NewTimer(sessionHelloTimeout)
	select {
	case err := <-recorded:
		t.Stop()
		if err != nil {
			return err
		}
	case <-t.C:
		cancel()
		<-recorded
		return errors.New("client: session: no answer from the member")
	}
	terms, err := decodeSessionTerms(&m)
	if err != nil {
		return err
	}
	r.sessions.Add(1)
	r.sessionSafe(sent.Add(terms.Grace))

	// Heartbeats: the send times of those not yet answered, oldest first. The member
	// answers in order, so each answer extends SafeUntil from its heartbeat's send time.
	// A member that stops answering (paused, or cut off from this node one way) is left
	// for another after answerWait: its stream cannot be revoked while the member is
	// stalled, and SafeUntil would run out while the node waited on it.
	answerWait := max(terms.Grace/2, 2*terms.Heartbeat)
	var lastAnswer atomic.Int64
	lastAnswer.Store(time.Now().UnixNano())
	pending := make(chan time.Time, sessionPendingMax)
	answered := make(chan error, 1)
	go func() {
		for {
			var a wrapperspb.BytesValue
			if err := st.RecvMsg(&a); err != nil {
				answered <- err
				return
			}
			select {
			case at := <-pending:
				lastAnswer.Store(time.Now().UnixNano())
				r.sessionSafe(at.Add(terms.Grace))
			default:
				answered <- errors.New("client: session: an answer to no heartbeat")
				return
			}
		}
	}()
	tick := time.NewTicker(terms.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case err := <-answered:
			return err
		case <-tick.C:
			now := time.Now()
			if len(pending) > 0 && now.Sub(time.Unix(0, lastAnswer.Load())) > answerWait {
				// The member answers nothing (paused, or behind a cut that drops bytes):
				// gRPC's keepalive would notice only after some 12 s. Move to another
				// member before SafeUntil runs out; this one, when it notices the break,
				// waits its grace and finds the later session.
				r.c.logger.Warn("session member answers no heartbeat; opening the session elsewhere",
					slog.Int("broker", int(r.broker.ID)), slog.String("endpoint", endpoint))
				r.c.event(EventSessionStalled)
				r.c.suspectEndpoints()
				cancel()
				<-answered
				return errSessionStalled
			}
			select {
			case pending <- now:
			default:
				continue // the member is far behind: skip a beat rather than block
			}
			if err := st.SendMsg(&wrapperspb.BytesValue{}); err != nil {
				cancel()
				return <-answered
			}
		}
	}
}

// sessionSafe raises the session's bound on SafeUntil to until.
func (r *Registration) sessionSafe(until time.Time) {
	u := until.UnixNano()
	for {
		cur := r.sessionUntil.Load()
		if cur != sessionUnbounded && cur >= u {
			return
		}
		if r.sessionUntil.CompareAndSwap(cur, u) {
			return
		}
	}
}

// sessionUnbounded is sessionUntil before any session was recorded: no member can
// revoke the registration for a broken session then.
const sessionUnbounded = math.MaxInt64

// Sessions is how many sessions this registration has opened (1 while the first holds).
func (r *Registration) Sessions() int64 { return r.sessions.Load() }
