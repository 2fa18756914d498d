package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Registration limits.
const (
	// DefaultLeaseTTL is how long a node stays registered after its last keepalive: the
	// controller moves its partitions' leadership after this long.
	DefaultLeaseTTL = 6 * time.Second
	// leaseTTLMin is etcd's granularity: lease TTLs are whole seconds.
	leaseTTLMin = time.Second
	// keepAliveIntervalMin bounds the renewal rate; keepAliveRetry is the wait after a
	// failed renewal (another member may answer the next one).
	keepAliveIntervalMin = 100 * time.Millisecond
	keepAliveRetry       = 100 * time.Millisecond
)

// Registration is a live registration of one data-plane node. Its lease is kept alive
// in the background until Close, or until it is lost (Lost is closed): then the node is
// fenced — the controller moves its leaderships away and its AlterISR and HW writes are
// refused — until it registers again, which gives it a new broker epoch. Between a last
// successful renewal and Lost, SafeUntil says how long the node may still act.
type Registration struct {
	c      *Client
	broker Broker
	lease  clientv3.LeaseID
	cancel context.CancelFunc
	ttl    time.Duration
	lost   chan struct{}
	done   chan struct{}
	// safeUntil (Unix nanoseconds) is a lower bound on the lease's expiry in etcd: the
	// send time of the last acknowledged keepalive (or grant) plus the TTL.
	safeUntil atomic.Int64

	closeOnce sync.Once
}

// Register puts b under a lease of ttl (DefaultLeaseTTL if zero; rounded up to whole
// seconds) and keeps it alive. A live registration of the same id makes it fail with
// ErrBrokerIDInUse.
func (c *Client) Register(ctx context.Context, b Broker, ttl time.Duration) (*Registration, error) {
	if ttl == 0 {
		ttl = DefaultLeaseTTL
	}
	if ttl < leaseTTLMin {
		ttl = leaseTTLMin
	}
	if b.ID < 0 || b.Host == "" || b.Port <= 0 || b.Port > 65535 {
		return nil, fmt.Errorf("client: register: invalid broker %+v", b)
	}
	gctx, gcancel := c.opContext(ctx)
	start := time.Now() // etcd cannot expire the lease before start + TTL
	grant, err := c.etcd.Grant(gctx, int64((ttl+time.Second-1)/time.Second))
	gcancel()
	c.observe("lease_grant", start)
	if err != nil {
		return nil, fmt.Errorf("client: register %d: grant lease: %w", b.ID, err)
	}
	key := BrokerKey(b.ID)
	resp, err := c.txn(ctx, "register",
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(key, mustJSON(b), clientv3.WithLease(grant.ID))})
	if err != nil || !resp.Succeeded {
		c.revoke(grant.ID)
		if err != nil {
			return nil, fmt.Errorf("client: register %d: %w", b.ID, err)
		}
		return nil, fmt.Errorf("client: register %d: %w", b.ID, ErrBrokerIDInUse)
	}
	b.Epoch = resp.Header.Revision
	kctx, kcancel := context.WithCancel(context.Background())
	r := &Registration{c: c, broker: b, lease: grant.ID, ttl: time.Duration(grant.TTL) * time.Second,
		cancel: kcancel, lost: make(chan struct{}), done: make(chan struct{})}
	r.safeUntil.Store(start.Add(r.ttl).UnixNano())
	go r.keepAlive(kctx)
	c.logger.Info("registered", slog.Int("broker", int(b.ID)), slog.Int64("epoch", b.Epoch))
	return r, nil
}

// keepAlive renews the lease every ttl/3 with one KeepAliveOnce each, so that it knows
// when each renewal was sent: etcd's own KeepAlive stream reports only when answers
// arrive, which would overestimate how long the lease is certainly alive. It ends —
// closing Lost — when etcd says the lease is gone, when no renewal succeeded before
// SafeUntil, or when kctx ends (Close).
func (r *Registration) keepAlive(kctx context.Context) {
	defer close(r.done)
	defer close(r.lost)
	interval := max(r.ttl/3, keepAliveIntervalMin)
	for {
		deadline := time.Unix(0, r.safeUntil.Load())
		if !time.Now().Before(deadline) {
			r.c.logger.Warn("registration lost: no renewal before the lease could expire", slog.Int("broker", int(r.broker.ID)), slog.Int64("epoch", r.broker.Epoch))
			return
		}
		sent := time.Now()
		cctx, cancel := context.WithDeadline(kctx, deadline)
		resp, err := r.c.etcd.KeepAliveOnce(cctx, r.lease)
		cancel()
		r.c.observe("lease_keepalive", sent)
		if kctx.Err() != nil {
			return
		}
		if errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL <= 0) {
			r.c.logger.Warn("registration lost: lease expired", slog.Int("broker", int(r.broker.ID)), slog.Int64("epoch", r.broker.Epoch))
			return
		}
		wait := interval
		if err == nil {
			r.safeUntil.Store(sent.Add(time.Duration(resp.TTL) * time.Second).UnixNano())
		} else {
			wait = keepAliveRetry
		}
		t := time.NewTimer(wait)
		select {
		case <-kctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// SafeUntil is when this registration may have expired at the latest as far as this
// node can tell: etcd cannot have expired the lease (and the controller cannot have
// moved this node's leaderships) before it. A node must not acknowledge writes as a
// leader past it; reading it is one atomic load, cheap enough for the produce path.
func (r *Registration) SafeUntil() time.Time { return time.Unix(0, r.safeUntil.Load()) }

// Broker returns the registered node, with its epoch.
func (r *Registration) Broker() Broker { return r.broker }

// Lost is closed when the registration ends: its lease expired or was revoked, or Close.
func (r *Registration) Lost() <-chan struct{} { return r.lost }

// Close revokes the lease, so the node leaves the registry at once rather than after
// its TTL.
func (r *Registration) Close() error {
	var err error
	r.closeOnce.Do(func() {
		r.cancel()
		<-r.done
		err = r.c.revoke(r.lease)
	})
	return err
}

// revoke revokes a lease with the client's timeout; a lease already gone is fine.
func (c *Client) revoke(id clientv3.LeaseID) error {
	ctx, cancel := c.opContext(context.Background())
	defer cancel()
	defer c.observe("lease_revoke", time.Now())
	if _, err := c.etcd.Revoke(ctx, id); err != nil && !isLeaseNotFound(err) {
		return fmt.Errorf("client: revoke lease %x: %w", int64(id), err)
	}
	return nil
}

func isLeaseNotFound(err error) bool { return errors.Is(err, rpctypes.ErrLeaseNotFound) }
