// Package replication is the cluster part of the bench suite: a Gregor cluster of
// processes (one gregor-cp, three gregor-dp, started by perf/drivers) on which it
// measures, in one run, what replication costs and how fast it recovers:
//
//   - produce at acks=all on RF 3 (min.insync.replicas 2) against acks=1 on RF 1, with
//     the suite's own workloads (max rate, fixed rate with end-to-end latency) through
//     the kafka-raw driver, one beside the other on the same cluster;
//   - a follower catching up a backlog written while it was down: GB/s, the CPU of the
//     leaders and of the follower per GB, how the leaders sent the bytes (sendfile or
//     copy) and how the follower appended them, and the time from its restart until it
//     is back in the ISR of every partition;
//   - failover: from SIGKILL of a partition's leader to the first write its successor
//     acknowledges, through the killed node's session (its registration is revoked a
//     session grace after its connection closes) at the cluster's registration lease;
//   - fencing: while the max-rate loads run, whether any node lost its registration,
//     refused a produce for want of a renewed lease or an answered session heartbeat,
//     or any leadership moved — what makes failover quick must not fence a busy node
//     that is alive.
//
// Everything measured comes from the outside, as an operator would see it: Kafka
// metadata (leaders, leader epochs, ISRs), each node's /metrics, /proc for CPU, and the
// nodes' own logs.
package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gregor-streaming/gregor/perf"
	"github.com/gregor-streaming/gregor/perf/drivers"
)

// Defaults and limits.
const (
	// DefaultRegistrationTTL is the data-plane nodes' lease in the benchmark: gregor-dp's
	// default. A killed node's partitions move through its session, a session grace
	// after its death, not when its lease expires.
	DefaultRegistrationTTL = 6 * time.Second
	// DataPlanes is the cluster's size: RF 3 needs three nodes.
	DataPlanes = 3
	// DefaultBacklogBytes is the follower catch-up's backlog.
	DefaultBacklogBytes = 1 << 30
	// backlogBytesMax bounds it: the backlog is written three times over on one disk.
	backlogBytesMax = 8 << 30
	// catchUpPartitions is the catch-up topic's size: one partition led by each node
	// before the follower is killed, so that it catches up from both other nodes.
	catchUpPartitions = 3
	// catchUpMessageSize is the backlog's message size.
	catchUpMessageSize = 1024
	// failoverTrialsMax bounds the failover trials.
	failoverTrialsMax = 20
	// pollEvery is how often metadata and metrics are polled while waiting for a state.
	pollEvery = 10 * time.Millisecond
	// waitMax bounds every wait for a cluster state (a leader elected, a node in sync).
	waitMax = 60 * time.Second
	// settleMax bounds waiting for a new topic's ISR to be full before it is loaded.
	settleMax = 30 * time.Second
)

// Config says what to run.
type Config struct {
	// BinDir holds gregor-cp and gregor-dp.
	BinDir string
	// Workloads are the produce workloads; each runs twice, on RF 1 at acks=1 and on
	// RF 3 at acks=all.
	Workloads []*perf.Workload
	// Mode is "quick" or "full", for the report.
	Mode string
	// RegistrationTTL is gregor-dp's --registration-ttl (default DefaultRegistrationTTL).
	RegistrationTTL time.Duration
	// EtcdHeartbeatMs and EtcdElectionMs are gregor-cp's etcd timers; 0 picks the
	// defaults, or 50/500 ms when the defaults' shortest lease (2 s) is longer than
	// RegistrationTTL.
	EtcdHeartbeatMs, EtcdElectionMs int
	// SessionGrace is gregor-cp's --session-grace (0: its default, 1 s).
	SessionGrace time.Duration
	// ReplicaLagTimeMax is gregor-dp's --replica-lag-time-max (0: its default, 30 s).
	// Leaders review their ISRs every half of it, which bounds restart-to-ISR from below.
	ReplicaLagTimeMax time.Duration
	// BacklogBytes is the follower catch-up's backlog (default DefaultBacklogBytes).
	BacklogBytes int64
	// FailoverTrials is how many leaders are killed (default 3).
	FailoverTrials int
	// LogDir, when set, receives the processes' logs at the end of the run.
	LogDir string
	// Progress receives progress lines; nil for none.
	Progress io.Writer
	// Command is how the run was started, for the report.
	Command string
}

