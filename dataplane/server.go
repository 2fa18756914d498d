package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/replica"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/gregor-streaming/gregor/sendfile"
	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/logging"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Server is a data-plane node's Kafka listener.
type Server struct {
	gnet.BuiltinEventEngine

	cfg     Config
	logger  *slog.Logger
	metrics *serverMetrics
	// fetchCounters counts response bytes by path (sendfile, copy, header bytes), shared
	// by every connection's writers.
	fetchCounters sendfile.Counters
	replicas      *replica.Manager
	// fetchers fetch the partitions this node follows from their leaders.
	fetchers replicaFetchers
	// isr are the ISR changes this node sent as leader that the view does not show yet.
	isr isrChanges
	// isrKick asks the upkeep goroutine to check ISR changes now (kickISR).
	isrKick chan struct{}
	// gauged are the replicas whose series are registered, with their series;
	// followerLagSeries counts the followers with lag series, and followerLagCapped is
	// set once followerLagSeriesMax was reached. Only the upkeep goroutine touches them.
	gauged            map[*replica.Partition]*partitionSeries
	followerLagSeries int
	followerLagCapped bool
	// cp is the control plane (nil: this node serves only what it was told to lead,
	// as in the storage-level tests); cluster is the metadata view last reconciled.
	cp      ControlPlane
	cluster atomic.Pointer[client.Snapshot]
	// topicIDs resolves the topic ids of Fetch v13+ in cluster (01_fetch.go).
	topicIDs    atomic.Pointer[topicIDIndex]
	reconcileMu sync.Mutex
	// producerIDs is the block of producer ids this node hands out.
	producerIDs producerIDs
	// txn is the data plane's share of transactions (27_writetxnmarkers.go).
	txn txnSupport
	// autoCreating holds the topics being auto-created.
	autoCreating sync.Map

	engine     gnet.Engine
	booted     chan struct{}
	stopped    chan error
	stopUpkeep chan struct{}
	upkeepDone chan struct{}

	connMu  sync.Mutex
	conns   map[*connState]struct{}
	perIP   map[string]int
	nconns  atomic.Int64
	closing atomic.Bool
}

// New makes a server; Start runs it.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		logger:  cfg.Logger.With("node", cfg.NodeID),
		booted:  make(chan struct{}),
		stopped: make(chan error, 1),
		conns:   map[*connState]struct{}{},
		perIP:   map[string]int{},
		isrKick: make(chan struct{}, 1),
	}
	s.cp = cfg.ControlPlane
	s.replicas = replica.NewManager(replica.Config{Dir: cfg.DataDir, NodeID: cfg.NodeID, Logger: s.logger})
	s.fetchers.s = s
	s.metrics = newServerMetrics(cfg.Metrics, s)
	s.txn.init(cfg.Metrics, s)
	return s, nil
}

// BecomeLeader opens the replica of topic-partition (creating its log if needed) and
// makes this node its leader at leaderEpoch, with an ISR of isrSize replicas and the
// topic's min.insync.replicas. The ISR is this node and isrSize-1 unnamed replicas
// (ids -1, -2, …) that never fetch, so with isrSize > 1 the high watermark stays where
// it is. The log's settings come from the topic's configs in the view last reconciled
// (Reconcile itself uses the view it is applying).
func (s *Server) BecomeLeader(topic string, partition, leaderEpoch int32, isrSize, minInsyncReplicas int) error {
	t, ok := s.snapshot().Topics[topic]
	if !ok {
		t = cluster.Topic{Name: topic}
	}
	isr := make([]int32, 0, isrSize)
	if isrSize > 0 {
		isr = append(isr, s.cfg.NodeID)
	}
	for i := 1; i < isrSize; i++ {
		isr = append(isr, int32(-i))
	}
	return s.becomeLeader(t, partition, replica.PartitionState{
		LeaderAndIsr:      replica.LeaderAndIsr{Leader: s.cfg.NodeID, LeaderEpoch: leaderEpoch, ISR: isr},
		Replicas:          isr,
		MinInsyncReplicas: minInsyncReplicas,
	})
}

// becomeLeader is BecomeLeader with the topic as the caller's view has it: its configs
// set the log's storage settings, when the log opens and whenever they change.
func (s *Server) becomeLeader(topic cluster.Topic, partition int32, st replica.PartitionState) error {
	_, err := s.replicas.MakeLeader(topic.Name, partition, st,
		topic.Configs, func() segment.Config { return s.logConfig(topic) })
	return err
}

// DeleteTopic removes this node's replicas of topic and their data.
func (s *Server) DeleteTopic(topic string) error { return s.replicas.DeleteTopic(topic) }

