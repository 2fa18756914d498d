package testcluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/gregor-streaming/gregor/internal/reserve"
)

// linkRestartTimeout bounds retrying a link's listen after a restart (see restart).
const linkRestartTimeout = 5 * time.Second

// Direction is one stream of a link: Upstream carries the bytes from the side that
// dialed (a Kafka client, a data-plane node's etcd client, an etcd peer) to the side
// that listens; Downstream carries the answers back. The names are toxiproxy's.
type Direction string

// The two directions of a link.
const (
	Upstream   Direction = "upstream"
	Downstream Direction = "downstream"
)

// newToxiServer is the toxiproxy server the cluster's proxies belong to: only a home
// for them as a library (no HTTP API is started), with its logs and metrics off.
func newToxiServer() *toxiproxy.ApiServer {
	return toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
}

// Link is a proxied connection path the harness routes and can fault: a TCP proxy on
// 127.0.0.1 (its port reserved for the link's life, so that it keeps its address across
// the restarts that a changed upstream or a heal needs) in front of one listener.
//
// A cut drops every byte in the cut direction(s) and keeps the connections open, as a
// network partition does (toxiproxy's timeout toxic, timeout 0); new connections are
// accepted and go nowhere. Heal removes the toxics and, after a cut, resets every
// connection through the link: the bytes dropped during the cut would otherwise leave
// each stream torn mid-frame, where real TCP would have retransmitted them.
type Link struct {
	name string
	res  *reserve.Reservation
	p    *toxiproxy.Proxy

	mu       sync.Mutex
	upstream string
	toxics   []string
	cut      bool
}

// newLink starts a link to upstream ("" until the listener behind it is known: its
// connections then fail until setUpstream).
func newLink(api *toxiproxy.ApiServer, name, upstream string) (*Link, error) {
	res, err := reserve.TCP("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if upstream == "" {
		upstream = "127.0.0.1:1" // nothing listens on port 1: connections are refused
	}
	l := &Link{name: name, res: res, upstream: upstream}
	l.p = toxiproxy.NewProxy(api, name, res.Addr(), upstream)
	if err := l.p.Start(); err != nil {
		_ = res.Close()
		return nil, fmt.Errorf("testcluster: link %s: %w", name, err)
	}
	return l, nil
}

// Name says which link this is (e.g. "dp1->cp2", "clients->dp1", "peers->cp1").
func (l *Link) Name() string { return l.name }

// Addr is where the link listens: the address the dialing side is given.
func (l *Link) Addr() string { return l.res.Addr() }

// setUpstream points the link at a new listener (a restarted node's new port). The
// proxy restarts on its reserved port; open connections are reset.
func (l *Link) setUpstream(upstream string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if upstream == l.upstream {
		return nil
	}
	l.upstream = upstream
	err := l.p.Update(&toxiproxy.Proxy{Listen: l.Addr(), Upstream: upstream, Enabled: true})
	if errors.Is(err, syscall.EADDRINUSE) {
		err = l.restart() // stopped with the old upstream, not started with the new
	}
	if err != nil {
		return fmt.Errorf("testcluster: link %s: upstream %s: %w", l.name, upstream, err)
	}
	return nil
}

// restart starts the stopped proxy again on its port. The port stays reserved, but the
// kernel may refuse the listen for a moment while the sockets of the connections just
// closed are torn down: that is retried, within a bound.
func (l *Link) restart() error {
	deadline := time.Now().Add(linkRestartTimeout)
	for {
		err := l.p.Start()
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// addToxic adds a toxic of type kind to one direction.
func (l *Link) addToxic(kind string, dir Direction, attrs string) error {
	name := fmt.Sprintf("%s-%s-%d", kind, dir, len(l.toxics))
	js := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`, name, kind, dir, attrs)
	if _, err := l.p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		return fmt.Errorf("testcluster: link %s: %s toxic: %w", l.name, kind, err)
	}
	l.toxics = append(l.toxics, name)
	return nil
}

// Cut drops everything in both directions until Heal.
func (l *Link) Cut() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = true
	if err := l.addToxic("timeout", Upstream, `{"timeout":0}`); err != nil {
		return err
	}
	return l.addToxic("timeout", Downstream, `{"timeout":0}`)
}

// CutOneWay drops everything in direction dir until Heal; the other direction flows.
func (l *Link) CutOneWay(dir Direction) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = true
	return l.addToxic("timeout", dir, `{"timeout":0}`)
}

// Delay adds latency d to each direction (so d×2 to a round trip) until Heal.
func (l *Link) Delay(d time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	attrs := fmt.Sprintf(`{"latency":%d,"jitter":0}`, d.Milliseconds())
	if err := l.addToxic("latency", Upstream, attrs); err != nil {
		return err
	}
	return l.addToxic("latency", Downstream, attrs)
}

// Heal removes every fault from the link; after a cut it resets the connections that
// crossed it (see Link).
func (l *Link) Heal() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, name := range l.toxics {
		if err := l.p.Toxics.RemoveToxic(context.Background(), name); err != nil {
			return fmt.Errorf("testcluster: link %s: remove %s: %w", l.name, name, err)
		}
	}
	l.toxics = nil
	if l.cut {
		l.cut = false
		l.p.Stop()
		if err := l.restart(); err != nil {
			return fmt.Errorf("testcluster: link %s: restart after a cut: %w", l.name, err)
		}
	}
	return nil
}

// close stops the link and gives its port up.
func (l *Link) close() {
	l.p.Stop()
	_ = l.res.Close()
}
