package perf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for RunConfig.
const (
	// DefaultCatchUpTimeout bounds each phase of a catch-up workload (building the
	// backlog, draining it): 4 GiB at a pessimistic 20 MB/s takes under four minutes.
	DefaultCatchUpTimeout = 10 * time.Minute
	// catchUpStall fails a catch-up drain that reads nothing for this long.
	catchUpStall = 30 * time.Second
	// flushTimeout bounds waiting for the last acknowledgements after producers stop.
	flushTimeout = 30 * time.Second
	// progressEveryDefault is how often the progress line is printed.
	progressEveryDefault = time.Second
	// setupTimeout bounds topic creation and opening producers and consumers.
	setupTimeout = 30 * time.Second
)

// RunConfig says what to run and how to report on it while it goes.
type RunConfig struct {
	Workload *Workload
	Driver   Driver
	// MetricsURL is Gregor's /metrics page; when it answers with Gregor's counters the
	// result is labelled Gregor and carries the zero-copy share. Empty: not scraped.
	MetricsURL string
	// Progress receives a progress line every ProgressEvery; nil for none.
	Progress      io.Writer
	ProgressEvery time.Duration
	// CatchUpTimeout bounds each phase of a catch-up workload (default
	// DefaultCatchUpTimeout).
	CatchUpTimeout time.Duration
	// Command is recorded in the result as the way to reproduce it.
	Command string
}

// run is the state of one Run.
type run struct {
	cfg RunConfig
	w   *Workload

	pubMsgs, pubBytes   atomic.Int64
	consMsgs, consBytes atomic.Int64
	pubErrs             atomic.Int64
	errMu               sync.Mutex
	firstErr            string
	// recordE2E is off while a catch-up backlog is drained: a backlog message's age is
	// not a latency.
	recordE2E atomic.Bool
	phase     atomic.Value // string

	pubLat, pubDelay, e2e *Recorder
}

