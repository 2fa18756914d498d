package client

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// A stalled member — a paused process, or one behind a network cut that drops bytes and
// keeps the connection open — holds whatever the etcd client sent it: the gRPC
// connection stays READY until its keepalive gives up, which gRPC does not allow sooner
// than 10 s plus the ping timeout, so for that long the balancer keeps handing it calls
// and streams. The calls that notice a stall (the metadata watch hearing nothing within
// watchStallAfter, a lease renewal timing out) tell the endpoint guard, which probes
// every member on a connection of its own and takes those that do not answer, or answer
// without a leader, out of the client's endpoints until they answer again: their
// connections close, and the calls and streams that follow go to members that work.

// Endpoint guard timing.
const (
	// endpointProbeTimeout bounds one member's Status probe.
	endpointProbeTimeout = time.Second
	// endpointProbeEvery is how often excluded members are probed again.
	endpointProbeEvery = time.Second
)

// endpointGuard keeps stalled members out of the client's endpoints.
type endpointGuard struct {
	all     []string // the configured endpoints
	mu      sync.Mutex
	running bool
	using   []string // the endpoints the etcd client uses now (all unless some are out)
	// probed is closed once the running check's first probe has set the endpoints.
	probed chan struct{}
	// again asks the running check to probe at once rather than at its next tick: a
	// call stalled on a member it still uses, or one it let back in may answer.
	again chan struct{}
}

// Events counted through Config.CountEvent.
const (
	// EventWatchStalled: a watch (of the metadata, or of the group coordinator's key)
	// heard nothing (no event, no progress notification) within watchStallAfter and was
	// made again.
	EventWatchStalled = "watch_stalled"
	// EventKeepAliveTimeout: a lease renewal got no answer within keepAliveAttemptMax
	// and was sent again.
	EventKeepAliveTimeout = "lease_keepalive_timeout"
	// EventSessionStalled: the session's member left heartbeats unanswered past the
	// bound and the session moved to another member.
	EventSessionStalled = "session_stalled"
	// EventEndpointExcluded and EventEndpointRestored: a member taken out of the
	// client's endpoints after failing a probe, and put back once it answered one.
	EventEndpointExcluded = "endpoint_excluded"
	EventEndpointRestored = "endpoint_restored"
)

// event counts one event through Config.CountEvent.
func (c *Client) event(name string) {
	if c.countEvent != nil {
		c.countEvent(name)
	}
}

// suspectEndpoints is called when a call or stream saw a member stall: unless a check
// already runs, it probes the members and keeps those that fail out of the endpoints
// until they answer again. A client over one endpoint (or one it does not own) has
// nowhere else to go. The channel returned is closed once the check's first probe has
// set the endpoints (at once if there is nothing to check): a watch made again after
// that is not put back on the stalled member.
func (c *Client) suspectEndpoints() <-chan struct{} {
	g := &c.guard
	if !c.ownsEtcd || len(g.all) < 2 {
		return closedChan
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running {
		select {
		case g.again <- struct{}{}:
		default:
		}
		return g.probed
	}
	g.running = true
	g.probed = make(chan struct{})
	g.again = make(chan struct{}, 1)
	go c.guardEndpoints(g.probed, g.again)
	return g.probed
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// guardEndpoints probes the members until every one answers, setting the etcd client's
// endpoints to those that do (all of them when none does: nothing to choose then).
func (c *Client) guardEndpoints(probed chan struct{}, again <-chan struct{}) {
	g := &c.guard
	defer func() {
		g.mu.Lock()
		g.running = false
		g.mu.Unlock()
	}()
	once := sync.OnceFunc(func() { close(probed) })
	defer once()
	for {
		ok := c.probeEndpoints()
		use := make([]string, 0, len(g.all))
		for i, ep := range g.all {
			if ok[i] {
				use = append(use, ep)
			}
		}
		if len(use) == 0 {
			use = g.all
		}
		g.mu.Lock()
		prev := g.using
		changed := !slices.Equal(prev, use)
		if changed {
			g.using = use
		}
		g.mu.Unlock()
		if changed && c.closed.Err() == nil {
			for _, ep := range g.all {
				was, is := slices.Contains(prev, ep), slices.Contains(use, ep)
				switch {
				case was && !is:
					c.logger.Warn("control-plane member stalled: not used until it answers", slog.String("endpoint", ep))
					c.event(EventEndpointExcluded)
				case !was && is:
					c.logger.Info("control-plane member answers again", slog.String("endpoint", ep))
					c.event(EventEndpointRestored)
				}
			}
			c.etcd.SetEndpoints(use...)
		}
		once()
		if len(use) == len(g.all) {
			return
		}
		t := time.NewTimer(endpointProbeEvery)
		select {
		case <-c.closed.Done():
			t.Stop()
			return
		case <-again:
			t.Stop()
		case <-t.C:
		}
	}
}

// probeEndpoints asks every member for its status, each on a connection of its own,
// in parallel: ok[i] says whether g.all[i] answered within endpointProbeTimeout and
// knows a leader.
func (c *Client) probeEndpoints() []bool {
	g := &c.guard
	ok := make([]bool, len(g.all))
	var wg sync.WaitGroup
	for i, ep := range g.all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(c.closed, endpointProbeTimeout)
			defer cancel()
			resp, err := c.etcd.Status(ctx, ep)
			ok[i] = err == nil && resp.Leader != 0
		}()
	}
	wg.Wait()
	return ok
}
