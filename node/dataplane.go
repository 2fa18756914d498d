package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/dataplane"
	"github.com/gregor-streaming/gregor/internal/reserve"
)

// Defaults of Config.
const (
	// DefaultRegistrationTTL is how long a node stays in the registry after it stops
	// renewing its lease: the control plane moves its partitions' leadership once it
	// expires.
	DefaultRegistrationTTL = 6 * time.Second
	// takeoverWaitTTLs bounds the wait for another incarnation's registration to expire,
	// in registration TTLs.
	takeoverWaitTTLs = 3
	// takeoverRetryInterval is how often registration is retried during that wait.
	takeoverRetryInterval = 500 * time.Millisecond
	// stopTimeout bounds each step of stopping (the Kafka listener, the last HW
	// checkpoint) when Stop's context has no deadline of its own.
	stopTimeout = 10 * time.Second
	// httpReadHeaderTimeout bounds a request's headers on the HTTP listener.
	httpReadHeaderTimeout = 10 * time.Second
	// DefaultControlledShutdownTimeout bounds the wait of a controlled shutdown for the
	// controller to move the node's leaderships (Config.ControlledShutdownTimeout).
	// Kafka's brokers retry theirs three times, 5 s apart; the moves themselves take a
	// controller pass or two.
	DefaultControlledShutdownTimeout = 30 * time.Second
)

// Config configures a data-plane node.
type Config struct {
	// ID is the node (broker) id, unique among live data-plane nodes.
	ID int32
	// DataDir holds the partition logs, the lock and the incarnation.
	DataDir string
	// Listen is the Kafka listener, host:port; port 0 picks a free port (see Addr).
	Listen string
	// Advertise is the host:port clients are told to connect to; empty means the bound
	// Listen address (with the port picked for port 0). The cluster harness advertises a
	// proxy in front of the node.
	Advertise string
	// HTTP is the listener of /metrics, /healthz and /readyz (port 0 picks one, see
	// HTTPAddr); empty disables it.
	HTTP string
	// ControlPlane lists the control plane's etcd client endpoints.
	ControlPlane []string
	// Rack is the node's rack, for spreading replicas.
	Rack string
	// ReplicaRoutes maps a node id to the address this node's replica fetchers dial for
	// it instead of its registered one (the cluster harness's links between nodes).
	// Used when Server.DialReplica is nil.
	ReplicaRoutes map[int32]string
	// RegistrationTTL is the registration's lease (default DefaultRegistrationTTL).
	RegistrationTTL time.Duration
	// ControlledShutdownTimeout bounds the controlled shutdown that Stop begins with
	// (see ControlledShutdown); 0 means DefaultControlledShutdownTimeout, a negative
	// value turns controlled shutdown off (Stop revokes the registration and the
	// controller moves the leaderships afterwards).
	ControlledShutdownTimeout time.Duration
	// Server holds the data plane's own settings: limits, deadlines, event loops,
	// copy-below size, topic auto-creation. The fields the assembly owns (NodeID, Listen,
	// Advertise, DataDir, ControlPlane, HWRecorder, LeaseSafeUntil, BrokerEpoch, Logger,
	// Metrics) are set by StartDataPlane and ignored here.
	Server dataplane.Config
	// Logger receives the node's logs (default slog.Default()).
	Logger *slog.Logger
}

// ErrRegistrationLost is what Err wraps when the node stopped because its registration's
// lease expired or was revoked (not taken over by a later process of the node): the
// control plane counts it dead, and a new start of the node, as a new epoch, is what
// brings it back. gregor-dp starts it again in the same process.
var ErrRegistrationLost = errors.New("lost the control-plane registration (its lease expired or was revoked)")

// DataPlane is a running data-plane node. It serves until Stop, Abort, or a condition
// that ends it on its own (its registration lost or taken over by a later process of
// the node, the HTTP listener failing): then Done is closed and Err says why.
type DataPlane struct {
	cfg       Config
	logger    *slog.Logger
	addr      string // the bound Kafka listener
	advertise string
	httpLn    net.Listener
	httpSrv   *http.Server
	srv       *dataplane.Server
	cl        *client.Client
	md        *client.Metadata
	reg       *client.Registration
	hwc       *client.HWCheckpointer
	release   func()

	reconcile chan struct{}
	stop      chan struct{} // closed by Stop or Abort
	loopDone  chan struct{} // closed when the reconcile loop has returned
	done      chan struct{} // closed once the node has stopped
	stopOnce  sync.Once
	// shutdownOnce runs the controlled shutdown once (ControlledShutdown, Stop).
	shutdownOnce sync.Once
	errMu        sync.Mutex
	err          error
}

