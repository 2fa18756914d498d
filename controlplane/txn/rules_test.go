package txn

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

func TestInitProducerIDAllocatesThenBumps(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	if pid < 1000 || epoch != 0 {
		t.Fatalf("first InitProducerId: pid %d epoch %d, want an id of the store's block and epoch 0", pid, epoch)
	}
	if d, ok := h.stored("a"); !ok || d.producerID != pid || d.epoch != 0 || d.state != StateEmpty {
		t.Fatalf("stored %+v %v", d, ok)
	}
	pid2, epoch2 := h.initOK("a")
	if pid2 != pid || epoch2 != 1 {
		t.Fatalf("second InitProducerId: pid %d epoch %d, want %d and 1", pid2, epoch2, pid)
	}
	other, _ := h.initOK("b")
	if other == pid {
		t.Fatal("two transactional ids share a producer id")
	}
}

func TestInitProducerIDRefusals(t *testing.T) {
	h := newHarness(t, nil)
	for _, c := range []struct {
		name    string
		req     *kmsg.InitProducerIDRequest
		want    int16
		version int16
	}{
		{"empty id", initReq("", 4), kerr.InvalidRequest.Code, 4},
		{"zero timeout", func() *kmsg.InitProducerIDRequest { r := initReq("a", 4); r.TransactionTimeoutMillis = 0; return r }(), kerr.InvalidTransactionTimeout.Code, 4},
		{"timeout above the max", func() *kmsg.InitProducerIDRequest {
			r := initReq("a", 4)
			r.TransactionTimeoutMillis = int32(testConfig().MaxTimeout.Milliseconds()) + 1
			return r
		}(), kerr.InvalidTransactionTimeout.Code, 4},
		{"producer id without epoch", func() *kmsg.InitProducerIDRequest { r := initReq("a", 3); r.ProducerID = 5; return r }(), kerr.InvalidRequest.Code, 3},
	} {
		resp := h.call(c.req).(*kmsg.InitProducerIDResponse)
		if resp.ErrorCode != c.want || resp.ProducerID != -1 {
			t.Errorf("%s: %s pid %d, want %s", c.name, code(resp.ErrorCode), resp.ProducerID, code(c.want))
		}
	}
}

func TestFencedProducer(t *testing.T) {
	h := newHarness(t, nil)
	pid, old := h.initOK("a")
	_, cur := h.initOK("a") // another producer with the same id: the first is fenced
	if cur != old+1 {
		t.Fatalf("epoch %d after %d", cur, old)
	}
	// PRODUCER_FENCED from the versions that know it, INVALID_PRODUCER_EPOCH before.
	for version, want := range map[int16]int16{1: kerr.InvalidProducerEpoch.Code, 2: kerr.ProducerFenced.Code, 3: kerr.ProducerFenced.Code} {
		resp := h.call(addReq("a", pid, old, version, "t", 0)).(*kmsg.AddPartitionsToTxnResponse)
		if got := resp.Topics[0].Partitions[0].ErrorCode; got != want {
			t.Errorf("AddPartitionsToTxn v%d at the old epoch: %s, want %s", version, code(got), code(want))
		}
	}
	if got := h.end("a", pid, old, true); got != kerr.ProducerFenced.Code {
		t.Errorf("EndTxn at the old epoch: %s", code(got))
	}
	if got := h.end("a", pid+1, cur, true); got != kerr.InvalidProducerIDMapping.Code {
		t.Errorf("EndTxn of another producer id: %s", code(got))
	}
	r := initReq("a", 3) // KIP-360: names the old epoch, which is neither current nor last
	r.ProducerID, r.ProducerEpoch = pid, old
	if got := h.call(r).(*kmsg.InitProducerIDResponse).ErrorCode; got != kerr.InvalidProducerEpoch.Code {
		t.Errorf("InitProducerId v3 with a fenced epoch: %s, want INVALID_PRODUCER_EPOCH (v3 predates PRODUCER_FENCED)", code(got))
	}
}

