// Command gregor-cp is a control-plane node: an embedded etcd member, the controller
// (one active per cluster) and the node's HTTP endpoints. See controlplane's package
// documentation and controlplane/SCHEMA.md.
//
// Every flag can also be set from the environment: --client-addr from
// GREGOR_CP_CLIENT_ADDR, and so on (a flag on the command line wins).
//
// Every listener accepts port 0. Once the node serves (etcd ready, the controller
// campaign started), it writes the addresses it bound to addresses.json in --data-dir
// (beside etcd's member directory; written atomically, see node.Addresses and
// docs/nodes.md), so whoever started it reads the picked ports back.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/gregor-streaming/gregor/node"
)

// envPrefix prefixes the environment variable of every flag.
const envPrefix = "GREGOR_CP_"

// startTimeout bounds waiting for the etcd cluster to form (a quorum of
// --initial-cluster must be up).
const startTimeout = 2 * time.Minute

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("gregor-cp", flag.ContinueOnError)
	var (
		cfg      controlplane.Config
		logLevel string
	)
	fs.StringVar(&cfg.Name, "name", "cp1", "member name (unique in the cluster)")
	fs.StringVar(&cfg.DataDir, "data-dir", "data/cp1", "etcd data directory; restarting on it rejoins the cluster")
	fs.StringVar(&cfg.ClientAddr, "client-addr", "127.0.0.1:2379", "etcd client listener; data-plane nodes connect here (port 0 picks one)")
	fs.StringVar(&cfg.PeerAddr, "peer-addr", "127.0.0.1:2380", "etcd peer listener (port 0 picks one)")
	fs.StringVar(&cfg.AdvertisePeerAddr, "advertise-peer-addr", "", "peer address the other members dial, host:port (default: the bound --peer-addr)")
	fs.StringVar(&cfg.InitialCluster, "initial-cluster", "", "all members as name=host:peerport,...; empty: this member alone")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:9093", "internal listener: data-plane nodes forward consumer-group requests here")
	fs.DurationVar(&cfg.Groups.InitialRebalanceDelay, "group-initial-rebalance-delay", controlplane.DefaultInitialRebalanceDelay, "how long a new group's first rebalance waits for more members (group.initial.rebalance.delay.ms)")
	fs.DurationVar(&cfg.Groups.MinSessionTimeout, "group-min-session-timeout", controlplane.DefaultGroupMinSessionTimeout, "shortest session timeout a member may ask for")
	fs.DurationVar(&cfg.Groups.MaxSessionTimeout, "group-max-session-timeout", controlplane.DefaultGroupMaxSessionTimeout, "longest session timeout a member may ask for")
	fs.IntVar(&cfg.Groups.MaxSize, "group-max-size", 0, "most members in one group (0: no bound)")
	fs.DurationVar(&cfg.Groups.OffsetsRetention, "offsets-retention", controlplane.DefaultOffsetsRetention, "how long an empty group keeps its committed offsets")
	fs.IntVar(&cfg.Groups.OffsetMetadataMaxBytes, "offset-metadata-max-bytes", controlplane.DefaultOffsetMetadataMaxBytes, "largest metadata string of a committed offset")
	fs.DurationVar(&cfg.Transactions.MaxTimeout, "transaction-max-timeout", controlplane.DefaultTxnMaxTimeout, "longest transaction timeout a producer may ask for (transaction.max.timeout.ms)")
	fs.DurationVar(&cfg.Transactions.IDExpiration, "transactional-id-expiration", controlplane.DefaultTxnIDExpiration, "how long a transactional id with no transaction in progress is kept after its last use (transactional.id.expiration.ms)")
	fs.DurationVar(&cfg.Transactions.AbortInterval, "transaction-abort-interval", controlplane.DefaultTxnAbortInterval, "how often transactions past their timeout are looked for and aborted")
	fs.DurationVar(&cfg.Transactions.EndTxnCompleteWait, "transaction-end-wait", controlplane.DefaultTxnEndWait, "how long EndTxn, and an InitProducerId of an id whose transaction is ending, wait for the transaction's markers before they are answered anyway: EndTxn's outcome is stored before, and waiting spares the producer a CONCURRENT_TRANSACTIONS and its retry backoff (at most 5s; negative: answer at once, as Kafka does)")
	fs.StringVar(&cfg.HTTPAddr, "http", "127.0.0.1:9645", "HTTP listener: /metrics, /healthz, /readyz, /v1/cluster, /v1/nodes, /v1/reassignments")
	fs.UintVar(&cfg.TickMs, "etcd-heartbeat-ms", controlplane.DefaultTickMs, "etcd heartbeat interval (ms)")
	fs.UintVar(&cfg.ElectionMs, "etcd-election-ms", controlplane.DefaultElectionMs, "etcd election timeout (ms); etcd's shortest lease, and so gregor-dp's shortest --registration-ttl, is 1.5 of it rounded up to whole seconds (1000: 2s; 500 with a 50 ms heartbeat: 1s)")
	fs.DurationVar(&cfg.ControllerTTL, "controller-ttl", controlplane.DefaultControllerTTL, "controller session TTL: a dead controller is replaced after about this long (whole seconds)")
	fs.DurationVar(&cfg.SessionGrace, "session-grace", controlplane.DefaultSessionGrace, "a data-plane node whose session connection closed (its process died) and that opened no other within this long has its registration revoked, so its leaderships move without waiting out its lease; negative: off, leaving crashes to the lease")
	autoRebalance := true
	fs.BoolVar(&autoRebalance, "auto-leader-rebalance", true, "move each partition's leadership back to its preferred replica once that replica is live and in sync (auto.leader.rebalance.enable)")
	fs.DurationVar(&cfg.LeaderRebalanceDelay, "leader-rebalance-delay", controlplane.DefaultLeaderRebalanceDelay, "how long a preferred replica must have been live, in sync and not shutting down before its leadership moves back to it")
	fs.BoolVar(&cfg.AutoBalance, "auto-balance", false, "run the balancer: even out replicas, then preferred leaderships, over the live nodes, and move the replicas of nodes unregistered for --auto-balance-dead-node-delay to live ones")
	fs.IntVar(&cfg.MovesInFlightMax, "moves-in-flight-max", controlplane.DefaultMovesInFlightMax, "most reassignments in progress for the controller to start moves of its own (decommissions, the balancer); reassignments admins ask for are not bounded")
	fs.DurationVar(&cfg.DeadNodeDelay, "auto-balance-dead-node-delay", controlplane.DefaultDeadNodeDelay, "how long a node holding replicas must have been unregistered before the balancer moves its replicas to live nodes")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error (etcd and gRPC log at warn and above)")
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: gregor-cp [flags]\n\nA Gregor control-plane node (embedded etcd + controller).\n\nFlags (environment variable in brackets):\n")
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(out, "  --%s [%s]\n      %s (default %q)\n", f.Name, envName(f.Name), f.Usage, f.DefValue)
		})
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	// Environment variables fill in the flags not given on the command line.
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(envName(f.Name)); ok && !given[f.Name] && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
			}
		}
	})
	if envErr != nil {
		fmt.Fprintln(os.Stderr, "gregor-cp:", envErr)
		return 2
	}
	cfg.NoAutoLeaderRebalance = !autoRebalance
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "gregor-cp: --log-level:", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)
	controlplane.SetGRPCLogger(logger)
	cfg.Logger = logger

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, startTimeout)
	s, err := controlplane.Start(startCtx, cfg)
	cancel()
	if err != nil {
		logger.Error("start failed", "err", err)
		return 1
	}
	if err := node.WriteAddresses(cfg.DataDir, node.Addresses{PID: os.Getpid(), Client: s.ClientAddr(), Peer: s.PeerAddr(),
		Listen: s.ListenAddr(), HTTP: s.HTTPAddr()}); err != nil {
		logger.Error("start failed", "err", err)
		s.Close()
		return 1
	}
	<-ctx.Done()
	logger.Info("shutting down")
	s.Close()
	return 0
}
