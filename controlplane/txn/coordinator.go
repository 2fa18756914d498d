package txn

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/internal/term"
)

// Config holds the transaction coordinator's settings (Kafka's transaction.* and
// transactional.id.* broker configs). Zero values take the defaults below.
type Config struct {
	// MaxTimeout bounds the timeout a producer may ask for (transaction.max.timeout.ms;
	// INVALID_TRANSACTION_TIMEOUT above it).
	MaxTimeout time.Duration
	// IDExpiration is how long a transactional id with no transaction in progress is
	// kept after its last change (transactional.id.expiration.ms).
	IDExpiration time.Duration
	// AbortInterval is how often transactions past their timeout are looked for
	// (transaction.abort.timed.out.transaction.cleanup.interval.ms).
	AbortInterval time.Duration
	// RemoveInterval is how often expired transactional ids are looked for
	// (transaction.remove.expired.transaction.cleanup.interval.ms); it is held to a
	// quarter of IDExpiration, so that a short expiration (tests) is kept.
	RemoveInterval time.Duration
	// MarkerRetryBackoff is the first wait before a marker is sent again to a partition
	// that did not take it; it doubles up to markerRetryMax.
	MarkerRetryBackoff time.Duration
	// EndTxnCompleteWait bounds how long EndTxn waits for its transaction to complete
	// (every marker written, Complete* stored) before it is answered anyway, and how
	// long an InitProducerId of an id whose transaction is ending waits before it is
	// answered CONCURRENT_TRANSACTIONS; it is held to endTxnCompleteWaitMax. Negative:
	// EndTxn is answered once Prepare* is stored, InitProducerId at once (Kafka's).
	EndTxnCompleteWait time.Duration
}

// Defaults of Config (Kafka's).
const (
	DefaultMaxTimeout         = 15 * time.Minute
	DefaultIDExpiration       = 7 * 24 * time.Hour
	DefaultAbortInterval      = 10 * time.Second
	DefaultRemoveInterval     = time.Hour
	DefaultMarkerRetryBackoff = 100 * time.Millisecond
	// DefaultEndTxnCompleteWait is not Kafka's (Kafka answers EndTxn once Prepare* is
	// stored). Answering at completion spares the producer's next AddPartitionsToTxn a
	// CONCURRENT_TRANSACTIONS and the client's 20 ms backoff after it; markers normally
	// complete in a few milliseconds. 500 ms still covers the first two retries of a
	// marker whose partition just changed leader (100 and 200 ms), and is what EndTxn
	// costs at most when a partition stays unavailable — far below the clients' request
	// timeouts (30 s in Kafka's Java client) and the data plane's bound on a forwarded
	// request (30 s), so the wait never turns a decided transaction into a timeout.
	DefaultEndTxnCompleteWait = 500 * time.Millisecond
)

// Limits.
const (
	// idLenMax bounds a transactional id (it is an etcd key).
	idLenMax = 16 << 10
	// recordMax bounds one transactional id's record (a transaction over very many
	// partitions); an AddPartitionsToTxn that would pass it is refused.
	recordMax = 1 << 20
	// markerRetryMax bounds the wait between two attempts at a partition's marker.
	markerRetryMax = 2 * time.Second
	// endTxnCompleteWaitMax bounds Config.EndTxnCompleteWait: well under the 30 s a
	// client, and the data plane forwarding it, give an EndTxn before giving up on it.
	endTxnCompleteWaitMax = 5 * time.Second
	// markerRequestTimeout bounds one WriteTxnMarkers request.
	markerRequestTimeout = 30 * time.Second
	// intervalMin bounds how often the periodic checks run (short configs in tests).
	intervalMin = 10 * time.Millisecond
	// loadRetryMin and loadRetryMax bound the wait between loading attempts.
	loadRetryMin = 50 * time.Millisecond
	loadRetryMax = 2 * time.Second
	// idsLow is how few producer ids left make the coordinator take the next block.
	idsLow = 100
)

