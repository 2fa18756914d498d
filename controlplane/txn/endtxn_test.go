package txn

// EndTxn is answered once its transaction is complete (markers taken, Complete*
// stored), or at Config.EndTxnCompleteWait, or when the term ends: always once, and
// always 0 once Prepare* is stored. An InitProducerId of a transactional id whose
// transaction is ending waits the same way, then is applied.

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// gateSender holds every marker request until release is closed, then lets the
// partitions take their markers.
func gateSender(h *harness) (release func()) {
	gate := make(chan struct{})
	h.sender.setRespond(func(_ int32, req *kmsg.WriteTxnMarkersRequest) (*kmsg.WriteTxnMarkersResponse, error) {
		<-gate
		return testutil.WriteTxnMarkersAnswer(req, func(string, int32) int16 { return 0 }), nil
	})
	return func() { close(gate) }
}

// waitMarkerSent waits until the coordinator has sent a marker request: Prepare* is
// stored and the EndTxn that wrote it registered.
func (h *harness) waitMarkerSent() {
	h.t.Helper()
	h.waitFor("a marker request", func() error {
		if len(h.sender.requests()) == 0 {
			return errors.New("none sent")
		}
		return nil
	})
}

func TestEndTxnAnsweredOnceComplete(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	h.addOK("a", pid, epoch, "t", 0, 1)
	release := gateSender(h)
	p := h.send(endReq("a", pid, epoch, true))
	h.waitMarkerSent()
	if p.answered() {
		t.Fatal("EndTxn answered while its markers were in flight")
	}
	if d, _ := h.stored("a"); d.state != StatePrepareCommit {
		t.Fatalf("stored %s while the markers are in flight, want PrepareCommit", d.state)
	}
	release()
	resp := p.wait().(*kmsg.EndTxnResponse)
	// Complete* is stored before the answer is sent: read at once, no waiting.
	if d, _ := h.stored("a"); resp.ErrorCode != 0 || d.state != StateCompleteCommit {
		t.Fatalf("EndTxn answered %s with %s stored, want NONE once CompleteCommit is", code(resp.ErrorCode), d.state)
	}
	if n := h.co.metrics.endBeforeCompleteWait.Get() + h.co.metrics.endBeforeCompleteStopped.Get(); n != 0 {
		t.Fatalf("%d EndTxn counted as answered before completion", n)
	}
}

func TestEndTxnAnsweredAtBoundWhenPartitionOffline(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	h.addOK("a", pid, epoch, "t", 0, 1)
	h.leaders.set("t", 1, -1) // no leader: t-1 cannot take its marker
	p := h.send(endReq("a", pid, epoch, true))
	h.waitMarkerSent() // t-0's, to node 1
	bound := h.co.cfg.EndTxnCompleteWait
	h.clock.Advance(bound - time.Millisecond) // t-1's marker retried meanwhile, in vain
	if p.answered() {
		t.Fatal("EndTxn answered before the bound, its transaction not complete")
	}
	h.clock.Advance(time.Millisecond)
	if c := p.wait().(*kmsg.EndTxnResponse).ErrorCode; c != 0 {
		t.Fatalf("EndTxn at the bound: %s, want NONE (PrepareCommit is stored: the commit stands)", code(c))
	}
	if got := h.describe("a"); got.State != "PrepareCommit" {
		t.Fatalf("state at the bound: %s, want PrepareCommit", got.State)
	}
	if n := h.co.metrics.endBeforeCompleteWait.Get(); n != 1 {
		t.Fatalf("answered at the bound counted %d times, want 1", n)
	}
	// The partition gets a leader back: the commit completes, the producer goes on.
	h.leaders.set("t", 1, 2)
	h.advanceUntil("the commit to complete", 100*time.Millisecond, func() error {
		if got := h.describe("a"); got.State != "CompleteCommit" {
			return fmt.Errorf("state %s", got.State)
		}
		return nil
	})
	h.addOK("a", pid, epoch, "t", 2)
}

