// Package controlplane is the control-plane node (gregor-cp): an embedded etcd member,
// its HTTP endpoints (/metrics, /healthz, /readyz, /v1/cluster, and the replica-movement
// API: /v1/nodes, /v1/reassignments, movement_http.go) and its lifecycle. It
// wires the parts of the control plane together: the controller (package controller:
// one active in the cluster, elected through etcd, keeping partition leaders and ISRs
// right) and, for each term this node is the controller, the group coordinator
// (package groups) and the transaction coordinator (package txn), which it serves on
// its internal listener (Config.Listen), where data-plane nodes forward their clients'
// group and transaction requests.
//
// Data-plane nodes talk to the control plane only through controlplane/client, over
// etcd; the model and key schema both sides share are in controlplane/cluster, and
// SCHEMA.md in this folder documents every key.
//
// Dependencies point one way (deps_test.go): controlplane ──► controller, groups, txn
// ──► cluster; the controller and the client also use cluster, and the controller the
// client; nothing below imports the node.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/client/zapslog"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/controller"
	"github.com/gregor-streaming/gregor/controlplane/groups"
	"github.com/gregor-streaming/gregor/controlplane/txn"
	"github.com/gregor-streaming/gregor/internal/reserve"
)

// Defaults and limits.
const (
	// DefaultControllerTTL is the controller session's lease: a controller that dies is
	// replaced about this long after its last keepalive (plus an etcd election if it was
	// also the etcd leader).
	DefaultControllerTTL = 2 * time.Second
	// DefaultTickMs and DefaultElectionMs are etcd's heartbeat and election timeouts.
	DefaultTickMs     = 100
	DefaultElectionMs = 1000
	// DefaultLeaderRebalanceDelay is Config.LeaderRebalanceDelay's default.
	DefaultLeaderRebalanceDelay = controller.DefaultLeaderRebalanceDelay
	// DefaultMovesInFlightMax and DefaultDeadNodeDelay are Config.MovesInFlightMax's and
	// Config.DeadNodeDelay's defaults.
	DefaultMovesInFlightMax = controller.DefaultMovesInFlightMax
	DefaultDeadNodeDelay    = controller.DefaultDeadNodeDelay
	// clusterToken keeps members of different Gregor clusters from joining each other.
	clusterToken = "gregor"
	// compactionRetention is how much etcd history is kept: watchers further behind than
	// this reload their view (client.Resync).
	compactionRetention = "1h"
	// readyCheckTimeout bounds the linearizable read behind /readyz.
	readyCheckTimeout = time.Second
	// resignTimeout bounds waiting for the controller loops on Close.
	resignTimeout = 2 * time.Second
	// shutdownTimeout bounds the HTTP server's shutdown on Close.
	shutdownTimeout = 5 * time.Second
)

