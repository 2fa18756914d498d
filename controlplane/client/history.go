package client

// The control-plane write history: a fault-injection hook for the fault suite, off
// unless the process's environment names a directory in ControlHistoryEnv. Every
// transaction that writes a partition state (an election, an ISR change, a topic's
// creation) then appends to a file of the process in that directory one JSON line per
// partition it puts before it is sent (the writer's call time and the mod revision it
// compares against), and one line with its outcome and return time once it is answered.
// The suite checks these writes and linearizable reads of the states for
// linearizability: a state written by two writers from the same base (two controllers,
// or a fenced leader) would show there. A writer killed between its transaction's commit
// and the outcome line leaves a write of unknown outcome, not a hole in the history. It
// is no flag: no deployment wants it.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// ControlHistoryEnv names the directory the write history goes to.
const ControlHistoryEnv = "GREGOR_CONTROL_HISTORY"

// HistoryWrite is one line of the write history: a transaction's call line, one per
// partition state it puts, written before the transaction is sent, or its outcome line,
// written once it is answered. A call line without an outcome line is a write whose
// writer died before it learned the outcome: it may have taken effect.
type HistoryWrite struct {
	// PID is the writing process; ID numbers the transaction within it.
	PID int    `json:"pid"`
	ID  uint64 `json:"id"`
	// Key is the partition state's key; Value what is put (call lines).
	Key   string          `json:"key,omitempty"`
	Value json.RawMessage `json:"value,omitempty"`
	// ExpectRevision is the mod revision the write compares the key against; 0 for a
	// write without such a comparison (a creation).
	ExpectRevision int64     `json:"expect_revision,omitempty"`
	Call           time.Time `json:"call,omitzero"`
	// Outcome is empty on a call line; on an outcome line OutcomeOk (it took effect at
	// Revision), OutcomeRefused (a comparison failed: nothing written) or
	// OutcomeUnknown (the answer was lost).
	Outcome  string    `json:"outcome,omitempty"`
	Return   time.Time `json:"return,omitzero"`
	Revision int64     `json:"revision,omitempty"`
}

// The outcomes of a write in the history.
const (
	OutcomeOk      = "ok"
	OutcomeRefused = "refused"
	OutcomeUnknown = "unknown"
)

// historyFile is the process's history file, or nil when the hook is off.
var historyFile = sync.OnceValue(func() *os.File {
	dir := os.Getenv(ControlHistoryEnv)
	if dir == "" {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("control-history-%d.jsonl", os.Getpid())),
		os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", ControlHistoryEnv, err)
		return nil
	}
	return f
})

// historyIDs numbers the process's recorded transactions.
var historyIDs atomic.Uint64

// recordCall appends the call lines of a transaction that puts partition states to the
// history, if the hook is on, before it is sent; it returns the transaction's number, 0
// when nothing was recorded.
func recordCall(call time.Time, cmps []clientv3.Cmp, then []clientv3.Op) uint64 {
	f := historyFile()
	if f == nil {
		return 0
	}
	id := historyIDs.Add(1)
	var b []byte
	for _, op := range then {
		key := string(op.KeyBytes())
		if !op.IsPut() || !strings.HasPrefix(key, cluster.PartitionsPrefix) {
			continue
		}
		w := HistoryWrite{PID: os.Getpid(), ID: id, Key: key, Value: json.RawMessage(op.ValueBytes()), Call: call}
		for i := range cmps {
			c := cmps[i].GetCompare()
			if string(c.GetKey()) == key && c.GetTarget() == pb.Compare_MOD {
				w.ExpectRevision = c.GetModRevision()
			}
		}
		b = appendLine(b, w)
	}
	if len(b) == 0 {
		return 0
	}
	_, _ = f.Write(b) // one write: lines of concurrent transactions do not interleave
	return id
}

// recordOutcome appends the outcome line of transaction id (recordCall's number).
func recordOutcome(id uint64, resp *clientv3.TxnResponse, err error) {
	if id == 0 {
		return
	}
	w := HistoryWrite{PID: os.Getpid(), ID: id, Outcome: OutcomeUnknown, Return: time.Now()}
	switch {
	case err != nil:
	case resp.Succeeded:
		w.Outcome, w.Revision = OutcomeOk, resp.Header.Revision
	default:
		w.Outcome = OutcomeRefused
	}
	_, _ = historyFile().Write(appendLine(nil, w))
}

func appendLine(b []byte, w HistoryWrite) []byte {
	line, err := json.Marshal(w)
	if err != nil {
		return b
	}
	return append(append(b, line...), '\n')
}