func TestEndTxnWaitsThroughFailedCompleteWrite(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	h.addOK("a", pid, epoch, "t", 0)
	var refused atomic.Int32
	h.st.SetFail(func(o Op) error {
		if strings.Contains(o.Value, `"CompleteCommit"`) {
			refused.Add(1)
			return errors.New("etcd unavailable")
		}
		return nil
	})
	p := h.send(endReq("a", pid, epoch, true))
	h.waitFor("the CompleteCommit write to fail", func() error {
		if refused.Load() == 0 {
			return errors.New("not tried yet")
		}
		return nil
	})
	if p.answered() {
		t.Fatal("EndTxn answered when its CompleteCommit write failed")
	}
	h.clock.Advance(h.co.cfg.EndTxnCompleteWait) // the write is tried again later (markerRetryMax)
	if c := p.wait().(*kmsg.EndTxnResponse).ErrorCode; c != 0 {
		t.Fatalf("EndTxn at the bound: %s", code(c))
	}
	if n := h.co.metrics.endBeforeCompleteWait.Get(); n != 1 {
		t.Fatalf("answered at the bound counted %d times, want 1", n)
	}
	h.st.SetFail(nil)
	h.advanceUntil("the commit to complete", 500*time.Millisecond, func() error {
		if got := h.describe("a"); got.State != "CompleteCommit" {
			return fmt.Errorf("state %s", got.State)
		}
		return nil
	})
}

func TestEndTxnAnsweredWhenCoordinatorStops(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	h.addOK("a", pid, epoch, "t", 0)
	h.sender.setRespond(func(int32, *kmsg.WriteTxnMarkersRequest) (*kmsg.WriteTxnMarkersResponse, error) {
		return nil, errors.New("unreachable")
	})
	p := h.send(endReq("a", pid, epoch, false))
	h.waitMarkerSent()
	if p.answered() {
		t.Fatal("EndTxn answered before its markers were taken or the bound")
	}
	h.stop()
	// wait fails on "not active": the abort is stored, the next term completes it.
	if c := p.wait().(*kmsg.EndTxnResponse).ErrorCode; c != 0 {
		t.Fatalf("EndTxn when the term ended: %s", code(c))
	}
	if n := h.co.metrics.endBeforeCompleteStopped.Get(); n != 1 {
		t.Fatalf("answered at the term's end counted %d times, want 1", n)
	}
	h.clock.Advance(h.co.cfg.EndTxnCompleteWait) // the bound answers nothing more (twice panics)
	if n := h.co.metrics.endBeforeCompleteWait.Get(); n != 0 {
		t.Fatalf("answered at the bound counted %d times after the term ended", n)
	}
}

func TestEndTxnAnsweredWhenCompleteWriteNotActive(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	h.addOK("a", pid, epoch, "t", 0)
	// Another controller took over: the term's writes are refused from CompleteAbort on.
	h.st.SetFail(func(o Op) error {
		if strings.Contains(o.Value, `"CompleteAbort"`) {
			return ErrNotActive
		}
		return nil
	})
	if c := h.end("a", pid, epoch, false); c != 0 {
		t.Fatalf("EndTxn whose CompleteAbort was refused as not active: %s", code(c))
	}
	if n := h.co.metrics.endBeforeCompleteStopped.Get(); n != 1 {
		t.Fatalf("answered at the term's end counted %d times, want 1", n)
	}
}

func TestAddPartitionsRightAfterEndTxnAccepted(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	h.addOK("a", pid, epoch, "t", 0)
	// Each transaction's first AddPartitionsToTxn follows the last one's EndTxn answer at
	// once, as a producer sends it: never CONCURRENT_TRANSACTIONS (a client backoff).
	for i := range 20 {
		p := int32(i % 4)
		commit := i%3 != 2
		if c := h.end("a", pid, epoch, commit); c != 0 {
			t.Fatalf("transaction %d: EndTxn: %s", i, code(c))
		}
		resp := h.call(verifyReq("a", pid, epoch, "t", p)).(*kmsg.AddPartitionsToTxnResponse)
		if c := resp.Transactions[0].Topics[0].Partitions[0].ErrorCode; c != kerr.InvalidTxnState.Code {
			t.Fatalf("transaction %d: a leader's verification right after EndTxn: %s, want INVALID_TXN_STATE (ended)", i, code(c))
		}
		next := (p + 1) % 4
		if c := h.addCodes("a", pid, epoch, "t", next)[next]; c != 0 {
			t.Fatalf("transaction %d: the next AddPartitionsToTxn right after EndTxn: %s", i, code(c))
		}
	}
	if n := h.co.metrics.completed.Get(); n != 20 {
		t.Fatalf("%d transactions completed, want 20", n)
	}
}

func TestEndTxnNoWaitConfigured(t *testing.T) {
	cfg := testConfig()
	cfg.EndTxnCompleteWait = -1 // Kafka's answers
	h := newHarnessConfig(t, nil, cfg)
	h.waitLoaded()
	pid, epoch := h.initOK("a")
	h.addOK("a", pid, epoch, "t", 0)
	release := gateSender(h)
	defer release()
	if c := h.end("a", pid, epoch, true); c != 0 { // answered with the markers in flight
		t.Fatalf("EndTxn: %s", code(c))
	}
	if d, _ := h.stored("a"); d.state != StatePrepareCommit {
		t.Fatalf("stored %s when EndTxn was answered, want PrepareCommit", d.state)
	}
	if c := h.end("a", pid, epoch, true); c != kerr.ConcurrentTransactions.Code {
		t.Fatalf("EndTxn retried during PrepareCommit: %s", code(c))
	}
}

