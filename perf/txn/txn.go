// Package txn is the bench suite's transactions benchmark: Kafka transactional produce
// (franz-go's BeginTransaction, Produce, Flush, EndTransaction) with 1, 10 and 100
// batches per transaction, against idempotent produce of the same batches, one mode
// after the other on the same cluster in one run.
//
// A batch is one Produce request: BatchRecords records of RecordSize bytes to each of
// the topic's partitions — one record batch per partition — sent when the producer
// flushes, and acknowledged (acks=all) before the next batch is built. Each of Producers
// goroutines has a client of its own (and, in the transactional modes, a transactional
// id of its own) and loops: idempotent, batch after batch; transactional with N batches
// per transaction, BeginTransaction, N batches, EndTransaction(commit). Every mode thus
// sends the same Produce requests, and the transactional modes add only what a
// transaction costs: AddPartitionsToTxn before its first batch (and the partition
// leaders' check of that batch with the coordinator), EndTxn, and the markers the
// coordinator has written after it answers — amortized over N batches.
//
// Records count when their unit completes: a batch for idempotent produce, the commit
// for a transaction. The transactional modes' rates are those of committed records,
// what a read_committed consumer can read.
package txn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/perf"
)

// Defaults of Settings.
const (
	DefaultPartitions   = 8
	DefaultRecordSize   = 1024
	DefaultBatchRecords = 16
	DefaultProducers    = 4
	DefaultWarmup       = 2 * time.Second
	DefaultDuration     = 20 * time.Second
)

// DefaultBatchesPerTxn are the transactional modes the issue asks for.
var DefaultBatchesPerTxn = []int{1, 10, 100}

// Limits: a typo must not run all night or buffer gigabytes.
const (
	partitionsMax    = 256
	recordSizeMax    = 1 << 20
	producersMax     = 64
	batchesPerTxnMax = 10_000
	// partitionBatchMax bounds one partition's record batch (BatchRecords ×
	// RecordSize): franz-go's batches hold up to 1,000,012 bytes (its default
	// ProducerBatchMaxBytes), and a bigger one would be split into two requests.
	partitionBatchMax = 512 << 10
	// batchRecordsMax bounds the records buffered for one batch, all partitions.
	batchRecordsMax = 100_000
	durationMax     = time.Hour
)

// Timeouts.
const (
	// setupTimeout bounds creating the topic and loading the producers' ids.
	setupTimeout = 30 * time.Second
	// stopTimeout bounds waiting for the producers to finish their last batch and abort
	// an unfinished transaction once the window has ended.
	stopTimeout = time.Minute
	// txnTimeout is the producers' transaction timeout: far above the longest
	// transaction of a run, so that the coordinator never aborts one on its own.
	txnTimeout = time.Minute
	// dialTimeout bounds each connection the producers open.
	dialTimeout = 3 * time.Second
	// progressEvery is how often a progress line is printed.
	progressEvery = time.Second
)

// Settings shape the workload; they are recorded in the report.
type Settings struct {
	// Partitions of the topic each mode produces to (one topic per mode).
	Partitions int `json:"partitions"`
	// RecordSize is each record's value, in bytes (no key).
	RecordSize int `json:"recordSize"`
	// BatchRecords is how many records a batch carries to each partition.
	BatchRecords int `json:"batchRecords"`
	// Producers is how many clients produce at once, each in a goroutine of its own.
	Producers int `json:"producers"`
	// BatchesPerTxn are the transactional modes, run after the idempotent one.
	BatchesPerTxn []int `json:"batchesPerTxn"`
	// Warmup runs before each mode's measured window (0: none); Duration is the window.
	Warmup   time.Duration `json:"warmupNs"`
	Duration time.Duration `json:"durationNs"`
}

// DefaultSettings are the settings of `make bench-txn`.
func DefaultSettings() Settings {
	return Settings{Partitions: DefaultPartitions, RecordSize: DefaultRecordSize, BatchRecords: DefaultBatchRecords,
		Producers: DefaultProducers, BatchesPerTxn: append([]int(nil), DefaultBatchesPerTxn...),
		Warmup: DefaultWarmup, Duration: DefaultDuration}
}

