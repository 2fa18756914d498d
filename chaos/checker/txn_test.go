package checker

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/chaos/history"
)

// txnHistory is a clean history of 12 transactions of 3 records each, one per
// partition of topic "x": committed, aborted, unknown and visible, unknown and not
// visible, in turn. Each partition holds every transaction's record followed by its
// marker (an offset with no data record); the final reads and the replicas agree.
func txnHistory() *history.History {
	const parts = 3
	start := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	h := &history.History{Scenario: "txn", Topics: []string{"x"}, Start: start}
	next := make([]int64, parts)
	raw := make([][]history.Record, parts)
	committed := make([][]history.Record, parts)
	for seq := range 12 {
		t := history.Txn{Producer: "p", TransactionalID: "tx-p", Seq: seq, Start: start.Add(time.Duration(seq) * time.Second)}
		t.End = t.Start.Add(500 * time.Millisecond)
		visible := false
		switch seq % 4 {
		case 0:
			t.Outcome, visible = history.TxnCommitted, true
		case 1:
			t.Outcome, t.Err = history.TxnAborted, "the producer process was killed before asking to commit"
		case 2:
			t.Outcome, t.Err, visible = history.TxnUnknown, "timeout", true
		case 3:
			t.Outcome, t.Err = history.TxnUnknown, "timeout"
		}
		for p := range int32(parts) {
			v := fmt.Sprintf("p-%d-%d", seq, p)
			off := next[p]
			next[p] += 2 // the record, then its marker
			t.Records = append(t.Records, history.TxnRecord{Topic: "x", Partition: p, Value: v, Offset: off})
			rec := history.Record{Offset: off, Value: v, Idempotent: true, ProducerID: 7, ProducerEpoch: 0}
			raw[p] = append(raw[p], rec)
			if visible {
				committed[p] = append(committed[p], rec)
			}
			s := history.Send{Producer: "p", Idempotent: true, Acks: -1, Topic: "x", Partition: p, Value: v,
				Outcome: history.Info, Offset: -1, Start: t.Start, End: t.End}
			if t.Outcome == history.TxnCommitted {
				s.Outcome, s.Offset = history.OK, off
			}
			h.Sends = append(h.Sends, s)
		}
		h.Txns = append(h.Txns, t)
	}
	for p := range int32(parts) {
		for node := int32(1); node <= 3; node++ {
			h.Finals = append(h.Finals, history.ReplicaLog{Node: node, Topic: "x", Partition: p, HighWatermark: next[p],
				Records: slices.Clone(raw[p])})
		}
		h.TxnReads = append(h.TxnReads,
			history.TxnRead{Isolation: history.ReadUncommitted, Topic: "x", Partition: p, End: next[p], Records: raw[p]},
			history.TxnRead{Isolation: history.ReadCommitted, Topic: "x", Partition: p, End: next[p], Records: committed[p]})
	}
	h.End = start.Add(time.Minute)
	return h
}

// committedRead returns h's read_committed read of partition p.
func committedRead(t *testing.T, h *history.History, p int32) *history.TxnRead {
	t.Helper()
	for i := range h.TxnReads {
		if rd := &h.TxnReads[i]; rd.Isolation == history.ReadCommitted && rd.Partition == p {
			return rd
		}
	}
	t.Fatalf("no read_committed read of partition %d", p)
	return nil
}

// hide removes value v from the read_committed reads.
func hide(h *history.History, v string) {
	for i := range h.TxnReads {
		if rd := &h.TxnReads[i]; rd.Isolation == history.ReadCommitted {
			rd.Records = slices.DeleteFunc(slices.Clone(rd.Records), func(r history.Record) bool { return r.Value == v })
		}
	}
}

// show adds transaction seq's record on partition p to the read_committed read, at its
// offset.
func show(t *testing.T, h *history.History, seq int, p int32) {
	t.Helper()
	r := h.Txns[seq].Records[p]
	rd := committedRead(t, h, p)
	rd.Records = append(slices.Clone(rd.Records), history.Record{Offset: r.Offset, Value: r.Value, Idempotent: true, ProducerID: 7})
	slices.SortFunc(rd.Records, byOffset)
}

