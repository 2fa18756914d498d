package client

// Tests of group forwarding (groups.go) against a fake coordinator: a listener speaking
// the internal protocol whose answers each test decides.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// fakeRequest is one request the fake coordinator read.
type fakeRequest struct {
	conn int // which of the coordinator's connections, in accept order
	id   int32
	body string // the Kafka request bytes (any bytes: the forwarder does not parse them)
	fc   *fakeCoordinator
}

// answer writes the answer to r. A "not active" answer retires the connection, as the
// real coordinator does: requests read on it afterwards are answered "not active" at
// once, without reaching the test.
func (r fakeRequest) answer(status byte, body string) {
	r.fc.mu.Lock()
	defer r.fc.mu.Unlock()
	if status == GroupStatusNotActive {
		r.fc.retired[r.conn] = true
	}
	_, _ = r.fc.conns[r.conn].Write(AppendGroupResponse(nil, r.id, status, []byte(body)))
}

// fakeCoordinator is an internal listener, published under GroupCoordinatorKey, that
// hands every request it reads to the test (reqs) and answers only when told.
type fakeCoordinator struct {
	ln   net.Listener
	reqs chan fakeRequest
	// mu guards conns and retired, and serialises writes.
	mu      sync.Mutex
	conns   []net.Conn // in accept order
	retired map[int]bool
}

func startFakeCoordinator(t *testing.T, c *Client) *fakeCoordinator {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fc := &fakeCoordinator{ln: ln, reqs: make(chan fakeRequest, 1024), retired: map[int]bool{}}
	t.Cleanup(func() {
		_ = ln.Close()
		fc.mu.Lock()
		for _, nc := range fc.conns {
			_ = nc.Close()
		}
		fc.mu.Unlock()
	})
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			fc.mu.Lock()
			fc.conns = append(fc.conns, nc)
			n := len(fc.conns) - 1
			fc.mu.Unlock()
			go func() {
				br := bufio.NewReader(nc)
				for {
					p, err := ReadGroupFrame(br, nil)
					if err != nil {
						return
					}
					id, _, req, err := ParseGroupRequest(p)
					if err != nil {
						return
					}
					r := fakeRequest{conn: n, id: id, body: string(req), fc: fc}
					fc.mu.Lock()
					retired := fc.retired[n]
					fc.mu.Unlock()
					if retired {
						r.answer(GroupStatusNotActive, "")
						continue
					}
					fc.reqs <- r
				}
			}()
		}
	}()
	v, _ := json.Marshal(cluster.GroupCoordinator{Name: "fake", Addr: ln.Addr().String()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Etcd().Put(ctx, cluster.GroupCoordinatorKey, string(v)); err != nil {
		t.Fatal(err)
	}
	return fc
}

// next returns the next request the coordinator read.
func (fc *fakeCoordinator) next(t *testing.T) fakeRequest {
	t.Helper()
	select {
	case r := <-fc.reqs:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no request reached the coordinator")
		return fakeRequest{}
	}
}

func (fc *fakeCoordinator) connCount() int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return len(fc.conns)
}

// newForwardingClient is a client of a fresh etcd with a fake coordinator published.
func newForwardingClient(t *testing.T) (*Client, *fakeCoordinator) {
	t.Helper()
	c, err := New(Config{Endpoints: []string{startEtcd(t)}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, startFakeCoordinator(t, c)
}

// forwardResult is what one ForwardGroupRequest returned.
type forwardResult struct {
	body string
	err  error
}

// forward runs ForwardGroupRequest on a goroutine; its result arrives on the channel.
func forward(c *Client, timeout time.Duration, req string) <-chan forwardResult {
	out := make(chan forwardResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		body, err := c.ForwardGroupRequest(ctx, "127.0.0.1", []byte(req))
		out <- forwardResult{string(body), err}
	}()
	return out
}

func await(t *testing.T, ch <-chan forwardResult) forwardResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("ForwardGroupRequest did not return")
		return forwardResult{}
	}
}

// TestGroupForwardTimeoutKeepsConnection: one request whose deadline passes (a
// SyncGroup waiting for its leader, say) gives up alone: another request in flight on
// the same internal connection is answered normally, the late answer to the first is
// dropped, and the connection serves on (before, the timeout closed the connection and
// failed every request on it).
func TestGroupForwardTimeoutKeepsConnection(t *testing.T) {
	c, fc := newForwardingClient(t)
	short := forward(c, 300*time.Millisecond, "short")
	shortReq := fc.next(t)
	long := forward(c, 10*time.Second, "long")
	longReq := fc.next(t)
	if shortReq.body != "short" || longReq.body != "long" || shortReq.conn != longReq.conn {
		t.Fatalf("requests %+v and %+v", shortReq, longReq)
	}
	if r := await(t, short); !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("short request: %q %v, want its deadline", r.body, r.err)
	}
	shortReq.answer(GroupStatusOK, "late") // nobody waits for it any more
	longReq.answer(GroupStatusOK, "long answer")
	if r := await(t, long); r.err != nil || r.body != "long answer" {
		t.Fatalf("long request: %q %v", r.body, r.err)
	}
	third := forward(c, 10*time.Second, "third")
	thirdReq := fc.next(t)
	thirdReq.answer(GroupStatusOK, "third answer")
	if r := await(t, third); r.err != nil || r.body != "third answer" {
		t.Fatalf("third request: %q %v", r.body, r.err)
	}
	if n := fc.connCount(); n != 1 || thirdReq.conn != 0 {
		t.Fatalf("%d connections (third request on #%d), want one", n, thirdReq.conn)
	}
}