func TestInitProducerIDRecoveryKIP360(t *testing.T) {
	h := newHarness(t, nil)
	pid, e0 := h.initOK("a")
	r := initReq("a", 4)
	r.ProducerID, r.ProducerEpoch = pid, e0
	resp := h.call(r).(*kmsg.InitProducerIDResponse)
	if resp.ErrorCode != 0 || resp.ProducerID != pid || resp.ProducerEpoch != e0+1 {
		t.Fatalf("recovery at the current epoch: %s %d/%d", code(resp.ErrorCode), resp.ProducerID, resp.ProducerEpoch)
	}
	// The same request again (its answer lost): the same epoch, not another bump.
	resp = h.call(r).(*kmsg.InitProducerIDResponse)
	if resp.ErrorCode != 0 || resp.ProducerEpoch != e0+1 {
		t.Fatalf("retried recovery: %s epoch %d, want %d", code(resp.ErrorCode), resp.ProducerEpoch, e0+1)
	}
	r.ProducerID = pid + 77
	if got := h.call(r).(*kmsg.InitProducerIDResponse).ErrorCode; got != kerr.ProducerFenced.Code {
		t.Fatalf("recovery naming another producer id: %s", code(got))
	}
}

func TestEpochExhaustionRotatesProducerID(t *testing.T) {
	d := txnData{producerID: 5, lastProducerID: -1, epoch: math.MaxInt16 - 1, lastEpoch: -1, timeoutMs: 1000,
		state: StateCompleteCommit, startMs: -1}.clone()
	st := newMemStore(map[string]string{cluster.TransactionKey("a"): d.marshal()})
	h := newHarness(t, st)
	pid, epoch := h.initOK("a")
	if pid == 5 || epoch != 0 {
		t.Fatalf("after an exhausted epoch: pid %d epoch %d, want a new id at 0", pid, epoch)
	}
	if d, _ := h.stored("a"); d.lastProducerID != 5 {
		t.Fatalf("last producer id %d, want 5", d.lastProducerID)
	}
}

func TestCommitSendsBatchedMarkersThenCompletes(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	h.addOK("a", pid, epoch, "t", 0, 1, 2, 3)
	h.addOK("a", pid, epoch, "u", 0)
	if got := h.describe("a"); got.State != "Ongoing" || len(got.Topics) != 2 {
		t.Fatalf("after AddPartitionsToTxn: %+v", got)
	}
	if got := h.end("a", pid, epoch, true); got != 0 {
		t.Fatalf("EndTxn: %s", code(got))
	}
	if d, _ := h.stored("a"); d.state != StatePrepareCommit && d.state != StateCompleteCommit {
		t.Fatalf("EndTxn answered before PrepareCommit was stored: %s", d.state)
	}
	h.waitState("a", StateCompleteCommit)
	// One request per leader: node 1 leads t-0 and t-2; node 2 leads t-1, t-3 and u-0.
	reqs := h.sender.requests()
	got := map[int32][]string{}
	for _, s := range reqs {
		if s.req.Version != MarkerVersion || len(s.req.Markers) != 1 {
			t.Fatalf("request to %d: v%d with %d markers", s.node, s.req.Version, len(s.req.Markers))
		}
		mk := s.req.Markers[0]
		if mk.ProducerID != pid || mk.ProducerEpoch != epoch || !mk.Committed || mk.CoordinatorEpoch != h.co.Epoch() {
			t.Fatalf("marker %+v, want pid %d epoch %d commit, coordinator epoch %d", mk, pid, epoch, h.co.Epoch())
		}
		for _, tp := range mk.Topics {
			for _, p := range tp.Partitions {
				got[s.node] = append(got[s.node], fmt.Sprintf("%s-%d", tp.Topic, p))
			}
		}
	}
	if len(reqs) != 2 || !slices.Equal(got[1], []string{"t-0", "t-2"}) || !slices.Equal(got[2], []string{"t-1", "t-3", "u-0"}) {
		t.Fatalf("markers sent: %d requests %v", len(reqs), got)
	}
	// A retry of the commit is answered as the commit was; an abort now is refused.
	if c := h.end("a", pid, epoch, true); c != 0 {
		t.Fatalf("EndTxn commit again: %s", code(c))
	}
	if c := h.end("a", pid, epoch, false); c != kerr.InvalidTxnState.Code {
		t.Fatalf("EndTxn abort after the commit: %s", code(c))
	}
	if c := h.end("a", pid, epoch, true); c != 0 {
		t.Fatalf("EndTxn commit again: %s", code(c))
	}
	// The next transaction begins from CompleteCommit.
	h.addOK("a", pid, epoch, "t", 1)
	if got := h.describe("a"); got.State != "Ongoing" || len(got.Topics) != 1 || !slices.Equal(got.Topics[0].Partitions, []int32{1}) {
		t.Fatalf("next transaction: %+v", got)
	}
}