func TestTxnClean(t *testing.T) {
	r := Check(txnHistory())
	expectKinds(t, r)
	s := r.Stats
	if s.Txns != 12 || s.TxnsCommitted != 3 || s.TxnsAborted != 3 || s.TxnsUnknown != 6 || s.TxnsUnknownCommitted != 3 ||
		s.TxnRecordsRead != 18 || len(s.Notes) != 0 {
		t.Errorf("stats %+v", s)
	}
	if !strings.Contains(r.String(), "transactions 12 (committed 3, aborted 3, unknown 6 of which 3 visible)") {
		t.Errorf("String:\n%s", r)
	}
}

// TestTxnTorn: a committed transaction, then an unknown one that did commit, with one
// record of three missing at read_committed.
func TestTxnTorn(t *testing.T) {
	for _, seq := range []int{4, 6} {
		h := txnHistory()
		v := h.Txns[seq].Records[1].Value
		hide(h, v)
		r := Check(h)
		expectKinds(t, r, TornTransaction)
		if a := r.Anomalies[0]; r.Counts[TornTransaction] != 1 || a.Value != v || !strings.Contains(a.Detail, "2 of 3 records visible") {
			t.Errorf("seq %d: %s", seq, r)
		}
	}
}

// TestTxnAbortedRead: one record of a transaction killed before its commit, visible.
func TestTxnAbortedRead(t *testing.T) {
	h := txnHistory()
	show(t, h, 5, 2)
	r := Check(h)
	expectKinds(t, r, AbortedRead)
	if a := r.Anomalies[0]; r.Counts[AbortedRead] != 1 || a.Value != h.Txns[5].Records[2].Value || a.Offset != h.Txns[5].Records[2].Offset ||
		!strings.Contains(a.Detail, "1 of 3 records visible") {
		t.Errorf("%s", r)
	}
	// All of it visible is no better.
	show(t, h, 5, 0)
	show(t, h, 5, 1)
	expectKinds(t, Check(h), AbortedRead)
}

// TestTxnLost: a committed transaction none of whose records is visible. Its records
// are still in the logs (not a lost write), but read_committed does not return them.
func TestTxnLost(t *testing.T) {
	h := txnHistory()
	for _, r := range h.Txns[8].Records {
		hide(h, r.Value)
	}
	r := Check(h)
	expectKinds(t, r, LostTransaction)
	if r.Counts[LostTransaction] != 1 || r.Anomalies[0].Value != h.Txns[8].Records[0].Value {
		t.Errorf("%s", r)
	}
	// An unknown transaction may be all invisible.
	h = txnHistory()
	for _, r := range h.Txns[10].Records {
		hide(h, r.Value)
	}
	expectKinds(t, Check(h))
}

// TestTxnDuplicate: a committed value written twice (at a later offset too) and read
// twice at read_committed.
func TestTxnDuplicate(t *testing.T) {
	h := txnHistory()
	r0 := h.Txns[0].Records[0]
	for i := range h.TxnReads {
		if rd := &h.TxnReads[i]; rd.Partition == 0 {
			rd.Records = append(slices.Clone(rd.Records), history.Record{Offset: rd.End, Value: r0.Value, Idempotent: true, ProducerID: 7})
			rd.End++
		}
	}
	r := Check(h)
	expectKinds(t, r, CommittedDuplicate)
	if a := r.Anomalies[0]; r.Counts[CommittedDuplicate] != 1 || a.Value != r0.Value || !strings.Contains(a.Detail, "read 2 times") {
		t.Errorf("%s", r)
	}
}

// TestTxnInconsistentReads: read_committed returns, at an offset, another value than
// read_uncommitted does.
func TestTxnInconsistentReads(t *testing.T) {
	h := txnHistory()
	rd := committedRead(t, h, 1)
	rd.Records = slices.Clone(rd.Records)
	rd.Records[0].Offset++ // a marker's offset: read_uncommitted returned nothing there
	r := Check(h)
	expectKinds(t, r, InconsistentOffsets)
	if !strings.Contains(r.Anomalies[0].Detail, "read_uncommitted read nothing") {
		t.Errorf("%s", r)
	}
}

// TestTxnUnread: transactions on a partition no read_committed read covers are not
// judged, and the report says so.
func TestTxnUnread(t *testing.T) {
	h := txnHistory()
	h.TxnReads = slices.DeleteFunc(h.TxnReads, func(rd history.TxnRead) bool {
		return rd.Isolation == history.ReadCommitted && rd.Partition == 2
	})
	r := Check(h)
	expectKinds(t, r)
	if len(r.Stats.Notes) != 1 || !strings.Contains(r.Stats.Notes[0], "12 of 12 transactions not judged") {
		t.Errorf("notes %q", r.Stats.Notes)
	}
}