// Run runs one workload on one driver and returns its result. The driver is not closed.
func Run(ctx context.Context, cfg RunConfig) (*Result, error) {
	w, d := cfg.Workload, cfg.Driver
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = progressEveryDefault
	}
	if cfg.CatchUpTimeout <= 0 {
		cfg.CatchUpTimeout = DefaultCatchUpTimeout
	}
	r := &run{cfg: cfg, w: w, pubLat: NewRecorder(), pubDelay: NewRecorder(), e2e: NewRecorder()}
	r.phase.Store("setup")
	r.recordE2E.Store(!w.IsCatchUp())
	res := &Result{
		Workload: w, Driver: d.Name(), System: d.System(), Durability: d.Durability(),
		StartedAt: time.Now().UTC(), Command: cfg.Command,
	}

	// Topics: fresh names per run, so a rerun never reads an old run's messages.
	tag := strconv.FormatUint(rand.Uint64()&0xffffff, 36)
	topics := make([]string, w.Topics)
	setupCtx, cancelSetup := context.WithTimeout(ctx, setupTimeout)
	defer cancelSetup()
	for i := range topics {
		topics[i] = fmt.Sprintf("perf-%s-%s-%d", sanitize(w.Name), tag, i)
		if err := d.CreateTopic(setupCtx, topics[i], w.PartitionsPerTopic); err != nil {
			return nil, fmt.Errorf("perf: %s: create topic %s: %w", d.Name(), topics[i], err)
		}
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		for _, t := range topics {
			_ = d.DeleteTopic(dctx, t) // best effort: the peers' stores are temporary anyway
		}
	}()

	// Gregor's metrics, if it is Gregor.
	var fetchStart FetchPathBytes
	gregor := false
	if cfg.MetricsURL != "" {
		if b, found, err := ScrapeFetchPaths(ctx, cfg.MetricsURL); err == nil && found {
			gregor = true
			res.System = "Gregor"
			fetchStart = b
		}
	}

	producers, err := r.openProducers(setupCtx, topics)
	defer func() {
		for _, p := range producers {
			_ = p.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	var consumers []Consumer
	defer func() {
		for _, c := range consumers {
			_ = c.Close()
		}
	}()
	if !w.IsCatchUp() {
		if consumers, err = r.openConsumers(setupCtx, topics); err != nil {
			return nil, err
		}
	}
	cancelSetup()

	stopProgress := r.startProgress()
	defer stopProgress()

	var window windowSample
	if !w.IsCatchUp() {
		window, err = r.runTimed(ctx, producers)
	} else {
		window, consumers, err = r.runCatchUp(ctx, producers, topics)
	}
	stopProgress()
	if err != nil {
		return nil, err
	}

	// The measured window.
	res.MeasuredSec = window.seconds
	res.PublishedMessages, res.PublishedBytes = window.pubMsgs, window.pubBytes
	res.ConsumedMessages, res.ConsumedBytes = window.consMsgs, window.consBytes
	if s := window.pubSeconds; s > 0 {
		res.PublishRateMsgs = float64(window.pubMsgs) / s
		res.PublishRateMBs = float64(window.pubBytes) / s / 1e6
	}
	if s := window.seconds; s > 0 {
		res.ConsumeRateMsgs = float64(window.consMsgs) / s
		res.ConsumeRateMBs = float64(window.consBytes) / s / 1e6
	}
	res.PublishLatency = window.pubLat
	res.PublishDelay = window.pubDelay
	res.EndToEndLatency = window.e2e
	res.ServerCPUSeconds = window.serverCPU
	if gb := float64(window.movedBytes) / 1e9; gb > 0 && len(d.ServerPIDs()) > 0 {
		res.ServerCPUPerGB = window.serverCPU / gb
	}
	res.ClientCPUSeconds = window.clientCPU
	for _, pid := range d.ServerPIDs() {
		if sec, ok := window.cpuByPID[pid]; ok {
			u := ProcessCPUUse{PID: pid, Name: processName(pid), Seconds: sec}
			if gb := float64(window.movedBytes) / 1e9; gb > 0 {
				u.PerGB = sec / gb
			}
			res.ServerProcesses = append(res.ServerProcesses, u)
		}
	}
	if len(d.ServerPIDs()) == 0 {
		res.Notes = append(res.Notes, "server CPU not measured: the server's process is not known (remote or not found; see --server-pid)")
	}
	for _, pid := range window.cpuMissing {
		res.Notes = append(res.Notes, fmt.Sprintf("server process %d could not be read: it may have exited", pid))
	}
	if gregor {
		if b, found, err := ScrapeFetchPaths(ctx, cfg.MetricsURL); err == nil && found {
			res.ZeroCopy = ZeroCopyBetween(fetchStart, b)
		}
	}
	if w.IsCatchUp() {
		res.Notes = append(res.Notes, fmt.Sprintf("catch-up: publish figures are from building the %s backlog (%.1f s, no consumer); consume figures from draining it (producers stopped)", formatBytes(float64(w.BacklogBytes())), window.pubSeconds))
	}
	res.PublishErrors = r.pubErrs.Load()
	r.errMu.Lock()
	res.FirstError = r.firstErr
	r.errMu.Unlock()
	return res, nil
}

// windowSample is what was measured between the start and the end of the window.
type windowSample struct {
	seconds float64
	// pubSeconds is the window publish rates are computed over: seconds, except for a
	// catch-up workload, whose publishing happens before the measured drain.
	pubSeconds                             float64
	pubMsgs, pubBytes, consMsgs, consBytes int64
	pubLat, pubDelay, e2e                  LatencySummary
	serverCPU, clientCPU                   float64
	cpuMissing                             []int
	cpuByPID                               map[int]float64
	// movedBytes is the payload published plus consumed while serverCPU was measured.
	movedBytes int64
}

// counters is a snapshot of the running totals and CPU times.
type counters struct {
	at                                     time.Time
	pubMsgs, pubBytes, consMsgs, consBytes int64
	serverCPU, clientCPU                   float64
	cpuMissing                             []int
	cpuByPID                               map[int]float64
}

func (r *run) snapshot() counters {
	c := counters{
		at: time.Now(), pubMsgs: r.pubMsgs.Load(), pubBytes: r.pubBytes.Load(),
		consMsgs: r.consMsgs.Load(), consBytes: r.consBytes.Load(),
	}
	c.serverCPU, c.cpuByPID, c.cpuMissing = cpuSum(r.cfg.Driver.ServerPIDs())
	c.clientCPU, _ = ProcessCPU(os.Getpid())
	return c
}

func (r *run) window(a, b counters) windowSample {
	w := windowSample{
		seconds: b.at.Sub(a.at).Seconds(), pubSeconds: b.at.Sub(a.at).Seconds(),
		pubMsgs: b.pubMsgs - a.pubMsgs, pubBytes: b.pubBytes - a.pubBytes,
		consMsgs: b.consMsgs - a.consMsgs, consBytes: b.consBytes - a.consBytes,
		pubLat: r.pubLat.Summary(), pubDelay: r.pubDelay.Summary(), e2e: r.e2e.Summary(),
		serverCPU: b.serverCPU - a.serverCPU, clientCPU: b.clientCPU - a.clientCPU,
		cpuMissing: b.cpuMissing, cpuByPID: map[int]float64{},
		movedBytes: b.pubBytes - a.pubBytes + b.consBytes - a.consBytes,
	}
	for pid, end := range b.cpuByPID {
		if start, ok := a.cpuByPID[pid]; ok {
			w.cpuByPID[pid] = end - start
		}
	}
	return w
}

func (r *run) resetRecorders() {
	r.pubLat.Reset()
	r.pubDelay.Reset()
	r.e2e.Reset()
}

// runTimed runs producers (and the consumers already open) for warmup + test and
// measures the test part.
func (r *run) runTimed(ctx context.Context, producers []Producer) (windowSample, error) {
	w := r.w
	var stop atomic.Bool
	total := w.Warmup + w.Test
	// Count bound: no producer can exceed producerRateMax over the whole run.
	limit := int64(float64(producerRateMax)*total.Seconds()) + 1
	// A producer that fails ends the run at once rather than after the full duration.
	failed, fail := context.WithCancel(ctx)
	defer fail()
	wait := r.startProducers(ctx, producers, &stop, limit, fail)
	r.phase.Store("warmup")
	var werr error
	Sleep(failed, w.Warmup)
	r.resetRecorders()
	start := r.snapshot()
	r.phase.Store("test")
	Sleep(failed, w.Test)
	end := r.snapshot()
	win := r.window(start, end)
	r.phase.Store("stopping")
	stop.Store(true)
	werr = wait()
	if err := r.flush(producers); err != nil && werr == nil {
		werr = err
	}
	if err := ctx.Err(); err != nil {
		return win, err
	}
	return win, werr
}

// runCatchUp fills a backlog with no consumer, then opens the consumers at the start
// of the topics and measures how fast they drain it. Producers stop before the drain:
// what is measured is reading the backlog, not competing with new writes.
func (r *run) runCatchUp(ctx context.Context, producers []Producer, topics []string) (windowSample, []Consumer, error) {
	w := r.w
	var stop atomic.Bool
	perProducer := (w.BacklogBytes()/int64(w.MessageSize) + int64(len(producers)) - 1) / int64(len(producers))
	r.phase.Store("backlog")
	fillStart := r.snapshot()
	wait := r.startProducers(ctx, producers, &stop, perProducer, func() {})
	done := make(chan error, 1)
	go func() { done <- wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(r.cfg.CatchUpTimeout):
		stop.Store(true)
		<-done
		err = fmt.Errorf("perf: building the backlog took longer than %v", r.cfg.CatchUpTimeout)
	case <-ctx.Done():
		stop.Store(true)
		<-done
		err = ctx.Err()
	}
	if ferr := r.flush(producers); err == nil {
		err = ferr
	}
	if err != nil {
		return windowSample{}, nil, err
	}
	fill := r.window(fillStart, r.snapshot())
	backlog := r.pubMsgs.Load()
	if backlog == 0 {
		return windowSample{}, nil, errors.New("perf: no message of the backlog was acknowledged")
	}

	r.phase.Store("catch-up")
	r.resetRecorders()
	start := r.snapshot()
	sctx, cancel := context.WithTimeout(ctx, setupTimeout)
	consumers, err := r.openConsumers(sctx, topics)
	cancel()
	if err != nil {
		return windowSample{}, consumers, err
	}
	deadline := time.Now().Add(r.cfg.CatchUpTimeout)
	// A drain that stops (the server gone, a consumer wedged) fails after catchUpStall
	// rather than waiting out the whole timeout.
	lastCount, lastProgress := r.consMsgs.Load(), time.Now()
	for r.consMsgs.Load() < backlog*int64(w.SubscriptionsPerTopic) {
		now := time.Now()
		if now.After(deadline) {
			return windowSample{}, consumers, fmt.Errorf("perf: consumers read %d of %d backlog messages in %v", r.consMsgs.Load(), backlog, r.cfg.CatchUpTimeout)
		}
		if n := r.consMsgs.Load(); n != lastCount {
			lastCount, lastProgress = n, now
		} else if now.Sub(lastProgress) > catchUpStall {
			return windowSample{}, consumers, fmt.Errorf("perf: consumers read nothing for %v, stuck at %d of %d backlog messages", catchUpStall, n, backlog)
		}
		if err := ctx.Err(); err != nil {
			return windowSample{}, consumers, err
		}
		time.Sleep(2 * time.Millisecond)
	}
	win := r.window(start, r.snapshot())
	// The drain window has no publishing: the publish figures are the fill's, over the
	// fill's own duration.
	win.pubMsgs, win.pubBytes, win.pubLat, win.pubSeconds = fill.pubMsgs, fill.pubBytes, fill.pubLat, fill.seconds
	return win, consumers, nil
}

// startProducers runs one goroutine per producer, each sending at most limit messages
// until stop is set, and returns a function that waits for them and returns the first
// error. onErr is called when a producer fails.
func (r *run) startProducers(ctx context.Context, producers []Producer, stop *atomic.Bool, limit int64, onErr func()) (wait func() error) {
	w := r.w
	var wg sync.WaitGroup
	errs := make(chan error, len(producers))
	rate := 0.0
	if w.ProducerRate > 0 {
		rate = float64(w.ProducerRate) / float64(len(producers))
	}
	start := time.Now()
	for i, p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.produce(ctx, p, i, NewPacer(rate, start), stop, limit); err != nil {
				errs <- err
				onErr()
			}
		}()
	}
	return func() error {
		wg.Wait()
		close(errs)
		return <-errs
	}
}