// Validate checks every limit.
func (s Settings) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	rng := func(name string, v, lo, hi int) {
		if v < lo || v > hi {
			bad("%s %d is outside [%d, %d]", name, v, lo, hi)
		}
	}
	rng("partitions", s.Partitions, 1, partitionsMax)
	rng("record size", s.RecordSize, 1, recordSizeMax)
	rng("records per partition in a batch", s.BatchRecords, 1, batchRecordsMax)
	rng("producers", s.Producers, 1, producersMax)
	if s.BatchRecords*s.RecordSize > partitionBatchMax {
		bad("a partition's batch of %d records of %d bytes is over %s: it would not fit one record batch", s.BatchRecords, s.RecordSize, perf.FormatBytes(partitionBatchMax))
	}
	if s.BatchRecords*s.Partitions > batchRecordsMax {
		bad("a batch of %d records (%d partitions × %d) is over %d", s.BatchRecords*s.Partitions, s.Partitions, s.BatchRecords, batchRecordsMax)
	}
	if len(s.BatchesPerTxn) == 0 {
		bad("no transactional mode (batches per transaction)")
	}
	seen := map[int]bool{}
	for _, n := range s.BatchesPerTxn {
		rng("batches per transaction", n, 1, batchesPerTxnMax)
		if seen[n] {
			bad("batches per transaction %d is given twice", n)
		}
		seen[n] = true
	}
	if s.Warmup < 0 || s.Warmup > durationMax {
		bad("warmup %v is outside [0, %v]", s.Warmup, durationMax)
	}
	if s.Duration <= 0 || s.Duration > durationMax {
		bad("duration %v is outside (0, %v]", s.Duration, durationMax)
	}
	if len(errs) > 0 {
		return fmt.Errorf("txn: %w", errors.Join(errs...))
	}
	return nil
}

// ParseBatchesPerTxn reads a comma-separated list of batches per transaction ("1,10,100").
// The values are checked by Settings.Validate.
func ParseBatchesPerTxn(s string) ([]int, error) {
	var ns []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("txn: batches per transaction: %q is not a number", f)
		}
		ns = append(ns, n)
	}
	if len(ns) == 0 {
		return nil, fmt.Errorf("txn: batches per transaction: none in %q", s)
	}
	return ns, nil
}

// Mode is one way of producing: idempotent (BatchesPerTxn 0) or transactional.
type Mode struct {
	// Name names the mode in files and progress lines: "idempotent", "txn-10".
	Name string
	// BatchesPerTxn is the batches each transaction carries; 0 for idempotent produce.
	BatchesPerTxn int
}

// Label is the mode as the tables name it.
func (m Mode) Label() string {
	switch m.BatchesPerTxn {
	case 0:
		return "idempotent"
	case 1:
		return "transactional, 1 batch/txn"
	}
	return fmt.Sprintf("transactional, %d batches/txn", m.BatchesPerTxn)
}

// Modes are the modes a run goes through, in order: idempotent first, the baseline.
func (s Settings) Modes() []Mode {
	ms := []Mode{{Name: "idempotent"}}
	for _, n := range s.BatchesPerTxn {
		ms = append(ms, Mode{Name: fmt.Sprintf("txn-%d", n), BatchesPerTxn: n})
	}
	return ms
}

// batchRecords is the records of one batch, all partitions.
func (s Settings) batchRecords() int64 { return int64(s.Partitions) * int64(s.BatchRecords) }

// Config says what to run against what.
type Config struct {
	Settings
	// Driver creates and deletes the topics and names the server processes whose CPU is
	// accounted (a Kafka driver of perf/drivers).
	Driver perf.Driver
	// Bootstrap is a broker's Kafka address.
	Bootstrap string
	// System says what the cluster is, for the report.
	System string
	// Progress receives progress lines; nil for none.
	Progress io.Writer
	// Command is how the run was started, for the report.
	Command string
}

