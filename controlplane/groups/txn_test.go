package groups

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/internal/kvstore"
)

// txnCommitReq is a TxnOffsetCommit v3 of producer pid (epoch 0) for group, outside
// group management unless member is set.
func txnCommitReq(group string, pid int64, member string, gen int32, topic string, part int32, offset int64) *kmsg.TxnOffsetCommitRequest {
	r := kmsg.NewPtrTxnOffsetCommitRequest()
	r.SetVersion(3)
	r.TransactionalID, r.Group, r.ProducerID, r.ProducerEpoch = "tx", group, pid, 0
	r.Generation, r.MemberID = gen, member
	t := kmsg.NewTxnOffsetCommitRequestTopic()
	t.Topic = topic
	p := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	p.Partition, p.Offset, p.LeaderEpoch = part, offset, 3
	t.Partitions = append(t.Partitions, p)
	r.Topics = append(r.Topics, t)
	return r
}

func txnCommitCode(resp kmsg.Response) int16 {
	return resp.(*kmsg.TxnOffsetCommitResponse).Topics[0].Partitions[0].ErrorCode
}

// txnHarness is a harness whose transaction coordinator answers verify.
func txnHarness(t *testing.T, st *memStore, verify func(id string, pid int64, epoch int16, group string) int16) *harness {
	h := newHarness(t, testConfig(), st)
	if verify == nil {
		verify = func(string, int64, int16, string) int16 { return 0 }
	}
	h.co.verify = verify
	return h
}

// completeTxn runs CompleteTxn and waits for its answer.
func (h *harness) completeTxn(group string, pid int64, commit bool) error {
	h.t.Helper()
	ch := make(chan error, 1)
	h.co.CompleteTxn(group, pid, commit, func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-time.After(settleWait):
		h.t.Fatal("CompleteTxn did not answer")
		return nil
	}
}

func TestTxnOffsetsCommittedWithTheTransaction(t *testing.T) {
	h := txnHarness(t, nil, nil)
	if c := txnCommitCode(h.call(txnCommitReq("g", 7, "", -1, "t", 0, 42))); c != 0 {
		t.Fatalf("TxnOffsetCommit: %d", c)
	}
	if got := h.fetch("g", "t", 0); got != -1 {
		t.Fatalf("a pending transactional offset is visible: %d", got)
	}
	if !h.st.has(cluster.TxnOffsetKey("g", 7, "t", 0)) {
		t.Fatal("the pending offset is not stored")
	}
	// Another producer's abort leaves producer 7's offsets alone.
	if err := h.completeTxn("g", 8, false); err != nil {
		t.Fatal(err)
	}
	if err := h.completeTxn("g", 7, true); err != nil {
		t.Fatal(err)
	}
	if got := h.fetch("g", "t", 0); got != 42 {
		t.Fatalf("after the commit: %d, want 42", got)
	}
	if h.st.has(cluster.TxnOffsetKey("g", 7, "t", 0)) || !h.st.has(offsetKey("g", "t", 0)) {
		t.Fatal("the commit did not move the offset from pending to committed")
	}
	// The marker may come twice: nothing changes.
	if err := h.completeTxn("g", 7, true); err != nil {
		t.Fatal(err)
	}
	if got := h.fetch("g", "t", 0); got != 42 {
		t.Fatalf("after a second end: %d", got)
	}
}

func TestTxnOffsetsDroppedOnAbort(t *testing.T) {
	h := txnHarness(t, nil, nil)
	h.mustCommit("g", "", -1, "t", 1, 10)
	if c := txnCommitCode(h.call(txnCommitReq("g", 7, "", -1, "t", 1, 99))); c != 0 {
		t.Fatalf("TxnOffsetCommit: %d", c)
	}
	if err := h.completeTxn("g", 7, false); err != nil {
		t.Fatal(err)
	}
	if got := h.fetch("g", "t", 1); got != 10 {
		t.Fatalf("after the abort: %d, want the offset committed before (10)", got)
	}
	if h.st.has(cluster.TxnOffsetKey("g", 7, "t", 1)) {
		t.Fatal("the aborted offset is still stored")
	}
}

func TestTxnOffsetsSurviveFailover(t *testing.T) {
	h := txnHarness(t, nil, nil)
	if c := txnCommitCode(h.call(txnCommitReq("g", 7, "", -1, "t", 2, 5))); c != 0 {
		t.Fatalf("TxnOffsetCommit: %d", c)
	}
	h.flush()
	st := &memStore{kvstore.NewMem(h.st.Snapshot())}
	h.co.stop() // the term ends before the transaction does
	h2 := txnHarness(t, st, nil)
	if got := h2.fetch("g", "t", 2); got != -1 {
		t.Fatalf("pending offset visible after the failover: %d", got)
	}
	if err := h2.completeTxn("g", 7, true); err != nil {
		t.Fatal(err)
	}
	if got := h2.fetch("g", "t", 2); got != 5 {
		t.Fatalf("after the commit in the next term: %d, want 5", got)
	}
}