func TestEndTxnRefusals(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	if c := h.end("a", pid, epoch, true); c != kerr.InvalidTxnState.Code {
		t.Fatalf("EndTxn with no transaction: %s", code(c))
	}
	if c := h.end("nope", pid, epoch, true); c != kerr.InvalidProducerIDMapping.Code {
		t.Fatalf("EndTxn of an unknown id: %s", code(c))
	}
	codes := h.addCodes("a", pid, epoch, "missing", 0)
	if codes[0] != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("AddPartitionsToTxn of a missing topic: %s", code(codes[0]))
	}
	if got := h.describe("a"); got.State != "Empty" {
		t.Fatalf("a refused AddPartitionsToTxn began a transaction: %s", got.State)
	}
}

func TestMarkersRetriedUntilTaken(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	h.addOK("a", pid, epoch, "t", 0, 1)
	h.addOK("a", pid, epoch, "u", 0)
	// t-0 moves from node 1 to node 2 after node 1 says it is not the leader; node 2 is
	// unreachable once; u-0 is deleted meanwhile (its leader says it does not know it).
	var failed2 bool
	h.sender.setRespond(func(node int32, req *kmsg.WriteTxnMarkersRequest) (*kmsg.WriteTxnMarkersResponse, error) {
		if node == 2 && !failed2 {
			failed2 = true
			return nil, errors.New("connection refused")
		}
		return testutil.WriteTxnMarkersAnswer(req, func(topic string, p int32) int16 {
			switch {
			case node == 1 && topic == "t" && p == 0:
				h.leaders.set("t", 0, 2)
				return kerr.NotLeaderForPartition.Code
			case topic == "u":
				h.leaders.remove("u", 0)
				return kerr.UnknownTopicOrPartition.Code
			}
			return 0
		}), nil
	})
	if c := h.endAdvancing("a", pid, epoch, false, 50*time.Millisecond); c != 0 {
		t.Fatalf("EndTxn abort: %s", code(c))
	}
	h.advanceUntil("the abort to complete", 50*time.Millisecond, func() error {
		if got := h.describe("a"); got.State != "CompleteAbort" {
			return fmt.Errorf("state %s", got.State)
		}
		return nil
	})
	var t0 []int32
	for _, s := range h.sender.requests() {
		for _, mk := range s.req.Markers {
			if mk.Committed {
				t.Fatal("an abort sent a commit marker")
			}
			for _, tp := range mk.Topics {
				if tp.Topic == "t" && slices.Contains(tp.Partitions, 0) {
					t0 = append(t0, s.node)
				}
			}
		}
	}
	if len(t0) < 2 || t0[0] != 1 || t0[len(t0)-1] != 2 {
		t.Fatalf("t-0's markers went to %v, want node 1 then node 2", t0)
	}
	if n := h.co.metrics.markerRetries.Get(); n == 0 {
		t.Fatal("no retry counted")
	}
}

