package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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
)

// Registration is a live registration of one data-plane node. Its lease is kept alive
// in the background until Close, or until it is lost (Lost is closed): then the node is
// fenced — the controller moves its leaderships away and its AlterISR and HW writes are
// refused — until it registers again, which gives it a new broker epoch.
type Registration struct {
	c      *Client
	broker Broker
	lease  clientv3.LeaseID
	cancel context.CancelFunc
	lost   chan struct{}
	done   chan struct{}

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
	start := time.Now()
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
	ch, err := c.etcd.KeepAlive(kctx, grant.ID)
	if err != nil {
		kcancel()
		c.revoke(grant.ID)
		return nil, fmt.Errorf("client: register %d: keepalive: %w", b.ID, err)
	}
	r := &Registration{c: c, broker: b, lease: grant.ID, cancel: kcancel, lost: make(chan struct{}), done: make(chan struct{})}
	go r.keepAlive(kctx, ch)
	c.logger.Info("registered", slog.Int("broker", int(b.ID)), slog.Int64("epoch", b.Epoch))
	return r, nil
}

// keepAlive drains the keepalive channel; etcd's client closes it when the lease is gone
// (expired, revoked) or kctx ends.
func (r *Registration) keepAlive(kctx context.Context, ch <-chan *clientv3.LeaseKeepAliveResponse) {
	defer close(r.done)
	for range ch {
	}
	if kctx.Err() == nil {
		r.c.logger.Warn("registration lost", slog.Int("broker", int(r.broker.ID)), slog.Int64("epoch", r.broker.Epoch))
	}
	close(r.lost)
}

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
