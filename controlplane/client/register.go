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

	"github.com/gregor-streaming/gregor/controlplane/cluster"
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
	// keepAliveAttemptMax bounds one renewal's wait for its answer (see keepAlive).
	keepAliveAttemptMax = time.Second
	// registerAttemptsMax bounds the rounds of one Register: a round is lost only to a
	// registration of the same id changing between its read and its write (an expiry,
	// another registration or takeover), so more than a few means something is wrong.
	registerAttemptsMax = 4
)

// Registration is a live registration of one data-plane node. Its lease is kept alive
// in the background until Close, or until it is lost (Lost is closed): its lease expired
// or was revoked — by a later process of the same node taking the registration over —
// and the node is fenced: the controller moves its leaderships away and its AlterISR, HW
// and producer-id writes are refused (they compare the broker epoch), until it registers
// again, which gives it a new broker epoch. Between a last successful renewal and Lost,
// SafeUntil says how long the node may still act.
type Registration struct {
	c      *Client
	broker cluster.Broker
	lease  clientv3.LeaseID
	cancel context.CancelFunc
	ttl    time.Duration
	lost   chan struct{}
	done   chan struct{}
	// safeUntil (Unix nanoseconds) is a lower bound on the lease's expiry in etcd: the
	// send time of the last acknowledged keepalive (or grant) plus the TTL.
	safeUntil atomic.Int64
	// sessions counts the sessions opened (session.go); sessionDone is closed when the
	// last has ended; sessionUntil (Unix nanoseconds) is the session's bound on
	// SafeUntil, sessionUnbounded until a member recorded one.
	sessions     atomic.Int64
	sessionDone  chan struct{}
	sessionUntil atomic.Int64

	closeOnce sync.Once
}

// Register puts b under a lease of ttl (DefaultLeaseTTL if zero; rounded up to whole
// seconds) and keeps it alive.
//
// A live registration of the same id makes it fail with ErrBrokerIDInUse, unless it has
// b's (non-empty) Incarnation: then b is a later process of the same node, whose earlier
// process crashed or is to be fenced, and Register takes the registration over at once,
// as Kafka's controller accepts a registration of the incarnation it knows. The key is
// replaced under the new lease in one transaction that compares it is still the one
// read, which gives a new, higher broker epoch — every write of the old process compares
// its own epoch, so all are refused from then on — and the old lease is revoked, so that
// the old process, if it still runs, finds its next renewal refused and stops (Lost).
// The controller sees the new epoch and takes the node's leaderships through a new
// leader epoch, as after an expiry. Waiting for the old lease instead would keep the
// node's partitions offline for up to a TTL after every crash.
func (c *Client) Register(ctx context.Context, b cluster.Broker, ttl time.Duration) (*Registration, error) {
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
	epoch, replaced, err := c.putRegistration(ctx, b, grant.ID)
	if err != nil {
		c.revoke(grant.ID)
		return nil, fmt.Errorf("client: register %d: %w", b.ID, err)
	}
	b.Epoch = epoch
	if replaced != nil {
		// The key no longer uses the old lease; revoking it is what tells a still-running
		// old process. If the revoke fails the old process learns from its metadata view
		// instead, and its writes are refused either way.
		if err := c.revoke(clientv3.LeaseID(replaced.lease)); err != nil {
			c.logger.Warn("took over the registration but could not revoke the old lease", slog.Int("broker", int(b.ID)), slog.Any("err", err))
		}
		c.logger.Info("registered, taking over the registration of an earlier process of this node",
			slog.Int("broker", int(b.ID)), slog.Int64("epoch", b.Epoch), slog.Int64("old_epoch", replaced.epoch))
	}
	kctx, kcancel := context.WithCancel(context.Background())
	r := &Registration{c: c, broker: b, lease: grant.ID, ttl: time.Duration(grant.TTL) * time.Second,
		cancel: kcancel, lost: make(chan struct{}), done: make(chan struct{}), sessionDone: make(chan struct{})}
	r.safeUntil.Store(start.Add(r.ttl).UnixNano())
	r.sessionUntil.Store(sessionUnbounded)
	go r.keepAlive(kctx)
	go r.holdSession(kctx)
	if replaced == nil {
		c.logger.Info("registered", slog.Int("broker", int(b.ID)), slog.Int64("epoch", b.Epoch))
	}
	return r, nil
}

// replacedRegistration is the registration a takeover replaced.
type replacedRegistration struct {
	epoch int64
	lease int64
}