func TestConcurrentEndTxn(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	h.addOK("a", pid, epoch, "t", 0)
	h.st.Hold()
	first := h.send(endReq("a", pid, epoch, true))
	// While PrepareCommit is being written, another EndTxn (either way), an
	// AddPartitionsToTxn and an InitProducerId wait their turn: CONCURRENT_TRANSACTIONS.
	if c := h.end("a", pid, epoch, true); c != kerr.ConcurrentTransactions.Code {
		t.Fatalf("second EndTxn: %s", code(c))
	}
	if c := h.end("a", pid, epoch, false); c != kerr.ConcurrentTransactions.Code {
		t.Fatalf("EndTxn abort meanwhile: %s", code(c))
	}
	if c := h.addCodes("a", pid, epoch, "t", 1)[1]; c != kerr.ConcurrentTransactions.Code {
		t.Fatalf("AddPartitionsToTxn meanwhile: %s", code(c))
	}
	if c := h.call(initReq("a", 4)).(*kmsg.InitProducerIDResponse).ErrorCode; c != kerr.ConcurrentTransactions.Code {
		t.Fatalf("InitProducerId meanwhile: %s", code(c))
	}
	h.sender.setRespond(func(int32, *kmsg.WriteTxnMarkersRequest) (*kmsg.WriteTxnMarkersResponse, error) {
		return nil, errors.New("held")
	})
	h.st.Release()
	h.waitFor("PrepareCommit to be stored", func() error {
		if d, _ := h.stored("a"); d.state != StatePrepareCommit {
			return fmt.Errorf("stored %s", d.state)
		}
		return nil
	})
	// PrepareCommit stored, markers not taken: an abort is refused; a retry of the
	// commit waits for the end with the first.
	if c := h.end("a", pid, epoch, false); c != kerr.InvalidTxnState.Code {
		t.Fatalf("EndTxn abort during PrepareCommit: %s", code(c))
	}
	retry := h.send(endReq("a", pid, epoch, true))
	if first.answered() || retry.answered() {
		t.Fatalf("EndTxn answered before its markers were taken or the wait's bound (first %v, retry %v)",
			first.answered(), retry.answered())
	}
	h.clock.Advance(h.co.cfg.EndTxnCompleteWait) // the bound of both (no time has passed)
	for name, p := range map[string]*pending{"first": first, "retried": retry} {
		if c := p.wait().(*kmsg.EndTxnResponse).ErrorCode; c != 0 {
			t.Fatalf("%s EndTxn at the bound: %s", name, code(c))
		}
	}
	if n := h.co.metrics.endBeforeCompleteWait.Get(); n != 2 {
		t.Fatalf("EndTxn answered at the bound counted %d times, want 2", n)
	}
	if got := h.describe("a"); got.State != "PrepareCommit" {
		t.Fatalf("state after the bound: %s, want PrepareCommit (markers still not taken)", got.State)
	}
}

func TestInitProducerIDAbortsOngoingTransaction(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	h.addOK("a", pid, epoch, "t", 0, 1)
	// A new producer with the same id: the transaction is aborted with the epoch
	// bumped (fencing the old producer), and once it has ended the new one gets the
	// epoch after.
	pid2, epoch2 := h.initOK("a")
	if pid2 != pid || epoch2 != epoch+2 {
		t.Fatalf("InitProducerId over an ongoing transaction: %d/%d, want %d/%d", pid2, epoch2, pid, epoch+2)
	}
	checkFencedAbort(t, h, pid, epoch)
}

// TestInitProducerIDAbortsOngoingTransactionNoWait: with no wait configured, Kafka's
// answers: CONCURRENT_TRANSACTIONS once the abort is stored, the epoch on the retry.
func TestInitProducerIDAbortsOngoingTransactionNoWait(t *testing.T) {
	cfg := testConfig()
	cfg.EndTxnCompleteWait = -1
	h := newHarnessConfig(t, nil, cfg)
	h.waitLoaded()
	pid, epoch := h.initOK("a")
	h.addOK("a", pid, epoch, "t", 0, 1)
	if c := h.call(initReq("a", 4)).(*kmsg.InitProducerIDResponse).ErrorCode; c != kerr.ConcurrentTransactions.Code {
		t.Fatalf("InitProducerId over an ongoing transaction: %s", code(c))
	}
	if d, _ := h.stored("a"); d.epoch != epoch+1 || (d.state != StatePrepareAbort && d.state != StateCompleteAbort) {
		t.Fatalf("stored %s at epoch %d, want PrepareAbort at %d", d.state, d.epoch, epoch+1)
	}
	h.waitState("a", StateCompleteAbort)
	pid2, epoch2 := h.initOK("a")
	if pid2 != pid || epoch2 != epoch+2 {
		t.Fatalf("the retried InitProducerId: %d/%d, want %d/%d", pid2, epoch2, pid, epoch+2)
	}
	checkFencedAbort(t, h, pid, epoch)
}

