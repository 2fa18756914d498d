package checker

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/gregor-streaming/gregor/chaos/history"
)

// The transaction anomalies, judged on the partitions' final reads (History.TxnReads)
// against the transactions' outcomes (History.Txns). A transaction's records are also
// sends (ok when it committed, info otherwise), which the checks of the other kinds
// judge as any: lost, duplicated within one producer epoch, found elsewhere than
// acknowledged.
const (
	// TornTransaction is a transaction of which some records, not all, are visible at
	// read_committed.
	TornTransaction = "torn-transaction"
	// AbortedRead is a record visible at read_committed of a transaction that never
	// asked to commit (aborted, or its producer failed or died first).
	AbortedRead = "aborted-read"
	// LostTransaction is a transaction whose commit was acknowledged and none of whose
	// records is visible at read_committed.
	LostTransaction = "lost-transaction"
	// CommittedDuplicate is a value read twice at read_committed.
	CommittedDuplicate = "read-committed-duplicate"
)

// checkTxns judges the transactions: all or nothing of each visible at read_committed,
// all of each committed one, nothing of an aborted one, no value twice; and each
// record read at read_committed is the record read_uncommitted shows at its offset.
func (c *checker) checkTxns() {
	h := c.h
	if len(h.Txns) == 0 && len(h.TxnReads) == 0 {
		return
	}
	st := &c.stats
	type at struct {
		k   tp
		off int64
	}
	raw := map[tp]map[int64]string{}
	for _, rd := range h.TxnReads {
		if rd.Isolation != history.ReadUncommitted {
			continue
		}
		k := tp{rd.Topic, rd.Partition}
		if raw[k] == nil {
			raw[k] = map[int64]string{}
		}
		for _, r := range rd.Records {
			raw[k][r.Offset] = r.Value
		}
	}
	read := map[tp]bool{}
	visible := map[string][]at{}
	for _, rd := range h.TxnReads {
		if rd.Isolation != history.ReadCommitted {
			continue
		}
		k := tp{rd.Topic, rd.Partition}
		read[k] = true
		for _, r := range rd.Records {
			st.TxnRecordsRead++
			visible[r.Value] = append(visible[r.Value], at{k, r.Offset})
			m, ok := raw[k]
			if !ok {
				continue
			}
			if w, ok := m[r.Offset]; !ok || w != r.Value {
				what := "nothing"
				if ok {
					what = fmt.Sprintf("%q", w)
				}
				c.add(Anomaly{Kind: InconsistentOffsets, Topic: k.topic, Partition: k.part, Offset: r.Offset, Value: r.Value,
					Detail: fmt.Sprintf("read_committed read %q where read_uncommitted read %s", r.Value, what)})
			}
		}
	}
	for v, locs := range visible {
		if len(locs) < 2 {
			continue
		}
		slices.SortFunc(locs, func(a, b at) int {
			return cmp.Or(strings.Compare(a.k.topic, b.k.topic), cmp.Compare(a.k.part, b.k.part), cmp.Compare(a.off, b.off))
		})
		var where []string
		for _, l := range locs {
			where = append(where, fmt.Sprintf("%s@%d", l.k, l.off))
		}
		c.add(Anomaly{Kind: CommittedDuplicate, Topic: locs[0].k.topic, Partition: locs[0].k.part, Offset: locs[0].off, Value: v,
			Detail: fmt.Sprintf("read %d times at read_committed: %s", len(locs), strings.Join(where, ", "))})
	}
	judged := 0
	for i := range h.Txns {
		t := &h.Txns[i]
		st.Txns++
		switch t.Outcome {
		case history.TxnCommitted:
			st.TxnsCommitted++
		case history.TxnAborted:
			st.TxnsAborted++
		default:
			st.TxnsUnknown++
		}
		if len(t.Records) == 0 || slices.ContainsFunc(t.Records, func(r history.TxnRecord) bool { return !read[tp{r.Topic, r.Partition}] }) {
			continue // a partition of it was not read: not judged
		}
		judged++
		var shown, hidden []history.TxnRecord
		for _, r := range t.Records {
			if len(visible[r.Value]) > 0 {
				shown = append(shown, r)
			} else {
				hidden = append(hidden, r)
			}
		}
		name := fmt.Sprintf("transaction %s/%d of %s (%s", t.Producer, t.Seq, t.TransactionalID, t.Outcome)
		if t.Err != "" {
			name += ": " + t.Err
		}
		name += ")"
		first := t.Records[0]
		switch {
		case t.Outcome == history.TxnAborted && len(shown) > 0:
			r := shown[0]
			c.add(Anomaly{Kind: AbortedRead, Topic: r.Topic, Partition: r.Partition, Offset: visible[r.Value][0].off, Value: r.Value,
				Detail: fmt.Sprintf("%s: %d of %d records visible at read_committed: %s", name, len(shown), len(t.Records), recordList(shown))})
		case t.Outcome == history.TxnCommitted && len(shown) == 0:
			c.add(Anomaly{Kind: LostTransaction, Topic: first.Topic, Partition: first.Partition, Offset: first.Offset, Value: first.Value,
				Detail: fmt.Sprintf("%s: none of its %d records visible at read_committed", name, len(t.Records))})
		case len(shown) > 0 && len(hidden) > 0:
			r := hidden[0]
			c.add(Anomaly{Kind: TornTransaction, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Value: r.Value,
				Detail: fmt.Sprintf("%s: %d of %d records visible at read_committed; missing %s", name, len(shown), len(t.Records), recordList(hidden))})
		case t.Outcome == history.TxnUnknown && len(shown) > 0:
			st.TxnsUnknownCommitted++
		}
	}
	if judged < len(h.Txns) {
		st.Notes = append(st.Notes, fmt.Sprintf("%d of %d transactions not judged: a partition of theirs has no read_committed read",
			len(h.Txns)-judged, len(h.Txns)))
	}
}

// recordList names up to three records, and how many more.
func recordList(rs []history.TxnRecord) string {
	var s []string
	for i, r := range rs {
		if i == 3 {
			s = append(s, fmt.Sprintf("and %d more", len(rs)-3))
			break
		}
		s = append(s, fmt.Sprintf("%q on %s/%d", r.Value, r.Topic, r.Partition))
	}
	return strings.Join(s, ", ")
}
