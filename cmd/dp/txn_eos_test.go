package main

// Exactly-once consume-transform-produce with real clients against real gregor-cp and
// gregor-dp processes: franz-go's GroupTransactSession with members that join, leave,
// die and come back as zombies (TestTxnEOSFranzGo), and librdkafka's
// send_offsets_to_transaction (TestTxnConfluentKafkaEOS). Each counts every input
// record in the output read at read_committed: once, no more, no less.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gregor-streaming/gregor/chaos/workload"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// The pipeline of TestTxnEOSFranzGo: eosRecords numbered records in eosPartitions
// partitions, eosPrefill of them before the members start and the rest in batches of
// eosBatch, one for each member stopped mid-transaction (the batch gives it a
// transaction to stop in); at most eosMaxPerTxn records a transaction.
const (
	eosPartitions = 6
	eosRecords    = 20000
	eosPrefill    = 14000
	eosBatch      = 2000
	eosMaxPerTxn  = 100
	// eosTxnTimeout is the members' transaction timeout: how long a transaction whose
	// member died, and whose transactional id nobody takes over, keeps read_committed
	// consumers of the output back before the coordinator aborts it.
	eosTxnTimeout = 10 * time.Second
	// eosMemberEnv, set, makes the test binary a pipeline member
	// (TestTxnEOSMemberProcess): "brokers|group|input|output|transactional id".
	eosMemberEnv = "GREGOR_TXN_EOS_MEMBER"
	// eosLogEnv, set to a directory, has each member write its client's debug log there.
	eosLogEnv = "GREGOR_TXN_EOS_LOG"
)

// TestTxnEOSMemberProcess is one member of TestTxnEOSFranzGo's pipeline, run in a
// process of its own (the test binary again, with eosMemberEnv set) so that the test
// can SIGKILL it or SIGSTOP it; without eosMemberEnv it skips.
func TestTxnEOSMemberProcess(t *testing.T) {
	cfg := os.Getenv(eosMemberEnv)
	if cfg == "" {
		t.Skip("a member of TestTxnEOSFranzGo's pipeline, which runs it in a process of its own")
	}
	f := strings.Split(cfg, "|")
	if len(f) != 5 {
		t.Fatalf("%s=%q: want brokers|group|input|output|transactional id", eosMemberEnv, cfg)
	}
	if err := runEOSMember(strings.Split(f[0], ","), f[1], f[2], f[3], f[4]); err != nil {
		eosReport("FATAL %v", err)
		os.Exit(3)
	}
}

var eosReportMu sync.Mutex