func (c *Config) withDefaults() Config {
	out := *c
	if out.MaxTimeout <= 0 {
		out.MaxTimeout = DefaultMaxTimeout
	}
	if out.IDExpiration <= 0 {
		out.IDExpiration = DefaultIDExpiration
	}
	if out.AbortInterval <= 0 {
		out.AbortInterval = DefaultAbortInterval
	}
	if out.RemoveInterval <= 0 {
		out.RemoveInterval = DefaultRemoveInterval
	}
	out.RemoveInterval = max(min(out.RemoveInterval, out.IDExpiration/4), intervalMin)
	out.AbortInterval = max(out.AbortInterval, intervalMin)
	if out.MarkerRetryBackoff <= 0 {
		out.MarkerRetryBackoff = DefaultMarkerRetryBackoff
	}
	if out.EndTxnCompleteWait == 0 {
		out.EndTxnCompleteWait = DefaultEndTxnCompleteWait
	}
	out.EndTxnCompleteWait = min(out.EndTxnCompleteWait, endTxnCompleteWaitMax)
	return out
}

// MarkerSender sends a WriteTxnMarkers request to a data-plane node's Kafka listener
// and returns its answer (on a control-plane node: a connection per node, marker.go in
// package controlplane). It may block until ctx ends.
type MarkerSender interface {
	WriteTxnMarkers(ctx context.Context, node int32, req *kmsg.WriteTxnMarkersRequest) (*kmsg.WriteTxnMarkersResponse, error)
}

// GroupOffsets is the group coordinator's part in ending a transaction: the offsets the
// producer committed for group in it (TxnOffsetCommit) become the group's committed
// offsets (commit) or are dropped. done gets nil once that is stored; it may run on any
// goroutine, but not with the caller's locks held.
type GroupOffsets interface {
	CompleteTxn(group string, producerID int64, commit bool, done func(error))
}

// Options is what a Coordinator is made of. Store is required; the rest have defaults.
type Options struct {
	Config Config
	// Store holds the transactional ids beyond this term; the coordinator closes it
	// when it stops.
	Store Store
	// Clock is the only source of time; nil means the real clock.
	Clock clockwork.Clock
	// Markers sends the markers that end a transaction on its partitions. Nil means
	// none is ever delivered (transactions stay in PrepareCommit/PrepareAbort).
	Markers MarkerSender
	// Leader reports a partition's current leader (-1 while offline) and whether the
	// partition exists (the controller's view). Nil means no partition exists.
	Leader func(topic string, partition int32) (leader int32, exists bool)
	// Groups ends the offsets committed in transactions. Nil means no group is ever
	// told (a transaction with offsets stays in PrepareCommit/PrepareAbort).
	Groups GroupOffsets
	// Logger receives the coordinator's logs; nil discards them.
	Logger *slog.Logger
	// Metrics counts markers, states and latencies; nil keeps a private set.
	Metrics *Metrics
}

// Header is the part of a Kafka request header the coordinator needs.
type Header struct {
	Key, Version int16
}

// Answer is how a request is answered, now or later, from any goroutine and possibly
// with the coordinator's lock held: neither function may block or call back into the
// coordinator.
type Answer struct {
	// Response gets the encoded Kafka response (in the request's version).
	Response func(body []byte)
	// NotActive is called instead when this coordinator's term is over: the data-plane
	// node resends the request to the next coordinator.
	NotActive func()
}

// Coordinator is the transaction coordinator for one term of controllership.
//
// Lock order: a caller's locks (the group coordinator's, in VerifyOffsets), then
// Coordinator.mu, then the Store's. The coordinator never calls the group coordinator,
// the sender or the store's completions with mu held.
type Coordinator struct {
	cfg     Config
	clock   clockwork.Clock
	logger  *slog.Logger
	metrics *Metrics
	store   Store
	markers MarkerSender
	leader  func(topic string, partition int32) (int32, bool)
	groups  GroupOffsets

	mu   sync.Mutex
	txns map[string]*txnMeta
	// epoch is this term's coordinator epoch, carried by every marker.
	epoch int32
	// ids are the producer ids of the blocks taken, not yet handed out.
	ids       []idBlock
	refilling bool
	// busy holds the nodes a WriteTxnMarkers request is in flight to: what is due
	// there waits for the answer and goes in the next request, batched.
	busy    map[int32]bool
	stopped bool
	loaded  chan struct{}
	// loadErr is set (before loaded closes) when the term ended before loading.
	loadErr error
	// wake tells the marker loop there is something to send or complete.
	wake chan struct{}
	// ctx is the term's, set by Run before loading.
	ctx context.Context
	// counts are how many ids are in each state (metrics).
	counts [stateCount]int
}

