package workload

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gregor-streaming/gregor/chaos/history"
)

// A transactional producer runs in a process of its own, so that the fault suite can
// SIGKILL or SIGSTOP it mid-transaction as a real application dies or stalls. The
// process is the test binary itself, started again with TxnProducerEnv set: the test
// package's TestMain hands it to RunTxnProducerProcess before anything else. The
// process and its parent (TxnProducer) speak in lines: the parent sends commands on
// its standard input ("hold", "release", "last", "stop"), the process reports each
// step of each transaction on its standard output as JSON (txnEvent).
//
// Transaction seq of producer instance Name writes Records values
// "<Name>-<seq>-<i>", record i to partition i mod Partitions: the first half, then the
// second half, then it commits. A producer told to hold stops between the two halves
// of its next transaction — its transaction open on every partition it wrote — and
// reports it, until it is released.

// TxnProducerEnv holds, in a transactional producer process, its configuration as
// JSON.
const TxnProducerEnv = "GREGOR_CHAOS_TXN_PRODUCER"

// TxnProducerConfig configures one transactional producer instance.
type TxnProducerConfig struct {
	// Name names the instance; a new instance of a transactional id needs another name.
	Name            string   `json:"name"`
	TransactionalID string   `json:"transactional_id"`
	Brokers         []string `json:"brokers"`
	Topic           string   `json:"topic"`
	Partitions      int32    `json:"partitions"`
	// Records per transaction (default 2 per partition).
	Records int `json:"records"`
	// Timeout is the transaction timeout (transaction.timeout.ms; default 30s).
	Timeout time.Duration `json:"timeout"`
	// Pause is the wait between two transactions (default 20ms).
	Pause time.Duration `json:"pause"`
	// LogPath is where the process's standard error (franz-go's log) goes.
	LogPath string `json:"log_path"`
}

func (c *TxnProducerConfig) defaults() {
	if c.Partitions <= 0 {
		c.Partitions = 1
	}
	if c.Records <= 0 {
		c.Records = 2 * int(c.Partitions)
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	if c.Pause <= 0 {
		c.Pause = 20 * time.Millisecond
	}
}

// txnValue is record i of transaction seq of producer name.
func txnValue(name string, seq, i int) string { return fmt.Sprintf("%s-%d-%d", name, seq, i) }

// txnEvent is one line of a producer process's report.
type txnEvent struct {
	// Ev is begin (the transaction starts), half (its first half is acknowledged),
	// held, committing (EndTxn(commit) is being sent), committed, aborted (it ended
	// without a commit asked for), unknown (the commit failed), fenced (the producer
	// was fenced, and exits).
	Ev  string `json:"ev"`
	Seq int    `json:"seq"`
	// Offsets are the acknowledged offsets of the transaction's records (-1: not
	// acknowledged), on half and committed.
	Offsets []int64 `json:"offsets,omitempty"`
	Err     string  `json:"err,omitempty"`
}

// TxnProducer is a running transactional producer process, seen from the test.
type TxnProducer struct {
	cfg   TxnProducerConfig
	rec   *Recorder
	cmd   *exec.Cmd
	stdin io.WriteCloser
	log   *os.File
	done  chan struct{}

	mu        sync.Mutex
	cur       *history.Txn // the transaction under way, if any
	commitAsk bool         // cur's commit was asked for
	held      chan int     // the seq of a transaction held open
	committed int
	fenced    string
	killed    bool
	exitErr   error
}

// StartTxnProducer starts a transactional producer process, recording each
// transaction into rec when it ends. It runs until Stop, Kill, or the fencing of its
// transactional id; ctx's end kills it.
func StartTxnProducer(ctx context.Context, rec *Recorder, cfg TxnProducerConfig) (*TxnProducer, error) {
	cfg.defaults()
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	p := &TxnProducer{cfg: cfg, rec: rec, done: make(chan struct{}), held: make(chan int, 1)}
	// -test.run matches nothing: should TestMain not take the process over, it runs no
	// test either.
	p.cmd = exec.Command(exe, "-test.run=^$")
	p.cmd.Env = append(os.Environ(), TxnProducerEnv+"="+string(b))
	if cfg.LogPath != "" {
		if p.log, err = os.OpenFile(cfg.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return nil, err
		}
		p.cmd.Stderr = p.log
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = p.cmd.Process.Kill() })
	go func() {
		defer close(p.done)
		defer stop()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var ev txnEvent
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue // not a report: the test binary's own output
			}
			p.event(ev)
		}
		err := p.cmd.Wait()
		if p.log != nil {
			_ = p.log.Close()
		}
		p.ended(err)
	}()
	return p, nil
}

// Name is the instance's name.
func (p *TxnProducer) Name() string { return p.cfg.Name }

