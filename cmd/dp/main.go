// Command gregor-dp is a data-plane node: it serves the Kafka protocol on --listen, keeps
// its partition replicas' logs under --data-dir, registers with the control plane at --cp
// and follows its metadata by watch, and serves /metrics, /healthz and /readyz on --http.
// Every flag also reads from an environment variable (GREGOR_DP_ID, …).
//
// The data directory is locked while the process runs (.lock) and holds the node's
// incarnation id (incarnation): restarted on the same directory after a crash, the node
// takes its registration over at once instead of waiting for the old lease to expire.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/dataplane"
	"github.com/gregor-streaming/gregor/proto"
)

// registrationTTL is how long the node stays in the registry after it stops renewing its
// lease: the control plane moves its partitions' leadership once it expires.
const registrationTTL = 6 * time.Second

type options struct {
	id                           int
	dataDir, listen, advertise   string
	cp, httpAddr, rack, logLevel string
	eventLoops                   int
	copyBelow                    int64
	autoCreateTopics             bool
	limits                       dataplane.Config // the connection limits and deadlines
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(opts.logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "gregor-dp: --log-level:", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("dp", opts.id)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts, logger); err != nil {
		logger.Error("gregor-dp stopped", "err", err)
		os.Exit(1)
	}
}

// envDefault returns the environment variable GREGOR_DP_<NAME> or def.
func envDefault(name, def string) string {
	if v, ok := os.LookupEnv("GREGOR_DP_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))); ok {
		return v
	}
	return def
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("gregor-dp", flag.ContinueOnError)
	var o options
	str := func(p *string, name, def, usage string) {
		fs.StringVar(p, name, envDefault(name, def), usage+" (env GREGOR_DP_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+")")
	}
	idDef, _ := strconv.Atoi(envDefault("id", "1"))
	fs.IntVar(&o.id, "id", idDef, "node id, unique among live data-plane nodes (env GREGOR_DP_ID)")
	loopsDef, _ := strconv.Atoi(envDefault("event-loops", "2"))
	fs.IntVar(&o.eventLoops, "event-loops", loopsDef, "gnet event loops (env GREGOR_DP_EVENT_LOOPS)")
	copyDef, _ := strconv.ParseInt(envDefault("copy-below", "0"), 10, 64)
	fs.Int64Var(&o.copyBelow, "copy-below", copyDef, "send fetched regions smaller than this many bytes by copy instead of sendfile; 0: always sendfile (env GREGOR_DP_COPY_BELOW)")
	fs.BoolVar(&o.autoCreateTopics, "auto-create-topics", envDefault("auto-create-topics", "false") == "true",
		"create a topic a client asks metadata for if it does not exist (auto.create.topics.enable) (env GREGOR_DP_AUTO_CREATE_TOPICS)")
	intFlag := func(p *int, name string, def int, usage string) {
		d, err := strconv.Atoi(envDefault(name, strconv.Itoa(def)))
		if err != nil {
			d = def
		}
		fs.IntVar(p, name, d, usage+" (env GREGOR_DP_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+")")
	}
	durFlag := func(p *time.Duration, name string, def time.Duration, usage string) {
		d, err := time.ParseDuration(envDefault(name, def.String()))
		if err != nil {
			d = def
		}
		fs.DurationVar(p, name, d, usage+" (env GREGOR_DP_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+")")
	}
	intFlag(&o.limits.MaxFrameBytes, "max-frame-bytes", proto.DefaultMaxFrameBytes, "largest request accepted")
	intFlag(&o.limits.MaxConnections, "max-connections", dataplane.DefaultMaxConnections, "open client connections in all")
	intFlag(&o.limits.MaxConnectionsPerIP, "max-connections-per-ip", dataplane.DefaultMaxConnectionsPerIP, "open client connections from one address")
	intFlag(&o.limits.ReadBufferBytes, "read-buffer-bytes", dataplane.DefaultReadBufferBytes, "each event loop's socket read buffer (a request that fits is handled without a copy)")
	fs.BoolVar(&o.limits.Pprof, "pprof", envDefault("pprof", "false") == "true", "serve Go's profiles under /debug/pprof/ on --http (env GREGOR_DP_PPROF)")
	intFlag(&o.limits.MaxInFlightPerConnection, "max-in-flight", dataplane.DefaultMaxInFlightPerConnection, "requests read but not answered on one connection")
	durFlag(&o.limits.FrameReadTimeout, "frame-read-timeout", dataplane.DefaultFrameReadTimeout, "time for a request to arrive once its first byte has")
	durFlag(&o.limits.IdleTimeout, "idle-timeout", dataplane.DefaultIdleTimeout, "close connections idle this long")
	durFlag(&o.limits.WriteTimeout, "write-timeout", dataplane.DefaultWriteTimeout, "cut a reader that takes no bytes of a response for this long")
	str(&o.dataDir, "data-dir", "./data/dp1", "directory of the partition logs")
	str(&o.listen, "listen", "127.0.0.1:9092", "Kafka listener host:port")
	str(&o.advertise, "advertise", "", "host:port clients are told to connect to (default: --listen)")
	str(&o.cp, "cp", "127.0.0.1:2379", "control-plane etcd client addresses, comma-separated")
	str(&o.httpAddr, "http", "127.0.0.1:9644", "HTTP listener for /metrics, /healthz, /readyz")
	str(&o.rack, "rack", "", "rack id, for spreading replicas")
	str(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.id < 0 || o.id > 1<<30 {
		return o, fmt.Errorf("gregor-dp: --id %d out of range", o.id)
	}
	if o.advertise == "" {
		o.advertise = o.listen
	}
	return o, nil
}

func run(ctx context.Context, o options, logger *slog.Logger) error {
	started := time.Now()
	host, portStr, err := net.SplitHostPort(o.advertise)
	if err != nil {
		return fmt.Errorf("--advertise: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("--advertise port: %w", err)
	}
	// The lock first: everything after it may assume no other process uses the directory.
	release, err := lockDataDir(o.dataDir)
	if err != nil {
		return err
	}
	defer release()
	incarnation, created, err := loadIncarnation(o.dataDir)
	if err != nil {
		return err
	}
	if created {
		logger.Info("new data directory incarnation", "data", o.dataDir)
	}
	set := metrics.NewSet()
	etcdLatency := func(op string, d time.Duration) {
		set.GetOrCreateHistogram(fmt.Sprintf("gregor_cp_op_duration_seconds{op=%q}", op)).Update(d.Seconds())
	}
	cl, err := client.New(client.Config{Endpoints: strings.Split(o.cp, ","), Logger: logger, ObserveOp: etcdLatency})
	if err != nil {
		return err
	}
	defer cl.Close()

	cp := &dataplane.ClientControlPlane{Client: cl}
	// Follow the metadata before serving, so the first client sees the cluster.
	reconcile := make(chan struct{}, 1)
	md, err := cl.WatchMetadata(ctx, func(client.Change) {
		select {
		case reconcile <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("watch metadata: %w", err)
	}
	defer md.Close()
	cp.Metadata = md
	// Register before listening: the registration is what hands out producer ids, and a
	// client that learns of the node a moment early retries its connection.
	me := client.Broker{ID: int32(o.id), Host: host, Port: int32(port), Rack: o.rack, Incarnation: incarnation}
	reg, err := register(ctx, cl, me, logger)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	defer reg.Close()
	cp.Registration = reg
	// Reconcile only views that include this registration: the data plane tells a
	// leadership given to this process from one given to an earlier process of the node
	// by comparing the partition state with the registration.
	if _, err := md.WaitRevision(ctx, reg.Broker().Epoch); err != nil {
		return fmt.Errorf("watch metadata: %w", err)
	}
	hwc := reg.NewHWCheckpointer(client.DefaultHWCheckpointInterval)
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hwc.Close(cctx)
	}()
	cfg := o.limits // the limits and deadlines from the flags
	cfg.NodeID, cfg.Listen, cfg.Advertise, cfg.DataDir = int32(o.id), o.listen, o.advertise, o.dataDir
	cfg.EventLoops, cfg.CopyBelowBytes, cfg.AutoCreateTopics = o.eventLoops, o.copyBelow, o.autoCreateTopics
	cfg.ControlPlane, cfg.HWRecorder, cfg.Logger, cfg.Metrics = cp, hwc, logger, set
	cfg.LeaseSafeUntil, cfg.BrokerEpoch = reg.SafeUntil, reg.Broker().Epoch
	srv, err := dataplane.New(cfg)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Stop(sctx); err != nil {
			logger.Error("stop", "err", err)
		}
	}()
	if err := srv.Reconcile(md.Snapshot()); err != nil {
		logger.Error("reconcile", "err", err)
	}

	httpSrv := &http.Server{Addr: o.httpAddr, Handler: srv.HTTPHandler(), ReadHeaderTimeout: 10 * time.Second}
	httpErr := make(chan error, 1)
	go func() { httpErr <- httpSrv.ListenAndServe() }()
	defer httpSrv.Close()

	logger.Info("gregor-dp serving", "kafka", o.listen, "advertise", o.advertise, "http", o.httpAddr, "cp", o.cp, "data", o.dataDir,
		"epoch", reg.Broker().Epoch, "startup", time.Since(started).Round(time.Millisecond))
	for {
		select {
		case <-ctx.Done():
			logger.Info("gregor-dp stopping")
			return nil
		case <-reg.Lost():
			return errors.New("lost the control-plane registration (lease expired, or taken over by a later process of this node): stopping so that a restart registers again")
		case err := <-httpErr:
			return fmt.Errorf("http: %w", err)
		case <-reconcile:
			snap := md.Snapshot()
			if err := srv.Reconcile(snap); err != nil { // leads nothing once taken over
				logger.Error("reconcile", "err", err)
			}
			if b, ok := snap.Brokers[me.ID]; ok && b.Epoch > reg.Broker().Epoch {
				return fmt.Errorf("a later process of node %d took the registration over (epoch %d, this process's %d): stopping", me.ID, b.Epoch, reg.Broker().Epoch)
			}
		}
	}
}

// register registers the node. A registration of the same id by an earlier process on
// this data directory (same incarnation: a crash and restart) is taken over at once; one
// by another incarnation (another directory or host, or this directory before a reboot)
// may be a live node, so register waits for its lease to expire — a bounded wait, with
// progress in the log.
func register(ctx context.Context, cl *client.Client, b client.Broker, logger *slog.Logger) (*client.Registration, error) {
	deadline := time.Now().Add(3 * registrationTTL)
	for {
		reg, err := cl.Register(ctx, b, registrationTTL)
		if err == nil || !errors.Is(err, client.ErrBrokerIDInUse) || time.Now().After(deadline) {
			return reg, err
		}
		logger.Info("node id registered by another incarnation (another data directory or host, or before a reboot); waiting for its lease to expire", "id", b.ID)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