// Config configures a control-plane node.
type Config struct {
	// Name is this member's name in the etcd cluster and in InitialCluster.
	Name string
	// DataDir holds etcd's data; a node restarted on it rejoins its cluster.
	DataDir string
	// ClientAddr is the etcd client listener (host:port; port 0 picks one, see
	// Server.ClientAddr); data-plane nodes connect here.
	ClientAddr string
	// PeerAddr is the etcd peer listener (host:port; port 0 picks one, see
	// Server.PeerAddr).
	PeerAddr string
	// AdvertisePeerAddr is the peer address the other members are told to dial
	// (host:port); empty means the bound PeerAddr. The cluster harness advertises a
	// proxy in front of the member, so that it can cut the member's inbound peer links.
	AdvertisePeerAddr string
	// InitialCluster lists every member as name=host:port (or name=http://host:port),
	// comma-separated; empty means a cluster of this node alone. Ignored on restart.
	InitialCluster string
	// Listen is the internal listener (host:port; port 0 picks one), where data-plane
	// nodes forward group requests; empty disables group coordination on this node.
	Listen string
	// Groups configures the group coordinator.
	Groups GroupConfig
	// Transactions configures the transaction coordinator.
	Transactions TxnConfig
	// HTTPAddr serves /metrics, /healthz, /readyz and /v1/cluster; empty disables HTTP.
	HTTPAddr string
	// TickMs and ElectionMs are etcd's heartbeat and election timeouts in milliseconds.
	TickMs, ElectionMs uint
	// ControllerTTL is the controller session TTL (whole seconds, at least 1).
	ControllerTTL time.Duration
	// NoAutoLeaderRebalance turns off moving leaderships back to preferred replicas
	// (Kafka's auto.leader.rebalance.enable=false); ElectLeaders requests still do.
	NoAutoLeaderRebalance bool
	// LeaderRebalanceDelay is how long a preferred replica must have been able to lead
	// (live, in sync, not stopping) before its leadership moves back to it (default
	// controller.DefaultLeaderRebalanceDelay).
	LeaderRebalanceDelay time.Duration
	// AutoBalance turns on the controller's balancer: replicas, then preferred
	// leaderships, evened out over the live nodes, and the replicas of nodes
	// unregistered for DeadNodeDelay moved to live ones (off by default, as Kafka has
	// none).
	AutoBalance bool
	// MovesInFlightMax bounds the reassignments in progress for the controller to start
	// more of its own, for decommissions and the balancer (default
	// controller.DefaultMovesInFlightMax).
	MovesInFlightMax int
	// DeadNodeDelay is how long a node holding replicas must have been unregistered
	// before the balancer moves them (default controller.DefaultDeadNodeDelay).
	DeadNodeDelay time.Duration
	// SessionGrace is how long a data-plane node whose session stream broke (its
	// process died, closing the connection) has to open another before this member
	// revokes its registration, moving its leaderships without waiting out the lease
	// (see session.go). Zero means DefaultSessionGrace; negative turns it off: a crashed
	// node's partitions then move when its lease expires.
	SessionGrace time.Duration
	// Logger receives this node's logs; etcd's own go to it at warn and above.
	Logger *slog.Logger
}

// Server is a running control-plane node.
type Server struct {
	cfg     Config
	logger  *slog.Logger
	etcd    *embed.Etcd
	ec      *clientv3.Client
	cli     *client.Client
	view    *client.Metadata
	metrics *metrics
	http    *http.Server
	httpLn  net.Listener

	// listener is the internal listener; groupRT the group coordinator while this node
	// is the active controller (nil otherwise); groupMetrics its counters, kept across
	// terms.
	listener     net.Listener
	groupRT      atomic.Pointer[groups.Coordinator]
	groupMetrics *groups.Metrics
	// txnRT is the transaction coordinator while this node is the active controller
	// (nil otherwise), txnMetrics its counters, markers its connections to the
	// data-plane nodes (txn_markers.go).
	txnRT        atomic.Pointer[txn.Coordinator]
	txnMetrics   *txn.Metrics
	markers      *markerSender
	groupConnsMu sync.Mutex
	groupConns   map[*groupServerConn]struct{}
	// hwCache holds the HW checkpoints read for lag, refreshed after hwCacheTTL.
	hwMu    sync.Mutex
	hwCache map[cluster.TopicPartition]int64
	hwAt    time.Time

	// ctl is the controller: campaigning, reconciling while elected, observing.
	ctl *controller.Controller

	// ecReady is ec once the control loop has opened it (for the session service, which
	// serves from etcd's start); closing is set, and stopping closed, when Close begins.
	ecReady  atomic.Pointer[clientv3.Client]
	closing  atomic.Bool
	stopping chan struct{}

	cancel context.CancelFunc
	wg     sync.WaitGroup
	ready  atomic.Bool
	closed sync.Once
}

// peerURL turns host:port into http://host:port; a value with a scheme is kept.
func peerURL(addr string) (*url.URL, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	return u, nil
}

// normalizeInitialCluster turns name=host:port,… into etcd's name=http://host:port,….
func normalizeInitialCluster(s string) (string, error) {
	var parts []string
	for _, m := range strings.Split(s, ",") {
		name, addr, ok := strings.Cut(strings.TrimSpace(m), "=")
		if !ok || name == "" {
			return "", fmt.Errorf("initial cluster member %q: want name=host:port", m)
		}
		u, err := peerURL(addr)
		if err != nil {
			return "", fmt.Errorf("initial cluster member %q: %w", m, err)
		}
		parts = append(parts, name+"="+u.String())
	}
	return strings.Join(parts, ","), nil
}

