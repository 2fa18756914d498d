package powerloss

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
)

// batch is one valid RecordBatch v2 of one record.
func batch(value string) []byte {
	return proto.AppendRecordBatch(nil, proto.RecordBatchHeader{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1},
		[]proto.Record{{Value: []byte(value)}})
}

// TestApplyOnRealLogs: the journal of real logs, replayed. A log that fsyncs every
// append (flush.messages=1) keeps everything; one that never fsynced keeps nothing; one
// fsynced, then truncated and appended to, keeps no more than the truncation left; and
// every log reopens (recovery rebuilds the indexes that were dropped).
func TestApplyOnRealLogs(t *testing.T) {
	data := t.TempDir()
	if err := segment.EnableFsyncJournal(filepath.Join(data, segment.FsyncJournalFile)); err != nil {
		t.Fatal(err)
	}
	cfg := func(sync bool) segment.Config {
		return segment.Config{Logger: testutil.Quiet(), Flush: segment.FlushPolicy{Sync: sync}}
	}
	open := func(name string, c segment.Config) *segment.Log {
		t.Helper()
		l, err := segment.Open(filepath.Join(data, name), c)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	appendN := func(l *segment.Log, n int) {
		t.Helper()
		for i := range n {
			if _, err := l.Append(batch(strings.Repeat("v", 100+i)), 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	synced := open("synced-0", cfg(true))
	appendN(synced, 20)
	unsynced := open("unsynced-0", cfg(false))
	appendN(unsynced, 20)
	cut := open("cut-0", cfg(false))
	appendN(cut, 5)
	if err := cut.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := cut.TruncateTo(2); err != nil {
		t.Fatal(err)
	}
	appendN(cut, 4)
	// The process dies here: the logs are left open, as a SIGKILL leaves them.
	rep, err := Apply(data)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep)
	for name, want := range map[string]int64{"synced-0": 20, "unsynced-0": 0, "cut-0": 2} {
		l := open(name, cfg(false))
		if got := l.LogEndOffset(); got != want {
			t.Errorf("%s: log end %d after the power loss, want %d", name, got, want)
		}
		if err := l.ScanBatchHeaders(0, func(*proto.RecordBatchHeader) bool { return true }); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "synced-0", "00000000000000000000.index")); err != nil {
		t.Errorf("the synced log's index was not rebuilt: %v", err)
	}
}

// TestApplyNames: names that were never made durable go, by the journal alone.
func TestApplyNames(t *testing.T) {
	data := t.TempDir()
	dir := filepath.Join(data, "t-0")
	newDir := filepath.Join(data, "t-1")
	for _, d := range []string{dir, newDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old, fresh := filepath.Join(dir, "00000000000000000000.log"), filepath.Join(dir, "00000000000000000100.log")
	for _, p := range []string{old, fresh, filepath.Join(newDir, "00000000000000000000.log")} {
		if err := os.WriteFile(p, make([]byte, 1000), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	journal := strings.Join([]string{
		"create " + dir,
		"dirsync " + data,
		"create " + old,
		"dirsync " + dir,
		"sync " + old + " 700",
		"create " + fresh,
		"sync " + fresh + " 1000",
		"create " + newDir,
	}, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(data, segment.FsyncJournalFile), []byte(journal), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := Apply(data)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(old); err != nil || st.Size() != 700 {
		t.Errorf("%s: %v, %v; want 700 bytes", old, st, err)
	}
	for _, p := range []string{fresh, newDir} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s created after its directory's last sync survives: %v", p, err)
		}
	}
	if len(rep.Removed) != 2 || rep.Bytes() != 300 {
		t.Errorf("report %+v", rep)
	}
	if _, err := Apply(t.TempDir()); err == nil {
		t.Error("a directory without a journal was judged")
	}
}