// produce is one producer's loop.
func (r *run) produce(ctx context.Context, p Producer, index int, pacer *Pacer, stop *atomic.Bool, limit int64) error {
	w := r.w
	value := make([]byte, w.MessageSize)
	rng := rand.New(rand.NewPCG(uint64(index), uint64(time.Now().UnixNano())))
	for i := range value {
		value[i] = byte(rng.Uint32())
	}
	var key []byte
	switch w.KeyDistributor {
	case KeyRoundRobin:
		key = make([]byte, 0, 16)
	case KeyRandomNano:
		key = make([]byte, 8)
	}
	parts := w.PartitionsPerTopic
	next := index % parts // producers start on different partitions
	for i := int64(0); i < limit && !stop.Load(); i++ {
		intended := pacer.Wait(i)
		if stop.Load() {
			break
		}
		var part int
		switch w.KeyDistributor {
		case KeyNone:
			part = next
			next = (next + 1) % parts
		case KeyRoundRobin:
			part = next
			key = strconv.AppendInt(key[:0], int64(part), 10)
			next = (next + 1) % parts
		case KeyRandomNano:
			k := rng.Uint64()
			for j := range key {
				key[j] = byte(k >> (8 * j))
			}
			part = int(k % uint64(parts))
		}
		StampValue(value, intended)
		if pacer.Fixed() {
			r.pubDelay.Record(intended, nowNs())
		}
		if err := p.Send(ctx, part, key, value, intended); err != nil {
			if stop.Load() || ctx.Err() != nil {
				return nil // stopping: a Send cut short is not a failure
			}
			return fmt.Errorf("perf: %s: send: %w", r.cfg.Driver.Name(), err)
		}
	}
	return nil
}

