// Command gregor-dp is a data-plane node: it serves the Kafka protocol on --listen, keeps
// its partition replicas' logs under --data-dir, registers with the control plane at --cp
// and follows its metadata by watch, and serves /metrics, /healthz and /readyz on --http.
// Every flag also reads from an environment variable (GREGOR_DP_ID, …).
//
// On SIGTERM or SIGINT the node first asks the controller to move its leaderships to
// other in-sync replicas and waits until it leads nothing (controlled shutdown, at most
// --controlled-shutdown-timeout), then stops.
//
// A node that loses its registration (its lease expired or was revoked) starts again in
// the process as a new broker epoch, on the ports it had bound; see docs/nodes.md.
//
// The data directory is locked while the process runs (.lock) and holds the node's
// incarnation id (incarnation): restarted on the same directory after a crash, the node
// takes its registration over at once instead of waiting for the old lease to expire.
//
// Once serving, the node writes the addresses it bound to addresses.json in the data
// directory (written atomically; see node.Addresses and docs/nodes.md): with --listen
// 127.0.0.1:0 and --http 127.0.0.1:0 the ports are picked by the system, and whoever
// started the node reads them back from there. The advertised address defaults to the
// bound Kafka address.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gregor-streaming/gregor/dataplane"
	"github.com/gregor-streaming/gregor/node"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
)

// fsyncJournalEnv set to 1 turns on the storage engine's fsync journal, with which tests
// simulate a power loss (segment.EnableFsyncJournal). It is no flag: no deployment wants
// it.
const fsyncJournalEnv = "GREGOR_DP_FSYNC_JOURNAL"

// stopTimeout bounds stopping the node on SIGTERM or SIGINT, after its controlled
// shutdown (bounded by --controlled-shutdown-timeout).
const stopTimeout = 15 * time.Second

// A node that lost its registration starts again in the process after restartBackoffMin,
// doubled up to restartBackoffMax for each loss within restartBackoffReset of its start.
const (
	restartBackoffMin   = 100 * time.Millisecond
	restartBackoffMax   = 30 * time.Second
	restartBackoffReset = time.Minute
)

type options struct {
	id                           int
	dataDir, listen, advertise   string
	cp, httpAddr, rack, logLevel string
	replicaRoutes                string
	eventLoops                   int
	registrationTTL              time.Duration
	controlledShutdownTimeout    time.Duration
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
	durFlag(&o.limits.ReplicaLagTimeMax, "replica-lag-time-max", dataplane.DefaultReplicaLagTimeMax, "an in-sync follower that has not caught up with its leader for this long leaves the ISR (replica.lag.time.max.ms)")
	durFlag(&o.controlledShutdownTimeout, "controlled-shutdown-timeout", node.DefaultControlledShutdownTimeout,
		"on SIGTERM or SIGINT, wait at most this long for the controller to move this node's leaderships before stopping (controlled shutdown); 0: stop at once, leaving them to move once the registration is revoked")
	durFlag(&o.registrationTTL, "registration-ttl", node.DefaultRegistrationTTL, "lease of the node's registration: its partitions move this long after it stops renewing it (whole seconds; etcd grants no lease shorter than 1.5 election timeouts, rounded up: 2s with gregor-cp's defaults, 1s needs --etcd-election-ms 600 or less there)")
	str(&o.dataDir, "data-dir", "./data/dp1", "directory of the partition logs")
	str(&o.listen, "listen", "127.0.0.1:9092", "Kafka listener host:port")
	str(&o.advertise, "advertise", "", "host:port clients are told to connect to (default: the bound --listen address)")
	str(&o.cp, "cp", "127.0.0.1:2379", "control-plane etcd client addresses, comma-separated")
	str(&o.httpAddr, "http", "127.0.0.1:9644", "HTTP listener for /metrics, /healthz, /readyz")
	str(&o.rack, "rack", "", "rack id, for spreading replicas")
	str(&o.replicaRoutes, "replica-route", "", "id=host:port,…: addresses this node's replica fetchers dial for those nodes instead of their registered ones")
	str(&o.limits.ReplicaAppend, "replica-append", dataplane.DefaultReplicaAppend, "how a follower appends fetched records: splice (socket to segment in the kernel, validated in the page cache) or copy (through a buffer)")
	str(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.id < 0 || o.id > 1<<30 {
		return o, fmt.Errorf("gregor-dp: --id %d out of range", o.id)
	}
	if _, err := node.ParseReplicaRoutes(o.replicaRoutes); err != nil {
		return o, err
	}
	if a := o.limits.ReplicaAppend; a != dataplane.ReplicaAppendCopy && a != dataplane.ReplicaAppendSplice {
		return o, fmt.Errorf("gregor-dp: --replica-append %q: want %s or %s", a, dataplane.ReplicaAppendCopy, dataplane.ReplicaAppendSplice)
	}
	return o, nil
}

func run(ctx context.Context, o options, logger *slog.Logger) error {
	cfg := node.Config{
		ID: int32(o.id), DataDir: o.dataDir, Listen: o.listen, Advertise: o.advertise, HTTP: o.httpAddr,
		ControlPlane: strings.Split(o.cp, ","), Rack: o.rack, RegistrationTTL: o.registrationTTL, Logger: logger,
		ControlledShutdownTimeout: o.controlledShutdownTimeout,
		Server:                    o.limits, // the limits and deadlines from the flags
	}
	if cfg.ControlledShutdownTimeout <= 0 {
		cfg.ControlledShutdownTimeout = -1 // the flag's 0 turns it off; node's 0 is its default
	}
	cfg.ReplicaRoutes, _ = node.ParseReplicaRoutes(o.replicaRoutes) // checked by parseFlags
	cfg.Server.EventLoops, cfg.Server.CopyBelowBytes, cfg.Server.AutoCreateTopics = o.eventLoops, o.copyBelow, o.autoCreateTopics
	if os.Getenv(fsyncJournalEnv) == "1" {
		// A fault-injection hook for tests, not a setting: see segment/syncjournal.go.
		if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
			return err
		}
		if err := segment.EnableFsyncJournal(filepath.Join(o.dataDir, segment.FsyncJournalFile)); err != nil {
			return err
		}
		logger.Warn("fsync journal on: a test's fault-injection hook", "file", segment.FsyncJournalFile)
	}
	var lastStart time.Time
	backoff := restartBackoffMin
	for {
		lastStart = time.Now()
		dp, err := node.StartDataPlane(ctx, cfg)
		if err != nil {
			return err
		}
		if err := node.WriteAddresses(o.dataDir, dp.Addresses()); err != nil {
			_ = dp.Stop(context.Background())
			return err
		}
		select {
		case <-ctx.Done():
			logger.Info("gregor-dp stopping")
			// The controlled shutdown first, with its own bound: the node serves meanwhile.
			_ = dp.ControlledShutdown(context.Background())
			sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
			defer cancel()
			return dp.Stop(sctx)
		case <-dp.Done():
		}
		err = dp.Err()
		if !errors.Is(err, node.ErrRegistrationLost) {
			return err
		}
		// The control plane counts this node dead (its lease ran out while it was paused
		// or cut off, or a control-plane member revoked it): start again as a new
		// epoch, on the same ports, as Kafka's brokers register again when their session
		// expires. A node that keeps losing it waits longer each time.
		if time.Since(lastStart) > restartBackoffReset {
			backoff = restartBackoffMin
		}
		logger.Warn("registration lost: starting the node again", "err", err, "after", backoff)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, restartBackoffMax)
		a := dp.Addresses()
		cfg.Listen, cfg.HTTP = a.Kafka, a.HTTP
	}
}