// Report is one run: what perf/results/txn.json holds and the BENCHMARKS.md section is
// written from.
type Report struct {
	StartedAt  time.Time    `json:"startedAt"`
	Commit     string       `json:"commit"`
	Machine    perf.Machine `json:"machine"`
	Command    string       `json:"command"`
	System     string       `json:"system"`
	LoadBefore string       `json:"loadBefore,omitempty"`
	LoadAfter  string       `json:"loadAfter,omitempty"`
	Settings   Settings     `json:"settings"`
	// Modes holds each mode's result, idempotent first; a mode that failed has none.
	Modes []*ModeResult `json:"modes"`
	// Failures says which modes failed, and how.
	Failures []string `json:"failures,omitempty"`
}

// ModeResult is what one mode measured in its window.
type ModeResult struct {
	Mode          string  `json:"mode"`
	Label         string  `json:"label"`
	BatchesPerTxn int     `json:"batchesPerTxn"` // 0: idempotent
	MeasuredSec   float64 `json:"measuredSec"`
	// Records, Bytes (of record values) and Batches completed in the window: acknowledged
	// (idempotent) or committed (transactional). Transactions committed in the window.
	Records      int64 `json:"records"`
	Bytes        int64 `json:"bytes"`
	Batches      int64 `json:"batches"`
	Transactions int64 `json:"transactions"`
	// Rates over the window; MB = 10^6 bytes of record values.
	RecordsPerSec      float64 `json:"recordsPerSec"`
	MBPerSec           float64 `json:"mbPerSec"`
	BatchesPerSec      float64 `json:"batchesPerSec"`
	TransactionsPerSec float64 `json:"transactionsPerSec"`
	// CommitLatency is EndTransaction(commit), call to return: the EndTxn round trip to
	// the coordinator, which stores the commit before it answers.
	CommitLatency perf.LatencySummary `json:"commitLatency"`
	// BatchLatency is a batch's Flush, call to return: its Produce request's round trip
	// (after AddPartitionsToTxn for a transaction's first batch).
	BatchLatency perf.LatencySummary `json:"batchLatency"`
	// Requests are the requests the producers wrote in the window, by API.
	Requests Requests `json:"requests"`
	// BatchesSent is the batches flushed in the window, committed or not yet;
	// ProduceRequestsPerBatch is Requests.Produce per batch sent — 1 when every batch
	// went as one Produce request, as the benchmark means it to.
	BatchesSent             int64   `json:"batchesSent"`
	ProduceRequestsPerBatch float64 `json:"produceRequestsPerBatch"`
	// ServerCPUSeconds is the server processes' CPU in the window, ServerCPUPerGB the
	// same per GB (10^9 bytes) of records completed; ClientCPUSeconds the harness's.
	ServerCPUSeconds float64 `json:"serverCpuSeconds"`
	ServerCPUPerGB   float64 `json:"serverCpuPerGB"`
	ClientCPUSeconds float64 `json:"clientCpuSeconds"`
	Errors           int64   `json:"errors"`
	FirstError       string  `json:"firstError,omitempty"`
}

// Requests counts requests by API.
type Requests struct {
	Produce            int64 `json:"produce"`
	InitProducerID     int64 `json:"initProducerId"`
	AddPartitionsToTxn int64 `json:"addPartitionsToTxn"`
	EndTxn             int64 `json:"endTxn"`
}

func (r Requests) minus(o Requests) Requests {
	return Requests{Produce: r.Produce - o.Produce, InitProducerID: r.InitProducerID - o.InitProducerID,
		AddPartitionsToTxn: r.AddPartitionsToTxn - o.AddPartitionsToTxn, EndTxn: r.EndTxn - o.EndTxn}
}

// counters is a snapshot of a mode's running totals and of the CPU times.
type counters struct {
	at                                       time.Time
	records, bytes, batches, txns, batchSent int64
	requests                                 Requests
	serverCPU, clientCPU                     float64
}