// eosReport prints one line of a member's report (groupMember parses it).
func eosReport(format string, args ...any) {
	eosReportMu.Lock()
	defer eosReportMu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

// runEOSMember consumes input at read_committed in group and, for every poll, in one
// transaction of its GroupTransactSession, produces "out-<value>" for each record to the
// same partition of output and commits the consumed offsets; on any error it aborts, as
// franz-go documents (franz-go fetches the group's offsets with require_stable, OffsetFetch
// v7). It reports in groupMember's line format, ASSIGN on every assignment change, and
// also:
//
//	COMMIT <records>           a transaction committed
//	ABORT <records> <reason>   one aborted (a rebalance during it, a produce error)
//	HUNG <records>             SIGUSR1 came: the transaction's records are written
//	                           (flushed), and the member waits for SIGUSR2 before ending it
//	ENDED <committed> <err>    after SIGUSR2: how that transaction ended
//
// SIGTERM stops it between transactions: the session is closed and leaves the group.
// An error of End is not retryable (the producer is fenced, say): it is returned.
func runEOSMember(brokers []string, group, input, output, txnID string) error {
	stopCtx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	hangs, resume := make(chan os.Signal, 1), make(chan os.Signal, 1)
	signal.Notify(hangs, syscall.SIGUSR1)
	signal.Notify(resume, syscall.SIGUSR2)

	var mu sync.Mutex
	owned := map[int32]bool{}
	change := func(cl *kgo.Client, ps []int32, add bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range ps {
			if add {
				owned[p] = true
			} else {
				delete(owned, p)
			}
		}
		member, gen := cl.GroupMetadata()
		eosReport("ASSIGN %d %s %s", gen, cmp.Or(member, "-"), partitionListOf(owned))
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(brokers...), kgo.TransactionalID(txnID), kgo.TransactionTimeout(eosTxnTimeout),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(input), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100 * time.Millisecond),
		kgo.SessionTimeout(groupSessionTimeout), kgo.HeartbeatInterval(groupHeartbeat),
		kgo.RebalanceTimeout(groupRebalanceTimeout),
		kgo.DefaultProduceTopic(output), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.OnPartitionsAssigned(func(_ context.Context, cl *kgo.Client, m map[string][]int32) { change(cl, m[input], true) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, cl *kgo.Client, m map[string][]int32) { change(cl, m[input], false) }),
		kgo.OnPartitionsLost(func(_ context.Context, cl *kgo.Client, m map[string][]int32) { change(cl, m[input], false) }),
	}
	if dir := os.Getenv(eosLogEnv); dir != "" { // for debugging the test: each member's client log in a file
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.log", txnID, os.Getpid())))
		if err != nil {
			return err
		}
		defer f.Close()
		opts = append(opts, kgo.WithLogger(kgo.BasicLogger(f, kgo.LogLevelDebug, nil)))
	}
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return err
	}
	defer sess.Close()
	hang := false
	for stopCtx.Err() == nil {
		select {
		case <-hangs:
			hang = true
		default:
		}
		pctx, cancel := context.WithTimeout(stopCtx, 500*time.Millisecond)
		fs := sess.PollRecords(pctx, eosMaxPerTxn)
		cancel()
		if fs.IsClientClosed() {
			return errors.New("client closed")
		}
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				fmt.Fprintf(os.Stderr, "fetch %s-%d: %v\n", topic, p, err)
			}
		})
		if fs.NumRecords() == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		var out []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, &kgo.Record{Partition: r.Partition, Key: r.Key, Value: append([]byte("out-"), r.Value...),
				Headers: []kgo.RecordHeader{{Key: "txn", Value: []byte(txnID)}}})
		})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		produceErr := sess.ProduceSync(ctx, out...).FirstErr()
		cancel()
		hung := hang && produceErr == nil
		if hung {
			hang = false
			eosReport("HUNG %d", len(out))
			select {
			case <-resume:
			case <-stopCtx.Done():
				return nil // closed without ending the transaction
			}
		}
		ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
		committed, err := sess.End(ctx, kgo.TransactionEndTry(produceErr == nil))
		cancel()
		if hung {
			eosReport("ENDED %v %v", committed, err)
		}
		switch {
		case err != nil:
			return fmt.Errorf("end: %w", err)
		case committed:
			eosReport("COMMIT %d", len(out))
		case produceErr != nil:
			eosReport("ABORT %d %v", len(out), produceErr)
		default:
			eosReport("ABORT %d rebalanced", len(out))
		}
	}
	return nil
}

// partitionListOf is the sorted partition list of an ASSIGN line.
func partitionListOf(owned map[int32]bool) string {
	if len(owned) == 0 {
		return "-"
	}
	var s []string
	for _, p := range slices.Sorted(maps.Keys(owned)) {
		s = append(s, strconv.Itoa(int(p)))
	}
	return strings.Join(s, ",")
}

