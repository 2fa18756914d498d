package txn

// The unit-test harness: a Coordinator on a fake clock and a store in memory, driven
// through Handle as the node drives it; its markers go to a fake sender that records
// them, its group ends to a fake group coordinator, its partitions' leaders come from a
// map. No etcd, no TCP, no sleeps: tests wait for conditions, and move the clock.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/internal/grouptest"
	"github.com/gregor-streaming/gregor/controlplane/internal/kvstore"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// settleWait bounds, in real time, waiting for what the coordinator does on its own
// goroutines: it takes microseconds, so reaching it means it never happens.
const settleWait = 10 * time.Second

// memStore is a Store in memory: kvstore.Mem, with the coordinator epoch kept in its
// key as EtcdStore keeps it, and producer ids counted from 1000.
type memStore struct {
	*kvstore.Mem
	mu     sync.Mutex
	nextID int64
	// gate, when set, holds NextCoordinatorEpoch (a term still loading).
	gate chan struct{}
}

func newMemStore(kv map[string]string) *memStore {
	return &memStore{Mem: kvstore.NewMem(kv), nextID: 1000}
}

// nextTerm is a store for the next term: what this one holds, its ids going on.
func (st *memStore) nextTerm() *memStore {
	st.mu.Lock()
	defer st.mu.Unlock()
	return &memStore{Mem: kvstore.NewMem(st.Snapshot()), nextID: st.nextID}
}

func (st *memStore) NextCoordinatorEpoch(ctx context.Context) (int32, error) {
	st.mu.Lock()
	gate := st.gate
	st.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	cur := int64(0)
	if v, ok := st.Get(cluster.TxnCoordinatorEpochKey); ok {
		cur, _ = strconv.ParseInt(v, 10, 32)
	}
	done := make(chan error, 1)
	st.Submit([]Op{{Key: cluster.TxnCoordinatorEpochKey, Value: strconv.FormatInt(cur+1, 10)}}, func(err error) { done <- err })
	if err := <-done; err != nil {
		return 0, err
	}
	return int32(cur + 1), nil
}

func (st *memStore) AllocateProducerIDs(context.Context) (int64, int64, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	first := st.nextID
	st.nextID += 1000
	return first, 1000, nil
}

// sent is one WriteTxnMarkers request the fake sender got.
type sent struct {
	node int32
	req  *kmsg.WriteTxnMarkersRequest
}

// fakeSender records the markers and answers them with respond (nil: every partition
// takes its marker).
type fakeSender struct {
	mu      sync.Mutex
	sent    []sent
	respond func(node int32, req *kmsg.WriteTxnMarkersRequest) (*kmsg.WriteTxnMarkersResponse, error)
}

func (f *fakeSender) WriteTxnMarkers(_ context.Context, node int32, req *kmsg.WriteTxnMarkersRequest) (*kmsg.WriteTxnMarkersResponse, error) {
	f.mu.Lock()
	f.sent = append(f.sent, sent{node: node, req: req})
	respond := f.respond
	f.mu.Unlock()
	if respond == nil {
		return testutil.WriteTxnMarkersAnswer(req, func(string, int32) int16 { return 0 }), nil
	}
	return respond(node, req)
}

func (f *fakeSender) setRespond(r func(node int32, req *kmsg.WriteTxnMarkersRequest) (*kmsg.WriteTxnMarkersResponse, error)) {
	f.mu.Lock()
	f.respond = r
	f.mu.Unlock()
}

func (f *fakeSender) requests() []sent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sent)
}

// groupEnd is one CompleteTxn the fake group coordinator got.
type groupEnd struct {
	group  string
	pid    int64
	commit bool
}

// fakeGroups records the group ends; the first failN fail.
type fakeGroups struct {
	mu    sync.Mutex
	ends  []groupEnd
	failN int
}

func (g *fakeGroups) CompleteTxn(group string, pid int64, commit bool, done func(error)) {
	g.mu.Lock()
	var err error
	if g.failN > 0 {
		g.failN--
		err = fmt.Errorf("group coordinator not loaded")
	} else {
		g.ends = append(g.ends, groupEnd{group, pid, commit})
	}
	g.mu.Unlock()
	go done(err)
}

func (g *fakeGroups) got() []groupEnd {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.ends)
}

// leaders is the partitions' leaders: a partition not in it does not exist.
type leaders struct {
	mu sync.Mutex
	m  map[topicPartition]int32
}