// Start listens and serves on the configured address until Stop. It returns once the
// listener is up.
func (s *Server) Start() error {
	go func() {
		s.stopped <- gnet.Run(s, "tcp://"+s.cfg.Listen,
			gnet.WithNumEventLoop(s.cfg.EventLoops),
			gnet.WithMulticore(true),
			gnet.WithReuseAddr(true),
			gnet.WithReadBufferCap(s.cfg.ReadBufferBytes),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithTicker(true),
			gnet.WithLogger(gnetLogger{s.logger}),
			gnet.WithLogLevel(logging.WarnLevel),
		)
	}()
	select {
	case <-s.booted:
		s.stopUpkeep, s.upkeepDone = make(chan struct{}), make(chan struct{})
		go func() {
			defer close(s.upkeepDone)
			s.upkeep(s.stopUpkeep)
		}()
		return nil
	case err := <-s.stopped:
		if err == nil {
			err = errors.New("stopped before it started")
		}
		return fmt.Errorf("dataplane: listen on %s: %w", s.cfg.Listen, err)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("dataplane: listener on %s did not start", s.cfg.Listen)
	}
}

// Stop closes the listener and every connection.
func (s *Server) Stop(ctx context.Context) error {
	if s.closing.Swap(true) {
		return nil
	}
	if s.stopUpkeep != nil {
		close(s.stopUpkeep)
		<-s.upkeepDone
	}
	s.fetchers.closeAll()
	if err := s.engine.Stop(ctx); err != nil {
		return fmt.Errorf("dataplane: stop: %w", err)
	}
	select {
	case <-s.stopped:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.replicas.Close()
}

// Addr is the listener's address as configured.
func (s *Server) Addr() string { return s.cfg.Listen }

// OnBoot implements gnet.EventHandler.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.engine = eng
	close(s.booted)
	return gnet.None
}

// OnOpen admits a connection within the total and per-address limits.
func (s *Server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	ip := remoteIP(c.RemoteAddr())
	s.connMu.Lock()
	if int(s.nconns.Load()) >= s.cfg.MaxConnections || s.perIP[ip] >= s.cfg.MaxConnectionsPerIP {
		s.connMu.Unlock()
		s.metrics.rejected.Inc()
		return nil, gnet.Close
	}
	cs := &connState{s: s, c: c, fd: c.Fd(), ip: ip}
	cs.fast = sendfile.Writer{CopyBelow: s.cfg.CopyBelowBytes, Counters: &s.fetchCounters}
	cs.slow = cs.fast
	cs.lastRequestNs.Store(time.Now().UnixNano())
	s.conns[cs] = struct{}{}
	s.perIP[ip]++
	s.nconns.Add(1)
	s.connMu.Unlock()
	c.SetContext(cs)
	return nil, gnet.None
}

// OnClose releases a connection's responses and slot.
func (s *Server) OnClose(c gnet.Conn, _ error) gnet.Action {
	cs, ok := c.Context().(*connState)
	if !ok {
		return gnet.None
	}
	cs.onClose()
	s.connMu.Lock()
	delete(s.conns, cs)
	if s.perIP[cs.ip]--; s.perIP[cs.ip] <= 0 {
		delete(s.perIP, cs.ip)
	}
	s.nconns.Add(-1)
	s.connMu.Unlock()
	return gnet.None
}

// OnTraffic reads and answers requests.
func (s *Server) OnTraffic(c gnet.Conn) gnet.Action {
	cs, ok := c.Context().(*connState)
	if !ok {
		return gnet.Close
	}
	return cs.onTraffic()
}

// OnTick closes connections past their frame-read or idle deadline.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	now := time.Now().UnixNano()
	frameMax, idleMax := s.cfg.FrameReadTimeout.Nanoseconds(), s.cfg.IdleTimeout.Nanoseconds()
	s.connMu.Lock()
	for cs := range s.conns {
		since := cs.frameSinceNs.Load()
		switch {
		case since != 0 && now-since > frameMax:
			s.metrics.timedOut.Inc()
			_ = cs.c.Close()
		case since == 0 && cs.parkState.Load() == parkIdle && now-cs.lastRequestNs.Load() > idleMax:
			s.metrics.idleClosed.Inc()
			_ = cs.c.Close()
		}
	}
	s.connMu.Unlock()
	return housekeepingInterval, gnet.None
}

func remoteIP(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	if a == nil {
		return ""
	}
	return a.String()
}