// lines returns the member's reported lines that begin with prefix.
func (m *groupMember) lines(prefix string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, l := range m.other {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// eosRun is TestTxnEOSFranzGo's pipeline: a groupRun of members on the input topic,
// the output topic, and what the test has done to its members.
type eosRun struct {
	*groupRun
	ctx        context.Context
	output     string
	partitions int32  // of the input and the output
	tmp        string // the members' TMPDIR: what a SIGKILLed member leaves goes with the test
	produced   int    // input records produced so far: numbers 0 to produced-1
	hung       int    // records written by transactions the test stopped midway
	producer   *kgo.Client
}

func newEOSRun(ctx context.Context, t *testing.T, r *groupRun, output string, partitions int32) *eosRun {
	return &eosRun{groupRun: r, ctx: ctx, output: output, partitions: partitions, tmp: t.TempDir(),
		producer: r.c.Client(t, kgo.DefaultProduceTopic(r.topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))}
}

// startMember starts a pipeline member with transactional id txnID.
func (e *eosRun) startMember(name, txnID string) *groupMember {
	e.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestTxnEOSMemberProcess$", "-test.count=1", "-test.timeout=3m")
	cmd.Env = append(os.Environ(), "TMPDIR="+e.tmp,
		eosMemberEnv+"="+strings.Join([]string{strings.Join(e.c.Brokers(), ","), e.group, e.topic, e.output, txnID}, "|"))
	return e.startCommand(name, cmd)
}

// produceInput produces the next n numbered records, idempotently: number i, as
// "%06d" in key and value, to partition i mod e.partitions.
func (e *eosRun) produceInput(n int) {
	e.t.Helper()
	var rs []*kgo.Record
	for i := e.produced; i < e.produced+n; i++ {
		v := fmt.Appendf(nil, "%06d", i)
		rs = append(rs, &kgo.Record{Partition: int32(i) % e.partitions, Key: v, Value: v})
	}
	if err := e.producer.ProduceSync(e.ctx, rs...).FirstErr(); err != nil {
		e.t.Fatalf("produce input: %v", err)
	}
	e.produced += n
}

// alive fails the test if one of members has exited.
func (e *eosRun) alive(members ...*groupMember) {
	e.t.Helper()
	for _, m := range members {
		if !m.running() {
			e.t.Fatalf("member %s exited: %q", m.name, m.lines("FATAL"))
		}
	}
}

// waitCommitted waits until the group has committed at least n input records (the sum
// of its committed offsets), with members running throughout.
func (e *eosRun) waitCommitted(n int, members ...*groupMember) {
	e.t.Helper()
	testutil.CheckFor(e.t, 60*time.Second, func() error {
		e.alive(members...)
		offs, err := e.adm.FetchOffsets(e.ctx, e.group)
		if err != nil {
			return err
		}
		sum := int64(0)
		offs.Each(func(o kadm.OffsetResponse) {
			if o.Topic == e.topic && o.Err == nil && o.At > 0 {
				sum += o.At
			}
		})
		if sum < int64(n) {
			return fmt.Errorf("group %s committed %d input records, want %d", e.group, sum, n)
		}
		return nil
	})
}

// describeTxn returns how the coordinator describes txnID's transaction.
func (e *eosRun) describeTxn(txnID string) (kadm.DescribedTransaction, error) {
	txns, err := e.adm.DescribeTransactions(e.ctx, txnID)
	if err != nil {
		return kadm.DescribedTransaction{}, err
	}
	d, err := txns.On(txnID, nil)
	if err == nil {
		err = d.Err
	}
	return d, err
}

// stopMidTransaction makes m stop in its next transaction once that transaction's
// records are written (the next input batch gives it one), checks that the coordinator
// has that transaction ongoing, and returns the producer epoch it runs at.
func (e *eosRun) stopMidTransaction(m *groupMember, txnID string) int16 {
	e.t.Helper()
	before := len(m.lines("HUNG"))
	if err := m.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		e.t.Fatal(err)
	}
	e.produceInput(eosBatch)
	var n int
	testutil.CheckFor(e.t, 30*time.Second, func() error {
		e.alive(m)
		hung := m.lines("HUNG")
		if len(hung) == before {
			return fmt.Errorf("member %s has not stopped mid-transaction yet", m.name)
		}
		_, err := fmt.Sscanf(hung[len(hung)-1], "HUNG %d", &n)
		return err
	})
	e.hung += n
	d, err := e.describeTxn(txnID)
	if err != nil {
		e.t.Fatal(err)
	}
	if d.State != "Ongoing" {
		e.t.Fatalf("transaction of %s stopped midway with %d records written: coordinator says %s, want Ongoing", m.name, n, d.State)
	}
	return d.ProducerEpoch
}

// waitFenced waits until txnID is at a producer epoch above epoch with no transaction
// ongoing at epoch: the transaction of that epoch has ended and its producer is fenced.
func (e *eosRun) waitFenced(txnID string, epoch int16, timeout time.Duration) kadm.DescribedTransaction {
	e.t.Helper()
	var d kadm.DescribedTransaction
	testutil.CheckFor(e.t, timeout, func() (err error) {
		if d, err = e.describeTxn(txnID); err != nil {
			return err
		}
		if d.ProducerEpoch <= epoch || strings.HasPrefix(d.State, "Prepare") {
			return fmt.Errorf("transactional id %s in state %s at epoch %d, want past epoch %d", txnID, d.State, d.ProducerEpoch, epoch)
		}
		return nil
	})
	return d
}

// waitStable waits until no transaction is open on the output: every partition's last
// stable offset is its high watermark.
func (e *eosRun) waitStable() kadm.ListedOffsets {
	e.t.Helper()
	var ends kadm.ListedOffsets
	testutil.CheckFor(e.t, eosTxnTimeout+30*time.Second, func() (err error) {
		if ends, err = e.adm.ListEndOffsets(e.ctx, e.output); err != nil {
			return err
		}
		stable, err := e.adm.ListCommittedOffsets(e.ctx, e.output)
		if err != nil {
			return err
		}
		for p := range e.partitions {
			hw, ok1 := ends.Lookup(e.output, p)
			lso, ok2 := stable.Lookup(e.output, p)
			if !ok1 || !ok2 || hw.Err != nil || lso.Err != nil {
				return fmt.Errorf("%s-%d: end offsets %+v %+v", e.output, p, hw, lso)
			}
			if lso.Offset != hw.Offset {
				return fmt.Errorf("%s-%d: last stable offset %d, high watermark %d", e.output, p, lso.Offset, hw.Offset)
			}
		}
		return nil
	})
	return ends
}

// readOutput reads the whole output at level, up to ends (every partition's last
// offset is a marker: a consumer that keeps control records sees it), and returns how
// often each input number was read, and any record that is not "out-<number>" of that
// number's partition.
func (e *eosRun) readOutput(level kgo.IsolationLevel, ends kadm.ListedOffsets) (map[int]int, []string) {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.c.Brokers()...), kgo.ConsumeTopics(e.output),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(level), kgo.KeepControlRecords(),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset - 1
		}
	})
	counts := map[int]int{}
	var bad []string
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			e.t.Fatalf("reading %s: partitions not read to their end: %v (last offsets)", e.output, left)
		}
		fs.EachError(func(topic string, p int32, err error) { e.t.Logf("fetch %s-%d: %v (retrying)", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if last, ok := left[r.Partition]; ok && r.Offset >= last {
				delete(left, r.Partition)
			}
			if r.Attrs.IsControl() {
				return
			}
			n, err := strconv.Atoi(strings.TrimPrefix(string(r.Value), "out-"))
			if err != nil || !strings.HasPrefix(string(r.Value), "out-") || int32(n)%e.partitions != r.Partition {
				bad = append(bad, fmt.Sprintf("%q at %d-%d", r.Value, r.Partition, r.Offset))
				return
			}
			counts[n]++
		})
	}
	return counts, bad
}

