package chaos

import (
	"cmp"
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/gregor-streaming/gregor/chaos/checker"
	"github.com/gregor-streaming/gregor/chaos/history"
	"github.com/gregor-streaming/gregor/chaos/workload"
	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// A run: a cluster of processes (three gregor-cp, three gregor-dp), topics of
// replication factor 3 and min.insync.replicas 2, producers and consumers recording a
// history, a nemesis recording its faults in it; at the end everything is healed and
// restarted, the consumers drain, the data-plane nodes stop and every replica's log is
// read, and the history is judged.

// runOptions configure a run. Zero fields take their defaults.
type runOptions struct {
	// ttl is the data-plane nodes' registration lease (default 3s: failovers within a
	// short test; runs that kill control-plane members use the 6s default of gregor-dp).
	ttl time.Duration
	// controlPlanes is the number of gregor-cp (default 3), dataPlanes of gregor-dp
	// (default 3; topics have 3 replicas whatever the number).
	controlPlanes, dataPlanes int
	// cpFlags are more flags of every gregor-cp.
	cpFlags []string
	// partitions per topic (default 3).
	partitions int32
	// producers write topic "t" with acks=all (default franz-idem, franz-plain and,
	// when installed, rdkafka); acks1 adds a franz-go acks=1 producer on topic "a1".
	producers []workload.Kind
	acks1     bool
	// rate is records/s per producer (default 150).
	rate float64
	// maxTime bounds the producers (default 2 minutes): they stop by themselves.
	maxTime time.Duration
	// unclean topics are created with unclean.leader.election.enable.
	unclean bool
	// topicConfigs are more configs of every topic (flush.messages, ...).
	topicConfigs map[string]string
	// fsyncJournal starts the data-plane nodes with the storage engine's fsync journal
	// (GREGOR_DP_FSYNC_JOURNAL=1), which a simulated power loss needs (powerLoss).
	fsyncJournal bool
	// lossAllowed is for runs that may lose acknowledged writes by design (a power loss
	// of every replica of a topic that does not fsync before acknowledging, Kafka's
	// documented trade-off): the checker's data anomalies (dataAnomaly) are logged, not
	// failed; its replica and control-plane checks (replicas agreeing below the high
	// watermark, elections, epochs, linearizability) judge as always. A producer that
	// ends on an error (librdkafka's fatal UNKNOWN_PRODUCER_ID once the brokers lost its
	// writes) is logged too.
	lossAllowed bool
}

// run is one scenario's run.
type run struct {
	t       *testing.T
	name    string
	seed    int64
	rng     *rand.Rand
	opts    runOptions
	c       *testcluster.Cluster
	rec     *workload.Recorder
	topics  map[string]int32
	scratch string
	// historyDir holds the processes' partition-state write histories (client.ControlHistoryEnv).
	historyDir string
	// judged is the history the checker judged (its control operations the writers'
	// own), once finish has judged it: a kept run keeps that one.
	judged *history.History
	ctx    context.Context
	cancel context.CancelFunc

	producers []*workload.Producer
	consumers []*workload.Consumer
	groups    map[string][]*workload.Consumer
	states    *workload.StateRecorder
	finished  bool
	// drained, if set, runs in finish once the consumers have drained and stopped,
	// before the data-plane nodes stop: the last reads of a running cluster.
	drained func()
}

// seedFromEnv is CHAOS_SEED or the time.
func seedFromEnv(t *testing.T) int64 {
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: %v", s, err)
		}
		return n
	}
	return time.Now().UnixNano()
}

const mainTopic, acks1Topic = "t", "a1"