func (c *Config) normalize() error {
	if c.RegistrationTTL <= 0 {
		c.RegistrationTTL = DefaultRegistrationTTL
	}
	if c.EtcdHeartbeatMs == 0 && c.EtcdElectionMs == 0 && drivers.MinLeaseTTL(100, 1000) > c.RegistrationTTL {
		c.EtcdHeartbeatMs, c.EtcdElectionMs = 50, 500
	}
	if c.SessionGrace == 0 {
		c.SessionGrace = time.Second // gregor-cp's default, for the report
	}
	if c.BacklogBytes == 0 {
		c.BacklogBytes = DefaultBacklogBytes
	}
	if c.BacklogBytes < catchUpMessageSize || c.BacklogBytes > backlogBytesMax {
		return fmt.Errorf("replication: backlog %d bytes is outside [%d, %d]", c.BacklogBytes, catchUpMessageSize, backlogBytesMax)
	}
	if c.FailoverTrials == 0 {
		c.FailoverTrials = 3
	}
	if c.FailoverTrials < 0 || c.FailoverTrials > failoverTrialsMax {
		return fmt.Errorf("replication: %d failover trials is outside [0, %d]", c.FailoverTrials, failoverTrialsMax)
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return nil
}

// Report is one run of the replication benchmarks: what perf/results/replication-*.json
// holds and the BENCHMARKS.md section is written from.
type Report struct {
	Mode       string       `json:"mode"`
	StartedAt  time.Time    `json:"startedAt"`
	Commit     string       `json:"commit"`
	Machine    perf.Machine `json:"machine"`
	Command    string       `json:"command"`
	LoadBefore string       `json:"loadBefore,omitempty"`
	LoadAfter  string       `json:"loadAfter,omitempty"`
	// Cluster describes the cluster the run was made on.
	Cluster ClusterSettings `json:"cluster"`
	// Produce holds the produce runs, each workload on RF 1 at acks=1, then on RF 3 at
	// acks=all.
	Produce []ProduceRun `json:"produce"`
	// CatchUp is the follower catch-up; nil if it failed.
	CatchUp *CatchUp `json:"catchUp,omitempty"`
	// Failover is the leader failover trials; nil if none ran.
	Failover *Failover `json:"failover,omitempty"`
	// RegistrationsLost counts the registrations the nodes lost in the whole run (their
	// logs): the nodes killed on purpose do not log one, so any is a false fencing.
	RegistrationsLost int `json:"registrationsLost"`
	// Failures says which parts failed, and how.
	Failures []string `json:"failures,omitempty"`
}

// ClusterSettings are the cluster's shape and timers.
type ClusterSettings struct {
	ControlPlanes int `json:"controlPlanes"`
	DataPlanes    int `json:"dataPlanes"`
	// RegistrationTTL is what gregor-dp was given; GrantedTTL what etcd grants for it
	// with the control plane's timers (whole seconds, at least etcd's minimum).
	RegistrationTTL time.Duration `json:"registrationTtlNs"`
	GrantedTTL      time.Duration `json:"grantedTtlNs"`
	EtcdHeartbeatMs int           `json:"etcdHeartbeatMs"`
	EtcdElectionMs  int           `json:"etcdElectionMs"`
	// ReplicaLagTimeMax is gregor-dp's replica.lag.time.max (0: its default).
	ReplicaLagTimeMax time.Duration `json:"replicaLagTimeMaxNs,omitempty"`
	// SessionGrace is gregor-cp's session grace.
	SessionGrace time.Duration `json:"sessionGraceNs,omitempty"`
}

// ProduceRun is one produce workload on one replication setting.
type ProduceRun struct {
	// Setting is "RF 1, acks=1" or "RF 3, acks=all, min.insync.replicas=2".
	Setting           string `json:"setting"`
	ReplicationFactor int    `json:"replicationFactor"`
	// Workload is the workload's name (without the setting's suffix).
	Workload string `json:"workloadName"`
	// Result is the run, as the suite records one; nil if it failed.
	Result *perf.Result `json:"result"`
	// Fencing is what happened to the nodes' registrations and leaderships meanwhile.
	Fencing Fencing `json:"fencing"`
}

// Run starts the cluster, runs every part, stops the cluster and returns the report. A
// part that fails is recorded in Report.Failures and the others still run; the error is
// for a run that could not start, or was interrupted (ctx).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	hb, el := cfg.EtcdHeartbeatMs, cfg.EtcdElectionMs
	if hb == 0 {
		hb = 100
	}
	if el == 0 {
		el = 1000
	}
	granted := max(drivers.MinLeaseTTL(hb, el), (cfg.RegistrationTTL+time.Second-1)/time.Second*time.Second)
	rep := &Report{Mode: cfg.Mode, StartedAt: time.Now().UTC(), Commit: perf.GitCommit("."), Machine: perf.DescribeMachine(),
		Command: cfg.Command, LoadBefore: perf.LoadAverage(),
		Cluster: ClusterSettings{ControlPlanes: 1, DataPlanes: DataPlanes, RegistrationTTL: cfg.RegistrationTTL,
			GrantedTTL: granted, EtcdHeartbeatMs: hb, EtcdElectionMs: el, ReplicaLagTimeMax: cfg.ReplicaLagTimeMax,
			SessionGrace: cfg.SessionGrace}}
	progress(cfg.Progress, "starting 1 gregor-cp and %d gregor-dp from %s/ (registration TTL %v, etcd heartbeat %d ms, election %d ms: leases of %v)",
		DataPlanes, cfg.BinDir, cfg.RegistrationTTL, hb, el, granted)
	g, err := drivers.StartGregorCluster(cfg.BinDir, drivers.GregorOptions{DataPlanes: DataPlanes,
		RegistrationTTL: cfg.RegistrationTTL, EtcdHeartbeatMs: cfg.EtcdHeartbeatMs, EtcdElectionMs: cfg.EtcdElectionMs,
		ReplicaLagTimeMax: cfg.ReplicaLagTimeMax, SessionGrace: cfg.SessionGrace})
	if err != nil {
		return nil, err
	}
	defer g.Stop()
	if cfg.LogDir != "" {
		defer func() {
			if err := g.CopyLogs(cfg.LogDir); err != nil {
				progress(cfg.Progress, "could not keep the nodes' logs: %v", err)
			} else {
				progress(cfg.Progress, "the nodes' logs are in %s", cfg.LogDir)
			}
		}()
	}
	c, err := newCluster(g)
	if err != nil {
		return nil, err
	}
	defer c.close()

	fail := func(part string, err error) {
		msg := fmt.Sprintf("%s: %v", part, err)
		progress(cfg.Progress, "FAILED %s", msg)
		rep.Failures = append(rep.Failures, msg)
	}
	// repair restarts the nodes that exited during a part (fenced, or crashed); each is a
	// failure of that part.
	repair := func(after string) {
		restarted, err := c.repair(ctx)
		for _, r := range restarted {
			fail(after, errors.New(r))
		}
		if err != nil {
			fail("repairing the cluster after "+after, err)
		}
	}
	for _, w := range cfg.Workloads {
		for _, s := range settings {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			part := fmt.Sprintf("%s (%s)", w.Name, s.name)
			pr, err := c.produce(ctx, w, s, cfg)
			if pr.Result != nil || !pr.Fencing.Clean() {
				rep.Produce = append(rep.Produce, pr)
			}
			if err != nil {
				fail(part, err)
			}
			repair(part)
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	cu, err := c.catchUp(ctx, cfg)
	if err != nil {
		fail("follower catch-up", err)
	} else {
		rep.CatchUp = cu
	}
	repair("follower catch-up")
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if cfg.FailoverTrials > 0 {
		if fo, err := c.failover(ctx, cfg); err != nil {
			fail("failover", err)
			if fo != nil && len(fo.Trials) > 0 {
				rep.Failover = fo
			}
		} else {
			rep.Failover = fo
		}
		repair("failover")
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	rep.LoadAfter = perf.LoadAverage()
	rep.RegistrationsLost = c.registrationsLost()
	return rep, nil
}

// setting is one replication setting of the produce runs.
type setting struct {
	name, suffix string
	rf           int16
	acks         string
	configs      map[string]string
}

var settings = []setting{
	{name: "RF 1, acks=1", suffix: "-rf1-acks1", rf: 1, acks: "1"},
	{name: "RF 3, acks=all, min.insync.replicas=2", suffix: "-rf3-acksall", rf: 3, acks: "all",
		configs: map[string]string{"min.insync.replicas": "2"}},
}

// produce runs one workload on one setting with the kafka-raw driver, watching the
// nodes' registrations and leaderships while it runs.
func (c *cluster) produce(ctx context.Context, w *perf.Workload, s setting, cfg Config) (ProduceRun, error) {
	pr := ProduceRun{Setting: s.name, ReplicationFactor: int(s.rf), Workload: w.Name}
	d, err := drivers.New("kafka-raw", drivers.Options{Bootstrap: c.g.Bootstrap, ServerPIDs: c.g.PIDs(), Log: cfg.Progress,
		ReplicationFactor: s.rf, TopicConfigs: s.configs})
	if err != nil {
		return pr, err
	}
	defer d.Close()
	wc := *w
	wc.Name += s.suffix
	wc.Acks = s.acks
	progress(cfg.Progress, "%s: %s on %d gregor-dp", wc.Name, s.name, DataPlanes)
	before, err := c.fencingSnapshot(ctx)
	if err != nil {
		return pr, err
	}
	res, runErr := perf.Run(ctx, perf.RunConfig{Workload: &wc, Driver: d, MetricsURL: c.g.MetricsURL, Progress: cfg.Progress,
		Command: cfg.Command})
	// What happened to the nodes is read also when the run failed: a node fenced under
	// load is the first thing to suspect.
	after, err := c.fencingSnapshot(ctx) // partial on error: logs and processes still read
	pr.Fencing = before.until(after)
	if runErr != nil {
		return pr, runErr
	}
	if err != nil {
		return pr, err
	}
	res.Notes = append(res.Notes, fmt.Sprintf("%s; %d gregor-dp processes and 1 gregor-cp, server CPU summed over all four; the zero-copy share is the first node's", s.name, DataPlanes))
	pr.Result = res
	if res.PublishErrors > 0 {
		return pr, fmt.Errorf("%d publishes failed, first: %s", res.PublishErrors, res.FirstError)
	}
	return pr, nil
}

// progress writes one progress line.
func progress(w io.Writer, format string, a ...any) {
	fmt.Fprintf(w, "replication %s | "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

// countInFile counts the lines of path holding s (0 if it cannot be read).
func countInFile(path, s string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(data), s)
}

// exitLogLines is how many of a node's last warnings and errors a failure quotes.
const exitLogLines = 3

// lastLogLines returns the last n lines of path at level WARN or ERROR, joined.
func lastLogLines(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	if len(out) == 0 {
		return "(no warning in its log)"
	}
	return strings.Join(out, " | ")
}

// errTimeout is returned by waits that ran out of time.
var errTimeout = errors.New("timed out")