// checkFencedAbort checks that producer pid's transaction at epoch was aborted with
// markers of the next epoch, and that its producer is fenced.
func checkFencedAbort(t *testing.T, h *harness, pid int64, epoch int16) {
	t.Helper()
	if d, _ := h.stored("a"); d.state != StateEmpty && d.state != StateCompleteAbort {
		t.Fatalf("stored %s, want the abort complete", d.state)
	}
	for _, s := range h.sender.requests() {
		for _, mk := range s.req.Markers {
			if mk.Committed || mk.ProducerEpoch != epoch+1 {
				t.Fatalf("marker %+v, want an abort at epoch %d", mk, epoch+1)
			}
		}
	}
	if c := h.end("a", pid, epoch, true); c != kerr.ProducerFenced.Code {
		t.Fatalf("the old producer's EndTxn: %s", code(c))
	}
}

func TestTimedOutTransactionAborted(t *testing.T) {
	h := newHarness(t, nil)
	r := initReq("a", 4)
	r.TransactionTimeoutMillis = 2000
	resp := h.call(r).(*kmsg.InitProducerIDResponse)
	pid, epoch := resp.ProducerID, resp.ProducerEpoch
	h.addOK("a", pid, epoch, "t", 0)
	h.clock.Advance(1500 * time.Millisecond)
	h.co.abortTimedOut()
	if got := h.describe("a"); got.State != "Ongoing" {
		t.Fatalf("aborted before its timeout: %s", got.State)
	}
	// The periodic check finds it past its timeout.
	h.advanceUntil("the timed-out transaction to be aborted", 500*time.Millisecond, func() error {
		if got := h.describe("a"); got.State != "CompleteAbort" {
			return fmt.Errorf("state %s", got.State)
		}
		return nil
	})
	if got := h.describe("a"); got.ProducerEpoch != epoch+1 {
		t.Fatalf("epoch %d after the timeout, want %d", got.ProducerEpoch, epoch+1)
	}
	if c := h.end("a", pid, epoch, true); c != kerr.ProducerFenced.Code {
		t.Fatalf("EndTxn of the timed-out producer: %s", code(c))
	}
	if h.co.metrics.timeouts.Get() != 1 {
		t.Fatalf("timeouts counted: %d", h.co.metrics.timeouts.Get())
	}
}

func TestIdleTransactionalIDExpires(t *testing.T) {
	h := newHarness(t, nil)
	h.initOK("a")
	pid, epoch := h.initOK("b")
	h.addOK("b", pid, epoch, "t", 0)
	h.sender.setRespond(func(int32, *kmsg.WriteTxnMarkersRequest) (*kmsg.WriteTxnMarkersResponse, error) {
		return nil, errors.New("held") // b stays in PrepareAbort
	})
	if c := h.endAdvancing("b", pid, epoch, false, 100*time.Millisecond); c != 0 {
		t.Fatal(code(c))
	}
	h.clock.Advance(testConfig().IDExpiration)
	h.co.expireIDs()
	h.waitFor("a to expire", func() error {
		if got := h.describe("a"); got.ErrorCode != kerr.TransactionalIDNotFound.Code {
			return fmt.Errorf("a: %s %s", code(got.ErrorCode), got.State)
		}
		return nil
	})
	if _, ok := h.stored("a"); ok {
		t.Fatal("a's record is still stored")
	}
	if got := h.describe("b"); got.ErrorCode != 0 {
		t.Fatalf("b, mid-abort, expired: %s", code(got.ErrorCode))
	}
}

