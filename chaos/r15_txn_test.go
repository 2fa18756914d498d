package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/gregor-streaming/gregor/chaos/history"
	"github.com/gregor-streaming/gregor/chaos/workload"
)

// R15: transactions under faults. Transactional producers (franz-go, each instance a
// process of its own: the test binary started again, which the test SIGKILLs or
// SIGSTOPs) write topic t, every transaction two records on each partition, while:
//
//   - a producer holds a transaction open on every partition and is SIGKILLed, never to
//     return: the coordinator must abort it when its 5 s timeout passes;
//   - a producer holds a transaction open and the leader of a partition (the seed
//     picks which) is SIGKILLed; the producer goes on at the new leader and must
//     commit;
//   - a producer holds a transaction open and the active controller (the transaction
//     coordinator) is SIGKILLed; the producer goes on and must commit through the next
//     term's coordinator;
//   - a producer holds a transaction open and is SIGKILLed; a new instance with the
//     same transactional id starts, which must fence it and abort its transaction;
//   - a producer holds a transaction open and is SIGSTOPped; a new instance starts and
//     commits; the old one, continued, must be refused (fenced) and its transaction be
//     aborted;
//
// and a steady producer commits throughout. At the end the last stable offset of every
// partition must reach its high watermark (no transaction left hanging), every
// partition is read from its start at read_committed and at read_uncommitted, and the
// checker judges (chaos/checker/txn.go): each transaction all or nothing visible at
// read_committed, every acknowledged commit all visible, nothing of an aborted one, no
// value twice; with the suite's usual checks of the records as sends (lost,
// duplicated within one epoch, at another offset than acknowledged), the replicas'
// agreement and the control plane's history.

const (
	// txnTimeout is the transaction timeout of the producers that hold transactions
	// open across a fault: longer than a failover.
	txnTimeout = 30 * time.Second
	// abandonedTxnTimeout is the abandoned producer's: its transaction must be aborted
	// by it.
	abandonedTxnTimeout = 5 * time.Second
	// txnAbortInterval is how often the coordinator looks for timed-out transactions.
	txnAbortInterval = time.Second
	// txnPause is each producer's wait between two transactions: four or five
	// producers at once keep the coordinator busy without taking the two cores.
	txnPause = 50 * time.Millisecond
)

// txnRun drives the transactional producers of a run.
type txnRun struct {
	r      *run
	logDir string
	adm    *kadm.Client
	all    []*workload.TxnProducer
}

func newTxnRun(r *run) *txnRun {
	x := &txnRun{r: r, logDir: filepath.Join(r.scratch, clientLogs), adm: r.c.Admin(r.t)}
	if err := os.MkdirAll(x.logDir, 0o755); err != nil {
		r.t.Fatal(err)
	}
	return x
}

// start starts producer instance name of transactional id txnID.
func (x *txnRun) start(name, txnID string, timeout time.Duration) *workload.TxnProducer {
	r := x.r
	r.t.Helper()
	p, err := workload.StartTxnProducer(r.ctx, r.rec, workload.TxnProducerConfig{Name: name, TransactionalID: txnID,
		Brokers: r.c.Brokers(), Topic: mainTopic, Partitions: r.opts.partitions, Timeout: timeout, Pause: txnPause,
		LogPath: filepath.Join(x.logDir, name+".log")})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(p.Kill)
	x.all = append(x.all, p)
	r.t.Logf("%s: transactional producer %s (%s, timeout %v) started",
		time.Since(r.rec.History().Start).Round(time.Millisecond), name, txnID, timeout)
	return p
}

// waitCommits waits until p has committed n more transactions than now.
func (x *txnRun) waitCommits(p *workload.TxnProducer, n int) {
	r := x.r
	r.t.Helper()
	from := p.Committed()
	r.c.CheckFor(r.t, 60*time.Second, func() error {
		r.supervise()
		select {
		case <-p.Done():
			return fmt.Errorf("%s has ended (fenced: %q)", p.Name(), p.Fenced())
		default:
		}
		if got := p.Committed() - from; got < n {
			return fmt.Errorf("%s committed %d of %d transactions", p.Name(), got, n)
		}
		return nil
	})
}