type idBlock struct{ next, end int64 }

// New returns a coordinator that has not loaded yet: requests are answered
// COORDINATOR_LOAD_IN_PROGRESS until Run has loaded.
func New(opts Options) *Coordinator {
	if opts.Store == nil {
		panic("txn: New without a Store")
	}
	co := &Coordinator{cfg: opts.Config.withDefaults(), clock: opts.Clock, logger: opts.Logger,
		metrics: opts.Metrics, store: opts.Store, markers: opts.Markers, leader: opts.Leader, groups: opts.Groups,
		txns: map[string]*txnMeta{}, busy: map[int32]bool{}, loaded: make(chan struct{}),
		wake: make(chan struct{}, 1), ctx: context.Background()}
	if co.clock == nil {
		co.clock = clockwork.NewRealClock()
	}
	if co.logger == nil {
		co.logger = slog.New(slog.DiscardHandler)
	}
	if co.metrics == nil {
		co.metrics = NewMetrics(vm.NewSet())
	}
	if co.leader == nil {
		co.leader = func(string, int32) (int32, bool) { return -1, false }
	}
	return co
}

// Epoch returns this term's coordinator epoch (0 until loaded).
func (co *Coordinator) Epoch() int32 {
	co.mu.Lock()
	defer co.mu.Unlock()
	return co.epoch
}

// Run is the term: it takes the term's coordinator epoch and loads every
// transactional id (retrying until ctx ends), sends the markers of the transactions
// found half-ended, calls loaded, then aborts timed-out transactions and expires idle
// ids until ctx ends, and stops: whatever is still waiting is answered "not active".
func (co *Coordinator) Run(ctx context.Context, loaded func()) {
	co.ctx = ctx
	defer co.stop()
	notActive := func(err error) bool { return errors.Is(err, ErrNotActive) }
	if err := term.Load(ctx, co.clock, co.logger, "loading transactions failed; retrying",
		loadRetryMin, loadRetryMax, notActive, co.load); err != nil {
		co.loadErr = err
		close(co.loaded)
		return
	}
	co.metrics.current.Store(co)
	defer co.metrics.current.CompareAndSwap(co, nil)
	close(co.loaded)
	co.logger.Info("transaction coordinator active", "transactional_ids", co.Count(), "coordinator_epoch", co.Epoch())
	if loaded != nil {
		loaded()
	}
	done := make(chan struct{})
	go func() { defer close(done); co.runMarkers(ctx) }()
	defer func() { <-done }()
	abort := co.clock.NewTicker(co.cfg.AbortInterval)
	defer abort.Stop()
	remove := co.clock.NewTicker(co.cfg.RemoveInterval)
	defer remove.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-abort.Chan():
			co.abortTimedOut()
		case <-remove.Chan():
			co.expireIDs()
		}
	}
}

// Count returns the number of transactional ids held.
func (co *Coordinator) Count() int {
	co.mu.Lock()
	defer co.mu.Unlock()
	return len(co.txns)
}