// checkOutput waits until no transaction is open on the output, reads it at
// read_committed and at read_uncommitted, and checks that the first holds each of the
// inputs 0 to n-1 exactly once and nothing else, and that the second holds all that
// and at least aborted records more. It returns how many records each read.
func (e *eosRun) checkOutput(n, aborted int) (nCommitted, nUncommitted int) {
	e.t.Helper()
	ends := e.waitStable()
	committed, bad := e.readOutput(kgo.ReadCommitted(), ends)
	uncommitted, badU := e.readOutput(kgo.ReadUncommitted(), ends)
	for _, b := range append(bad, badU...) {
		e.t.Errorf("output record not of the pipeline: %s", b)
	}
	var missing, dup []int
	for i := range n {
		switch c := committed[i]; {
		case c == 0:
			missing = append(missing, i)
		case c > 1:
			dup = append(dup, i)
		}
		if uncommitted[i] < committed[i] {
			e.t.Errorf("input %d read %d times at read_uncommitted, %d at read_committed", i, uncommitted[i], committed[i])
		}
	}
	for _, c := range committed {
		nCommitted += c
	}
	for _, c := range uncommitted {
		nUncommitted += c
	}
	if len(committed) != n || len(missing) > 0 || len(dup) > 0 {
		e.t.Errorf("read_committed: %d distinct input numbers, want %d; %d missing (e.g. %v), %d read more than once (e.g. %v)",
			len(committed), n, len(missing), missing[:min(len(missing), 10)], len(dup), dup[:min(len(dup), 10)])
	}
	if len(uncommitted) != n {
		e.t.Errorf("read_uncommitted: %d distinct input numbers, want %d", len(uncommitted), n)
	}
	if nUncommitted < nCommitted+aborted {
		e.t.Errorf("read_uncommitted read %d records, read_committed %d: want at least %d aborted records more",
			nUncommitted, nCommitted, aborted)
	}
	return nCommitted, nUncommitted
}