// hold makes p hold its next transaction open after writing every partition, and
// returns its seq.
func (x *txnRun) hold(p *workload.TxnProducer) int {
	r := x.r
	r.t.Helper()
	if err := p.Hold(); err != nil {
		r.t.Fatal(err)
	}
	seq, err := p.WaitHeld(60 * time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	r.fault("observed", p.Name(), fmt.Sprintf("holds transaction %d open on every partition", seq))
	return seq
}

// txn is the recorded transaction seq of p, once it has ended.
func (x *txnRun) txn(p *workload.TxnProducer, seq int) history.Txn {
	r := x.r
	r.t.Helper()
	var t history.Txn
	r.c.CheckFor(r.t, 60*time.Second, func() error {
		r.supervise()
		for _, tx := range r.rec.Txns() {
			if tx.Producer == p.Name() && tx.Seq == seq {
				t = tx
				return nil
			}
		}
		return fmt.Errorf("transaction %d of %s not ended", seq, p.Name())
	})
	return t
}

// expectCommitted waits for transaction seq of p to end, and fails the test unless it
// committed.
func (x *txnRun) expectCommitted(p *workload.TxnProducer, seq int, after string) {
	r := x.r
	r.t.Helper()
	tx := x.txn(p, seq)
	if tx.Outcome != history.TxnCommitted {
		r.t.Errorf("transaction %d of %s, held open across %s: %s (%s), want committed", seq, p.Name(), after, tx.Outcome, tx.Err)
		return
	}
	r.fault("observed", p.Name(), fmt.Sprintf("transaction %d committed after %s, %v after it began", seq, after,
		tx.End.Sub(tx.Start).Round(time.Millisecond)))
}

// waitState waits until the coordinator describes txnID in state.
func (x *txnRun) waitState(txnID, state string, timeout time.Duration) kadm.DescribedTransaction {
	r := x.r
	r.t.Helper()
	var d kadm.DescribedTransaction
	r.c.CheckFor(r.t, timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ds, err := x.adm.DescribeTransactions(ctx, txnID)
		if err != nil {
			return err
		}
		var ok bool
		if d, ok = ds[txnID]; !ok || d.Err != nil {
			return fmt.Errorf("%s not described: %+v", txnID, d)
		}
		if d.State != state {
			return fmt.Errorf("%s is %s (epoch %d), want %s", txnID, d.State, d.ProducerEpoch, state)
		}
		return nil
	})
	return d
}

// waitStable waits until every partition's last stable offset is its high watermark:
// no transaction left open.
func (x *txnRun) waitStable(timeout time.Duration) {
	r := x.r
	r.t.Helper()
	since := time.Now()
	r.c.CheckFor(r.t, timeout, func() error {
		r.supervise()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hw, err := x.adm.ListEndOffsets(ctx, mainTopic)
		if err != nil {
			return err
		}
		lso, err := x.adm.ListCommittedOffsets(ctx, mainTopic)
		if err != nil {
			return err
		}
		for p := range r.opts.partitions {
			h, ok1 := hw.Lookup(mainTopic, p)
			l, ok2 := lso.Lookup(mainTopic, p)
			if !ok1 || !ok2 || h.Err != nil || l.Err != nil {
				return fmt.Errorf("%s-%d: high watermark %+v, last stable offset %+v", mainTopic, p, h, l)
			}
			if l.Offset != h.Offset {
				return fmt.Errorf("%s-%d: last stable offset %d below the high watermark %d", mainTopic, p, l.Offset, h.Offset)
			}
		}
		return nil
	})
	r.fault("observed", mainTopic, fmt.Sprintf("last stable offsets at the high watermarks (%v)", time.Since(since).Round(time.Millisecond)))
}

