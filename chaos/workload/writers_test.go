package workload

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/chaos/history"
)

// TestWriterOps: the writers' records become write operations whose expected state is
// the watched state at the revision they compared against; an unknown revision makes a
// blind write, an unknown outcome a write that may not have happened, and a torn last
// line (a writer killed while writing it) is skipped.
func TestWriterOps(t *testing.T) {
	dir := t.TempDir()
	lines := `{"pid":7,"key":"/gregor/meta/partitions/t/0","value":{"replicas":[1,2,3],"leader":2,"leaderEpoch":1,"isr":[2,3]},"expect_revision":10,"call":"2026-12-04T03:00:00Z","return":"2026-12-04T03:00:01Z","ok":true,"revision":12}
{"pid":7,"key":"/gregor/meta/partitions/t/0","value":{"replicas":[1,2,3],"leader":3,"leaderEpoch":2,"isr":[3]},"expect_revision":11,"call":"2026-12-04T03:00:02Z","return":"2026-12-04T03:00:03Z","ok":false}
{"pid":7,"key":"/gregor/meta/partitions/other/0","value":{"replicas":[1],"leader":1,"leaderEpoch":0,"isr":[1]},"call":"2026-12-04T03:00:02Z","return":"2026-12-04T03:00:03Z","ok":true,"revision":13}
{"pid":7,"key":"/gregor/meta/partitions/t/0","val`
	if err := os.WriteFile(filepath.Join(dir, "control-history-7.jsonl"), []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	states := []history.PartitionState{{Topic: "t", Partition: 0, Leader: 1, ISR: []int32{1, 2, 3}, Replicas: []int32{1, 2, 3}, Revision: 10}}
	ops, blind, err := WriterOps(dir, states, "t")
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 2 || blind != 1 {
		t.Fatalf("%d ops, %d blind: %+v", len(ops), blind, ops)
	}
	a, b := ops[0], ops[1]
	if !a.Write || !a.Ok || a.Expect == nil || a.Expect.Revision != 10 || a.State.Leader != 2 || a.State.Revision != 12 ||
		a.Client != "pid-7" || !a.Call.Equal(time.Date(2026, 12, 4, 3, 0, 0, 0, time.UTC)) {
		t.Errorf("first op %+v", a)
	}
	if !b.Write || b.Ok || b.Expect != nil || b.State.Leader != 3 {
		t.Errorf("second op %+v", b)
	}
}