// summarize makes a mode's result from the snapshots at the start (a) and the end (b)
// of its window and the latencies recorded in it.
func summarize(m Mode, a, b counters, commit, batch perf.LatencySummary) *ModeResult {
	r := &ModeResult{Mode: m.Name, Label: m.Label(), BatchesPerTxn: m.BatchesPerTxn,
		MeasuredSec: b.at.Sub(a.at).Seconds(),
		Records:     b.records - a.records, Bytes: b.bytes - a.bytes, Batches: b.batches - a.batches,
		Transactions: b.txns - a.txns, BatchesSent: b.batchSent - a.batchSent,
		CommitLatency: commit, BatchLatency: batch, Requests: b.requests.minus(a.requests),
		ServerCPUSeconds: b.serverCPU - a.serverCPU, ClientCPUSeconds: b.clientCPU - a.clientCPU}
	if s := r.MeasuredSec; s > 0 {
		r.RecordsPerSec = float64(r.Records) / s
		r.MBPerSec = float64(r.Bytes) / s / 1e6
		r.BatchesPerSec = float64(r.Batches) / s
		r.TransactionsPerSec = float64(r.Transactions) / s
	}
	if r.BatchesSent > 0 {
		r.ProduceRequestsPerBatch = float64(r.Requests.Produce) / float64(r.BatchesSent)
	}
	if gb := float64(r.Bytes) / 1e9; gb > 0 && r.ServerCPUSeconds > 0 {
		r.ServerCPUPerGB = r.ServerCPUSeconds / gb
	}
	return r
}

// Run runs every mode, one after the other, and returns the report. A mode that fails
// is recorded in Report.Failures and the next one still runs; the error is for a run
// that could not start or was interrupted (ctx).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Settings.Validate(); err != nil {
		return nil, err
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	rep := &Report{StartedAt: time.Now().UTC(), Commit: perf.GitCommit("."), Machine: perf.DescribeMachine(),
		Command: cfg.Command, System: cfg.System, LoadBefore: perf.LoadAverage(), Settings: cfg.Settings}
	for _, m := range cfg.Settings.Modes() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		res, err := runMode(ctx, cfg, m)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if res != nil {
			rep.Modes = append(rep.Modes, res)
		}
		if err != nil {
			msg := fmt.Sprintf("%s: %v", m.Label(), err)
			fmt.Fprintf(cfg.Progress, "txn %-10s FAILED %s\n", m.Name, err)
			rep.Failures = append(rep.Failures, msg)
		}
	}
	rep.LoadAfter = perf.LoadAverage()
	return rep, nil
}

// modeRun is the state of one mode's run.
type modeRun struct {
	cfg   Config
	mode  Mode
	value []byte
	phase atomic.Value // string

	// mu guards tot, so that a snapshot never sees a unit half counted.
	mu       sync.Mutex
	tot      counters
	requests requestCounter
	commit   *perf.Recorder
	batch    *perf.Recorder

	errs     atomic.Int64
	errMu    sync.Mutex
	firstErr string
}

