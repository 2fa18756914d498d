// Package checker judges a fault-suite run: it reads a history.History and reports
// every anomaly in it, in the terms of Jepsen's queue checker (lost writes,
// duplicates, inconsistent offsets, nonmonotonic polls, skips, unseen values), plus the
// replicas' agreement below the high watermark, the group commits, the control
// plane's partition history (no unclean election, no leader-epoch regression), the
// linearizability of the control-plane operations (with porcupine), and transactions:
// all or nothing of each visible at read_committed, as its outcome allows (txn.go).
//
// Every pass is linear or n·log n in the size of the history: a run records millions
// of sends and records, so the checker indexes values and offsets in maps and sorts
// where it needs an order; it never compares all pairs.
package checker

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gregor-streaming/gregor/chaos/history"
)

// The anomaly kinds, as they appear in Anomaly.Kind and Report.Counts.
const (
	// LostWrite is an acknowledged send whose value no poll read and no replica holds
	// below its high watermark at the end.
	LostWrite = "lost-write"
	// Duplicate is a value of an idempotent producer found at two offsets.
	Duplicate = "duplicate"
	// InconsistentOffsets is two values at one offset of one partition, across polls,
	// across replicas below the agreed high watermark, or between a poll and a final log.
	InconsistentOffsets = "inconsistent-offsets"
	// OffsetMismatch is an acknowledged offset that, in the final logs or the polls,
	// holds another value, or a value found at another offset than its ack said.
	OffsetMismatch = "offset-mismatch"
	// NonmonotonicPoll is a consumer reading, on one partition, an offset not above the
	// one it read before, without being re-positioned.
	NonmonotonicPoll = "nonmonotonic-poll"
	// PollSkip is a consumer reading past offsets that hold records it did not read.
	PollSkip = "poll-skip"
	// Unseen is an acknowledged value in the final logs that no poll read, although
	// the consumers were meant to drain every partition (History.ConsumersDrained).
	Unseen = "unseen"
	// ReadOfFailedWrite is a value whose send definitely failed, read by a poll or found
	// in a final log.
	ReadOfFailedWrite = "read-of-failed-write"
	// ReplicaDivergence is replicas of one partition disagreeing below the smallest of
	// their high watermarks: a different value at an offset, or a record one lacks.
	ReplicaDivergence = "replica-divergence"
	// CommittedOffsetRegression is a group's committed offset for a partition going
	// down in time order.
	CommittedOffsetRegression = "committed-offset-regression"
	// StaleGenerationCommit is a group commit acknowledged although it was sent after
	// the coordinator had acknowledged a commit of a later generation of the group:
	// generations only grow, so the coordinator accepted a commit from a generation
	// that was over (Kafka answers ILLEGAL_GENERATION).
	StaleGenerationCommit = "stale-generation-commit"
	// UncleanElection is a leader chosen outside the previous ISR on a topic that does
	// not allow unclean election.
	UncleanElection = "unclean-election"
	// EpochRegression is a leader epoch that decreases, or that does not increase when
	// the leader changes.
	EpochRegression = "epoch-regression"
	// NonlinearizableControl is a partition whose control-plane operations have no
	// linearization against the compare-and-swap register model.
	NonlinearizableControl = "nonlinearizable-control"
)

// Kinds lists every anomaly kind, in the order Report.String prints them.
var Kinds = []string{
	LostWrite, Duplicate, InconsistentOffsets, OffsetMismatch, NonmonotonicPoll, PollSkip,
	Unseen, ReadOfFailedWrite, ReplicaDivergence, CommittedOffsetRegression, StaleGenerationCommit,
	UncleanElection, EpochRegression, NonlinearizableControl,
	TornTransaction, AbortedRead, LostTransaction, CommittedDuplicate,
}