// ack is every producer's AckFunc.
func (r *run) ack(intendedNs int64, err error) {
	if err != nil {
		if r.pubErrs.Add(1) == 1 {
			r.errMu.Lock()
			r.firstErr = err.Error()
			r.errMu.Unlock()
		}
		return
	}
	r.pubLat.Record(intendedNs, nowNs())
	r.pubMsgs.Add(1)
	r.pubBytes.Add(int64(r.w.MessageSize))
}

// consume is every consumer's ConsumeFunc.
func (r *run) consume(value []byte) {
	r.consMsgs.Add(1)
	r.consBytes.Add(int64(len(value)))
	if r.recordE2E.Load() {
		if ts, ok := ValueStamp(value); ok {
			r.e2e.Record(ts, nowNs())
		}
	}
}

func (r *run) openProducers(ctx context.Context, topics []string) ([]Producer, error) {
	var ps []Producer
	for _, t := range topics {
		for i := 0; i < r.w.ProducersPerTopic; i++ {
			p, err := r.cfg.Driver.NewProducer(ctx, t, r.w, r.ack)
			if err != nil {
				return ps, fmt.Errorf("perf: %s: producer on %s: %w", r.cfg.Driver.Name(), t, err)
			}
			ps = append(ps, p)
		}
	}
	return ps, nil
}