// newRun starts the cluster, creates the topics and starts the workload.
func newRun(t *testing.T, name string, o runOptions) *run {
	t.Helper()
	if testing.Short() && name != "R1" {
		t.Skip("-short: the fault scenarios run six processes each; R1 alone runs")
	}
	if o.ttl == 0 {
		o.ttl = 3 * time.Second
	}
	if o.controlPlanes == 0 {
		o.controlPlanes = 3
	}
	if o.partitions == 0 {
		o.partitions = 3
	}
	if o.dataPlanes == 0 {
		o.dataPlanes = 3
	}
	if o.producers == nil {
		o.producers = []workload.Kind{workload.FranzIdempotent, workload.FranzPlain}
		if _, err := os.Stat(workload.PythonConfluentKafka); err == nil {
			o.producers = append(o.producers, workload.Librdkafka)
			logRdkafkaVersion(t)
		} else {
			t.Logf("no confluent-kafka (%v): librdkafka does not produce", err)
		}
	}
	if o.rate == 0 {
		o.rate = 150
	}
	if o.maxTime == 0 {
		o.maxTime = 2 * time.Minute
	}
	checkReportPath(t)
	seed := seedFromEnv(t)
	r := &run{t: t, name: name, seed: seed, rng: rand.New(rand.NewSource(seed)), opts: o,
		topics: map[string]int32{mainTopic: o.partitions}, groups: map[string][]*workload.Consumer{}}
	if o.acks1 {
		r.topics[acks1Topic] = o.partitions
	}
	t.Logf("%s: seed %d (CHAOS_SEED=%d reruns it)", name, seed, seed)
	// The first TempDir's removal is the last cleanup: the failure report below, which
	// runs after the cluster's (its processes killed), still finds the data.
	r.scratch = t.TempDir()
	t.Cleanup(r.saveOnFailure)
	r.ctx, r.cancel = context.WithCancel(context.Background())
	t.Cleanup(r.cancel)
	// Every process of the run, this one included, records its partition-state writes.
	r.historyDir = filepath.Join(r.scratch, "control-history")
	if err := os.MkdirAll(r.historyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(client.ControlHistoryEnv, r.historyDir)
	var dpEnv []string
	if o.fsyncJournal {
		dpEnv = append(dpEnv, "GREGOR_DP_FSYNC_JOURNAL=1")
	}
	// The group's first rebalance does not wait Kafka's 3 s for more members: a short
	// run's group consumers would otherwise join when most of the load is over, and
	// read it in a poll or two, with as few commits.
	r.c = testcluster.New(t, testcluster.Options{ControlPlanes: o.controlPlanes, DataPlanes: o.dataPlanes, Processes: true, CPFlags: o.cpFlags,
		RegistrationTTL: o.ttl, DPFlags: []string{"--replica-lag-time-max", "3s", "--controlled-shutdown-timeout", "2s"},
		DPEnv: dpEnv, Groups: controlplane.GroupConfig{InitialRebalanceDelay: 200 * time.Millisecond}})
	var names []string
	for tp := range r.topics {
		names = append(names, tp)
	}
	slices.Sort(names)
	r.rec = workload.NewRecorder(name, seed, names...)
	ec := r.c.NewControlPlaneClient(t, client.Config{}).Etcd()
	r.states = workload.RecordStates(r.ctx, r.rec, ec, 250*time.Millisecond, names...)
	t.Cleanup(r.states.Stop) // before the client closes
	for _, tp := range names {
		r.createTopic(tp)
	}
	brokers := r.c.Brokers()
	for i, k := range o.producers {
		r.startProducer(workload.ProducerConfig{Name: fmt.Sprintf("%s-%d", k, i+1), Kind: k, Brokers: brokers, Topic: mainTopic,
			Partitions: o.partitions, Rate: o.rate, Duration: o.maxTime})
	}
	if o.acks1 {
		r.startProducer(workload.ProducerConfig{Name: "franz-acks1-1", Kind: workload.FranzAcks1, Brokers: brokers, Topic: acks1Topic,
			Partitions: o.partitions, Rate: o.rate, Duration: o.maxTime})
	}
	for _, tp := range names {
		r.startConsumer(workload.ConsumerConfig{Name: "assigned-" + tp, Brokers: brokers, Topic: tp, Partitions: r.topics[tp]})
	}
	for i := range 2 {
		r.startConsumer(workload.ConsumerConfig{Name: fmt.Sprintf("group-%d", i+1), Brokers: brokers, Topic: mainTopic,
			Partitions: o.partitions, Group: "g"})
	}
	t.Cleanup(func() { // a failed test stops its clients at once
		r.cancel()
		for _, p := range r.producers {
			<-p.Done()
		}
		for _, c := range r.consumers {
			c.Stop()
		}
	})
	return r
}

func (r *run) createTopic(topic string) {
	r.t.Helper()
	minISR := "2"
	configs := map[string]*string{"min.insync.replicas": &minISR}
	for k, v := range r.opts.topicConfigs {
		configs[k] = &v
	}
	if r.opts.unclean {
		yes := "true"
		configs["unclean.leader.election.enable"] = &yes
		r.rec.AllowUnclean(topic)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := r.c.Admin(r.t).CreateTopics(ctx, r.topics[topic], 3, configs, topic)
	if err == nil {
		err = resp[topic].Err
	}
	if err != nil {
		r.t.Fatalf("create %s: %v", topic, err)
	}
	for p := range r.topics[topic] {
		r.c.WaitLeader(r.t, topic, p)
	}
}

func (r *run) startProducer(cfg workload.ProducerConfig) {
	r.t.Helper()
	p, err := workload.StartProducer(r.ctx, r.rec, cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	r.producers = append(r.producers, p)
}

func (r *run) startConsumer(cfg workload.ConsumerConfig) {
	r.t.Helper()
	c, err := workload.StartConsumer(r.ctx, r.rec, cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	r.consumers = append(r.consumers, c)
	key := cfg.Group
	if key == "" {
		key = "assigned:" + cfg.Topic
	}
	r.groups[key] = append(r.groups[key], c)
}

// fault records a fault in the history and the test's log.
func (r *run) fault(kind, target, detail string) {
	r.rec.Fault(kind, target, detail)
	r.t.Logf("%s: %s %s %s", time.Since(r.rec.History().Start).Round(time.Millisecond), kind, target, detail)
}

// partitionState is the control plane's state of topic-partition by the harness's watch.
func (r *run) partitionState(topic string, p int32) cluster.PartitionState {
	return r.c.Metadata(r.t).Partitions[cluster.TopicPartition{Topic: topic, Partition: p}]
}

// waitProgress waits until n more sends to topic-partition (p < 0: any) are
// acknowledged than now: the workload goes on.
func (r *run) waitProgress(topic string, p int32, n int) {
	r.t.Helper()
	since := time.Now()
	r.c.CheckFor(r.t, 60*time.Second, func() error {
		r.supervise()
		got := 0
		for _, s := range r.rec.Sends() {
			if s.Outcome == history.OK && s.Topic == topic && (p < 0 || s.Partition == p) && s.Start.After(since) {
				got++
			}
		}
		if got < n {
			return fmt.Errorf("%d of %d sends to %s-%d acknowledged since %v", got, n, topic, p, since.Format(time.StampMilli))
		}
		return nil
	})
}

// supervise restarts the nodes that stopped on their own, as an operator's supervisor
// would. A data-plane node that lost its registration starts again in its process; one
// whose new start failed (the control plane unreachable for its whole start) stops.
func (r *run) supervise() {
	for _, n := range r.nodes() {
		if testcluster.StoppedOnItsOwn(n) {
			r.fault("restart", n.Name(), "it had stopped")
			r.c.Restart(n)
		}
	}
}

// waitHealthy waits until every partition has a running leader and its full ISR (every
// replica in sync).
func (r *run) waitHealthy(timeout time.Duration) {
	r.t.Helper()
	r.c.CheckFor(r.t, timeout, func() error {
		r.supervise()
		snap := r.c.Metadata(r.t)
		for tp, n := range r.topics {
			for p := range n {
				st := snap.Partitions[cluster.TopicPartition{Topic: tp, Partition: p}]
				if st.Leader < 1 || !r.c.DP(st.Leader).Running() {
					return fmt.Errorf("%s-%d: leader %d", tp, p, st.Leader)
				}
				if len(st.ISR) != len(st.Replicas) {
					return fmt.Errorf("%s-%d: ISR %v", tp, p, st.ISR)
				}
				for _, id := range st.ISR {
					if _, ok := snap.Brokers[id]; !ok {
						return fmt.Errorf("%s-%d: ISR %v, node %d not registered", tp, p, st.ISR, id)
					}
				}
			}
		}
		return nil
	})
}

// restoreAll heals every link and restarts every node that does not run (killed,
// paused, or exited on its own: a node that lost its registration stops).
func (r *run) restoreAll() {
	r.t.Helper()
	r.c.HealAll()
	r.fault("heal", "all", "every link")
	var cps, dps []testcluster.Node
	for _, m := range r.c.CPs {
		if !m.Running() {
			cps = append(cps, m)
		}
	}
	for _, d := range r.c.DPs {
		if !d.Running() {
			dps = append(dps, d)
		}
	}
	if len(cps) > 0 {
		r.restart(cps...)
	}
	if len(dps) > 0 {
		r.restart(dps...)
	}
}

// finish ends the run: the producers stop, everything is healed and restarted, the
// consumers drain, the data-plane nodes stop, every replica is read, and the history is
// judged; the test fails with the report if it is not OK.
func (r *run) finish() *history.History {
	t := r.t
	t.Helper()
	r.finished = true
	for _, p := range r.producers {
		if err := p.Stop(); err != nil && r.opts.lossAllowed {
			// An idempotent producer whose acknowledged writes the brokers lost may stop
			// on a fatal error (librdkafka: UNKNOWN_PRODUCER_ID), as against Kafka.
			t.Logf("with acknowledged writes lost by design: %v", err)
		} else if err != nil {
			t.Error(err)
		}
	}
	r.restoreAll()
	r.waitHealthy(90 * time.Second)
	r.drain(60 * time.Second)
	r.rec.Drained()
	for _, c := range r.consumers {
		c.Stop()
	}
	if r.drained != nil {
		r.drained()
	}
	r.states.Stop()
	for _, d := range r.c.DPs {
		if err := r.c.Stop(d); err != nil {
			t.Logf("%s stopped: %v", d.Name(), err)
		}
	}
	r.fault("stop", "dps", "graceful, for the final reads")
	for _, d := range r.c.DPs {
		logs, err := workload.ReadReplicas(d.ID, d.Dir(), filepath.Join(r.scratch, "finals"), r.topics)
		if err != nil {
			t.Fatal(err)
		}
		r.rec.Finals(logs)
	}
	h := r.rec.History()
	// The control plane's writes as their writers made them replace those seen on the
	// watch; the linearizable reads stay.
	var topics []string
	for tp := range r.topics {
		topics = append(topics, tp)
	}
	writes, blind, err := workload.WriterOps(r.historyDir, h.States, topics...)
	if err != nil {
		t.Fatal(err)
	}
	if len(writes) == 0 {
		t.Error("no partition-state write recorded by its writer (the topics' creation at least)")
	}
	h.Control = append(slices.DeleteFunc(h.Control, func(op history.ControlOp) bool { return op.Client == "watch" }), writes...)
	unknown := 0
	for _, w := range writes {
		if !w.Ok {
			unknown++
		}
	}
	t.Logf("control plane: %d partition-state writes recorded by their writers (%d of unknown outcome; %d compared against a revision the watch missed: taken as blind)",
		len(writes), unknown, blind)
	ok, fail, info := r.rec.Counts()
	t.Logf("%s: %v, %d faults; sends ok %d, fail %d, info %d; %d polls, %d commits, %d states, %d control reads",
		r.name, h.End.Sub(h.Start).Round(time.Millisecond), len(h.Faults), ok, fail, info, len(h.Polls), len(h.Commits),
		len(h.States), len(h.Control))
	if ok == 0 {
		t.Error("no send acknowledged in the whole run")
	}
	r.judged = h
	rep := checker.CheckWith(h, checker.Options{ControlTimeout: 2 * time.Minute})
	if rep.Stats.ControlResult == string(porcupine.Unknown) {
		t.Errorf("the control plane's %d operations were not judged linearizable or not in time", len(h.Control))
	}
	switch {
	case rep.OK():
		t.Logf("checker: %s", rep)
	case r.opts.lossAllowed:
		var judged []string
		for _, a := range rep.Anomalies {
			if !dataAnomaly[a.Kind] {
				judged = append(judged, a.String())
			}
		}
		if len(judged) > 0 {
			t.Errorf("checker, beyond the loss this run allows (%d anomalies):\n%s\n%s", len(judged), strings.Join(judged, "\n"), rep)
		} else {
			t.Logf("checker (acknowledged writes may be lost by design here; replicas and control plane judged): %s", rep)
		}
	default:
		t.Errorf("checker:\n%s", rep)
	}
	if err := appendReport(h, rep, r.opts.lossAllowed); err != nil {
		t.Errorf("CHAOS_REPORT: %v", err)
	}
	return h
}

// dataAnomaly are the anomaly kinds that losing acknowledged writes explains: the lost
// values, the offsets they held taken again by later writes, and the consumers' and
// groups' positions past the log end that the loss moved back. A run with
// runOptions.lossAllowed does not fail on them.
var dataAnomaly = map[string]bool{
	checker.LostWrite: true, checker.InconsistentOffsets: true, checker.OffsetMismatch: true,
	checker.NonmonotonicPoll: true, checker.PollSkip: true, checker.Unseen: true,
	checker.CommittedOffsetRegression: true,
}

// drain waits until each consumer (each group, as one) has read every partition up to
// its end.
func (r *run) drain(timeout time.Duration) {
	r.t.Helper()
	adm := kadm.NewClient(r.c.Client(r.t))
	var names []string
	for tp := range r.topics {
		names = append(names, tp)
	}
	// The end offsets are read again at every check: the producers have stopped, but
	// records appended just before (acks=1 ones above the high watermark) become
	// readable only once the followers have them. The consumers have drained when they
	// have read to end offsets that two checks in a row agree on.
	var last kadm.ListedOffsets
	r.c.CheckFor(r.t, timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ends, err := adm.ListEndOffsets(ctx, names...)
		cancel()
		if err != nil {
			return fmt.Errorf("end offsets: %w", err)
		}
		prev := last
		last = ends
		for key, cs := range r.groups {
			read := map[int32]int64{}
			for _, c := range cs {
				for p, o := range c.Read() {
					read[p] = max(read[p], o)
				}
			}
			topic := mainTopic
			if t, ok := strings.CutPrefix(key, "assigned:"); ok {
				topic = t
			}
			for p := range r.topics[topic] {
				end, ok := ends.Lookup(topic, p)
				if !ok || end.Err != nil {
					return fmt.Errorf("no end offset of %s-%d: %+v", topic, p, end)
				}
				if before, ok := prev.Lookup(topic, p); !ok || before.Offset != end.Offset {
					return fmt.Errorf("end offset of %s-%d still moving (%d)", topic, p, end.Offset)
				}
				if read[p] < end.Offset {
					return fmt.Errorf("%s read %s-%d to %d of %d", key, topic, p, read[p], end.Offset)
				}
			}
		}
		return nil
	})
}

// nodes are the cluster's nodes, control plane first.
func (r *run) nodes() []testcluster.Node {
	var ns []testcluster.Node
	for _, m := range r.c.CPs {
		ns = append(ns, m)
	}
	for _, d := range r.c.DPs {
		ns = append(ns, d)
	}
	return ns
}

// restart restarts nodes, recording it.
func (r *run) restart(nodes ...testcluster.Node) {
	r.t.Helper()
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name())
	}
	r.fault("restart", strings.Join(names, ","), "")
	r.c.Restart(nodes...)
}

// clientLogs is the directory of the run's scratch directory where client processes
// (the transactional producers) log, kept with a failed run.
const clientLogs = "clients"

// saveOnFailure keeps a failed run's history, node and client logs and data
// directories under chaos-runs/<scenario>-<seed>-<time>/ at the repository's root;
// with CHAOS_KEEP set, a passing run's too.
func (r *run) saveOnFailure() {
	if (!r.t.Failed() && os.Getenv("CHAOS_KEEP") == "") || r.rec == nil || r.c == nil {
		return
	}
	root, err := filepath.Abs("..")
	if err != nil {
		r.t.Logf("keep the run: %v", err)
		return
	}
	dir := filepath.Join(root, "chaos-runs", fmt.Sprintf("%s-%d-%s", r.name, r.seed, time.Now().Format("20060102-150405")))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.t.Logf("keep the run: %v", err)
		return
	}
	h := r.judged
	if h == nil {
		h = r.rec.History()
	}
	if err := workload.WriteJSON(filepath.Join(dir, "history.json"), h); err != nil {
		r.t.Logf("keep the history: %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.scratch, clientLogs)); err == nil {
		if err := workload.CopyTree(filepath.Join(r.scratch, clientLogs), filepath.Join(dir, clientLogs)); err != nil {
			r.t.Logf("keep the clients' logs: %v", err)
		}
	}
	for _, n := range r.nodes() {
		type logger interface{ Log() string }
		if l, ok := n.(logger); ok {
			_ = os.WriteFile(filepath.Join(dir, n.Name()+".log"), []byte(l.Log()), 0o644)
		}
		if err := workload.CopyTree(n.Dir(), filepath.Join(dir, n.Name()+"-data")); err != nil {
			r.t.Logf("keep %s's data: %v", n.Name(), err)
		}
	}
	r.t.Logf("the failed run is kept in %s", dir)
}

// logRdkafkaVersion says which librdkafka the Librdkafka producer runs on, and warns when
// it is one whose idempotent producer may stop on its own fatal "rewound sequence
// number" or "sequence desynchronization" (before 2.3.0, confluentinc/librdkafka#4438):
// scripts/build-librdkafka.sh, which make test and make chaos run, builds one without.
func logRdkafkaVersion(t *testing.T) {
	t.Helper()
	v, err := workload.RdkafkaLibVersion()
	if err != nil {
		t.Log(err)
		return
	}
	t.Logf("librdkafka %s (%s)", v, cmp.Or(workload.LibrdkafkaDir(), "the system's"))
	var major, minor int
	if _, err := fmt.Sscanf(v, "%d.%d", &major, &minor); err == nil && (major < 2 || major == 2 && minor < 3) {
		t.Logf("warning: librdkafka %s's idempotent producer may stop on a fatal error of its own "+
			"after a possibly persisted request (fixed in 2.3.0); run scripts/build-librdkafka.sh", v)
	}
}