// runMode runs one mode on a topic of its own: warmup, then the measured window.
func runMode(ctx context.Context, cfg Config, m Mode) (*ModeResult, error) {
	s := cfg.Settings
	r := &modeRun{cfg: cfg, mode: m, value: make([]byte, s.RecordSize), commit: perf.NewRecorder(), batch: perf.NewRecorder()}
	for i := range r.value {
		r.value[i] = byte(rand.Uint32())
	}
	r.phase.Store("setup")
	tag := strconv.FormatUint(rand.Uint64()&0xffffff, 36)
	topic := fmt.Sprintf("perf-txn-%s-%s", m.Name, tag)
	setupCtx, cancelSetup := context.WithTimeout(ctx, setupTimeout)
	defer cancelSetup()
	fmt.Fprintf(cfg.Progress, "txn %-10s %s: topic %s, %d partitions, %d producers, batches of %d × %d records of %d B\n",
		m.Name, m.Label(), topic, s.Partitions, s.Producers, s.Partitions, s.BatchRecords, s.RecordSize)
	if err := cfg.Driver.CreateTopic(setupCtx, topic, s.Partitions); err != nil {
		return nil, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		_ = cfg.Driver.DeleteTopic(dctx, topic) // best effort: a leftover topic only takes disk
	}()
	var clients []*kgo.Client
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	for i := range s.Producers {
		cl, err := kgo.NewClient(r.clientOpts(topic, fmt.Sprintf("gregor-bench-%s-%s-%d", m.Name, tag, i))...)
		if err != nil {
			return nil, err
		}
		clients = append(clients, cl)
		// The producer id (InitProducerId) is loaded now, outside the window.
		if _, _, err := cl.ProducerID(setupCtx); err != nil {
			return nil, fmt.Errorf("producer %d: InitProducerId: %w", i, err)
		}
	}
	cancelSetup()

	var stop atomic.Bool
	run, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	var wg sync.WaitGroup
	for _, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.loop(run, cl, &stop); err != nil {
				fail(err)
			}
		}()
	}
	stopProgress := r.startProgress()
	r.phase.Store("warmup")
	perf.Sleep(run, s.Warmup)
	r.commit.Reset()
	r.batch.Reset()
	a := r.snapshot()
	r.phase.Store("test")
	perf.Sleep(run, s.Duration)
	b := r.snapshot()
	res := summarize(m, a, b, r.commit.Summary(), r.batch.Summary())
	cutShort := run.Err() != nil
	r.phase.Store("stopping")
	stop.Store(true)
	stopProgress()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(stopTimeout):
		fail(fmt.Errorf("the producers did not stop within %v of the window's end", stopTimeout))
		<-done
	}
	res.Errors = r.errs.Load()
	r.errMu.Lock()
	res.FirstError = r.firstErr
	r.errMu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if run.Err() != nil { // a producer failed
		if cutShort {
			return nil, context.Cause(run)
		}
		return res, fmt.Errorf("after the window: %w", context.Cause(run))
	}
	fmt.Fprintf(cfg.Progress, "txn %-10s done: %s records/s, %.1f MB/s, %.1f transactions/s, commit p50 %s p99 %s\n",
		m.Name, perf.FormatCount(res.RecordsPerSec), res.MBPerSec, res.TransactionsPerSec,
		perf.FormatMicros(res.CommitLatency.P50Us), perf.FormatMicros(res.CommitLatency.P99Us))
	if res.Errors > 0 {
		return res, fmt.Errorf("%d records failed, first: %s", res.Errors, res.FirstError)
	}
	return res, nil
}

// clientOpts are a producer's options: acks=all and idempotence (franz-go's defaults,
// which a transactional id requires), records held until the producer flushes — so that
// a batch goes out as one Produce request — and a transactional id in the
// transactional modes.
func (r *modeRun) clientOpts(topic, txnID string) []kgo.Opt {
	s := r.cfg.Settings
	opts := []kgo.Opt{
		kgo.SeedBrokers(r.cfg.Bootstrap), kgo.ClientID("gregor-bench-txn"), kgo.DialTimeout(dialTimeout),
		kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ManualFlushing(), kgo.MaxBufferedRecords(int(s.batchRecords()) + 1),
		kgo.WithHooks(&r.requests),
	}
	if r.mode.BatchesPerTxn > 0 {
		opts = append(opts, kgo.TransactionalID(txnID), kgo.TransactionTimeout(txnTimeout))
	}
	return opts
}

// loop is one producer's: units (a batch, or a transaction of BatchesPerTxn batches)
// until stop is set. A transaction cut short by stop is aborted.
func (r *modeRun) loop(ctx context.Context, cl *kgo.Client, stop *atomic.Bool) error {
	s := r.cfg.Settings
	inTxn := r.mode.BatchesPerTxn > 0
	n := max(1, r.mode.BatchesPerTxn)
	recs := make([]kgo.Record, s.batchRecords())
	for !stop.Load() {
		if inTxn {
			if err := cl.BeginTransaction(); err != nil {
				return fmt.Errorf("BeginTransaction: %w", err)
			}
		}
		for i := 0; i < n; i++ {
			if stop.Load() {
				if !inTxn {
					return nil
				}
				return abort(ctx, cl)
			}
			if err := r.sendBatch(ctx, cl, recs); err != nil {
				return err
			}
		}
		if inTxn {
			start := time.Now().UnixNano()
			if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
				return fmt.Errorf("EndTransaction(commit): %w", err)
			}
			r.commit.Record(start, time.Now().UnixNano())
		}
		r.mu.Lock()
		r.tot.records += int64(n) * s.batchRecords()
		r.tot.bytes += int64(n) * s.batchRecords() * int64(s.RecordSize)
		r.tot.batches += int64(n)
		if inTxn {
			r.tot.txns++
		}
		r.mu.Unlock()
	}
	return nil
}