// gnetLogger routes gnet's logs into slog (gnet logs at warn and above only).
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(format string, args ...any) { g.l.Debug(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Infof(format string, args ...any)  { g.l.Info(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Warnf(format string, args ...any)  { g.l.Warn(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Errorf(format string, args ...any) { g.l.Error(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Fatalf(format string, args ...any) { g.l.Error(fmt.Sprintf(format, args...)) }

// HTTPHandler serves /metrics (Prometheus text), /healthz and /readyz, and Go's profiles
// under /debug/pprof/ when the config asks for them.
func (s *Server) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		s.cfg.Metrics.WritePrometheus(w)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-s.booted:
			if !s.closing.Load() {
				fmt.Fprintln(w, "ready")
				return
			}
		default:
		}
		http.Error(w, "not ready", http.StatusServiceUnavailable)
	})
	return mux
}

// serverMetrics are the node's metrics (VictoriaMetrics/metrics, Prometheus text).
type serverMetrics struct {
	set        *metrics.Set
	requests   []*metrics.Counter   // by API key
	latency    []*metrics.Histogram // by API key
	rejected   *metrics.Counter
	timedOut   *metrics.Counter
	idleClosed *metrics.Counter
	parked     *metrics.Counter
	// writeTimedOut counts connections cut because their reader stalled.
	writeTimedOut *metrics.Counter
	// recordsIn and bytesIn count appended produce data; delayedProduce and
	// delayedFetch count requests parked in a purgatory.
	recordsIn *metrics.Counter
	bytesIn   *metrics.Counter
	// appends counts log appends: fewer than produce partitions when a pass coalesces.
	appends        *metrics.Counter
	delayedProduce *metrics.Counter
	delayedFetch   *metrics.Counter
	// delayedDeleteRecords counts DeleteRecords requests that waited for followers'
	// log starts; deleteRecordsWaiting is how many wait now.
	delayedDeleteRecords *metrics.Counter
	deleteRecordsWaiting atomic.Int64
	// consumerBytesOut and replicationBytesOut count the records bytes of fetch
	// answers, to consumers and to followers; replicationSendfileOut and
	// replicationCopyOut split the followers' by the path the writer takes for them.
	// replicationBytesIn counts the bytes a follower appended from its leaders copied
	// through user space, replicationSpliceIn those it appended by splice.
	consumerBytesOut       *metrics.Counter
	replicationBytesOut    *metrics.Counter
	replicationSendfileOut *metrics.Counter
	replicationCopyOut     *metrics.Counter
	replicationBytesIn     *metrics.Counter
	replicationSpliceIn    *metrics.Counter
	// isrShrinks and isrExpands count the ISR changes this node made as leader.
	isrShrinks *metrics.Counter
	isrExpands *metrics.Counter
	// fencedProduces counts produce requests refused because the node's registration
	// may have ended (Config.LeaseSafeUntil passed).
	fencedProduces *metrics.Counter
	// produceWaiting and fetchWaiting are the purgatories' current sizes.
	produceWaiting atomic.Int64
	fetchWaiting   atomic.Int64
	// groupForwards counts group requests forwarded to the coordinator, groupFailures
	// those that got no answer from it (answered here with a coordinator error, or the
	// connection closed); groupForwarding is how many wait for their answer now.
	groupForwards   *metrics.Counter
	groupFailures   *metrics.Counter
	groupForwarding atomic.Int64
}

func newServerMetrics(set *metrics.Set, s *Server) *serverMetrics {
	m := &serverMetrics{
		set:           set,
		requests:      make([]*metrics.Counter, len(apiTable)),
		latency:       make([]*metrics.Histogram, len(apiTable)),
		rejected:      set.NewCounter("gregor_connections_rejected_total"),
		timedOut:      set.NewCounter("gregor_connections_closed_total{reason=\"frame_read_timeout\"}"),
		idleClosed:    set.NewCounter("gregor_connections_closed_total{reason=\"idle\"}"),
		parked:        set.NewCounter("gregor_responses_parked_total"),
		writeTimedOut: set.NewCounter(`gregor_connections_closed_total{reason="write_timeout"}`),

		recordsIn:      set.NewCounter("gregor_produce_records_total"),
		bytesIn:        set.NewCounter("gregor_produce_bytes_total"),
		appends:        set.NewCounter("gregor_log_appends_total"),
		delayedProduce: set.NewCounter(`gregor_purgatory_parked_total{purgatory="produce"}`),
		delayedFetch:   set.NewCounter(`gregor_purgatory_parked_total{purgatory="fetch"}`),

		delayedDeleteRecords: set.NewCounter(`gregor_purgatory_parked_total{purgatory="delete_records"}`),

		consumerBytesOut:    set.NewCounter(`gregor_fetch_records_bytes_total{reader="consumer"}`),
		replicationBytesOut: set.NewCounter(`gregor_fetch_records_bytes_total{reader="follower"}`),
		replicationBytesIn:  set.NewCounter(`gregor_replication_bytes_in_total{path="copy"}`),
		replicationSpliceIn: set.NewCounter(`gregor_replication_bytes_in_total{path="splice"}`),
		isrShrinks:          set.NewCounter("gregor_isr_shrinks_total"),
		isrExpands:          set.NewCounter("gregor_isr_expands_total"),
		fencedProduces:      set.NewCounter("gregor_produce_fenced_total"),
		groupForwards:       set.NewCounter("gregor_group_requests_forwarded_total"),
		groupFailures:       set.NewCounter("gregor_group_forward_failures_total"),
	}
	for _, a := range apis {
		name := kmsg.NameForKey(a.key)
		m.requests[a.key] = set.NewCounter(fmt.Sprintf("gregor_requests_total{api=%q}", name))
		m.latency[a.key] = set.NewHistogram(fmt.Sprintf("gregor_request_duration_seconds{api=%q}", name))
	}
	set.NewGauge("gregor_connections", func() float64 { return float64(s.nconns.Load()) })
	set.NewGauge(`gregor_purgatory_size{purgatory="produce"}`, func() float64 { return float64(m.produceWaiting.Load()) })
	set.NewGauge(`gregor_purgatory_size{purgatory="fetch"}`, func() float64 { return float64(m.fetchWaiting.Load()) })
	set.NewGauge(`gregor_purgatory_size{purgatory="delete_records"}`, func() float64 { return float64(m.deleteRecordsWaiting.Load()) })
	set.NewGauge("gregor_group_forwards_in_flight", func() float64 { return float64(m.groupForwarding.Load()) })
	set.NewGauge(`gregor_fetch_bytes_total{path="sendfile"}`, func() float64 { return float64(s.fetchCounters.Sendfile.Load()) })
	set.NewGauge(`gregor_fetch_bytes_total{path="copy"}`, func() float64 { return float64(s.fetchCounters.Copied.Load()) })
	set.NewGauge("gregor_response_header_bytes_total", func() float64 { return float64(s.fetchCounters.Bytes.Load()) })
	m.replicationSendfileOut = set.NewCounter(`gregor_replication_bytes_out_total{path="sendfile"}`)
	m.replicationCopyOut = set.NewCounter(`gregor_replication_bytes_out_total{path="copy"}`)
	// Partition health, counted at each scrape (Kafka's UnderReplicatedPartitions,
	// UnderMinIsrPartitionCount; offline as this node's view shows it).
	set.NewGauge("gregor_under_replicated_partitions", func() float64 {
		return float64(s.countReplicas((*replica.Partition).UnderReplicated))
	})
	set.NewGauge("gregor_under_min_isr_partitions", func() float64 {
		return float64(s.countReplicas(func(p *replica.Partition) bool { return p.IsLeader() && p.UnderMinISR() }))
	})
	set.NewGauge("gregor_offline_partitions", func() float64 {
		n := 0
		for _, st := range s.snapshot().Partitions {
			if st.Leader < 0 {
				n++
			}
		}
		return float64(n)
	})
	return m
}

// countReplicas counts this node's replicas for which cond holds.
func (s *Server) countReplicas(cond func(*replica.Partition) bool) int {
	n := 0
	for _, p := range s.replicas.Partitions() {
		if cond(p) {
			n++
		}
	}
	return n
}

// countFollowerFetch counts the records bytes (total) of a follower's fetch answer,
// and splits them by the path the connection's writer takes for each region:
// sendfile, or the copy path for regions shorter than Config.CopyBelowBytes
// (sendfile.Writer's rule). Two counter adds, and a pass over the regions only when
// the copy path is on.
func (s *Server) countFollowerFetch(regions []segment.Region, total int) {
	m := s.metrics
	m.replicationBytesOut.Add(total)
	copied := int64(0)
	if below := s.cfg.CopyBelowBytes; below > 0 {
		for _, rg := range regions {
			if rg.Length < below {
				copied += rg.Length
			}
		}
	}
	m.replicationCopyOut.Add(int(copied))
	m.replicationSendfileOut.Add(total - int(copied))
}

func (m *serverMetrics) observeRequest(key int16, start time.Time) {
	m.requests[key].Inc()
	m.latency[key].UpdateDuration(start)
}