// openConsumers opens consumerPerSubscription consumers per topic, partitions dealt
// round-robin among them; a consumer left without a partition is not opened.
func (r *run) openConsumers(ctx context.Context, topics []string) ([]Consumer, error) {
	var cs []Consumer
	n := r.w.ConsumerPerSubscription
	for _, t := range topics {
		for c := 0; c < n; c++ {
			var parts []int
			for p := c; p < r.w.PartitionsPerTopic; p += n {
				parts = append(parts, p)
			}
			if len(parts) == 0 {
				continue
			}
			cons, err := r.cfg.Driver.NewConsumer(ctx, t, parts, r.w, r.consume)
			if err != nil {
				return cs, fmt.Errorf("perf: %s: consumer on %s: %w", r.cfg.Driver.Name(), t, err)
			}
			cs = append(cs, cons)
		}
	}
	return cs, nil
}

func (r *run) flush(producers []Producer) error {
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	for _, p := range producers {
		if err := p.Flush(ctx); err != nil {
			return fmt.Errorf("perf: %s: flush: %w", r.cfg.Driver.Name(), err)
		}
	}
	return nil
}

// startProgress prints a progress line every ProgressEvery until the returned function
// is called (it may be called more than once).
func (r *run) startProgress() (stop func()) {
	if r.cfg.Progress == nil {
		return func() {}
	}
	last := r.snapshotCounts()
	return Every(r.cfg.ProgressEvery, func(now, began time.Time) {
		// backlog: acknowledged and not yet consumed. A consumer may see a
		// message before its ack arrives, so it is clamped at zero.
		cur := r.snapshotCounts()
		s := now.Sub(last.at).Seconds()
		pl, el := r.pubLat.Summary(), r.e2e.Summary()
		fmt.Fprintf(r.cfg.Progress, "%-9s %-9s %5.0fs | pub %9.0f msg/s %8.1f MB/s | cons %9.0f msg/s %8.1f MB/s | backlog %9d | pub p99 %s | e2e p99 %s\n",
			r.cfg.Driver.Name(), r.phase.Load(), now.Sub(began).Seconds(),
			float64(cur.pubMsgs-last.pubMsgs)/s, float64(cur.pubBytes-last.pubBytes)/s/1e6,
			float64(cur.consMsgs-last.consMsgs)/s, float64(cur.consBytes-last.consBytes)/s/1e6,
			max(0, cur.pubMsgs*int64(r.w.SubscriptionsPerTopic)-cur.consMsgs), FormatMicros(pl.P99Us), FormatMicros(el.P99Us))
		last = cur
	})
}

// Every calls tick every d on a goroutine of its own, with the tick's time and the
// time it started, until the returned function is called; that one may be called more
// than once, and returns once a tick in progress has ended.
func Every(d time.Duration, tick func(now, began time.Time)) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(d)
		defer t.Stop()
		began := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				tick(now, began)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-finished
		})
	}
}

// snapshotCounts is snapshot without the CPU reads, for the progress line.
func (r *run) snapshotCounts() counters {
	return counters{at: time.Now(), pubMsgs: r.pubMsgs.Load(), pubBytes: r.pubBytes.Load(),
		consMsgs: r.consMsgs.Load(), consBytes: r.consBytes.Load()}
}

// Sleep sleeps for d or until ctx is done.
func Sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// sanitize keeps a workload name usable as a topic, stream and key name on every
// system: letters, digits and '-'.
func sanitize(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(b) < 40; i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
			b = append(b, c)
		case c >= 'A' && c <= 'Z':
			b = append(b, c+'a'-'A')
		default:
			b = append(b, '-')
		}
	}
	return string(b)
}

// FormatMicros writes a latency given in microseconds with a fitting unit.
func FormatMicros(us float64) string {
	switch {
	case us <= 0:
		return "-"
	case us < 1000:
		return strconv.FormatFloat(us, 'f', 0, 64) + " µs"
	case us < 1e6:
		return strconv.FormatFloat(us/1e3, 'f', 2, 64) + " ms"
	}
	return strconv.FormatFloat(us/1e6, 'f', 2, 64) + " s"
}
