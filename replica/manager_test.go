package replica

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
)

// TestManagerLayout: one directory per replica, found again on disk whether open or
// not, and removed with its topic.
func TestManagerLayout(t *testing.T) {
	dir := t.TempDir()
	m := newManager(t, dir)
	for _, tp := range []struct {
		topic     string
		partition int32
	}{{"a", 0}, {"a", 2}, {"b-c", 1}} {
		if _, err := m.MakeLeader(tp.topic, tp.partition, leaderState(0, local), nil, logConfig); err != nil {
			t.Fatal(err)
		}
	}
	for _, junk := range []string{"no-dash-x", "nodash", "-1"} {
		if err := os.Mkdir(filepath.Join(dir, junk), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "file-3"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := m.PartitionDir("b-c", 1); got != filepath.Join(dir, "b-c-1") {
		t.Fatalf("PartitionDir = %s", got)
	}
	onDisk := func() map[string][]int32 {
		t.Helper()
		got, err := m.ReplicasOnDisk()
		if err != nil {
			t.Fatal(err)
		}
		for _, ps := range got {
			slices.Sort(ps)
		}
		return got
	}
	if got, want := onDisk(), map[string][]int32{"a": {0, 2}, "b-c": {1}}; !maps.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("ReplicasOnDisk = %v, want %v", got, want)
	}
	if n := len(m.Partitions()); n != 3 {
		t.Fatalf("%d partitions", n)
	}
	p := m.Partition("a", 2)
	if err := m.DeleteTopic("a"); err != nil {
		t.Fatal(err)
	}
	if m.Partition("a", 0) != nil || m.PartitionBytes([]byte("a"), 2) != nil || p.IsLeader() {
		t.Fatal("a deleted topic's replicas are still served")
	}
	if got, want := onDisk(), map[string][]int32{"b-c": {1}}; !maps.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("ReplicasOnDisk after the delete = %v, want %v", got, want)
	}
	empty := NewManager(Config{Dir: filepath.Join(dir, "missing")})
	if got, err := empty.ReplicasOnDisk(); err != nil || len(got) != 0 {
		t.Fatalf("a missing data directory: %v, %v", got, err)
	}
}

// TestMakeLeaderAppliesConfigs: the log takes new settings when the topic's configs
// change, and only then.
func TestMakeLeaderAppliesConfigs(t *testing.T) {
	m := newManager(t, t.TempDir())
	made := 0
	cfg := func(maxBatchBytes int) func() segment.Config {
		return func() segment.Config {
			made++
			return segment.Config{Logger: testutil.Quiet(), MaxBatchBytes: maxBatchBytes}
		}
	}
	p, err := m.MakeLeader("t", 0, leaderState(0, local), map[string]string{"max.message.bytes": "2000"}, cfg(2000))
	if err != nil || p.Log().MaxBatchBytes() != 2000 {
		t.Fatalf("opened with %d: %v", p.Log().MaxBatchBytes(), err)
	}
	if _, err := m.MakeLeader("t", 0, leaderState(1, local), map[string]string{"max.message.bytes": "2000"}, cfg(1)); err != nil || made != 1 {
		t.Fatalf("same configs: settings made %d times: %v", made, err)
	}
	if _, err := m.MakeLeader("t", 0, leaderState(2, local), map[string]string{"max.message.bytes": "3000"}, cfg(3000)); err != nil || p.Log().MaxBatchBytes() != 3000 {
		t.Fatalf("new configs: %d: %v", p.Log().MaxBatchBytes(), err)
	}
}

// TestManagerDropsEarlierTopicOfSameName: a replica of a topic deleted and created again
// under its name — its directory or open replica records the earlier topic's id — is
// deleted and opened empty; a directory of the same id, or of none, keeps its log.
func TestManagerDropsEarlierTopicOfSameName(t *testing.T) {
	dir := t.TempDir()
	withID := func(epoch int32, id string) PartitionState {
		st := leaderState(epoch, local)
		st.TopicID = id
		return st
	}
	batch := testBatch(proto.RecordBatchHeader{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, RecordCount: 3})

	m := NewManager(Config{Dir: dir, NodeID: local, Logger: testutil.Quiet()})
	appendAsLeader(t, lead(t, m, "t", withID(0, "id-a")), batch)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopened under the same id (and under none): the log is kept.
	m = newManager(t, dir)
	if p := lead(t, m, "t", withID(1, "")); p.Log().LogEndOffset() != 3 {
		t.Fatalf("no id named: log end %d, want 3", p.Log().LogEndOffset())
	}
	if p := lead(t, m, "t", withID(2, "id-a")); p.Log().LogEndOffset() != 3 {
		t.Fatalf("same id: log end %d, want 3", p.Log().LogEndOffset())
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := readTopicID(m.PartitionDir("t", 0)); err != nil || got != "id-a" {
		t.Fatalf("recorded topic id %q, %v", got, err)
	}

	// On disk under another id: deleted before it opens, its high watermark forgotten.
	m = newManager(t, dir)
	p := lead(t, m, "t", withID(0, "id-b"))
	if p.Log().LogEndOffset() != 0 || p.HighWatermark() != 0 {
		t.Fatalf("earlier topic's directory kept: log end %d, HW %d", p.Log().LogEndOffset(), p.HighWatermark())
	}
	if got, _ := readTopicID(m.PartitionDir("t", 0)); got != "id-b" {
		t.Fatalf("recorded topic id %q, want id-b", got)
	}
	appendAsLeader(t, p, batch, batch)

	// Open under another id: the open replica is resigned and deleted.
	q := lead(t, m, "t", withID(0, "id-c"))
	if q == p || p.IsLeader() || q.Log().LogEndOffset() != 0 {
		t.Fatalf("open replica of an earlier topic kept: same %v, old leads %v, log end %d",
			q == p, p.IsLeader(), q.Log().LogEndOffset())
	}
}