// readBack reads every partition at both isolation levels into the history, and fails
// the test if a partition's last stable offset is not its high watermark.
func (x *txnRun) readBack() {
	r := x.r
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ends := map[string]map[int32]int64{}
	for _, iso := range []string{history.ReadUncommitted, history.ReadCommitted} {
		reads, err := workload.ReadTxnPartitions(ctx, r.c.Brokers(), mainTopic, r.opts.partitions, iso)
		if err != nil {
			r.t.Fatal(err)
		}
		ends[iso] = map[int32]int64{}
		n := 0
		for _, rd := range reads {
			ends[iso][rd.Partition] = rd.End
			n += len(rd.Records)
		}
		r.rec.TxnReads(reads)
		r.t.Logf("read back at %s: %d records to %v", iso, n, ends[iso])
	}
	for p, hw := range ends[history.ReadUncommitted] {
		if lso := ends[history.ReadCommitted][p]; lso != hw {
			r.t.Errorf("%s-%d: last stable offset %d, high watermark %d, with no transaction running: a hanging transaction",
				mainTopic, p, lso, hw)
		}
	}
}

// TestR15Transactions: transactional producers under a partition leader's, the
// coordinator's and producers' deaths.
func TestR15Transactions(t *testing.T) {
	// Control-plane members die here: the 6s lease (as R13).
	r := newRun(t, "R15", runOptions{ttl: 6 * time.Second, producers: []workload.Kind{},
		cpFlags: []string{"--transaction-abort-interval", txnAbortInterval.String()}})
	x := newTxnRun(r)
	steady := x.start("steady-1", "tx-steady", txnTimeout)
	held := x.start("held-1", "tx-held", txnTimeout)
	killed := x.start("killed-1", "tx-killed", txnTimeout)
	zombie := x.start("zombie-1", "tx-zombie", txnTimeout)
	abandoned := x.start("abandoned-1", "tx-abandoned", abandonedTxnTimeout)
	for _, p := range x.all {
		x.waitCommits(p, 3)
	}

	// A producer dies with its transaction open and never comes back: its timeout
	// runs while the other faults go on.
	x.hold(abandoned)
	r.fault("kill", abandoned.Name(),
		fmt.Sprintf("transactional producer, a transaction open; never restarted (timeout %v)", abandonedTxnTimeout))
	abandoned.Kill()
	abandonedAt := time.Now()

	// A partition leader, of a partition the seed picks, dies under an open
	// transaction.
	seq := x.hold(held)
	part := int32(r.rng.Intn(int(r.opts.partitions)))
	old := r.leaderOf(mainTopic, part)
	r.kill(old, fmt.Sprintf("leader of %s-%d, a transaction open on it", mainTopic, part))
	r.waitNewLeader(mainTopic, part, old)
	if err := held.Release(); err != nil {
		t.Fatal(err)
	}
	x.expectCommitted(held, seq, "the leader's death")
	x.waitCommits(steady, 3)
	r.restart(old)
	r.waitHealthy(60 * time.Second)

	// The coordinator dies under an open transaction.
	seq = x.hold(held)
	ctl := r.c.WaitController(t)
	r.kill(ctl, "active controller, the transaction coordinator, a transaction open")
	next := r.c.WaitController(t)
	r.fault("observed", next.Name(), "active controller")
	if err := held.Release(); err != nil {
		t.Fatal(err)
	}
	x.expectCommitted(held, seq, "the coordinator's death")
	x.waitCommits(steady, 3)
	r.restart(ctl)

	// A producer dies under an open transaction; its next instance fences it.
	x.hold(killed)
	r.fault("kill", killed.Name(), "transactional producer, a transaction open")
	killed.Kill()
	killed2 := x.start("killed-2", "tx-killed", txnTimeout)
	x.waitCommits(killed2, 3)

	// A producer stalls under an open transaction; its next instance fences it; it
	// comes back and tries to finish.
	zseq := x.hold(zombie)
	r.fault("pause", zombie.Name(), "transactional producer, a transaction open")
	if err := zombie.Pause(); err != nil {
		t.Fatal(err)
	}
	zombie2 := x.start("zombie-2", "tx-zombie", txnTimeout)
	x.waitCommits(zombie2, 3)
	r.fault("resume", zombie.Name(), "its held transaction goes on, then it exits")
	if err := zombie.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := zombie.Last(); err != nil {
		t.Fatal(err)
	}
	ztx := x.txn(zombie, zseq)
	select {
	case <-zombie.Done():
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not exit after its last transaction", zombie.Name())
	}
	if ztx.Outcome == history.TxnCommitted {
		t.Errorf("%s, fenced by %s, committed its transaction %d", zombie.Name(), zombie2.Name(), zseq)
	}
	if zombie.Fenced() == "" {
		t.Errorf("%s was not told it was fenced: transaction %d %s (%s)", zombie.Name(), zseq, ztx.Outcome, ztx.Err)
	} else {
		r.fault("observed", zombie.Name(), "fenced: "+zombie.Fenced())
	}
	x.waitCommits(zombie2, 3)

	// The abandoned transaction is aborted by its timeout.
	d := x.waitState("tx-abandoned", "CompleteAbort", 60*time.Second)
	r.fault("observed", "tx-abandoned", fmt.Sprintf("CompleteAbort at epoch %d, seen %v after its producer's death",
		d.ProducerEpoch, time.Since(abandonedAt).Round(time.Millisecond)))

	for _, p := range []*workload.TxnProducer{steady, held, killed2, zombie2} {
		if err := p.Stop(60 * time.Second); err != nil {
			t.Errorf("%s: %v", p.Name(), err)
		}
		if f := p.Fenced(); f != "" {
			t.Errorf("%s was fenced, with no newer instance: %s", p.Name(), f)
		}
	}
	x.waitStable(60 * time.Second)
	r.drained = x.readBack
	h := r.finish()
	checkLeaderInISR(t, h)
	checkReplicasIdentical(t, h)
	outcomes := map[string]map[history.TxnOutcome]int{}
	for _, tx := range h.Txns {
		if outcomes[tx.Producer] == nil {
			outcomes[tx.Producer] = map[history.TxnOutcome]int{}
		}
		outcomes[tx.Producer][tx.Outcome]++
	}
	t.Logf("transactions by producer and outcome: %v", outcomes)
}