// StartDataPlane starts a node: it locks the data directory, connects to the control
// plane, follows the metadata, registers (taking over its own earlier registration at
// once, or waiting for another incarnation's to expire), starts the Kafka listener and
// the HTTP endpoints and reconciles with the metadata. ctx bounds the start only. On
// error everything started is stopped.
func StartDataPlane(ctx context.Context, cfg Config) (dp *DataPlane, err error) {
	started := time.Now()
	if cfg.DataDir == "" || cfg.Listen == "" || len(cfg.ControlPlane) == 0 {
		return nil, errors.New("node: data dir, listen address and control-plane endpoints are required")
	}
	if cfg.ID < 0 || cfg.ID > 1<<30 {
		return nil, fmt.Errorf("node: id %d out of range", cfg.ID)
	}
	if cfg.RegistrationTTL <= 0 {
		cfg.RegistrationTTL = DefaultRegistrationTTL
	}
	if cfg.ControlledShutdownTimeout == 0 {
		cfg.ControlledShutdownTimeout = DefaultControlledShutdownTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	d := &DataPlane{cfg: cfg, logger: logger, reconcile: make(chan struct{}, 1),
		stop: make(chan struct{}), loopDone: make(chan struct{}), done: make(chan struct{})}
	defer func() {
		if err != nil {
			d.teardown()
		}
	}()
	// The lock first: everything after it may assume no other process uses the directory.
	if d.release, err = lockDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	incarnation, created, err := loadIncarnation(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if created {
		logger.Info("new data directory incarnation", "data", cfg.DataDir)
	}
	// The Kafka port is reserved, not listened on, until the data plane starts: the
	// registration below must carry the real port, and a client must not connect before
	// the node serves.
	res, listen, err := reserve.Resolve(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("node: kafka listener: %w", err)
	}
	defer res.Close()
	d.addr, d.advertise = listen, cfg.Advertise
	if d.advertise == "" {
		d.advertise = d.addr
	}
	host, portStr, err := net.SplitHostPort(d.advertise)
	if err != nil {
		return nil, fmt.Errorf("node: advertised address: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return nil, fmt.Errorf("node: advertised address %q: bad port", d.advertise)
	}
	if cfg.HTTP != "" {
		if d.httpLn, err = net.Listen("tcp", cfg.HTTP); err != nil {
			return nil, fmt.Errorf("node: http listener: %w", err)
		}
	}

	set := metrics.NewSet()
	etcdLatency := func(op string, dur time.Duration) {
		set.GetOrCreateHistogram(fmt.Sprintf("gregor_cp_op_duration_seconds{op=%q}", op)).Update(dur.Seconds())
	}
	cpEvent := func(event string) {
		set.GetOrCreateCounter(fmt.Sprintf("gregor_cp_client_events_total{event=%q}", event)).Inc()
	}
	if d.cl, err = client.New(client.Config{Endpoints: cfg.ControlPlane, Logger: logger, ObserveOp: etcdLatency, CountEvent: cpEvent}); err != nil {
		return nil, err
	}
	// Follow the metadata before serving, so the first client sees the cluster.
	if d.md, err = d.cl.WatchMetadata(ctx, func(client.Change) { d.kick() }); err != nil {
		return nil, fmt.Errorf("node: watch metadata: %w", err)
	}
	// Register before listening: the registration is what hands out producer ids, and a
	// client that learns of the node a moment early retries its connection.
	me := cluster.Broker{ID: cfg.ID, Host: host, Port: int32(port), Rack: cfg.Rack, Incarnation: incarnation}
	if d.reg, err = register(ctx, d.cl, me, cfg.RegistrationTTL, logger); err != nil {
		return nil, fmt.Errorf("node: register: %w", err)
	}
	// Reconcile only views that include this registration: the data plane tells a
	// leadership given to this process from one given to an earlier process of the node
	// by comparing the partition state with the registration.
	if _, err := d.md.WaitRevision(ctx, d.reg.Broker().Epoch); err != nil {
		return nil, fmt.Errorf("node: watch metadata: %w", err)
	}
	d.hwc = d.reg.NewHWCheckpointer(client.DefaultHWCheckpointInterval)
	sc := cfg.Server
	sc.NodeID, sc.Listen, sc.Advertise, sc.DataDir = cfg.ID, d.addr, d.advertise, cfg.DataDir
	sc.ControlPlane = &dataplane.ClientControlPlane{Client: d.cl, Metadata: d.md, Registration: d.reg}
	sc.HWRecorder, sc.Logger, sc.Metrics = d.hwc, logger, set
	sc.LeaseSafeUntil, sc.BrokerEpoch = d.reg.SafeUntil, d.reg.Broker().Epoch
	if sc.DialReplica == nil && len(cfg.ReplicaRoutes) > 0 {
		sc.DialReplica = routedDial(cfg.ReplicaRoutes)
	}
	srv, err := dataplane.New(sc)
	if err != nil {
		return nil, err
	}
	if err := srv.Start(); err != nil {
		return nil, err
	}
	d.srv = srv
	_ = res.Close() // the listener holds the port now
	snap := d.md.Snapshot()
	srv.RestoreHighWatermarks(snap, d.checkpointedHighWatermarks(ctx, snap))
	if err := srv.Reconcile(snap); err != nil {
		logger.Error("reconcile", "err", err)
	}
	httpErr := make(chan error, 1)
	if d.httpLn != nil {
		d.httpSrv = &http.Server{Handler: srv.HTTPHandler(), ReadHeaderTimeout: httpReadHeaderTimeout}
		go func() { httpErr <- d.httpSrv.Serve(d.httpLn) }()
	}
	go d.loop(httpErr)
	logger.Info("gregor-dp serving", "kafka", d.addr, "advertise", d.advertise, "http", d.HTTPAddr(),
		"cp", cfg.ControlPlane, "data", cfg.DataDir, "epoch", d.reg.Broker().Epoch,
		"startup", time.Since(started).Round(time.Millisecond))
	return d, nil
}

// checkpointedHighWatermarks reads the control plane's high-watermark checkpoints of
// the topics with a partition assigned to this node, for the replicas that open without
// a checkpoint of the node's own (dataplane.Server.RestoreHighWatermarks). They are
// hints: a topic whose checkpoints cannot be read is left out, and logged.
func (d *DataPlane) checkpointedHighWatermarks(ctx context.Context, snap *client.Snapshot) map[string]map[int32]cluster.HWCheckpoint {
	topics := map[string]bool{}
	for tp, st := range snap.Partitions {
		if slices.Contains(st.Replicas, d.cfg.ID) {
			topics[tp.Topic] = true
		}
	}
	out := make(map[string]map[int32]cluster.HWCheckpoint, len(topics))
	for topic := range topics {
		cps, err := d.cl.HighWatermarks(ctx, topic)
		if err != nil {
			d.logger.Warn("high-watermark checkpoints unreadable; the replicas start without them", "topic", topic, "err", err)
			continue
		}
		out[topic] = cps
	}
	return out
}

// kick asks the reconcile loop for a pass; it never blocks.
func (d *DataPlane) kick() {
	select {
	case d.reconcile <- struct{}{}:
	default:
	}
}

// loop reconciles the data plane with each metadata change until the node is stopped or
// a condition ends it; it then stops the node itself.
func (d *DataPlane) loop(httpErr <-chan error) {
	defer close(d.loopDone)
	err := func() error {
		for {
			select {
			case <-d.stop:
				return nil
			case <-d.reg.Lost():
				if b, ok := d.md.Snapshot().Brokers[d.cfg.ID]; ok && b.Epoch > d.reg.Broker().Epoch {
					return fmt.Errorf("a later process of node %d took the registration over (epoch %d, this process's %d): stopping", d.cfg.ID, b.Epoch, d.reg.Broker().Epoch)
				}
				return fmt.Errorf("%w (epoch %d): stopping so that a new start registers again", ErrRegistrationLost, d.reg.Broker().Epoch)
			case err := <-httpErr:
				return fmt.Errorf("http: %w", err)
			case <-d.reconcile:
				snap := d.md.Snapshot()
				if err := d.srv.Reconcile(snap); err != nil { // leads nothing once taken over
					d.logger.Error("reconcile", "err", err)
				}
				if b, ok := snap.Brokers[d.cfg.ID]; ok && b.Epoch > d.reg.Broker().Epoch {
					return fmt.Errorf("a later process of node %d took the registration over (epoch %d, this process's %d): stopping", d.cfg.ID, b.Epoch, d.reg.Broker().Epoch)
				}
			}
		}
	}()
	if err != nil {
		d.errMu.Lock()
		d.err = err
		d.errMu.Unlock()
		d.logger.Error("gregor-dp stopping", "err", err)
		go func() { _ = d.Stop(context.Background()) }()
	}
}

// Addr is the bound Kafka listener address (with the port picked for port 0).
func (d *DataPlane) Addr() string { return d.addr }

// AdvertisedAddr is the address the node registered for clients.
func (d *DataPlane) AdvertisedAddr() string { return d.advertise }

// HTTPAddr is the bound HTTP listener address, or "" without one.
func (d *DataPlane) HTTPAddr() string {
	if d.httpLn == nil {
		return ""
	}
	return d.httpLn.Addr().String()
}

// ID is the node id.
func (d *DataPlane) ID() int32 { return d.cfg.ID }

// Epoch is this process's registration epoch (client.Broker's Epoch).
func (d *DataPlane) Epoch() int64 { return d.reg.Broker().Epoch }

// Server is the node's Kafka server, for tests that inspect it.
func (d *DataPlane) Server() *dataplane.Server { return d.srv }

// Done is closed once the node has stopped, by Stop, Abort or on its own.
func (d *DataPlane) Done() <-chan struct{} { return d.done }

// Err says why a node that stopped on its own did (nil while it runs, and after Stop or
// Abort).
func (d *DataPlane) Err() error {
	d.errMu.Lock()
	defer d.errMu.Unlock()
	return d.err
}

// Stop stops the node in order: a controlled shutdown (unless done already or turned
// off; given at most half of the time ctx leaves), the reconcile loop, HTTP, the Kafka
// listener and its logs, the last HW checkpoint, the registration (revoked, so the
// control plane moves what is left at once), the metadata watch, the client and the
// lock. ctx bounds the listener's and the checkpoint's shutdown. It waits for a stop
// already under way.
func (d *DataPlane) Stop(ctx context.Context) error {
	var err error
	first := false
	d.stopOnce.Do(func() {
		first = true
		sctx, cancel := ctx, context.CancelFunc(func() {})
		if deadline, ok := ctx.Deadline(); ok {
			sctx, cancel = context.WithTimeout(ctx, time.Until(deadline)/2)
		}
		_ = d.ControlledShutdown(sctx)
		cancel()
		close(d.stop)
		<-d.loopDone
		err = d.teardownCtx(ctx)
		close(d.done)
	})
	if !first {
		select {
		case <-d.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

// ControlledShutdown moves the node's leaderships to other nodes before it stops, so
// that clients see at most retriable NOT_LEADER_OR_FOLLOWER answers instead of a
// partition without a leader for a registration TTL (Kafka's controlled shutdown). The
// node tells the controller through etcd (client.Registration.BeginControlledShutdown);
// the controller elects it nowhere from then on, gives each partition it leads to
// another live in-sync replica with a new leader epoch (or takes the partition offline
// if it is the last in-sync one), and takes it out of the ISRs that keep another
// member. The node keeps serving meanwhile: each leadership it loses is applied as it
// arrives (acks=all produces waiting on it are answered NOT_LEADER_OR_FOLLOWER, clients
// retry at the new leader) and it keeps following as a replica. It returns once the
// node's view shows it leads nothing — or at Config.ControlledShutdownTimeout or ctx's
// end, whichever is first, with an error; Stop then goes on all the same. It runs
// once; later calls return nil at once. It does not stop the node: Stop does.
func (d *DataPlane) ControlledShutdown(ctx context.Context) error {
	var err error // stays nil for a later call
	d.shutdownOnce.Do(func() { err = d.controlledShutdown(ctx) })
	return err
}

func (d *DataPlane) controlledShutdown(ctx context.Context) error {
	timeout := d.cfg.ControlledShutdownTimeout
	if timeout < 0 || d.Err() != nil {
		return nil // off, or stopping on its own: the registration is gone or taken over
	}
	select {
	case <-d.loopDone:
		return nil // stopping on its own: the registration is gone or taken over
	default:
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	leading := func(snap *client.Snapshot) int {
		n := 0
		for _, st := range snap.Partitions {
			if st.Leader == d.cfg.ID {
				n++
			}
		}
		return n
	}
	d.logger.Info("controlled shutdown: asking the controller to move this node's leaderships",
		"leading", leading(d.md.Snapshot()), "timeout", timeout)
	if err := d.reg.BeginControlledShutdown(ctx); err != nil {
		d.logger.Warn("controlled shutdown: could not tell the controller; stopping without it", "err", err)
		return err
	}
	for snap := d.md.Snapshot(); ; {
		n := leading(snap)
		if n == 0 {
			// Apply this view now, not on the reconcile loop's next turn: the node must have
			// stopped leading before its listener closes.
			if err := d.srv.Reconcile(snap); err != nil {
				d.logger.Error("reconcile", "err", err)
			}
			d.logger.Info("controlled shutdown complete: this node leads nothing",
				"took", time.Since(start).Round(time.Millisecond))
			return nil
		}
		select {
		case <-snap.Superseded():
			snap = d.md.Snapshot()
		case <-d.loopDone:
			return errors.New("node: controlled shutdown: the node stopped on its own")
		case <-ctx.Done():
			d.logger.Warn("controlled shutdown timed out: stopping while still leading", "leading", n,
				"took", time.Since(start).Round(time.Millisecond))
			return fmt.Errorf("node: controlled shutdown: still leading %d partitions: %w", n, ctx.Err())
		}
	}
}

// Abort stops the node as a crash would, as far as one can inside a process: the
// control-plane client is closed first, so the registration is not revoked (the control
// plane learns of the node's end when its lease expires) and no last HW checkpoint is
// written; then the listeners close and the lock is released. The cluster harness kills
// in-process nodes with it.
func (d *DataPlane) Abort() {
	d.stopOnce.Do(func() {
		close(d.stop)
		<-d.loopDone
		_ = d.cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = d.teardownCtx(ctx)
		close(d.done)
	})
}

func (d *DataPlane) teardown() { _ = d.teardownCtx(context.Background()) }

// teardownCtx releases whatever StartDataPlane acquired, in the reverse order.
func (d *DataPlane) teardownCtx(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, stopTimeout)
		defer cancel()
	}
	var errs []error
	if d.httpSrv != nil {
		_ = d.httpSrv.Close()
	} else if d.httpLn != nil {
		_ = d.httpLn.Close()
	}
	if d.srv != nil {
		if err := d.srv.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("node: stop data plane: %w", err))
		}
	}
	if d.hwc != nil {
		_ = d.hwc.Close(ctx)
	}
	if d.reg != nil {
		_ = d.reg.Close()
	}
	if d.md != nil {
		d.md.Close()
	}
	if d.cl != nil {
		_ = d.cl.Close()
	}
	if d.release != nil {
		d.release()
	}
	return errors.Join(errs...)
}

// register registers the node. A registration of the same id by an earlier process on
// this data directory (same incarnation: a crash and restart) is taken over at once; one
// by another incarnation (another directory or host, or this directory before a reboot)
// may be a live node, so register waits for its lease to expire — a bounded wait, with
// progress in the log.
func register(ctx context.Context, cl *client.Client, b cluster.Broker, ttl time.Duration, logger *slog.Logger) (*client.Registration, error) {
	deadline := time.Now().Add(takeoverWaitTTLs * ttl)
	for {
		reg, err := cl.Register(ctx, b, ttl)
		if err == nil || !errors.Is(err, client.ErrBrokerIDInUse) || time.Now().After(deadline) {
			return reg, err
		}
		logger.Info("node id registered by another incarnation (another data directory or host, or before a reboot); waiting for its lease to expire", "id", b.ID)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(takeoverRetryInterval):
		}
	}
}

// routedDial dials a node at its route, if it has one, else at its registered address.
func routedDial(routes map[int32]string) func(ctx context.Context, id int32, addr string) (net.Conn, error) {
	return func(ctx context.Context, id int32, addr string) (net.Conn, error) {
		if r, ok := routes[id]; ok {
			addr = r
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// ParseReplicaRoutes parses routes written id=host:port,id=host:port (gregor-dp's
// --replica-route).
func ParseReplicaRoutes(s string) (map[int32]string, error) {
	routes := map[int32]string{}
	for _, kv := range strings.Split(s, ",") {
		if kv == "" {
			continue
		}
		id, addr, ok := strings.Cut(kv, "=")
		n, err := strconv.ParseInt(id, 10, 32)
		if !ok || err != nil {
			return nil, fmt.Errorf("node: replica route %q: want id=host:port", kv)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("node: replica route %q: %w", kv, err)
		}
		routes[int32(n)] = addr
	}
	return routes, nil
}

// FormatReplicaRoutes writes routes as ParseReplicaRoutes reads them.
func FormatReplicaRoutes(routes map[int32]string) string {
	var parts []string
	for id, addr := range routes {
		parts = append(parts, strconv.Itoa(int(id))+"="+addr)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