// etcdConfig builds the embedded etcd configuration.
func (cfg *Config) etcdConfig(logger *slog.Logger) (*embed.Config, error) {
	clientU, err := peerURL(cfg.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("client address: %w", err)
	}
	peerU, err := peerURL(cfg.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("peer address: %w", err)
	}
	advertisePeerU := peerU
	if cfg.AdvertisePeerAddr != "" {
		if advertisePeerU, err = peerURL(cfg.AdvertisePeerAddr); err != nil {
			return nil, fmt.Errorf("advertised peer address: %w", err)
		}
	}
	initial := cfg.InitialCluster
	if initial == "" {
		initial = cfg.Name + "=" + advertisePeerU.String()
	}
	if initial, err = normalizeInitialCluster(initial); err != nil {
		return nil, err
	}
	if !strings.Contains(","+initial, ","+cfg.Name+"=") {
		return nil, fmt.Errorf("initial cluster %q does not list this member %q", initial, cfg.Name)
	}
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.DataDir
	ec.ListenClientUrls = []url.URL{*clientU}
	ec.AdvertiseClientUrls = []url.URL{*clientU}
	ec.ListenPeerUrls = []url.URL{*peerU}
	ec.AdvertisePeerUrls = []url.URL{*advertisePeerU}
	ec.InitialCluster = initial
	ec.InitialClusterToken = clusterToken
	ec.ClusterState = embed.ClusterStateFlagNew
	ec.TickMs = cfg.TickMs
	ec.ElectionMs = cfg.ElectionMs
	ec.MaxTxnOps = cluster.TxnOpsMax
	ec.MaxRequestBytes = cluster.RequestBytesMax
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = compactionRetention
	ec.EnableGRPCGateway = false
	ec.Logger = "zap"
	ec.LogLevel = "warn"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapslog.New(logger.With("logger", "etcd"), zapcore.WarnLevel))
	return ec, nil
}

// Start starts the node: etcd, then HTTP, then (once etcd is ready, within ctx) the
// metadata view and the controller campaign. On error everything started is stopped.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Name == "" || cfg.DataDir == "" {
		return nil, errors.New("controlplane: name and data dir are required")
	}
	if cfg.TickMs == 0 {
		cfg.TickMs = DefaultTickMs
	}
	if cfg.ElectionMs == 0 {
		cfg.ElectionMs = DefaultElectionMs
	}
	if cfg.ControllerTTL == 0 {
		cfg.ControllerTTL = DefaultControllerTTL
	}
	if cfg.ControllerTTL < time.Second {
		cfg.ControllerTTL = time.Second
	}
	if cfg.Listen != "" {
		if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
			return nil, fmt.Errorf("controlplane: internal listener %q: %w", cfg.Listen, err)
		}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("cp", cfg.Name)
	// etcd's ports asked for as 0 are reserved here and bound by etcd: the member must
	// know them first, to advertise them (see package reserve).
	clientRes, clientAddr, err := reserve.Resolve(cfg.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("controlplane: client address: %w", err)
	}
	peerRes, peerAddr, err := reserve.Resolve(cfg.PeerAddr)
	if err != nil {
		_ = clientRes.Close()
		return nil, fmt.Errorf("controlplane: peer address: %w", err)
	}
	releasePorts := func() { _, _ = clientRes.Close(), peerRes.Close() }
	cfg.ClientAddr, cfg.PeerAddr = clientAddr, peerAddr
	ecfg, err := cfg.etcdConfig(logger)
	if err != nil {
		releasePorts()
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	if cfg.SessionGrace == 0 {
		cfg.SessionGrace = DefaultSessionGrace
	}
	s := &Server{cfg: cfg, logger: logger, stopping: make(chan struct{})}
	s.markers = newMarkerSender(s)
	s.metrics = newMetrics(s)
	s.ctl = controller.New(controller.Config{Name: cfg.Name, TTL: cfg.ControllerTTL, Logger: logger,
		Metrics: s.metrics.set, OnTerm: s.runTerm,
		NoAutoLeaderRebalance: cfg.NoAutoLeaderRebalance, LeaderRebalanceDelay: cfg.LeaderRebalanceDelay,
		AutoBalance: cfg.AutoBalance, MovesInFlightMax: cfg.MovesInFlightMax, DeadNodeDelay: cfg.DeadNodeDelay})
	ecfg.ServiceRegister = func(g *grpc.Server) { g.RegisterService(s.sessionService(), nil) }
	e, err := embed.StartEtcd(ecfg)
	releasePorts()
	if err != nil {
		return nil, fmt.Errorf("controlplane: start etcd: %w", err)
	}
	s.etcd = e
	if cfg.HTTPAddr != "" {
		if err := s.startHTTP(); err != nil {
			s.Close()
			return nil, err
		}
	}
	if cfg.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("controlplane: internal listener %s: %w", cfg.Listen, err)
		}
		s.listener = ln
		s.wg.Add(1)
		go s.serveGroups(ln)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		s.Close()
		return nil, fmt.Errorf("controlplane: etcd: %w", err)
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("controlplane: waiting for etcd to be ready (is a quorum of --initial-cluster up?): %w", ctx.Err())
	}
	if err := s.startControl(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.ready.Store(true)
	logger.Info("control plane ready", "client", cfg.ClientAddr, "peer", cfg.PeerAddr, "http", s.HTTPAddr(), "internal", s.ListenAddr())
	return s, nil
}