func TestFailoverResendsMarkers(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	h.addOK("a", pid, epoch, "t", 0, 1)
	h.sender.setRespond(func(int32, *kmsg.WriteTxnMarkersRequest) (*kmsg.WriteTxnMarkersResponse, error) {
		return nil, errors.New("nodes unreachable")
	})
	if c := h.endAdvancing("a", pid, epoch, true, 100*time.Millisecond); c != 0 {
		t.Fatal(code(c))
	}
	firstEpoch := h.co.Epoch()
	h.stop() // the term ends mid-commit
	h2 := newHarness(t, h.st.nextTerm())
	if h2.co.Epoch() <= firstEpoch {
		t.Fatalf("coordinator epoch %d after %d", h2.co.Epoch(), firstEpoch)
	}
	h2.waitState("a", StateCompleteCommit)
	for _, s := range h2.sender.requests() {
		for _, mk := range s.req.Markers {
			if !mk.Committed || mk.ProducerID != pid || mk.CoordinatorEpoch != h2.co.Epoch() {
				t.Fatalf("resent marker %+v", mk)
			}
		}
	}
	if len(h2.sender.requests()) != 2 {
		t.Fatalf("%d marker requests after the failover, want one per leader", len(h2.sender.requests()))
	}
	// The producer carries on with its epoch.
	h2.addOK("a", pid, epoch, "t", 2)
}

func TestLoadingAnswersLoadInProgress(t *testing.T) {
	st := newMemStore(nil)
	st.gate = make(chan struct{})
	h := newHarnessNoWait(t, st)
	if c := h.call(initReq("a", 4)).(*kmsg.InitProducerIDResponse).ErrorCode; c != kerr.CoordinatorLoadInProgress.Code {
		t.Fatalf("InitProducerId while loading: %s", code(c))
	}
	resp := h.call(addReq("a", 1, 0, 3, "t", 0)).(*kmsg.AddPartitionsToTxnResponse)
	if c := resp.Topics[0].Partitions[0].ErrorCode; c != kerr.CoordinatorLoadInProgress.Code {
		t.Fatalf("AddPartitionsToTxn while loading: %s", code(c))
	}
	if c := h.co.VerifyOffsets("a", 1, 0, "g"); c != kerr.CoordinatorLoadInProgress.Code {
		t.Fatalf("VerifyOffsets while loading: %s", code(c))
	}
	close(st.gate)
	h.waitLoaded()
	h.initOK("a")
}

func verifyReq(id string, pid int64, epoch int16, topic string, parts ...int32) *kmsg.AddPartitionsToTxnRequest {
	r := kmsg.NewPtrAddPartitionsToTxnRequest()
	r.SetVersion(4)
	tx := kmsg.NewAddPartitionsToTxnRequestTransaction()
	tx.TransactionalID, tx.ProducerID, tx.ProducerEpoch, tx.VerifyOnly = id, pid, epoch, true
	tt := kmsg.NewAddPartitionsToTxnRequestTransactionTopic()
	tt.Topic, tt.Partitions = topic, parts
	tx.Topics = append(tx.Topics, tt)
	r.Transactions = append(r.Transactions, tx)
	return r
}

func TestVerifyOnlyFromMemory(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	h.addOK("a", pid, epoch, "t", 0)
	writes := len(h.st.Snapshot())
	h.st.Hold() // a verification writes nothing: it is answered with the store held
	defer h.st.Release()
	verify := func(pid int64, epoch int16, parts ...int32) map[int32]int16 {
		t.Helper()
		resp := h.call(verifyReq("a", pid, epoch, "t", parts...)).(*kmsg.AddPartitionsToTxnResponse)
		out := map[int32]int16{}
		for _, tx := range resp.Transactions {
			for _, tt := range tx.Topics {
				for _, p := range tt.Partitions {
					out[p.Partition] = p.ErrorCode
				}
			}
		}
		return out
	}
	if got := verify(pid, epoch, 0, 1); got[0] != 0 || got[1] != kerr.InvalidTxnState.Code {
		t.Fatalf("in the transaction / not in it: %s / %s", code(got[0]), code(got[1]))
	}
	if got := verify(pid, epoch-1, 0); got[0] != kerr.ProducerFenced.Code {
		t.Fatalf("old epoch: %s", code(got[0]))
	}
	if got := verify(pid+1, epoch, 0); got[0] != kerr.InvalidProducerIDMapping.Code {
		t.Fatalf("other producer id: %s", code(got[0]))
	}
	if h.st.Queued() != 0 || len(h.st.Snapshot()) != writes {
		t.Fatal("a verification wrote to the store")
	}
	// While the commit's PrepareCommit is being written the id is pending: the leader
	// is told to try again (it answers its producer NOT_ENOUGH_REPLICAS), not let in.
	ending := h.send(endReq("a", pid, epoch, true))
	if got := verify(pid, epoch, 0); got[0] != kerr.ConcurrentTransactions.Code {
		t.Fatalf("while the commit is written: %s", code(got[0]))
	}
	h.st.Release()
	if c := ending.wait().(*kmsg.EndTxnResponse).ErrorCode; c != 0 {
		t.Fatalf("EndTxn: %s", code(c))
	}
	if got := verify(pid, epoch, 0); got[0] != kerr.ConcurrentTransactions.Code && got[0] != kerr.InvalidTxnState.Code {
		t.Fatalf("after the commit: %s", code(got[0]))
	}
}