// Anomaly is one violation found in a history. Fields that do not apply to a kind are
// zero, except Offset, which is -1 when no offset applies.
type Anomaly struct {
	Kind      string `json:"kind"`
	Topic     string `json:"topic,omitempty"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Value     string `json:"value,omitempty"`
	Detail    string `json:"detail,omitempty"`
}

// String renders the anomaly on one line.
func (a Anomaly) String() string {
	var b strings.Builder
	b.WriteString(a.Kind)
	if a.Topic != "" {
		fmt.Fprintf(&b, " %s/%d", a.Topic, a.Partition)
	}
	if a.Offset >= 0 {
		fmt.Fprintf(&b, " @%d", a.Offset)
	}
	if a.Value != "" {
		fmt.Fprintf(&b, " value %q", a.Value)
	}
	if a.Detail != "" {
		b.WriteString(": ")
		b.WriteString(a.Detail)
	}
	return b.String()
}

// Availability is one partition's send availability: the longest time during which
// sends to it were attempted and none was acknowledged.
type Availability struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Attempts and OK count the sends to the partition and the acknowledged ones.
	Attempts int `json:"attempts"`
	OK       int `json:"ok"`
	// Longest is the longest interval without an acknowledgement while sends were
	// attempted: between the End of consecutive acknowledged sends when a send
	// started in between, from the first attempt to the first acknowledgement, or from
	// the last acknowledgement to the end of the last attempt.
	Longest time.Duration `json:"longest"`
	// From is when the longest interval began.
	From time.Time `json:"from"`
}

// Stats counts what the history holds and the outcomes that are not anomalies.
type Stats struct {
	Sends     int `json:"sends"`
	SendsOK   int `json:"sends_ok"`
	SendsFail int `json:"sends_fail"`
	SendsInfo int `json:"sends_info"`
	// InfoFound counts the info sends whose value was found (read or in a final log):
	// indeterminate sends that did happen.
	InfoFound int `json:"info_found"`
	// Polls counts the polls; Reads the records they returned; ValuesRead the distinct
	// values read.
	Polls      int `json:"polls"`
	Reads      int `json:"reads"`
	ValuesRead int `json:"values_read"`
	// FinalRecords counts the distinct offsets held below a high watermark by some
	// replica at the end; Replicas the replica logs read.
	FinalRecords int `json:"final_records"`
	Replicas     int `json:"replicas"`
	// Lost counts the lost acknowledged writes (LostWrite anomalies); LostAcks1 those
	// of acks=1 sends, which Kafka allows to be lost on a leader change and which are
	// anomalies only with Options.Acks1LossIsAnomaly.
	Lost      int `json:"lost"`
	LostAcks1 int `json:"lost_acks1"`
	// Unseen counts the acknowledged values in the final logs that no poll read.
	Unseen int `json:"unseen"`
	// DuplicatesNonIdempotent counts the values of non-idempotent producers found at
	// more than one offset (legitimate retries).
	DuplicatesNonIdempotent int `json:"duplicates_non_idempotent"`
	// DuplicatesAcrossEpochs counts the values of idempotent producers found at more
	// than one offset under different producer ids or epochs: the client bumped its
	// epoch and sent again what it had in flight, which no broker can deduplicate.
	DuplicatesAcrossEpochs int `json:"duplicates_across_epochs"`
	// Unexpected counts the distinct values read or in a final log that no send wrote.
	Unexpected int `json:"unexpected"`
	// RepeatedValues counts sends whose value an earlier send already used (the
	// workload promises unique values; the later sends are ignored).
	RepeatedValues int `json:"repeated_values,omitempty"`
	Commits        int `json:"commits"`
	States         int `json:"states"`
	// UncleanAllowed counts the unclean elections on topics that allow them.
	UncleanAllowed int `json:"unclean_allowed"`
	// ControlOps is the number of control-plane operations checked, ControlResult
	// porcupine's verdict ("Ok", "Illegal", "Unknown"; "" when there were none), and
	// ControlUnknown the partitions whose check timed out.
	ControlOps     int    `json:"control_ops"`
	ControlResult  string `json:"control_result,omitempty"`
	ControlUnknown int    `json:"control_unknown,omitempty"`
	// Availability is per partition, sorted by topic and partition; MaxUnavailable is
	// the largest Longest of them, on MaxUnavailableAt ("topic/partition").
	Availability     []Availability `json:"availability"`
	MaxUnavailable   time.Duration  `json:"max_unavailable"`
	MaxUnavailableAt string         `json:"max_unavailable_at,omitempty"`
	// Txns counts the transactions by outcome; TxnsUnknownCommitted the unknown ones
	// visible at read_committed (they did commit); TxnRecordsRead the records the final
	// read_committed reads returned.
	Txns                 int `json:"txns,omitempty"`
	TxnsCommitted        int `json:"txns_committed,omitempty"`
	TxnsAborted          int `json:"txns_aborted,omitempty"`
	TxnsUnknown          int `json:"txns_unknown,omitempty"`
	TxnsUnknownCommitted int `json:"txns_unknown_committed,omitempty"`
	TxnRecordsRead       int `json:"txn_records_read,omitempty"`
	// Notes are remarks that are not anomalies (a timed-out linearizability check, a
	// visualization written).
	Notes []string `json:"notes,omitempty"`
}

// Report is the verdict on one run.
type Report struct {
	// Anomalies holds every anomaly found, sorted by kind (in Kinds order), topic,
	// partition, offset, value and detail.
	Anomalies []Anomaly `json:"anomalies"`
	// Counts holds the number of anomalies of each kind found (kinds with none are
	// absent).
	Counts map[string]int `json:"counts"`
	Stats  Stats          `json:"stats"`
}

// OK reports whether the run had no anomaly.
func (r *Report) OK() bool { return len(r.Anomalies) == 0 }

// Examples is how many anomalies of each kind Report.String shows.
const Examples = 5

// String is a readable summary: the verdict, the counts by kind, up to Examples
// anomalies of each kind, then the main statistics.
func (r *Report) String() string {
	var b strings.Builder
	if r.OK() {
		b.WriteString("OK: no anomaly\n")
	} else {
		fmt.Fprintf(&b, "NOT OK: %d anomalies\n", len(r.Anomalies))
	}
	for _, k := range Kinds {
		if n := r.Counts[k]; n > 0 {
			fmt.Fprintf(&b, "  %-28s %d\n", k, n)
		}
	}
	i := 0
	for _, k := range Kinds {
		shown := 0
		for ; i < len(r.Anomalies) && r.Anomalies[i].Kind == k; i++ {
			if shown < Examples {
				if shown == 0 {
					fmt.Fprintf(&b, "%s:\n", k)
				}
				fmt.Fprintf(&b, "  %s\n", r.Anomalies[i])
				shown++
			}
		}
		if n := r.Counts[k]; n > shown && shown > 0 {
			fmt.Fprintf(&b, "  ... and %d more\n", n-shown)
		}
	}
	s := r.Stats
	fmt.Fprintf(&b, "sends %d (ok %d, fail %d, info %d, info found %d); polls %d, reads %d, values read %d\n",
		s.Sends, s.SendsOK, s.SendsFail, s.SendsInfo, s.InfoFound, s.Polls, s.Reads, s.ValuesRead)
	fmt.Fprintf(&b, "final records %d on %d replica logs; lost %d (acks=1 %d), unseen %d, non-idempotent duplicates %d, duplicates across producer epochs %d, unexpected %d\n",
		s.FinalRecords, s.Replicas, s.Lost, s.LostAcks1, s.Unseen, s.DuplicatesNonIdempotent, s.DuplicatesAcrossEpochs, s.Unexpected)
	fmt.Fprintf(&b, "commits %d; states %d, unclean elections allowed %d; control ops %d: %s\n",
		s.Commits, s.States, s.UncleanAllowed, s.ControlOps, cmp.Or(s.ControlResult, "none"))
	if s.Txns > 0 {
		fmt.Fprintf(&b, "transactions %d (committed %d, aborted %d, unknown %d of which %d visible); %d records read at read_committed\n",
			s.Txns, s.TxnsCommitted, s.TxnsAborted, s.TxnsUnknown, s.TxnsUnknownCommitted, s.TxnRecordsRead)
	}
	if s.MaxUnavailableAt != "" {
		fmt.Fprintf(&b, "longest unavailability %v on %s\n", s.MaxUnavailable, s.MaxUnavailableAt)
	}
	for _, n := range s.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	return b.String()
}

// Options tunes CheckWith.
type Options struct {
	// VisualizePath, if set, is where porcupine's HTML visualization of the
	// control-plane partitions that are not linearizable is written.
	VisualizePath string
	// ControlTimeout bounds the linearizability check (10 s if zero). A check that
	// times out is a note in Stats, not an anomaly.
	ControlTimeout time.Duration
	// Acks1LossIsAnomaly reports the loss of an acks=1 acknowledged write as a
	// LostWrite; by default it is only counted (Stats.LostAcks1).
	Acks1LossIsAnomaly bool
}

// Check judges a run with the default options.
func Check(h *history.History) *Report {
	return CheckWith(h, Options{})
}

// CheckWith judges a run. It does not modify h.
func CheckWith(h *history.History, opts Options) *Report {
	if opts.ControlTimeout <= 0 {
		opts.ControlTimeout = 10 * time.Second
	}
	c := &checker{h: h, opts: opts}
	c.checkData()
	c.checkCommits()
	c.checkGenerations()
	c.checkStates()
	c.checkControl()
	c.checkTxns()
	return c.report()
}

// checker holds the state of one Check.
type checker struct {
	h         *history.History
	opts      Options
	anomalies []Anomaly
	stats     Stats
}

func (c *checker) add(a Anomaly) { c.anomalies = append(c.anomalies, a) }

func (c *checker) report() *Report {
	order := make(map[string]int, len(Kinds))
	for i, k := range Kinds {
		order[k] = i
	}
	slices.SortStableFunc(c.anomalies, func(a, b Anomaly) int {
		return cmp.Or(
			cmp.Compare(order[a.Kind], order[b.Kind]),
			strings.Compare(a.Topic, b.Topic),
			cmp.Compare(a.Partition, b.Partition),
			cmp.Compare(a.Offset, b.Offset),
			strings.Compare(a.Value, b.Value),
			strings.Compare(a.Detail, b.Detail),
		)
	})
	r := &Report{Anomalies: c.anomalies, Counts: map[string]int{}, Stats: c.stats}
	if r.Anomalies == nil {
		r.Anomalies = []Anomaly{}
	}
	for _, a := range r.Anomalies {
		r.Counts[a.Kind]++
	}
	return r
}