// startControl opens the local etcd client and starts the view and the controller.
func (s *Server) startControl(ctx context.Context) error {
	ec, err := clientv3.New(clientv3.Config{
		Endpoints:          []string{"http://" + s.cfg.ClientAddr},
		DialTimeout:        client.DefaultDialTimeout,
		MaxCallSendMsgSize: client.CallSendBytesMax,
		Logger:             zapslog.New(s.logger.With("logger", "etcd-client"), zapcore.WarnLevel),
	})
	if err != nil {
		return fmt.Errorf("controlplane: local etcd client: %w", err)
	}
	s.ec = ec
	s.ecReady.Store(ec)
	s.cli = client.Wrap(ec, client.Config{Logger: s.logger, ObserveOp: s.metrics.observeOp})
	view, err := s.cli.WatchMetadata(ctx, func(client.Change) { s.ctl.Wake() })
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	s.view = view
	rctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.ctl.Run(rctx, controller.Conn{Etcd: s.ec, Client: s.cli, View: view})
	}()
	return nil
}

// Client returns the node's own control-plane client (over its local member).
func (s *Server) Client() *client.Client { return s.cli }

// Metadata returns the node's metadata view.
func (s *Server) Metadata() *client.Metadata { return s.view }

// IsController reports whether this node is the active controller.
func (s *Server) IsController() bool { return s.ctl.IsController() }

// Controller returns the name of the active controller as this node last saw it.
func (s *Server) Controller() string { return s.ctl.Current() }

// ClientAddr returns the etcd client listener's address (with the port picked for
// port 0).
func (s *Server) ClientAddr() string { return s.cfg.ClientAddr }

// PeerAddr returns the etcd peer listener's address (with the port picked for port 0).
func (s *Server) PeerAddr() string { return s.cfg.PeerAddr }

// Name returns the member name.
func (s *Server) Name() string { return s.cfg.Name }

// HTTPAddr returns the bound HTTP address, or "" without HTTP.
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// ListenAddr returns the bound internal listener address, or "" without one.
func (s *Server) ListenAddr() string {
	if s.listener == nil {
		return ""
	}
	return s.listener.Addr().String()
}

// Close resigns the controllership (if held), then stops the view, HTTP and etcd.
func (s *Server) Close() {
	s.closed.Do(func() {
		s.closing.Store(true)
		close(s.stopping)
		if s.cancel != nil {
			s.cancel()
		}
		if s.listener != nil {
			_ = s.listener.Close()
			s.closeGroupConns()
		}
		// The loops end promptly, except that concurrency.Election.Campaign, canceled,
		// resigns with the etcd client's own context: without a quorum that blocks until
		// the client is closed. Close it after a bound.
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(resignTimeout):
			_ = s.ec.Close()
			<-done
		}
		s.markers.close()
		if s.view != nil {
			s.view.Close()
		}
		if s.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			_ = s.http.Shutdown(ctx)
			cancel()
		}
		if s.ec != nil {
			_ = s.ec.Close()
		}
		if s.etcd != nil {
			s.etcd.Close()
		}
	})
}

// SetGRPCLogger routes gRPC's process-wide logger (used by etcd) into logger at warn
// level. Call it first in main, before any gRPC activity.
func SetGRPCLogger(logger *slog.Logger) { zapslog.SetGRPCLogger(logger) }
