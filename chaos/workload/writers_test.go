package workload

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/chaos/history"
)

// TestWriterOps: the writers' call and outcome lines become write operations whose
// expected state is the watched state at the revision they compared against; an unknown
// revision makes a blind write; a lost answer, a missing outcome line (the writer killed
// between its commit and the line) or a torn one makes a write that may or may not have
// happened; a refused write and a torn call line (never sent) make none.
func TestWriterOps(t *testing.T) {
	dir := t.TempDir()
	lines := `{"pid":7,"id":1,"key":"/gregor/meta/partitions/t/0","value":{"replicas":[1,2,3],"leader":2,"leaderEpoch":1,"isr":[2,3]},"expect_revision":10,"call":"2026-12-04T03:00:00Z"}
{"pid":7,"id":2,"key":"/gregor/meta/partitions/other/0","value":{"replicas":[1],"leader":1,"leaderEpoch":0,"isr":[1]},"call":"2026-12-04T03:00:00Z"}
{"pid":7,"id":1,"outcome":"ok","return":"2026-12-04T03:00:01Z","revision":12}
{"pid":7,"id":3,"key":"/gregor/meta/partitions/t/0","value":{"replicas":[1,2,3],"leader":3,"leaderEpoch":2,"isr":[3]},"expect_revision":11,"call":"2026-12-04T03:00:02Z"}
{"pid":7,"id":3,"outcome":"unknown","return":"2026-12-04T03:00:03Z"}
{"pid":7,"id":2,"outcome":"ok","return":"2026-12-04T03:00:03Z","revision":13}
{"pid":7,"id":4,"key":"/gregor/meta/partitions/t/0","value":{"replicas":[1,2,3],"leader":1,"leaderEpoch":3,"isr":[1]},"expect_revision":12,"call":"2026-12-04T03:00:04Z"}
{"pid":7,"id":4,"outcome":"refused","return":"2026-12-04T03:00:05Z"}
{"pid":7,"id":5,"key":"/gregor/meta/partitions/t/1","value":{"replicas":[1,2,3],"leader":2,"leaderEpoch":0,"isr":[2,3]},"expect_revision":20,"call":"2026-12-04T03:00:06Z"}
{"pid":7,"id":6,"key":"/gregor/meta/partitions/t/2","value":{"replicas":[1,2,3],"leader":2,"leaderEpoch":0,"isr":[2,3]},"expect_revision":30,"call":"2026-12-04T03:00:07Z"}
{"pid":7,"id":6,"outcome":"o`
	if err := os.WriteFile(filepath.Join(dir, "control-history-7.jsonl"), []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	torn := `{"pid":8,"id":1,"key":"/gregor/meta/partitions/t/0","value":{"replicas":[1,2,3],"leader":3,"lea`
	if err := os.WriteFile(filepath.Join(dir, "control-history-8.jsonl"), []byte(torn), 0o644); err != nil {
		t.Fatal(err)
	}
	states := []history.PartitionState{
		{Topic: "t", Partition: 0, Leader: 1, ISR: []int32{1, 2, 3}, Replicas: []int32{1, 2, 3}, Revision: 10},
		{Topic: "t", Partition: 1, Leader: 1, ISR: []int32{1, 2, 3}, Replicas: []int32{1, 2, 3}, Revision: 20},
		{Topic: "t", Partition: 2, Leader: 2, ISR: []int32{2, 3}, Replicas: []int32{1, 2, 3}, Revision: 30},
	}
	ops, blind, err := WriterOps(dir, states, "t")
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 4 || blind != 1 {
		t.Fatalf("%d ops, %d blind: %+v", len(ops), blind, ops)
	}
	at := func(s int) time.Time { return time.Date(2026, 12, 4, 3, 0, s, 0, time.UTC) }
	if a := ops[0]; !a.Write || !a.Ok || a.Expect == nil || a.Expect.Revision != 10 || a.State.Leader != 2 ||
		a.State.Revision != 12 || a.Client != "pid-7" || !a.Call.Equal(at(0)) || !a.Return.Equal(at(1)) {
		t.Errorf("acknowledged write %+v", a)
	}
	if b := ops[1]; !b.Write || b.Ok || b.Expect != nil || b.State.Leader != 3 || b.State.Revision != 0 || !b.Call.Equal(at(2)) {
		t.Errorf("write whose answer was lost %+v", b)
	}
	if c := ops[2]; !c.Write || c.Ok || c.Expect == nil || c.Expect.Revision != 20 || c.State.Partition != 1 || !c.Call.Equal(at(6)) {
		t.Errorf("write without an outcome line %+v", c)
	}
	if d := ops[3]; !d.Write || d.Ok || d.Expect == nil || d.Expect.Revision != 30 || d.State.Partition != 2 {
		t.Errorf("write with a torn outcome line %+v", d)
	}
}