func TestTxnOffsetCommitChecks(t *testing.T) {
	refuse := kerr.ProducerFenced.Code
	h := txnHarness(t, nil, func(id string, pid int64, epoch int16, group string) int16 {
		if group == "fenced" {
			return refuse
		}
		return 0
	})
	if c := txnCommitCode(h.call(txnCommitReq("fenced", 7, "", -1, "t", 0, 1))); c != kerr.ProducerFenced.Code {
		t.Fatalf("refused by the transaction coordinator: %d", c)
	}
	old := txnCommitReq("fenced", 7, "", -1, "t", 0, 1)
	old.SetVersion(1)
	if c := txnCommitCode(h.call(old)); c != kerr.InvalidProducerEpoch.Code {
		t.Fatalf("v1 refused as fenced: %d, want INVALID_PRODUCER_EPOCH", c)
	}
	if c := txnCommitCode(h.call(txnCommitReq("g", 7, "", -1, "t", 9, 1))); c != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("partition out of range: %d", c)
	}
	// A group-aware producer (v3) is held to the group's members and generation.
	cfg := testConfig()
	cfg.InitialRebalanceDelay = 300 * time.Millisecond
	h2 := newHarness(t, cfg, nil)
	h2.co.verify = func(string, int64, int16, string) int16 { return 0 }
	m := h2.form("grp", 1, 10*time.Second)[0]
	if c := txnCommitCode(h2.call(txnCommitReq("grp", 7, m.id, m.gen+1, "t", 0, 1))); c != kerr.IllegalGeneration.Code {
		t.Fatalf("wrong generation: %d", c)
	}
	if c := txnCommitCode(h2.call(txnCommitReq("grp", 7, "nobody", m.gen, "t", 0, 1))); c != kerr.UnknownMemberID.Code {
		t.Fatalf("unknown member: %d", c)
	}
	if c := txnCommitCode(h2.call(txnCommitReq("grp", 7, m.id, m.gen, "t", 0, 1))); c != 0 {
		t.Fatalf("the member's commit: %d", c)
	}
}

func TestTxnOffsetsKeepTheirGroup(t *testing.T) {
	h := txnHarness(t, nil, nil)
	if c := txnCommitCode(h.call(txnCommitReq("g", 7, "", -1, "t", 0, 1))); c != 0 {
		t.Fatal(c)
	}
	r := kmsg.NewPtrDeleteGroupsRequest()
	r.Groups = []string{"g"}
	if c := h.call(r).(*kmsg.DeleteGroupsResponse).Groups[0].ErrorCode; c != kerr.NonEmptyGroup.Code {
		t.Fatalf("DeleteGroups of a group with pending transactional offsets: %d", c)
	}
	h.clock.Advance(2 * time.Hour) // past the retention
	h.expire()
	if !h.st.has(cluster.TxnOffsetKey("g", 7, "t", 0)) {
		t.Fatal("expiry dropped a pending transactional offset")
	}
}

// TestTxnOffsetsUnstable: OffsetFetch v7 with require_stable (KIP-447) answers
// UNSTABLE_OFFSET_COMMIT for a partition whose offset a transaction holds pending until
// the transaction ends, and then the transaction's offset; the group's other partitions,
// and a fetch that does not ask for stable offsets, get the committed offset at once.
func TestTxnOffsetsUnstable(t *testing.T) {
	h := txnHarness(t, nil, nil)
	h.mustCommit("g", "", -1, "t", 0, 10)
	h.mustCommit("g", "", -1, "t", 1, 20)
	if c := txnCommitCode(h.call(txnCommitReq("g", 7, "", -1, "t", 0, 42))); c != 0 {
		t.Fatalf("TxnOffsetCommit: %d", c)
	}
	fetch := func(version int16, stable bool) map[int32]kmsg.OffsetFetchResponseTopicPartition {
		t.Helper()
		r := kmsg.NewPtrOffsetFetchRequest()
		r.Version, r.Group, r.RequireStable = version, "g", stable
		r.Topics = []kmsg.OffsetFetchRequestTopic{{Topic: "t", Partitions: []int32{0, 1}}}
		resp := h.call(r).(*kmsg.OffsetFetchResponse)
		if resp.ErrorCode != 0 || len(resp.Topics) != 1 {
			t.Fatalf("OffsetFetch v%d: code %d, %d topics", version, resp.ErrorCode, len(resp.Topics))
		}
		out := map[int32]kmsg.OffsetFetchResponseTopicPartition{}
		for _, p := range resp.Topics[0].Partitions {
			out[p.Partition] = p
		}
		return out
	}
	check := func(what string, p kmsg.OffsetFetchResponseTopicPartition, code int16, offset int64) {
		t.Helper()
		if p.ErrorCode != code || p.Offset != offset {
			t.Errorf("%s: code %d offset %d, want code %d offset %d", what, p.ErrorCode, p.Offset, code, offset)
		}
	}
	stable := fetch(7, true)
	check("v7 stable, pending partition", stable[0], kerr.UnstableOffsetCommit.Code, -1)
	check("v7 stable, other partition", stable[1], 0, 20)
	check("v7 not asking for stable", fetch(7, false)[0], 0, 10)
	check("v5", fetch(5, false)[0], 0, 10)
	if err := h.completeTxn("g", 7, true); err != nil {
		t.Fatal(err)
	}
	check("v7 stable after the commit", fetch(7, true)[0], 0, 42)
	// An aborted transaction's offset was never the group's: after the abort, the
	// committed one again.
	if c := txnCommitCode(h.call(txnCommitReq("g", 8, "", -1, "t", 0, 99))); c != 0 {
		t.Fatalf("TxnOffsetCommit: %d", c)
	}
	check("v7 stable, pending again", fetch(7, true)[0], kerr.UnstableOffsetCommit.Code, -1)
	if err := h.completeTxn("g", 8, false); err != nil {
		t.Fatal(err)
	}
	check("v7 stable after the abort", fetch(7, true)[0], 0, 42)
}
