package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/perf/txn"
)

// TestTxnBench runs `bench txn` through the CLI against a real single-node cluster, two
// seconds per mode on small batches, and checks the table, the JSON result, the progress
// lines and that only the transactions section of BENCHMARKS.md is rewritten.
func TestTxnBench(t *testing.T) {
	if testing.Short() {
		t.Skip("four modes of two seconds each against a cluster")
	}
	c := testcluster.New(t, testcluster.Options{})
	out := t.TempDir()
	bench := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	const before, after = "# Benchmarks\n\n", "\n## By hand\n"
	if err := os.WriteFile(bench, []byte(before+txn.SectionBegin+"\nold\n"+txn.SectionEnd+after), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI("bench", "txn", "--brokers", c.Brokers()[0], "--out", out, "--benchmarks", bench,
		"--partitions", "2", "--batch-records", "4", "--record-size", "256", "--producers", "2",
		"--warmup", "200ms", "--duration", "2s")
	if code != 0 {
		t.Fatalf("code %d\n%s\n%s", code, stdout, stderr)
	}
	t.Logf("\n%s", stdout)
	for _, want := range []string{"transactional, 100 batches/txn", "records/s of idempotent"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table has no %q:\n%s", want, stdout)
		}
	}
	for _, want := range []string{"txn idempotent test", "txn txn-100", "records/s", "txn/s"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("no progress line with %q:\n%s", want, stderr)
		}
	}
	data, err := os.ReadFile(filepath.Join(out, "txn.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep txn.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Modes) != 4 || len(rep.Failures) > 0 {
		t.Fatalf("modes %+v, failures %v", rep.Modes, rep.Failures)
	}
	for i, m := range rep.Modes {
		if want := []int{0, 1, 10, 100}[i]; m.BatchesPerTxn != want {
			t.Errorf("mode %d: %d batches per transaction, want %d", i, m.BatchesPerTxn, want)
		}
		// A batch is one Produce request of a record batch per partition (requests are
		// counted as written, batches as acknowledged: a window's edges may differ).
		if m.Records == 0 || m.Bytes != m.Records*256 || m.Records != m.Batches*2*4 || m.Errors != 0 ||
			m.ProduceRequestsPerBatch < 0.9 || m.ProduceRequestsPerBatch > 1.1 {
			t.Errorf("%s: %+v", m.Mode, m)
		}
		switch {
		case m.BatchesPerTxn == 0 && (m.Transactions != 0 || m.Requests.EndTxn != 0 || m.Requests.AddPartitionsToTxn != 0):
			t.Errorf("idempotent mode used transactions: %+v", m)
		case m.BatchesPerTxn > 0 && (m.Transactions == 0 || m.Batches != m.Transactions*int64(m.BatchesPerTxn) || m.CommitLatency.Count == 0):
			t.Errorf("%s: %d transactions, %d batches, %d commits timed", m.Mode, m.Transactions, m.Batches, m.CommitLatency.Count)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "txn.md")); err != nil {
		t.Error(err)
	}
	doc, err := os.ReadFile(bench)
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	if !strings.HasPrefix(s, before+txn.SectionBegin+"\n") || !strings.HasSuffix(s, txn.SectionEnd+after) || strings.Contains(s, "\nold\n") {
		t.Errorf("BENCHMARKS.md outside the section changed, or the section was not rewritten:\n%s", s)
	}
	if !strings.Contains(s, "| transactional, 10 batches/txn |") {
		t.Errorf("section:\n%s", s)
	}
}

func TestTxnBenchUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--batches-per-txn", "1,x"}, `"x" is not a number`},
		{[]string{"--batches-per-txn", "10,10"}, "given twice"},
		{[]string{"--producers", "0"}, "producers 0 is outside"},
		{[]string{"--duration", "0s"}, "duration 0s is outside"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	} {
		code, _, stderr := runCLI(append([]string{"bench", "txn"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: code %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}