// putRegistration writes b's registration key under lease: created if absent, or
// replaced if it holds a registration of b's incarnation. It returns the new broker
// epoch and what it replaced (nil if it created the key).
func (c *Client) putRegistration(ctx context.Context, b cluster.Broker, lease clientv3.LeaseID) (int64, *replacedRegistration, error) {
	key, value := cluster.BrokerKey(b.ID), cluster.MustJSON(b)
	put := clientv3.OpPut(key, value, clientv3.WithLease(lease))
	for range registerAttemptsMax {
		resp, err := c.txn(ctx, "register", []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
			[]clientv3.Op{put}, clientv3.OpGet(key))
		if err != nil {
			return 0, nil, err
		}
		if resp.Succeeded {
			return resp.Header.Revision, nil, nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue // the Else read runs at the compare's revision; kept for safety
		}
		cur, err := cluster.DecodeBroker(key, kvs[0].Value, kvs[0].ModRevision)
		if err != nil || b.Incarnation == "" || cur.Incarnation != b.Incarnation {
			// Not provably this node's: another machine or data directory claims the
			// id, or an earlier version registered it. Wait for its lease.
			return 0, nil, ErrBrokerIDInUse
		}
		resp, err = c.txn(ctx, "register_takeover",
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", kvs[0].ModRevision)}, []clientv3.Op{put})
		if err != nil {
			return 0, nil, err
		}
		if resp.Succeeded {
			return resp.Header.Revision, &replacedRegistration{epoch: cur.Epoch, lease: kvs[0].Lease}, nil
		}
	}
	return 0, nil, fmt.Errorf("registration of the id changed under %d attempts in a row", registerAttemptsMax)
}

// brokerEpochIs compares, in a transaction, that node id is registered with epoch: the
// fence of every write a node makes as itself.
func brokerEpochIs(id int32, epoch int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(cluster.BrokerKey(id)), "=", epoch)
}

// keepAlive renews the lease every ttl/3 with one KeepAliveOnce each, so that it knows
// when each renewal was sent: etcd's own KeepAlive stream reports only when answers
// arrive, which would overestimate how long the lease is certainly alive. It ends —
// closing Lost — when etcd says the lease is gone, when no renewal succeeded before
// SafeUntil, or when kctx ends (Close).
func (r *Registration) keepAlive(kctx context.Context) {
	defer close(r.done)
	defer close(r.lost)
	// Once the registration is lost — above all when a later process of the node took it
	// over, which the controller acts on before this lease would have expired — the node
	// must not act on its last renewal: SafeUntil is in the past before Lost is closed.
	defer r.safeUntil.Store(0)
	interval := max(r.ttl/3, keepAliveIntervalMin)
	for {
		deadline := time.Unix(0, r.safeUntil.Load())
		if !time.Now().Before(deadline) {
			r.c.logger.Warn("registration lost: no renewal before the lease could expire", slog.Int("broker", int(r.broker.ID)), slog.Int64("epoch", r.broker.Epoch))
			return
		}
		sent := time.Now()
		// One attempt waits at most keepAliveAttemptMax, not until SafeUntil: each
		// KeepAliveOnce opens a stream of its own, which the balancer may put on a
		// stalled member (paused, or behind a cut that drops bytes), and a renewal waiting
		// there until the deadline would lose the registration although two members
		// could renew it. A timed-out attempt reports the member to the endpoint guard and
		// is sent again at once.
		attempt := sent.Add(keepAliveAttemptMax)
		if deadline.Before(attempt) {
			attempt = deadline
		}
		cctx, cancel := context.WithDeadline(kctx, attempt)
		resp, err := r.c.etcd.KeepAliveOnce(cctx, r.lease)
		cancel()
		r.c.observe("lease_keepalive", sent)
		if kctx.Err() != nil {
			return
		}
		if err != nil && !time.Now().Before(attempt) && attempt.Before(deadline) {
			r.c.logger.Warn("lease renewal unanswered; sending it again", slog.Int("broker", int(r.broker.ID)),
				slog.Duration("waited", time.Since(sent)), slog.Any("err", err))
			r.c.event(EventKeepAliveTimeout)
			r.c.suspectEndpoints()
			continue
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
// moved this node's leaderships because of an expiry) before it. A node must not
// acknowledge writes as a leader past it; reading it is two atomic loads, cheap enough
// for the produce path. A takeover by a later process of the same node ends the
// registration earlier: it is meant for a process that is gone (the data plane proves
// that with its data directory's lock), and one still running sees SafeUntil drop to
// the past as soon as its next renewal is refused, and its leaderships end as soon as
// its metadata view shows the new registration.
//
// A session (session.go) bounds it too: once a member has recorded one, it may revoke
// the registration its grace after the session breaks, so SafeUntil is also at most the
// last answered heartbeat's send time plus that grace.
func (r *Registration) SafeUntil() time.Time {
	return time.Unix(0, min(r.safeUntil.Load(), r.sessionUntil.Load()))
}

// Broker returns the registered node, with its epoch.
func (r *Registration) Broker() cluster.Broker { return r.broker }

// Lost is closed when the registration ends: its lease expired or was revoked (also by
// a takeover), or Close. SafeUntil is in the past from then on.
func (r *Registration) Lost() <-chan struct{} { return r.lost }

// Close revokes the lease, so the node leaves the registry at once rather than after
// its TTL.
func (r *Registration) Close() error {
	var err error
	r.closeOnce.Do(func() {
		r.cancel()
		<-r.done
		<-r.sessionDone
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