// TestGroupOrderKeptAcrossResend: one client connection's requests (a GroupOrder) are
// written in their order, none waiting for the answers before it; when the coordinator
// answers them "not active" (in any order: here the sixth first), they are resent to
// the next coordinator in their order, and a request that arrived meanwhile follows them.
func TestGroupOrderKeptAcrossResend(t *testing.T) {
	c, fc := newForwardingClient(t)
	var o GroupOrder
	results := map[int]<-chan forwardResult{}
	start := func(i int, place *GroupPlace) {
		out := make(chan forwardResult, 1)
		results[i] = out
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			body, err := c.ForwardGroupRequestInOrder(ctx, place, "127.0.0.1", []byte(fmt.Sprint(i)))
			out <- forwardResult{string(body), err}
		}()
	}
	const n = 20
	places := make([]*GroupPlace, n)
	for i := range places {
		places[i] = o.Next()
	}
	for i := n - 1; i >= 0; i-- { // the goroutines start in the wrong order
		start(i, places[i])
	}
	expect := func(conn, count int) []fakeRequest {
		t.Helper()
		var got []fakeRequest
		for i := range count {
			r := fc.next(t)
			if r.conn != conn || r.body != fmt.Sprint(i) {
				t.Fatalf("request %d: %q on connection %d, want %d on %d", i, r.body, r.conn, i, conn)
			}
			got = append(got, r)
		}
		return got
	}
	first := expect(0, n) // all written, none answered
	first[5].answer(GroupStatusNotActive, "")
	start(n, o.Next()) // arrives during the failover
	// The sixth, answered, dials the next coordinator but is not resent ahead of the
	// five before it: they may be answered "not active" too.
	deadline := time.Now().Add(10 * time.Second)
	for fc.connCount() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no new connection after a \"not active\" answer")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case r := <-fc.reqs:
		t.Fatalf("%q sent on connection %d while the requests before it were in flight", r.body, r.conn)
	case <-time.After(100 * time.Millisecond):
	}
	for i := n - 1; i >= 0; i-- {
		if i != 5 {
			first[i].answer(GroupStatusNotActive, "")
		}
	}
	for _, r := range expect(1, n+1) {
		r.answer(GroupStatusOK, "answer "+r.body)
	}
	for i := range n + 1 {
		if r := await(t, results[i]); r.err != nil || r.body != fmt.Sprint("answer ", i) {
			t.Fatalf("request %d: %q %v", i, r.body, r.err)
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.waiting) != 0 || len(o.sent) != 0 {
		t.Fatalf("%d places waiting and %d sent after every answer", len(o.waiting), len(o.sent))
	}
}

// TestGroupCoordinatorChangeRetiresSilentConnection: a coordinator that stops answering
// without closing its connections (a paused process) is left once another is
// published — its unanswered requests fail after a grace period (their clients retry),
// and new requests go to the new one — instead of the old connection taking requests
// no one answers for as long as it stays open.
func TestGroupCoordinatorChangeRetiresSilentConnection(t *testing.T) {
	c, old := newForwardingClient(t)
	c.groups.retiredGrace = 300 * time.Millisecond // before the first request
	stuck := forward(c, time.Minute, "sync")       // a follower's SyncGroup waits long
	old.next(t)                                    // read, never answered
	moved := startFakeCoordinator(t, c)
	if r := await(t, stuck); !errors.Is(r.err, ErrNoGroupCoordinator) {
		t.Fatalf("request to the silent coordinator: %q %v, want a coordinator error", r.body, r.err)
	}
	next := forward(c, 10*time.Second, "heartbeat")
	r := moved.next(t)
	r.answer(GroupStatusOK, "ok")
	if res := await(t, next); res.err != nil || res.body != "ok" {
		t.Fatalf("request after the change: %q %v", res.body, res.err)
	}
	select {
	case r := <-old.reqs:
		t.Fatalf("%q sent to the old coordinator after the change", r.body)
	default:
	}
}

// TestGroupCoordinatorRepublishedKeepsConnection: the same coordinator publishing its
// address again (a put whose answer it missed, retried) is no change of coordinator:
// a request waiting on it (a JoinGroup parked for a rebalance, say) is not failed.
func TestGroupCoordinatorRepublishedKeepsConnection(t *testing.T) {
	c, fc := newForwardingClient(t)
	c.groups.retiredGrace = 100 * time.Millisecond // before the first request
	waiting := forward(c, time.Minute, "join")
	r := fc.next(t)
	v, _ := json.Marshal(cluster.GroupCoordinator{Name: "fake", Addr: fc.ln.Addr().String()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Etcd().Put(ctx, cluster.GroupCoordinatorKey, string(v)); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-waiting:
		t.Fatalf("the waiting request ended when its coordinator published itself again: %q %v", res.body, res.err)
	case <-time.After(500 * time.Millisecond): // five grace periods
	}
	r.answer(GroupStatusOK, "joined")
	if res := await(t, waiting); res.err != nil || res.body != "joined" {
		t.Fatalf("waiting request: %q %v", res.body, res.err)
	}
}