func TestEndTxnCompleteWaitBounded(t *testing.T) {
	for in, want := range map[time.Duration]time.Duration{
		0:                DefaultEndTxnCompleteWait,
		-1:               -1,
		time.Millisecond: time.Millisecond,
		time.Minute:      endTxnCompleteWaitMax,
	} {
		c := Config{EndTxnCompleteWait: in}
		if got := c.withDefaults().EndTxnCompleteWait; got != want {
			t.Errorf("EndTxnCompleteWait %v: %v, want %v", in, got, want)
		}
	}
}

// TestInitProducerIDWaitsForEnd: a new instance's InitProducerId while its transactional
// id's commit is being completed is answered, with the next epoch, once it is.
func TestInitProducerIDWaitsForEnd(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	h.addOK("a", pid, epoch, "t", 0, 1)
	release := gateSender(h)
	end := h.send(endReq("a", pid, epoch, true))
	h.waitMarkerSent()
	init := h.send(initReq("a", 4))
	if init.answered() {
		t.Fatal("InitProducerId answered while the transaction's markers were in flight")
	}
	release()
	resp := init.wait().(*kmsg.InitProducerIDResponse)
	if resp.ErrorCode != 0 || resp.ProducerID != pid || resp.ProducerEpoch != epoch+1 {
		t.Fatalf("InitProducerId after the commit completed: %s %d/%d, want %d/%d", code(resp.ErrorCode),
			resp.ProducerID, resp.ProducerEpoch, pid, epoch+1)
	}
	if c := end.wait().(*kmsg.EndTxnResponse).ErrorCode; c != 0 {
		t.Fatalf("EndTxn: %s", code(c))
	}
	// The commit completed before the bump: its markers are the old epoch's commits.
	for _, s := range h.sender.requests() {
		for _, mk := range s.req.Markers {
			if !mk.Committed || mk.ProducerEpoch != epoch {
				t.Fatalf("marker %+v, want a commit at epoch %d", mk, epoch)
			}
		}
	}
	if d, _ := h.stored("a"); d.state != StateEmpty || d.epoch != epoch+1 {
		t.Fatalf("stored %s at epoch %d, want Empty at %d", d.state, d.epoch, epoch+1)
	}
	if n := h.co.metrics.initWaits[endComplete].Get(); n != 1 {
		t.Fatalf("InitProducerId waits ended by completion counted %d times, want 1", n)
	}
}

// TestInitProducerIDWaitBounded: markers that cannot be written hold InitProducerId
// only until the bound, when it gets Kafka's CONCURRENT_TRANSACTIONS; the term's end
// answers it as not active (the producer looks for the coordinator again).
func TestInitProducerIDWaitBounded(t *testing.T) {
	h := newHarness(t, nil)
	pid, epoch := h.initOK("a")
	h.addOK("a", pid, epoch, "t", 0)
	h.sender.setRespond(func(int32, *kmsg.WriteTxnMarkersRequest) (*kmsg.WriteTxnMarkersResponse, error) {
		return nil, errors.New("unreachable")
	})
	end := h.send(endReq("a", pid, epoch, false))
	h.waitMarkerSent()
	init := h.send(initReq("a", 4))
	h.clock.Advance(h.co.cfg.EndTxnCompleteWait - time.Millisecond)
	if init.answered() {
		t.Fatal("InitProducerId answered before the bound, the transaction not complete")
	}
	h.clock.Advance(time.Millisecond)
	if c := init.wait().(*kmsg.InitProducerIDResponse).ErrorCode; c != kerr.ConcurrentTransactions.Code {
		t.Fatalf("InitProducerId at the bound: %s, want CONCURRENT_TRANSACTIONS", code(c))
	}
	if c := end.wait().(*kmsg.EndTxnResponse).ErrorCode; c != 0 {
		t.Fatalf("EndTxn at the bound: %s", code(c))
	}
	again := h.send(initReq("a", 4))
	if again.answered() {
		t.Fatal("the retried InitProducerId answered, the transaction still not complete")
	}
	h.stop()
	again.WaitNotActive(t, settleWait)
	if b, st := h.co.metrics.initWaits[endTimedOut].Get(), h.co.metrics.initWaits[endStopped].Get(); b != 1 || st != 1 {
		t.Fatalf("InitProducerId waits counted %d at the bound, %d at the term's end; want 1 and 1", b, st)
	}
}
