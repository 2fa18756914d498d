package client

// The control-plane write history: a fault-injection hook for the fault suite, off
// unless the process's environment names a directory in ControlHistoryEnv. Every
// transaction that writes a partition state (an election, an ISR change, a topic's
// creation) then appends one JSON line per partition written to a file of the process
// in that directory, with the writer's own call and return times, the mod revision it
// compared against and the outcome. The suite checks these writes and linearizable reads
// of the states for linearizability: a state written by two writers from the same base
// (two controllers, or a fenced leader) would show there. It is no flag: no deployment
// wants it.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// ControlHistoryEnv names the directory the write history goes to.
const ControlHistoryEnv = "GREGOR_CONTROL_HISTORY"

// HistoryWrite is one line of the write history.
type HistoryWrite struct {
	// PID is the writing process.
	PID int `json:"pid"`
	// Key is the partition state's key; Value what was put.
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
	// ExpectRevision is the mod revision the write compared the key against; 0 for a
	// write without such a comparison (a creation).
	ExpectRevision int64     `json:"expect_revision"`
	Call           time.Time `json:"call"`
	Return         time.Time `json:"return"`
	// Ok is true for a write that took effect (at Revision); false for one whose outcome
	// is unknown (the transaction's answer was lost). Writes refused are not recorded.
	Ok       bool  `json:"ok"`
	Revision int64 `json:"revision,omitempty"`
}

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

// recordWrites appends the partition states a transaction wrote (or may have) to the
// history, if the hook is on.
func recordWrites(call time.Time, cmps []clientv3.Cmp, then []clientv3.Op, resp *clientv3.TxnResponse, err error) {
	f := historyFile()
	if f == nil || (err == nil && !resp.Succeeded) {
		return
	}
	ret := time.Now()
	var b []byte
	for _, op := range then {
		key := string(op.KeyBytes())
		if !op.IsPut() || !strings.HasPrefix(key, cluster.PartitionsPrefix) {
			continue
		}
		w := HistoryWrite{PID: os.Getpid(), Key: key, Value: json.RawMessage(op.ValueBytes()), Call: call, Return: ret, Ok: err == nil}
		if err == nil {
			w.Revision = resp.Header.Revision
		}
		for i := range cmps {
			c := cmps[i].GetCompare()
			if string(c.GetKey()) == key && c.GetTarget() == pb.Compare_MOD {
				w.ExpectRevision = c.GetModRevision()
			}
		}
		line, mErr := json.Marshal(w)
		if mErr != nil {
			continue
		}
		b = append(append(b, line...), '\n')
	}
	if len(b) > 0 {
		_, _ = f.Write(b) // one write: lines of concurrent transactions do not interleave
	}
}