func (p *TxnProducer) event(ev txnEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev.Ev {
	case "begin":
		t := &history.Txn{Producer: p.cfg.Name, TransactionalID: p.cfg.TransactionalID, Seq: ev.Seq, Start: time.Now()}
		for i := range p.cfg.Records {
			t.Records = append(t.Records, history.TxnRecord{Topic: p.cfg.Topic, Partition: int32(i % int(p.cfg.Partitions)),
				Value: txnValue(p.cfg.Name, ev.Seq, i), Offset: -1})
		}
		p.cur, p.commitAsk = t, false
	case "half":
		p.setOffsets(ev)
	case "held":
		select {
		case p.held <- ev.Seq:
		default:
		}
	case "committing":
		p.commitAsk = true
	case "committed":
		p.setOffsets(ev)
		p.end(history.TxnCommitted, "")
	case "aborted":
		p.end(history.TxnAborted, ev.Err)
	case "unknown":
		p.end(history.TxnUnknown, ev.Err)
	case "fenced":
		p.fenced = ev.Err
	}
}

func (p *TxnProducer) setOffsets(ev txnEvent) {
	if p.cur == nil || p.cur.Seq != ev.Seq {
		return
	}
	for i, o := range ev.Offsets {
		if i < len(p.cur.Records) && o >= 0 {
			p.cur.Records[i].Offset = o
		}
	}
}

// end records the transaction under way with its outcome. p.mu is held.
func (p *TxnProducer) end(o history.TxnOutcome, errText string) {
	if p.cur == nil {
		return
	}
	t := *p.cur
	t.Outcome, t.Err, t.End = o, errText, time.Now()
	p.cur = nil
	if o == history.TxnCommitted {
		p.committed++
	}
	p.rec.Txn(t)
}

// ended records the process's end: a transaction under way ends with it, aborted if
// its commit was never asked for (the coordinator must abort it: by its timeout, or
// when the next instance of the transactional id initializes), unknown otherwise.
func (p *TxnProducer) ended(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.exitErr = err
	how := "the producer process ended"
	if p.killed {
		how = "the producer process was killed"
	} else if err != nil {
		how += ": " + err.Error()
	}
	if p.commitAsk {
		p.end(history.TxnUnknown, how+" during the commit")
	} else {
		p.end(history.TxnAborted, how+" before asking to commit")
	}
}

func (p *TxnProducer) command(c string) error {
	_, err := io.WriteString(p.stdin, c+"\n")
	return err
}

// Hold asks the producer to hold its next transaction open after its first half.
func (p *TxnProducer) Hold() error { return p.command("hold") }

// WaitHeld waits until the producer holds a transaction open and returns its seq.
func (p *TxnProducer) WaitHeld(timeout time.Duration) (int, error) {
	select {
	case seq := <-p.held:
		return seq, nil
	case <-p.done:
		return -1, fmt.Errorf("%s ended before holding a transaction", p.cfg.Name)
	case <-time.After(timeout):
		return -1, fmt.Errorf("%s held no transaction open within %v", p.cfg.Name, timeout)
	}
}

// Release lets the held transaction go on: its second half, then its commit.
func (p *TxnProducer) Release() error { return p.command("release") }

// Last releases the held transaction and makes it the producer's last: the process
// exits once it has ended, whatever its outcome, and starts no new client (which
// would fence the transactional id's newer instance).
func (p *TxnProducer) Last() error { return p.command("last") }

// Committed is the number of transactions committed so far.
func (p *TxnProducer) Committed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.committed
}

// Fenced is the error with which the producer was fenced ("" if it was not).
func (p *TxnProducer) Fenced() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fenced
}

// Done is closed once the process has exited and its transactions are recorded.
func (p *TxnProducer) Done() <-chan struct{} { return p.done }