func (l *leaders) get(topic string, p int32) (int32, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id, ok := l.m[topicPartition{Topic: topic, Partition: p}]
	return id, ok
}

func (l *leaders) set(topic string, p, leader int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m[topicPartition{Topic: topic, Partition: p}] = leader
}

func (l *leaders) remove(topic string, p int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, topicPartition{Topic: topic, Partition: p})
}

// harness is one coordinator under test.
type harness struct {
	t       *testing.T
	clock   *clockwork.FakeClock
	st      *memStore
	co      *Coordinator
	sender  *fakeSender
	groups  *fakeGroups
	leaders *leaders
	stop    func()
}

// testConfig is the coordinator's configuration in these tests.
func testConfig() Config {
	return Config{MaxTimeout: time.Minute, IDExpiration: time.Hour, AbortInterval: time.Second,
		MarkerRetryBackoff: 100 * time.Millisecond}
}

// newHarness runs a coordinator over st (a new empty store if nil) until the test
// ends, and waits until it has loaded. Topic "t" has partitions 0-3, led by nodes 1
// and 2 (even partitions by 1), and topic "u" partition 0, led by 2.
func newHarness(t *testing.T, st *memStore) *harness {
	t.Helper()
	h := newHarnessNoWait(t, st)
	h.waitLoaded()
	return h
}

func newHarnessNoWait(t *testing.T, st *memStore) *harness {
	t.Helper()
	return newHarnessConfig(t, st, testConfig())
}

