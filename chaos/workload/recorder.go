// Package workload drives a Gregor cluster for the fault suite and records what it saw
// in a history (package chaos/history): producers of several clients and settings,
// assigned and group consumers, a recorder of the control plane's partition states, and
// the final read of every replica's log. It knows nothing of how the cluster runs: it
// takes broker addresses, an etcd client and data directories.
package workload

import (
	"encoding/json"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gregor-streaming/gregor/chaos/history"
)

// Recorder collects one run's history from many goroutines.
type Recorder struct {
	mu sync.Mutex
	h  history.History

	ok, fail, info atomic.Int64
}

// NewRecorder starts a history for scenario with seed over topics.
func NewRecorder(scenario string, seed int64, topics ...string) *Recorder {
	return &Recorder{h: history.History{Scenario: scenario, Seed: seed, Topics: topics, Start: time.Now()}}
}

// Send records a send's outcome.
func (r *Recorder) Send(s history.Send) {
	switch s.Outcome {
	case history.OK:
		r.ok.Add(1)
	case history.Fail:
		r.fail.Add(1)
	default:
		r.info.Add(1)
	}
	r.mu.Lock()
	r.h.Sends = append(r.h.Sends, s)
	r.mu.Unlock()
}

// Poll records a consumer's poll of one partition.
func (r *Recorder) Poll(p history.Poll) {
	r.mu.Lock()
	r.h.Polls = append(r.h.Polls, p)
	r.mu.Unlock()
}

// Commit records an acknowledged (or fetched) group commit.
func (r *Recorder) Commit(c history.Commit) {
	r.mu.Lock()
	r.h.Commits = append(r.h.Commits, c)
	r.mu.Unlock()
}

// State records a partition state the control plane held.
func (r *Recorder) State(s history.PartitionState) {
	r.mu.Lock()
	r.h.States = append(r.h.States, s)
	r.mu.Unlock()
}

// Control records a control-plane operation.
func (r *Recorder) Control(op history.ControlOp) {
	r.mu.Lock()
	r.h.Control = append(r.h.Control, op)
	r.mu.Unlock()
}

// Fault records a fault injected or healed, now.
func (r *Recorder) Fault(kind, target, detail string) {
	r.mu.Lock()
	r.h.Faults = append(r.h.Faults, history.Fault{Time: time.Now(), Kind: kind, Target: target, Detail: detail})
	r.mu.Unlock()
}

// Finals records the replicas' logs read at the end.
func (r *Recorder) Finals(logs []history.ReplicaLog) {
	r.mu.Lock()
	r.h.Finals = append(r.h.Finals, logs...)
	r.mu.Unlock()
}

// Txn records a transaction's outcome, and each of its records as a send: ok at its
// acknowledged offset if the transaction committed, info otherwise (an aborted
// transaction's records are in the log, below its abort marker).
func (r *Recorder) Txn(t history.Txn) {
	for _, x := range t.Records {
		s := history.Send{Producer: t.Producer, Idempotent: true, Acks: -1, Topic: x.Topic, Partition: x.Partition,
			Value: x.Value, Outcome: history.Info, Offset: -1, Err: t.Err, Start: t.Start, End: t.End}
		if t.Outcome == history.TxnCommitted {
			s.Outcome, s.Offset, s.Err = history.OK, x.Offset, ""
		} else if s.Err == "" {
			s.Err = "transaction " + string(t.Outcome)
		}
		r.Send(s)
	}
	r.mu.Lock()
	r.h.Txns = append(r.h.Txns, t)
	r.mu.Unlock()
}

// TxnReads records the final reads of the transactional partitions.
func (r *Recorder) TxnReads(reads []history.TxnRead) {
	r.mu.Lock()
	r.h.TxnReads = append(r.h.TxnReads, reads...)
	r.mu.Unlock()
}

// Txns returns a copy of the transactions recorded so far.
func (r *Recorder) Txns() []history.Txn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]history.Txn(nil), r.h.Txns...)
}

// Drained notes that the consumers have read every partition to its end: an
// acknowledged value none of them read is then an anomaly (unseen).
func (r *Recorder) Drained() {
	r.mu.Lock()
	r.h.ConsumersDrained = true
	r.mu.Unlock()
}

// AllowUnclean notes a topic created with unclean.leader.election.enable.
func (r *Recorder) AllowUnclean(topic string) {
	r.mu.Lock()
	r.h.UncleanAllowed = append(r.h.UncleanAllowed, topic)
	r.mu.Unlock()
}

// Counts are the sends so far by outcome.
func (r *Recorder) Counts() (ok, fail, info int64) { return r.ok.Load(), r.fail.Load(), r.info.Load() }

// Sends returns a copy of the sends so far.
func (r *Recorder) Sends() []history.Send {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]history.Send(nil), r.h.Sends...)
}

// Commits returns a copy of the commits so far.
func (r *Recorder) Commits() []history.Commit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]history.Commit(nil), r.h.Commits...)
}

// Faults returns a copy of the faults so far.
func (r *Recorder) Faults() []history.Fault {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]history.Fault(nil), r.h.Faults...)
}

// States returns a copy of the partition states so far.
func (r *Recorder) States() []history.PartitionState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]history.PartitionState(nil), r.h.States...)
}

// History returns the history so far, its End set to now (a copy of the top level; the
// slices are shared and must not be modified).
func (r *Recorder) History() *history.History {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.h
	h.End = time.Now()
	return &h
}

// WriteJSON writes h to path as indented JSON.
func WriteJSON(path string, h *history.History) error {
	b, err := json.MarshalIndent(h, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