// Kill SIGKILLs the process and waits until it is gone.
func (p *TxnProducer) Kill() {
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Pause SIGSTOPs the process.
func (p *TxnProducer) Pause() error { return p.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume continues a paused process (SIGCONT).
func (p *TxnProducer) Resume() error { return p.cmd.Process.Signal(syscall.SIGCONT) }

// Stop asks the producer to end its transaction under way and exit, and waits until
// it has (killing it after timeout). It returns the process's exit error.
func (p *TxnProducer) Stop(timeout time.Duration) error {
	_ = p.command("stop")
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not stop within %v: killed", p.cfg.Name, timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// IsTxnProducerProcess reports whether this process is a transactional producer
// started by StartTxnProducer.
func IsTxnProducerProcess() bool { return os.Getenv(TxnProducerEnv) != "" }

// RunTxnProducerProcess runs the transactional producer this process was started as
// and returns its exit code.
func RunTxnProducerProcess() int {
	var cfg TxnProducerConfig
	if err := json.Unmarshal([]byte(os.Getenv(TxnProducerEnv)), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", TxnProducerEnv, err)
		return 2
	}
	cfg.defaults()
	c := &txnChild{cfg: cfg, out: json.NewEncoder(os.Stdout), release: make(chan struct{}, 1), stopped: make(chan struct{})}
	go c.commands()
	return c.run()
}

// txnChild is the producer, in its process.
type txnChild struct {
	cfg     TxnProducerConfig
	outMu   sync.Mutex
	out     *json.Encoder
	hold    atomic.Bool
	release chan struct{}
	stop    atomic.Bool
	stopped chan struct{}
	once    sync.Once
}

func (c *txnChild) emit(ev txnEvent) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	_ = c.out.Encode(ev)
}

// commands reads the parent's commands; the end of its input (the parent is gone)
// ends the process.
func (c *txnChild) commands() {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch strings.TrimSpace(sc.Text()) {
		case "hold":
			c.hold.Store(true)
		case "release":
			c.releaseHeld()
		case "last":
			c.stop.Store(true)
			c.releaseHeld()
		case "stop":
			c.stop.Store(true)
			c.once.Do(func() { close(c.stopped) })
		}
	}
	os.Exit(3)
}

func (c *txnChild) releaseHeld() {
	select {
	case c.release <- struct{}{}:
	default:
	}
}

func (c *txnChild) client() (*kgo.Client, error) {
	return kgo.NewClient(kgo.SeedBrokers(c.cfg.Brokers...), kgo.TransactionalID(c.cfg.TransactionalID),
		kgo.TransactionTimeout(c.cfg.Timeout), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0), kgo.UnknownTopicRetries(-1),
		kgo.RecordDeliveryTimeout(20*time.Second),
		kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelInfo, func() string {
			return time.Now().Format("15:04:05.000 ")
		})))
}

// txnErrorBackoff is a producer's wait after a transaction that did not commit.
const txnErrorBackoff = 200 * time.Millisecond

// txnStepTimeout bounds a transaction's steps: its first half, and its second half
// with its end.
const txnStepTimeout = 30 * time.Second

// isFenced reports an error that says a newer instance (or the coordinator's timeout)
// took the transactional id over: the producer must not go on.
func isFenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch)
}

func (c *txnChild) run() int {
	var cl *kgo.Client
	defer func() {
		if cl != nil {
			cl.Close()
		}
	}()
	reset := func() {
		if cl != nil {
			cl.Close()
			cl = nil
		}
	}
	n := c.cfg.Records
	half := (n + 1) / 2
	failed := false
	for seq := 0; !c.stop.Load(); seq++ {
		if failed {
			// After a failed transaction, a pause before the next: while a node is down
			// a new client may fail at once, again and again.
			select {
			case <-time.After(txnErrorBackoff):
			case <-c.stopped:
			}
		}
		failed = true
		if cl == nil {
			var err error
			if cl, err = c.client(); err != nil {
				fmt.Fprintln(os.Stderr, "client:", err)
				return 1
			}
		}
		c.emit(txnEvent{Ev: "begin", Seq: seq})
		offs := make([]int64, n)
		for i := range offs {
			offs[i] = -1
		}
		if err := cl.BeginTransaction(); err != nil {
			c.emit(txnEvent{Ev: "aborted", Seq: seq, Err: "begin: " + err.Error()})
			if isFenced(err) {
				c.emit(txnEvent{Ev: "fenced", Seq: seq, Err: err.Error()})
				return 0
			}
			reset()
			continue
		}
		// Each step has its own deadline: a held transaction's rest does not pay for
		// the hold.
		ctx, cancel := context.WithTimeout(context.Background(), txnStepTimeout)
		err := c.produce(ctx, cl, seq, 0, half, offs)
		if err == nil {
			c.emit(txnEvent{Ev: "half", Seq: seq, Offsets: offs})
			if c.hold.Swap(false) {
				c.emit(txnEvent{Ev: "held", Seq: seq})
				select {
				case <-c.release:
				case <-c.stopped:
				}
				cancel()
				ctx, cancel = context.WithTimeout(context.Background(), txnStepTimeout)
			}
			err = c.produce(ctx, cl, seq, half, n, offs)
		}
		if err != nil {
			// No commit was asked for: the transaction cannot commit. A write or an
			// abort refused for the producer's epoch means that a newer instance, or the
			// coordinator's timeout, took the transactional id over: the producer stops
			// (franz-go would re-initialize at the old epoch, which the coordinator
			// refuses, at its next transaction).
			aerr := cl.AbortBufferedRecords(ctx)
			if aerr == nil {
				aerr = cl.EndTransaction(ctx, kgo.TryAbort)
			}
			cancel()
			msg := err.Error()
			if aerr != nil {
				msg += "; abort: " + aerr.Error()
			}
			c.emit(txnEvent{Ev: "aborted", Seq: seq, Err: msg})
			if isFenced(err) || isFenced(aerr) {
				c.emit(txnEvent{Ev: "fenced", Seq: seq, Err: msg})
				return 0
			}
			if aerr != nil {
				reset() // a new client's InitProducerId ends whatever is left open
			}
			continue
		}
		c.emit(txnEvent{Ev: "committing", Seq: seq})
		err = cl.EndTransaction(ctx, kgo.TryCommit)
		cancel()
		if err != nil {
			c.emit(txnEvent{Ev: "unknown", Seq: seq, Err: err.Error()})
			if isFenced(err) {
				c.emit(txnEvent{Ev: "fenced", Seq: seq, Err: err.Error()})
				return 0
			}
			reset()
			continue
		}
		c.emit(txnEvent{Ev: "committed", Seq: seq, Offsets: offs})
		failed = false
		select {
		case <-time.After(c.cfg.Pause):
		case <-c.stopped:
		}
	}
	return 0
}

