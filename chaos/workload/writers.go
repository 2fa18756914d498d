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

// writerRecord is one line of a write-history file.
type writerRecord struct {
	PID            int             `json:"pid"`
	Key            string          `json:"key"`
	Value          json.RawMessage `json:"value"`
	ExpectRevision int64           `json:"expect_revision"`
	Call           time.Time       `json:"call"`
	Return         time.Time       `json:"return"`
	Ok             bool            `json:"ok"`
	Revision       int64           `json:"revision"`
}

// WriterOps reads the write-history files in dir into control-plane write operations
// on topics' partitions. A write's expected state is the one at the revision it compared
// against, found among states (the watch's); a write whose expected revision is not
// among them is taken as blind. The second result counts the writes so taken.
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
	var ops []history.ControlOp
	blind := 0
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
				// A process killed in the middle of its last line: the write's outcome was
				// never learned by the writer either, and the watch still shows it.
				continue
			}
			st, ok := decodeState(w.Key, w.Value, w.Revision, w.Return, want)
			if !ok {
				continue
			}
			op := history.ControlOp{Client: fmt.Sprintf("pid-%d", w.PID), Topic: st.Topic, Partition: st.Partition,
				Write: true, Ok: w.Ok, State: st, Call: w.Call, Return: w.Return}
			if w.ExpectRevision > 0 {
				if prev, ok := byRev[at{st.Topic + "/" + strconv.Itoa(int(st.Partition)), w.ExpectRevision}]; ok {
					op.Expect = &prev
				} else {
					blind++
				}
			}
			ops = append(ops, op)
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", name, err)
		}
	}
	return ops, blind, nil
}