// load takes the coordinator epoch, reads every record, takes a block of producer ids
// and starts ending the transactions found in PrepareCommit or PrepareAbort.
func (co *Coordinator) load(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()
	epoch, err := co.store.NextCoordinatorEpoch(lctx)
	if err != nil {
		return err
	}
	kvs, err := co.store.Load(lctx)
	if err != nil {
		return err
	}
	datas, err := decodeRecords(kvs)
	if err != nil {
		return err
	}
	// The first block of producer ids is part of loading: a new id is served at once.
	first, size, err := co.store.AllocateProducerIDs(lctx)
	if err != nil {
		return err
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	co.epoch = epoch
	co.ids = append(co.ids, idBlock{next: first, end: first + size})
	for _, id := range slices.Sorted(maps.Keys(datas)) {
		m := &txnMeta{id: id, txnData: datas[id]}
		co.txns[id] = m
		co.counts[m.state]++
		if m.state == StatePrepareCommit || m.state == StatePrepareAbort {
			co.beginEnding(m)
		}
	}
	co.refillIDsLocked()
	return nil
}

// loadTimeout bounds one loading attempt.
const loadTimeout = 10 * time.Second

// stop ends the term: writes fail, the marker loop ends with ctx. An EndTxn still
// waiting for its transaction to complete is answered 0: its Prepare* is stored, so the
// next term completes the transaction (see awaitEnd).
func (co *Coordinator) stop() {
	co.mu.Lock()
	co.stopped = true
	for _, id := range slices.Sorted(maps.Keys(co.txns)) {
		if e := co.txns[id].ending; e != nil {
			co.answerEnd(e, endStopped)
		}
	}
	co.mu.Unlock()
	co.store.Close()
}

// notActiveCode is an internal marker inside the rules: the answer becomes
// Answer.NotActive.
const notActiveCode = term.NotActiveCode

// storeCode maps a store error to what the client is told.
func storeCode(err error) int16 { return term.StoreCode(err) }

// setState changes m's state (in memory), keeping the counts.
func (co *Coordinator) setData(m *txnMeta, d txnData) {
	co.counts[m.state]--
	m.txnData = d
	co.counts[m.state]++
}

// transition writes next as m's state and, once stored, makes it m's; done runs with
// the lock held and a code (0, notActiveCode, or a retriable one). While the write is
// in flight m is pending: requests for it are answered CONCURRENT_TRANSACTIONS.
func (co *Coordinator) transition(m *txnMeta, next txnData, done func(code int16)) {
	v := next.marshal()
	if len(v) > recordMax {
		done(kerr.InvalidRequest.Code)
		return
	}
	m.pending = true
	co.store.Submit([]Op{{Key: cluster.TransactionKey(m.id), Value: v}}, func(err error) {
		co.mu.Lock()
		defer co.mu.Unlock()
		m.pending = false
		code := storeCode(err)
		if code == 0 {
			co.setData(m, next)
		} else if code != notActiveCode {
			co.logger.Warn("transaction state write failed", "transactional_id", m.id, "err", err)
		}
		done(code)
	})
}

// takeID hands out a producer id from the blocks taken, and takes the next block in
// the background when few are left; ok is false when none is left (the caller answers
// COORDINATOR_LOAD_IN_PROGRESS, as Kafka does while its next block is on its way).
func (co *Coordinator) takeID() (id int64, ok bool) {
	for len(co.ids) > 0 && co.ids[0].next >= co.ids[0].end {
		co.ids = co.ids[1:]
	}
	if len(co.ids) > 0 {
		id, ok = co.ids[0].next, true
		co.ids[0].next++
	}
	co.refillIDsLocked()
	return id, ok
}

// refillIDsLocked takes another block in the background when few ids are left.
func (co *Coordinator) refillIDsLocked() {
	left := int64(0)
	for _, b := range co.ids {
		left += b.end - b.next
	}
	if left >= idsLow || co.refilling || co.stopped {
		return
	}
	co.refilling = true
	ctx := co.ctx
	go func() {
		actx, cancel := context.WithTimeout(ctx, loadTimeout)
		first, size, err := co.store.AllocateProducerIDs(actx)
		cancel()
		co.mu.Lock()
		defer co.mu.Unlock()
		co.refilling = false
		if err != nil {
			co.logger.Warn("taking a block of producer ids failed", "err", err)
			return // the next takeID tries again
		}
		co.ids = append(co.ids, idBlock{next: first, end: first + size})
	}()
}

// wakeMarkers tells the marker loop to look again.
func (co *Coordinator) wakeMarkers() {
	select {
	case co.wake <- struct{}{}:
	default:
	}
}

// abortTimedOut aborts every transaction ongoing past its timeout, fencing its
// producer (an epoch bump), as Kafka's abortTimedOutTransactions.
func (co *Coordinator) abortTimedOut() {
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.stopped {
		return
	}
	now := co.clock.Now().UnixMilli()
	for _, id := range slices.Sorted(maps.Keys(co.txns)) {
		m := co.txns[id]
		if m.state != StateOngoing || m.pending || m.startMs+int64(m.timeoutMs) >= now {
			continue
		}
		co.logger.Info("aborting a transaction past its timeout", "transactional_id", id,
			"producer_id", m.producerID, "epoch", m.epoch, "timeout_ms", m.timeoutMs)
		co.fenceAndAbort(m, func(code int16) {
			if code == 0 {
				co.metrics.timeouts.Inc()
			}
		})
	}
}

// fenceAndAbort bumps m's epoch and writes PrepareAbort with it (Kafka's
// PrepareEpochFence then PrepareAbort, in one write), then ends the transaction with
// markers of the new epoch: the producer's requests at the old epoch are refused from
// then on. done runs with the lock held once PrepareAbort is stored (or not).
func (co *Coordinator) fenceAndAbort(m *txnMeta, done func(code int16)) {
	next := m.txnData.clone()
	if next.epoch < math.MaxInt16 {
		next.epoch++
	}
	next.lastEpoch = noProducerEpoch
	next.state = StatePrepareAbort
	next.updateMs = co.clock.Now().UnixMilli()
	m.fencing = true
	co.transition(m, next, func(code int16) {
		m.fencing = false
		if code == 0 {
			co.beginEnding(m)
		}
		done(code)
	})
}

// expireIDs removes the transactional ids idle past the expiration: those with no
// transaction in progress, unchanged for IDExpiration.
func (co *Coordinator) expireIDs() {
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.stopped {
		return
	}
	now := co.clock.Now()
	for _, id := range slices.Sorted(maps.Keys(co.txns)) {
		m := co.txns[id]
		switch m.state {
		case StateEmpty, StateCompleteCommit, StateCompleteAbort:
		default:
			continue
		}
		if m.pending || now.Sub(time.UnixMilli(m.updateMs)) < co.cfg.IDExpiration {
			continue
		}
		m.pending = true
		co.store.Submit([]Op{{Key: cluster.TransactionKey(id), Delete: true}}, func(err error) {
			co.mu.Lock()
			defer co.mu.Unlock()
			m.pending = false
			if err != nil {
				return // tried again at the next pass, or the term is over
			}
			if co.txns[id] == m {
				delete(co.txns, id)
				co.counts[m.state]--
				m.state = StateDead
			}
			co.metrics.idsExpired.Inc()
		})
	}
}

// VerifyOffsets answers for the group coordinator whether producerID, at epoch, has
// added group to its ongoing transaction id (AddOffsetsToTxn), so that it may commit
// offsets in it (TxnOffsetCommit): 0, or the Kafka error code to answer. It takes the
// coordinator's lock; the caller may hold its own.
func (co *Coordinator) VerifyOffsets(id string, producerID int64, epoch int16, group string) int16 {
	select {
	case <-co.loaded:
	default:
		return kerr.CoordinatorLoadInProgress.Code
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	m := co.txns[id]
	switch {
	case co.loadErr != nil || co.stopped:
		return kerr.NotCoordinator.Code
	case m == nil || m.producerID != producerID:
		return kerr.InvalidProducerIDMapping.Code
	case m.epoch != epoch:
		return kerr.ProducerFenced.Code
	case m.state != StateOngoing:
		return kerr.InvalidTxnState.Code
	}
	if _, ok := m.groups[group]; !ok {
		return kerr.InvalidTxnState.Code
	}
	return 0
}
