package workload

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/gregor-streaming/gregor/chaos/history"
)

// The control plane's writers' own records of their partition-state writes (the
// controller's elections, the leaders' ISR changes, topic creations), which every
// process appends to a file of its own in the directory its GREGOR_CONTROL_HISTORY names
// (controlplane/client's write-history hook). With them, the linearizability check
// judges the writers' compare-and-swaps as they were made — a state written twice from
// the same base (two controllers, or a leader fenced too late) has no linearization —
// instead of the chain the watch delivered.

// writerRecord is one line of a write-history file (controlplane/client's
// HistoryWrite): a transaction's call line per partition state it puts, or its outcome
// line.
type writerRecord struct {
	PID            int             `json:"pid"`
	ID             uint64          `json:"id"`
	Key            string          `json:"key"`
	Value          json.RawMessage `json:"value"`
	ExpectRevision int64           `json:"expect_revision"`
	Call           time.Time       `json:"call"`
	Outcome        string          `json:"outcome"`
	Return         time.Time       `json:"return"`
	Revision       int64           `json:"revision"`
}

// WriterOps reads the write-history files in dir into control-plane write operations
// on topics' partitions. A write's expected state is the one at the revision it compared
// against, found among states (the watch's); a write whose expected revision is not
// among them is taken as blind. The second result counts the writes so taken. A write
// refused (its comparison failed) is no operation; one without an outcome (its writer
// was killed before it learned it, or while writing it) or whose answer was lost may or
// may not have taken effect.
func WriterOps(dir string, states []history.PartitionState, topics ...string) ([]history.ControlOp, int, error) {
	want := map[string]bool{}
	for _, t := range topics {
		want[t] = true
	}
	type at struct {
		key string
		rev int64
	}
	byRev := map[at]history.PartitionState{}
	for _, s := range states {
		byRev[at{s.Topic + "/" + strconv.Itoa(int(s.Partition)), s.Revision}] = s
	}
	files, err := filepath.Glob(filepath.Join(dir, "control-history-*.jsonl"))
	if err != nil {
		return nil, 0, err
	}
	type txnID struct {
		pid int
		id  uint64
	}
	var calls []writerRecord
	outcomes := map[txnID]writerRecord{}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, 0, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var w writerRecord
			if err := json.Unmarshal(sc.Bytes(), &w); err != nil {
				// A process killed in the middle of its last line: a torn call line's
				// transaction was never sent, a torn outcome line's outcome is unknown.
				continue
			}
			if w.Outcome != "" {
				outcomes[txnID{w.PID, w.ID}] = w
			} else {
				calls = append(calls, w)
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", name, err)
		}
	}
	var ops []history.ControlOp
	blind := 0
	for _, w := range calls {
		out, answered := outcomes[txnID{w.PID, w.ID}]
		if answered && out.Outcome == "refused" {
			continue
		}
		ok := answered && out.Outcome == "ok"
		var rev int64
		ret := w.Call // an unknown outcome's return is put after the run's end by the checker
		if answered {
			ret = out.Return
		}
		if ok {
			rev = out.Revision
		}
		st, isState := decodeState(w.Key, w.Value, rev, ret, want)
		if !isState {
			continue
		}
		op := history.ControlOp{Client: fmt.Sprintf("pid-%d", w.PID), Topic: st.Topic, Partition: st.Partition,
			Write: true, Ok: ok, State: st, Call: w.Call, Return: ret}
		if w.ExpectRevision > 0 {
			if prev, ok := byRev[at{st.Topic + "/" + strconv.Itoa(int(st.Partition)), w.ExpectRevision}]; ok {
				op.Expect = &prev
			} else {
				blind++
			}
		}
		ops = append(ops, op)
	}
	return ops, blind, nil
}