// produce writes records [from, to) of transaction seq and waits for their
// acknowledgements, noting their offsets.
func (c *txnChild) produce(ctx context.Context, cl *kgo.Client, seq, from, to int, offs []int64) error {
	idx := map[*kgo.Record]int{}
	var recs []*kgo.Record
	for i := from; i < to; i++ {
		r := &kgo.Record{Topic: c.cfg.Topic, Partition: int32(i % int(c.cfg.Partitions)), Value: []byte(txnValue(c.cfg.Name, seq, i))}
		idx[r] = i
		recs = append(recs, r)
	}
	res := cl.ProduceSync(ctx, recs...)
	for _, r := range res {
		if r.Err == nil {
			offs[idx[r.Record]] = r.Record.Offset
		}
	}
	return res.FirstErr()
}

// ReadTxnPartitions reads every partition of topic from its start with a franz-go
// consumer at one isolation level (history.ReadCommitted or ReadUncommitted), up to
// the end offset listed when it starts: the last stable offset at read_committed, the
// high watermark otherwise. Control records are kept by the client and left out of
// the result: a partition is read to its end once a record at end-1 is returned (the
// last offset below the end is a marker or a visible record when no transaction is
// open).
func ReadTxnPartitions(ctx context.Context, brokers []string, topic string, partitions int32, isolation string) ([]history.TxnRead, error) {
	adm, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	level := kgo.ReadUncommitted()
	list := kadm.NewClient(adm).ListEndOffsets
	if isolation == history.ReadCommitted {
		level, list = kgo.ReadCommitted(), kadm.NewClient(adm).ListCommittedOffsets
	}
	ends, err := list(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	reads := make([]history.TxnRead, partitions)
	parts := map[int32]kgo.Offset{}
	left := map[int32]bool{}
	for p := range partitions {
		o, ok := ends.Lookup(topic, p)
		if !ok || o.Err != nil {
			return nil, fmt.Errorf("no end offset of %s-%d: %+v", topic, p, o)
		}
		reads[p] = history.TxnRead{Isolation: isolation, Topic: topic, Partition: p, End: o.Offset, Records: []history.Record{}}
		parts[p] = kgo.NewOffset().AtStart()
		if o.Offset > 0 {
			left[p] = true
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchIsolationLevel(level), kgo.KeepControlRecords(), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	at := map[int32]int64{} // the offset after the last record returned
	for len(left) > 0 {
		if err := ctx.Err(); err != nil {
			var where []string
			for p := range left {
				where = append(where, fmt.Sprintf("%s-%d at %d of %d", topic, p, at[p], reads[p].End))
			}
			return nil, fmt.Errorf("%s read not done: %s: %w", isolation, strings.Join(where, ", "), err)
		}
		fs := cl.PollFetches(ctx)
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			rd := &reads[fp.Partition]
			for _, r := range fp.Records {
				if r.Offset >= rd.End {
					delete(left, fp.Partition)
					continue
				}
				at[fp.Partition] = r.Offset + 1
				if r.Offset == rd.End-1 {
					delete(left, fp.Partition)
				}
				if r.Attrs.IsControl() {
					continue
				}
				rec := history.Record{Offset: r.Offset, Value: string(r.Value)}
				if r.ProducerID >= 0 {
					rec.Idempotent, rec.ProducerID, rec.ProducerEpoch = true, r.ProducerID, r.ProducerEpoch
				}
				rd.Records = append(rd.Records, rec)
			}
		})
	}
	return reads, nil
}