// TestTxnEOSFranzGo: a consume-transform-produce pipeline of franz-go
// GroupTransactSession members, each a process of its own, in one group on a cluster of
// one gregor-cp and three gregor-dp processes (input and output of six partitions, RF
// 3). Members join and leave; one is SIGKILLed mid-transaction and replaced under its
// transactional id, which fences it and aborts its transaction at once; one is frozen
// (SIGSTOP) mid-transaction past its session, replaced under its transactional id, and
// resumed: the zombie cannot commit; one is SIGKILLed mid-transaction and replaced
// under a new transactional id: the coordinator aborts the orphan at its timeout. In
// the end the output read at read_committed holds every input record exactly once; at
// read_uncommitted, besides, the aborted transactions' records.
func TestTxnEOSFranzGo(t *testing.T) {
	start := time.Now()
	phase := func(format string, args ...any) {
		t.Logf("%6.1fs %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	c := newGroupCluster(t, 1, 3, "--transaction-abort-interval", "1s")
	// The bound is on the pipeline, from here: the first test to start a cluster also
	// builds the node binaries.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const input, output, group = "eos-in", "eos-out", "eos-pipeline"
	c.CreateTopic(t, input, eosPartitions, 3)
	c.CreateTopic(t, output, eosPartitions, 3)
	e := newEOSRun(ctx, t, newGroupRun(t, c, groupClient{name: "franz-go-txn"}, group, input), output, eosPartitions)
	wctx, wcancel := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { e.watch(wctx); close(watched) }()
	defer func() { wcancel(); <-watched }()
	e.produceInput(eosPrefill)
	phase("cluster up, %d input records; members m1 and m2 start", eosPrefill)

	// Members join and leave while the pipeline runs: rebalances mid-transaction.
	m1, m2 := e.startMember("m1", "m1"), e.startMember("m2", "m2")
	e.waitCommitted(2000, m1, m2)
	phase("m3 joins")
	m3 := e.startMember("m3", "m3")
	e.waitCommitted(5000, m1, m2, m3)
	phase("m2 leaves (SIGTERM), m4 joins")
	m2.stop(t)
	m4 := e.startMember("m4", "m4")
	e.waitCommitted(eosPrefill, m1, m3, m4)

	// Killed mid-transaction, replaced under its transactional id: the replacement's
	// InitProducerId aborts the open transaction and fences the dead member's epoch.
	epoch := e.stopMidTransaction(m1, "m1")
	phase("m1 stopped mid-transaction at epoch %d; SIGKILL, m1b takes its transactional id", epoch)
	m1.kill()
	m1b := e.startMember("m1b", "m1")
	d := e.waitFenced("m1", epoch, 30*time.Second)
	phase("m1's transaction ended: transactional id m1 %s at epoch %d", d.State, d.ProducerEpoch)
	e.waitCommitted(e.produced, m1b, m3, m4)

	// A zombie: frozen mid-transaction until the group drops it and a replacement takes
	// its transactional id; thawed, it tries to commit and must not.
	epoch = e.stopMidTransaction(m3, "m3")
	phase("m3 stopped mid-transaction at epoch %d; SIGSTOP, m3b takes its transactional id", epoch)
	if err := m3.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	m3b := e.startMember("m3b", "m3")
	d = e.waitFenced("m3", epoch, 30*time.Second)
	phase("m3 fenced: transactional id m3 %s at epoch %d", d.State, d.ProducerEpoch)
	e.waitCommitted(e.produced, m1b, m3b, m4)
	phase("m3 resumed (SIGCONT) and told to commit")
	if err := m3.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := m3.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	var ended string
	testutil.CheckFor(t, 30*time.Second, func() error {
		if l := m3.lines("ENDED"); len(l) > 0 {
			ended = l[0]
			return nil
		}
		return fmt.Errorf("the zombie m3 has not ended its transaction")
	})
	phase("zombie m3: %s", ended)
	if !strings.HasPrefix(ended, "ENDED false") {
		t.Errorf("the fenced zombie m3 committed its transaction: %s", ended)
	}
	m3.kill()

	// Killed mid-transaction, replaced under a new transactional id: the transaction is
	// left to its timeout, after which the coordinator aborts it.
	epoch = e.stopMidTransaction(m4, "m4")
	phase("m4 stopped mid-transaction at epoch %d; SIGKILL, m5 joins under a new transactional id", epoch)
	m4.kill()
	m5 := e.startMember("m5", "m5")
	e.waitCommitted(e.produced, m1b, m3b, m5)
	d = e.waitFenced("m4", epoch, eosTxnTimeout+30*time.Second)
	phase("every input record committed; m4's orphan transaction: %s at epoch %d", d.State, d.ProducerEpoch)
	if d.State != "CompleteAbort" {
		t.Errorf("transactional id m4 in state %s after its transaction timed out, want CompleteAbort", d.State)
	}
	if e.produced != eosRecords {
		t.Fatalf("produced %d input records, want %d", e.produced, eosRecords)
	}
	for _, m := range []*groupMember{m1b, m3b, m5} {
		m.stop(t)
	}

	nCommitted, nUncommitted := e.checkOutput(eosRecords, e.hung)
	commits, aborts := 0, 0
	for _, m := range e.members {
		commits += len(m.lines("COMMIT"))
		aborts += len(m.lines("ABORT"))
	}
	phase("output: %d records at read_committed, %d at read_uncommitted (%d from aborted transactions, %d of them "+
		"from the 3 stopped midway); members committed %d transactions, aborted %d more",
		nCommitted, nUncommitted, nUncommitted-nCommitted, e.hung, commits, aborts)
	e.checkHistory()
}

// rdkafkaCommand runs a confluent-kafka script with workload.LibrdkafkaDir's
// librdkafka (2.12.0 where scripts/build-librdkafka.sh built it), else the system's.
func rdkafkaCommand(ctx context.Context, script string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", append([]string{"-c", script}, args...)...)
	cmd.Env = os.Environ()
	if d := workload.LibrdkafkaDir(); d != "" {
		cmd.Env = append(cmd.Env, "LD_LIBRARY_PATH="+d)
	}
	return cmd
}

// confluentEOSScript is one consume-transform-produce member with confluent-kafka: a
// read_committed group consumer of the input and a transactional producer; for each
// batch consumed, one transaction produces "out-<value>" per record to the same
// partition of the output and commits the batch's offsets with
// send_offsets_to_transaction. Every abort_every-th transaction is written (flushed)
// and aborted instead, and the consumer goes back to the group's committed offsets. It
// stops once it has committed at least stop_after records, and prints "DONE <committed
// records> <aborted records> <librdkafka version>".
const confluentEOSScript = `
import sys, time
from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING, libversion
addr, src, dst, group, txnid = sys.argv[1:6]
stop_after, abort_every = int(sys.argv[6]), int(sys.argv[7])
c = Consumer({'bootstrap.servers': addr, 'group.id': group, 'isolation.level': 'read_committed',
              'enable.auto.commit': False, 'auto.offset.reset': 'earliest', 'session.timeout.ms': 6000,
              'heartbeat.interval.ms': 500, 'fetch.wait.max.ms': 100})
p = Producer({'bootstrap.servers': addr, 'transactional.id': txnid, 'transaction.timeout.ms': 30000})
p.init_transactions(30)
c.subscribe([src])
done = aborted = txns = 0
deadline = time.time() + 60
while done < stop_after and time.time() < deadline:
    msgs = []
    for m in c.consume(num_messages=100, timeout=0.5):
        if m.error():
            print('ERROR', m.error(), file=sys.stderr, flush=True)
        else:
            msgs.append(m)
    if not msgs:
        continue
    txns += 1
    p.begin_transaction()
    nxt = {}
    for m in msgs:
        p.produce(dst, key=m.key(), value=b'out-' + m.value(), partition=m.partition())
        nxt[m.partition()] = max(nxt.get(m.partition(), 0), m.offset() + 1)
    if txns % abort_every == 0:
        p.flush(30)
        p.abort_transaction(30)
        aborted += len(msgs)
        for tp in c.committed(c.assignment(), timeout=10):
            c.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING))
        continue
    p.send_offsets_to_transaction([TopicPartition(src, part, off) for part, off in nxt.items()],
                                  c.consumer_group_metadata(), 30)
    p.commit_transaction(30)
    done += len(msgs)
c.close()
print('DONE', done, aborted, libversion()[0], flush=True)
`

// TestTxnConfluentKafkaEOS: librdkafka's consume-transform-produce with
// send_offsets_to_transaction. One member processes part of the input, aborting every
// third transaction (and rewinding to the committed offsets), and leaves; a second
// member under the same transactional id resumes from the offsets the first committed
// in its transactions and processes the rest. The output read at read_committed holds
// every input record exactly once, the group's offsets are at the input's end, and
// the output read at read_uncommitted also holds the aborted records.
func TestTxnConfluentKafkaEOS(t *testing.T) {
	needBinary(t, workload.PythonConfluentKafka, "python3-confluent-kafka")
	start := time.Now()
	c := newGroupCluster(t, 1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const input, output, group, records = "ck-eos-in", "ck-eos-out", "ck-eos", 1200
	c.CreateTopic(t, input, 3, 1)
	c.CreateTopic(t, output, 3, 1)
	e := newEOSRun(ctx, t, newGroupRun(t, c, groupClient{name: "confluent-kafka-txn"}, group, input), output, 3)
	e.produceInput(records)
	run := func(stopAfter int) (done, aborted int) {
		t.Helper()
		out, err := rdkafkaCommand(ctx, confluentEOSScript, strings.Join(c.Brokers(), ","), input, output, group,
			"ck-eos-txn", strconv.Itoa(stopAfter), "3").CombinedOutput()
		if err != nil {
			t.Fatalf("confluent-kafka member: %v\n%s", err, out)
		}
		var version string
		i := strings.LastIndex(string(out), "DONE ")
		if i < 0 {
			t.Fatalf("confluent-kafka member: no DONE line\n%s", out)
		}
		if _, err := fmt.Sscanf(string(out[i:]), "DONE %d %d %s", &done, &aborted, &version); err != nil {
			t.Fatalf("confluent-kafka member's DONE line: %v\n%s", err, out)
		}
		t.Logf("%6.1fs confluent-kafka member (librdkafka %s): %d records committed, %d aborted",
			time.Since(start).Seconds(), version, done, aborted)
		if aborted == 0 {
			t.Errorf("the member aborted no transaction\n%s", out)
		}
		return done, aborted
	}
	done1, aborted1 := run(records / 2)
	if done1 >= records {
		t.Fatalf("the first member committed %d records of %d: nothing left for the second", done1, records)
	}
	done2, aborted2 := run(records - done1)
	if done1+done2 != records {
		t.Errorf("the members committed %d + %d records, the input has %d", done1, done2, records)
	}
	nCommitted, nUncommitted := e.checkOutput(records, aborted1+aborted2)
	if nUncommitted != nCommitted+aborted1+aborted2 {
		t.Errorf("read_uncommitted read %d records, read_committed %d: want the %d aborted records more, no other",
			nUncommitted, nCommitted, aborted1+aborted2)
	}
	offs, err := e.adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	inEnds, err := e.adm.ListEndOffsets(ctx, input)
	if err != nil {
		t.Fatal(err)
	}
	inEnds.Each(func(o kadm.ListedOffset) {
		if got, ok := offs.Lookup(input, o.Partition); !ok || got.Err != nil || got.At != o.Offset {
			t.Errorf("group %s committed %+v for %s-%d, whose end is %d", group, got, input, o.Partition, o.Offset)
		}
	})
	t.Logf("%6.1fs output: %d records at read_committed (each input once), %d at read_uncommitted",
		time.Since(start).Seconds(), nCommitted, nUncommitted)
}