// abort aborts the transaction the end of the run cut short (its batches are flushed).
func abort(ctx context.Context, cl *kgo.Client) error {
	ctx, cancel := context.WithTimeout(ctx, stopTimeout)
	defer cancel()
	if err := cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
		return fmt.Errorf("EndTransaction(abort) at the end: %w", err)
	}
	return nil
}

// sendBatch produces one batch (BatchRecords records to each partition) and flushes it.
// recs are the batch's records, reused: once Flush has returned, franz-go holds none.
func (r *modeRun) sendBatch(ctx context.Context, cl *kgo.Client, recs []kgo.Record) error {
	s := r.cfg.Settings
	var failed atomic.Int64
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			failed.Add(1)
			r.recordError(err)
		}
	}
	for i := range recs {
		recs[i] = kgo.Record{Partition: int32(i / s.BatchRecords), Value: r.value}
		cl.Produce(ctx, &recs[i], promise)
	}
	start := time.Now().UnixNano()
	if err := cl.Flush(ctx); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	r.batch.Record(start, time.Now().UnixNano())
	r.mu.Lock()
	r.tot.batchSent++
	r.mu.Unlock()
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d records of a batch failed, first: %s", n, r.firstError())
	}
	return nil
}

func (r *modeRun) recordError(err error) {
	if r.errs.Add(1) == 1 {
		r.errMu.Lock()
		r.firstErr = err.Error()
		r.errMu.Unlock()
	}
}

func (r *modeRun) firstError() string {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.firstErr
}

func (r *modeRun) counts() counters {
	r.mu.Lock()
	c := r.tot
	r.mu.Unlock()
	c.at, c.requests = time.Now(), r.requests.snapshot()
	return c
}

// snapshot is counts with the CPU times of the server processes and of the harness.
func (r *modeRun) snapshot() counters {
	c := r.counts()
	for _, pid := range r.cfg.Driver.ServerPIDs() {
		if sec, err := perf.ProcessCPU(pid); err == nil {
			c.serverCPU += sec
		}
	}
	c.clientCPU, _ = perf.ProcessCPU(os.Getpid())
	return c
}

// startProgress prints a progress line every second until the returned function is
// called (it may be called more than once).
func (r *modeRun) startProgress() (stop func()) {
	last := r.counts()
	return perf.Every(progressEvery, func(now, began time.Time) {
		cur := r.counts()
		sec := now.Sub(last.at).Seconds()
		cl := r.commit.Summary()
		fmt.Fprintf(r.cfg.Progress, "txn %-10s %-8s %4.0fs | done %9s records/s %7.1f MB/s %6.1f txn/s | sent %6.0f batches/s | commit p50 %s p99 %s\n",
			r.mode.Name, r.phase.Load(), now.Sub(began).Seconds(),
			perf.FormatCount(float64(cur.records-last.records)/sec), float64(cur.bytes-last.bytes)/sec/1e6,
			float64(cur.txns-last.txns)/sec, float64(cur.batchSent-last.batchSent)/sec,
			perf.FormatMicros(cl.P50Us), perf.FormatMicros(cl.P99Us))
		last = cur
	})
}

// requestCounter counts the requests a mode's producers write, by API (a franz-go hook).
type requestCounter struct {
	produce, initProducerID, addPartitions, endTxn atomic.Int64
}

// OnBrokerWrite implements kgo.HookBrokerWrite.
func (c *requestCounter) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err != nil {
		return
	}
	switch kmsg.Key(key) {
	case kmsg.Produce:
		c.produce.Add(1)
	case kmsg.InitProducerID:
		c.initProducerID.Add(1)
	case kmsg.AddPartitionsToTxn:
		c.addPartitions.Add(1)
	case kmsg.EndTxn:
		c.endTxn.Add(1)
	}
}

func (c *requestCounter) snapshot() Requests {
	return Requests{Produce: c.produce.Load(), InitProducerID: c.initProducerID.Load(),
		AddPartitionsToTxn: c.addPartitions.Load(), EndTxn: c.endTxn.Load()}
}