func TestAddOffsetsToTxnEndsGroupOffsets(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	r := kmsg.NewPtrAddOffsetsToTxnRequest()
	r.SetVersion(3)
	r.TransactionalID, r.ProducerID, r.ProducerEpoch, r.Group = "a", pid, epoch, "g"
	if c := h.call(r).(*kmsg.AddOffsetsToTxnResponse).ErrorCode; c != 0 {
		t.Fatalf("AddOffsetsToTxn: %s", code(c))
	}
	if c := h.co.VerifyOffsets("a", pid, epoch, "g"); c != 0 {
		t.Fatalf("VerifyOffsets of the group added: %s", code(c))
	}
	if c := h.co.VerifyOffsets("a", pid, epoch, "other"); c != kerr.InvalidTxnState.Code {
		t.Fatalf("VerifyOffsets of another group: %s", code(c))
	}
	if c := h.co.VerifyOffsets("a", pid, epoch-1, "g"); c != kerr.ProducerFenced.Code {
		t.Fatalf("VerifyOffsets at an old epoch: %s", code(c))
	}
	h.groups.mu.Lock()
	h.groups.failN = 1 // the group coordinator is not ready the first time
	h.groups.mu.Unlock()
	if c := h.endAdvancing("a", pid, epoch, true, 50*time.Millisecond); c != 0 {
		t.Fatal(code(c))
	}
	h.advanceUntil("the commit to complete", 50*time.Millisecond, func() error {
		if got := h.describe("a"); got.State != "CompleteCommit" {
			return fmt.Errorf("state %s", got.State)
		}
		return nil
	})
	if got := h.groups.got(); len(got) != 1 || got[0] != (groupEnd{"g", pid, true}) {
		t.Fatalf("group ends %+v", got)
	}
	if c := h.co.VerifyOffsets("a", pid, epoch, "g"); c != kerr.InvalidTxnState.Code {
		t.Fatalf("VerifyOffsets after the commit: %s", code(c))
	}
}

func TestListTransactionsFilters(t *testing.T) {
	h := newHarness(t, nil)
	pa, ea := h.initOK("a")
	h.initOK("b")
	h.addOK("a", pa, ea, "t", 0)
	list := func(states []string, pids []int64) (ids []string, unknown []string) {
		r := kmsg.NewPtrListTransactionsRequest()
		r.StateFilters, r.ProducerIDFilters = states, pids
		resp := h.call(r).(*kmsg.ListTransactionsResponse)
		for _, st := range resp.TransactionStates {
			ids = append(ids, st.TransactionalID)
		}
		return ids, resp.UnknownStateFilters
	}
	if ids, _ := list(nil, nil); !slices.Equal(ids, []string{"a", "b"}) {
		t.Fatalf("all: %v", ids)
	}
	if ids, _ := list([]string{"ongoing"}, nil); !slices.Equal(ids, []string{"a"}) {
		t.Fatalf("Ongoing: %v", ids)
	}
	if ids, _ := list(nil, []int64{pa}); !slices.Equal(ids, []string{"a"}) {
		t.Fatalf("producer %d: %v", pa, ids)
	}
	if ids, unknown := list([]string{"Bogus"}, nil); len(ids) != 0 || !slices.Equal(unknown, []string{"Bogus"}) {
		t.Fatalf("unknown state: %v %v", ids, unknown)
	}
}