// checkReplicasIdentical fails the test unless every partition's replicas, read at the
// end, hold the same records at the same offsets, markers aside: with the producers
// stopped and every ISR whole before the nodes stopped, none may lack or add a record,
// even above the high watermark (which the checker's replica-divergence judges below
// it).
func checkReplicasIdentical(t *testing.T, h *history.History) {
	t.Helper()
	logs := map[string][]history.ReplicaLog{}
	for _, f := range h.Finals {
		k := fmt.Sprintf("%s-%d", f.Topic, f.Partition)
		logs[k] = append(logs[k], f)
	}
	for k, ls := range logs {
		if len(ls) != 3 {
			t.Errorf("%s: %d replicas read, want 3", k, len(ls))
			continue
		}
		ref := ls[0]
		for _, l := range ls[1:] {
			if len(l.Records) != len(ref.Records) {
				t.Errorf("%s: node %d holds %d records, node %d %d", k, ref.Node, len(ref.Records), l.Node, len(l.Records))
				continue
			}
			for i, a := range ref.Records {
				if b := l.Records[i]; a.Offset != b.Offset || a.Value != b.Value {
					t.Errorf("%s: node %d holds %q at %d, node %d %q at %d", k, ref.Node, a.Value, a.Offset, l.Node, b.Value, b.Offset)
					break
				}
			}
		}
	}
}