// newHarnessConfig is newHarnessNoWait with the coordinator configured by cfg.
func newHarnessConfig(t *testing.T, st *memStore, cfg Config) *harness {
	t.Helper()
	if st == nil {
		st = newMemStore(nil)
	}
	h := &harness{t: t, clock: clockwork.NewFakeClock(), st: st, sender: &fakeSender{}, groups: &fakeGroups{},
		leaders: &leaders{m: map[topicPartition]int32{}}}
	for p := range int32(4) {
		h.leaders.set("t", p, 1+p%2)
	}
	h.leaders.set("u", 0, 2)
	h.co = New(Options{Config: cfg, Store: st, Clock: h.clock, Markers: h.sender,
		Leader: h.leaders.get, Groups: h.groups, Logger: testutil.Quiet()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.co.Run(ctx, nil) }()
	var once sync.Once
	h.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(h.stop)
	return h
}

func (h *harness) waitLoaded() {
	h.t.Helper()
	select {
	case <-h.co.loaded:
	case <-time.After(settleWait):
		h.t.Fatal("coordinator did not load")
	}
}

func (h *harness) waitFor(what string, cond func() error) {
	h.t.Helper()
	if err := testutil.Eventually(settleWait, cond); err != nil {
		h.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// advanceUntil moves the clock by step at each check until cond holds (the marker
// loop arms its retry timer on its own goroutine: moving on until it has fired needs
// no knowledge of when it was armed).
func (h *harness) advanceUntil(what string, step time.Duration, cond func() error) {
	h.t.Helper()
	h.waitFor(what, func() error {
		err := cond()
		if err != nil {
			h.clock.Advance(step)
		}
		return err
	})
}

// pending is a request whose answer may come later.
type pending struct {
	*grouptest.Pending
	h *harness
}

// send applies req through Handle and returns its pending answer.
func (h *harness) send(req kmsg.Request) *pending {
	p := &pending{Pending: grouptest.NewPending(req), h: h}
	h.co.Handle(Header{Key: req.Key(), Version: req.GetVersion()}, req, Answer{Response: p.Response, NotActive: p.NotActive})
	return p
}

// wait returns the answer, failing the test if it does not come.
func (p *pending) wait() kmsg.Response {
	p.h.t.Helper()
	return p.Wait(p.h.t, settleWait)
}

// answered reports, without waiting, whether the answer has come.
func (p *pending) answered() bool { return p.Answered() }

func (h *harness) call(req kmsg.Request) kmsg.Response {
	h.t.Helper()
	return h.send(req).wait()
}

// ---- requests ----

func initReq(id string, version int16) *kmsg.InitProducerIDRequest {
	r := kmsg.NewPtrInitProducerIDRequest()
	r.SetVersion(version)
	r.TransactionalID, r.TransactionTimeoutMillis = kmsg.StringPtr(id), 10_000
	r.ProducerID, r.ProducerEpoch = -1, -1
	return r
}

// initOK initializes id and returns its producer id and epoch.
func (h *harness) initOK(id string) (int64, int16) {
	h.t.Helper()
	resp := h.call(initReq(id, 4)).(*kmsg.InitProducerIDResponse)
	if resp.ErrorCode != 0 {
		h.t.Fatalf("InitProducerId %q: %v", id, kerr.ErrorForCode(resp.ErrorCode))
	}
	return resp.ProducerID, resp.ProducerEpoch
}

func addReq(id string, pid int64, epoch int16, version int16, topic string, parts ...int32) *kmsg.AddPartitionsToTxnRequest {
	r := kmsg.NewPtrAddPartitionsToTxnRequest()
	r.SetVersion(version)
	r.TransactionalID, r.ProducerID, r.ProducerEpoch = id, pid, epoch
	t := kmsg.NewAddPartitionsToTxnRequestTopic()
	t.Topic, t.Partitions = topic, parts
	r.Topics = append(r.Topics, t)
	return r
}

// addCodes sends an AddPartitionsToTxn v3 and returns each partition's code.
func (h *harness) addCodes(id string, pid int64, epoch int16, topic string, parts ...int32) map[int32]int16 {
	h.t.Helper()
	resp := h.call(addReq(id, pid, epoch, 3, topic, parts...)).(*kmsg.AddPartitionsToTxnResponse)
	out := map[int32]int16{}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			out[p.Partition] = p.ErrorCode
		}
	}
	return out
}

// addOK adds partitions of topic to id's transaction.
func (h *harness) addOK(id string, pid int64, epoch int16, topic string, parts ...int32) {
	h.t.Helper()
	for p, code := range h.addCodes(id, pid, epoch, topic, parts...) {
		if code != 0 {
			h.t.Fatalf("AddPartitionsToTxn %q %s[%d]: %v", id, topic, p, kerr.ErrorForCode(code))
		}
	}
}

func endReq(id string, pid int64, epoch int16, commit bool) *kmsg.EndTxnRequest {
	r := kmsg.NewPtrEndTxnRequest()
	r.SetVersion(3)
	r.TransactionalID, r.ProducerID, r.ProducerEpoch, r.Commit = id, pid, epoch, commit
	return r
}

func (h *harness) end(id string, pid int64, epoch int16, commit bool) int16 {
	h.t.Helper()
	return h.call(endReq(id, pid, epoch, commit)).(*kmsg.EndTxnResponse).ErrorCode
}

// endAdvancing sends EndTxn and moves the clock by step until it is answered: EndTxn
// waits for the transaction to complete, which may take marker retries, or for the
// wait's bound.
func (h *harness) endAdvancing(id string, pid int64, epoch int16, commit bool, step time.Duration) int16 {
	h.t.Helper()
	p := h.send(endReq(id, pid, epoch, commit))
	h.advanceUntil("the EndTxn answer", step, func() error {
		if !p.answered() {
			return errors.New("not answered")
		}
		return nil
	})
	return p.wait().(*kmsg.EndTxnResponse).ErrorCode
}

// describe returns id's state as DescribeTransactions shows it.
func (h *harness) describe(id string) kmsg.DescribeTransactionsResponseTransactionState {
	h.t.Helper()
	r := kmsg.NewPtrDescribeTransactionsRequest()
	r.TransactionalIDs = []string{id}
	resp := h.call(r).(*kmsg.DescribeTransactionsResponse)
	if len(resp.TransactionStates) != 1 {
		h.t.Fatalf("DescribeTransactions answered %d states", len(resp.TransactionStates))
	}
	return resp.TransactionStates[0]
}

// waitState waits until id is in state.
func (h *harness) waitState(id string, state State) {
	h.t.Helper()
	h.waitFor(fmt.Sprintf("%q to be %s", id, state), func() error {
		if got := h.describe(id); got.State != state.String() {
			return fmt.Errorf("state %s (code %d)", got.State, got.ErrorCode)
		}
		return nil
	})
}

// stored returns id's stored record.
func (h *harness) stored(id string) (txnData, bool) {
	h.t.Helper()
	v, ok := h.st.Get(cluster.TransactionKey(id))
	if !ok {
		return txnData{}, false
	}
	ds, err := decodeRecords([]KV{{Key: cluster.TransactionKey(id), Value: []byte(v)}})
	if err != nil {
		h.t.Fatal(err)
	}
	return ds[id], true
}

// code names a Kafka code in failures.
func code(c int16) string {
	if c == 0 {
		return "NONE"
	}
	if err := kerr.ErrorForCode(c); err != nil {
		return err.Error()
	}
	return strconv.Itoa(int(c))
}
