// Package client is the only package a data-plane node imports to talk to the control
// plane. It speaks to the control plane's etcd cluster directly (clientv3 with every
// member's client URL, so it survives the loss of any one member of three):
//
//   - Register: put this node under a lease and keep the lease alive;
//   - WatchMetadata: a view of brokers, topics and partition states kept current by one
//     etcd watch, with the etcd revision it reflects;
//   - CreateTopic, DeleteTopic, CreatePartitions: topic admin, each one transaction;
//   - Registration.AlterISR: the partition leader's ISR shrink/expand, a compare-and-swap
//     on the partition epoch;
//   - Registration.NewHWCheckpointer: batched, asynchronous high-watermark checkpoints;
//   - Registration.AllocateProducerIDs: producer-id blocks, never reused.
//
// Refusals a Kafka client must see carry a Kafka error code (see Error). The cluster
// model (Broker, Topic, PartitionState, …) and the key schema are controlplane/cluster's,
// documented in controlplane/SCHEMA.md.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"

	"github.com/gregor-streaming/gregor/controlplane/client/zapslog"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// Defaults for Config.
const (
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	// CallSendBytesMax is an etcd client's gRPC send limit (etcd's default is 2 MiB):
	// it lets a topic creation of PartitionsPerTopicMax partitions and a group
	// coordinator's largest transaction through; the server's RequestBytesMax bounds
	// them again.
	CallSendBytesMax = 2 * cluster.RequestBytesMax
	// keepAliveTime is the gRPC ping interval asked for; gRPC raises it to its minimum,
	// 10 s, so a member that holds the connection open and answers nothing (paused, or
	// behind a cut that drops bytes) is noticed by keepalive only after about 12 s. The
	// watch, the lease renewals and the session bound their own waits below that and
	// take such a member out of the endpoints (endpoints.go).
	keepAliveTime    = 2 * time.Second
	keepAliveTimeout = 2 * time.Second
)

// Config configures a Client.
type Config struct {
	// Endpoints are the client URLs of the control-plane members ("127.0.0.1:2379" or
	// "http://127.0.0.1:2379"). List all of them to survive the loss of one.
	Endpoints []string
	// DialTimeout bounds the first connection. Zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// RequestTimeout bounds every etcd call the client makes for the caller whose context
	// has no earlier deadline. Zero means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Logger receives the client's and etcd client's logs (warn and above from etcd).
	Logger *slog.Logger
	// ObserveOp, if set, is called with the duration of every etcd call (for metrics).
	ObserveOp func(op string, d time.Duration)
	// CountEvent, if set, is called once per event of the client's fault handling (the
	// Event* names: a stalled watch re-created, a member taken out of the endpoints, …),
	// for metrics. It must return quickly.
	CountEvent func(event string)
}

// Client talks to the control plane. It is safe for concurrent use.
type Client struct {
	etcd       *clientv3.Client
	ownsEtcd   bool
	logger     *slog.Logger
	timeout    time.Duration
	observeOp  func(op string, d time.Duration)
	countEvent func(event string)
	// guard keeps stalled members out of the endpoints (endpoints.go).
	guard endpointGuard
	// watches counts the bounded watches made, to give each its own gRPC stream.
	watches atomic.Int64
	// groups is the connection to the active group coordinator (groups.go).
	groups groupForwarder
	// closed ends with Close: registrations' sessions end with it, as they would with
	// the process (session.go).
	closed      context.Context
	closeCancel context.CancelFunc
}

// New connects to the control plane.
func New(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("client: no control-plane endpoints")
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	ec, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    keepAliveTime,
		DialKeepAliveTimeout: keepAliveTimeout,
		MaxCallSendMsgSize:   CallSendBytesMax,
		Logger:               zapslog.New(logger, zapcore.WarnLevel),
	})
	if err != nil {
		return nil, fmt.Errorf("client: connect to %v: %w", cfg.Endpoints, err)
	}
	c := Wrap(ec, cfg)
	c.ownsEtcd = true
	c.guard.all = slices.Clone(ec.Endpoints())
	c.guard.using = c.guard.all
	return c, nil
}

// Wrap returns a Client over an existing etcd client, which the caller keeps owning
// (Close does not close it). The control-plane server uses this for its local member.
func Wrap(ec *clientv3.Client, cfg Config) *Client {
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	closed, closeCancel := context.WithCancel(context.Background())
	return &Client{etcd: ec, logger: logger, timeout: cfg.RequestTimeout, observeOp: cfg.ObserveOp,
		countEvent: cfg.CountEvent, closed: closed, closeCancel: closeCancel}
}

// Close closes the connection if New opened it. Close registrations and views first.
func (c *Client) Close() error {
	c.closeCancel()
	c.closeGroups()
	if !c.ownsEtcd {
		return nil
	}
	if err := c.etcd.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("client: close: %w", err)
	}
	return nil
}

// Etcd returns the underlying etcd client, for the control-plane server and tests.
func (c *Client) Etcd() *clientv3.Client { return c.etcd }

// opContext bounds one etcd call by the client's request timeout.
func (c *Client) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout)
}

// timedOut reports the member to the endpoint guard when a call bounded by ctx (an
// opContext) ended by its deadline: a call that waits the whole request timeout most
// likely went to a stalled member (endpoints.go), which later calls should avoid.
func (c *Client) timedOut(ctx context.Context, err error) {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		c.suspectEndpoints()
	}
}

// observe reports one etcd call's duration to ObserveOp.
func (c *Client) observe(op string, start time.Time) {
	if c.observeOp != nil {
		c.observeOp(op, time.Since(start))
	}
}

// get is a linearizable range read, timed.
func (c *Client) get(ctx context.Context, op, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	defer c.observe(op, time.Now())
	resp, err := c.etcd.Get(ctx, key, opts...)
	if err != nil {
		c.timedOut(ctx, err)
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return resp, nil
}

// txn commits one transaction, timed.
func (c *Client) txn(ctx context.Context, op string, cmps []clientv3.Cmp, then []clientv3.Op, els ...clientv3.Op) (*clientv3.TxnResponse, error) {
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	call := time.Now()
	defer c.observe(op, call)
	id := recordCall(call, cmps, then)
	resp, err := c.etcd.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
	recordOutcome(id, resp, err)
	if err != nil {
		c.timedOut(ctx, err)
		return nil, fmt.Errorf("%s txn: %w", op, err)
	}
	return resp, nil
}

// Txn commits one transaction with the client's timeout and metrics; the controller
// uses it for its fenced writes.
func (c *Client) Txn(ctx context.Context, op string, cmps []clientv3.Cmp, then []clientv3.Op, els ...clientv3.Op) (*clientv3.TxnResponse, error) {
	return c.txn(ctx, op, cmps, then, els...)
}

// LiveBrokers reads the registered nodes, ordered by id.
func (c *Client) LiveBrokers(ctx context.Context) ([]cluster.Broker, int64, error) {
	resp, err := c.get(ctx, "get_brokers", cluster.BrokersPrefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("client: live brokers: %w", err)
	}
	out := make([]cluster.Broker, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		b, err := cluster.DecodeBroker(string(kv.Key), kv.Value, kv.ModRevision)
		if err != nil {
			return nil, 0, fmt.Errorf("client: live brokers: %w", err)
		}
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, resp.Header.Revision, nil
}
