package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/perf"
)

// fakeBins writes a gregor-cp and a gregor-dp that exit at once, so that every run
// fails fast at start-up.
func fakeBins(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, b := range []string{"gregor-cp", "gregor-dp"} {
		if err := os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\necho cannot start >&2\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestCompareUsage(t *testing.T) {
	bins := fakeBins(t)
	wdir, _ := writeWorkload(t)
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"bench", "compare"}, 2, "--base-bin is required"},
		{[]string{"bench", "compare", "--base-bin", bins, "--rounds", "0"}, 2, "--rounds must be at least 1"},
		{[]string{"bench", "compare", "--base-bin", bins, "--drivers", "redis"}, 2, `"redis" cannot drive Gregor`},
		{[]string{"bench", "compare", "--base-bin", bins, "extra"}, 2, "unexpected argument"},
		{[]string{"bench", "compare", "--base-bin", t.TempDir(), "--new-bin", bins}, 1, "no gregor-cp and gregor-dp in"},
		{[]string{"bench", "compare", "--base-bin", bins, "--new-bin", bins, "--workloads", wdir, "--only", "nope"}, 2, `no workload "nope" (have tiny)`},
		{[]string{"bench", "compare", "--report", "/nonexistent.json"}, 1, "no such file"},
	}
	for _, tc := range tests {
		code, _, stderr := runCLI(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: code %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}

func TestSelectWorkloads(t *testing.T) {
	ws := []*perf.Workload{{Name: "max-rate-1p-100b"}, {Name: "max-rate-16p-1kb"}, {Name: "catch-up-4gib"}}
	paths := []string{"w/1-max-rate-1p-100b.yaml", "w/2-max-rate-16p-1kb.yaml", "w/4-catch-up-4gib.yaml"}
	got, gp, err := selectWorkloads(ws, paths, "catch-up-4gib, 1-max-rate-1p-100b.yaml")
	if err != nil || len(got) != 2 || got[0] != ws[0] || got[1] != ws[2] || gp[1] != paths[2] {
		t.Errorf("got %v %v %v", got, gp, err)
	}
	if all, _, err := selectWorkloads(ws, paths, " "); err != nil || len(all) != 3 {
		t.Errorf("empty filter: %v %v", all, err)
	}
	if _, _, err := selectWorkloads(ws, paths, "max-rate-1p-100b,typo"); err == nil || !strings.Contains(err.Error(), `"typo"`) {
		t.Errorf("unknown name: %v", err)
	}
}

func TestComparePlanAlternates(t *testing.T) {
	ws := []*perf.Workload{{Name: "a"}, {Name: "b"}}
	base := compareSide{name: perf.SideBase}
	next := compareSide{name: perf.SideNew}
	jobs := comparePlan(3, ws, []string{"a.yaml", "b.yaml"}, []string{"kafka-raw", "kafka"}, base, next)
	if len(jobs) != 3*2*2*2 {
		t.Fatalf("%d jobs", len(jobs))
	}
	for i, j := range jobs {
		// Odd rounds A B, even rounds B A.
		want := perf.SideBase
		if (i%2 == 1) != (j.round%2 == 0) {
			want = perf.SideNew
		}
		if j.side.name != want {
			t.Errorf("job %d (round %d) runs %s, want %s (A B, then B A)", i, j.round, j.side.name, want)
		}
		if i%2 == 1 && (j.w != jobs[i-1].w || j.driver != jobs[i-1].driver || j.round != jobs[i-1].round) {
			t.Errorf("job %d is not the pair of job %d: %+v %+v", i, i-1, j, jobs[i-1])
		}
		if wantRound := i/8 + 1; j.round != wantRound {
			t.Errorf("job %d in round %d, want %d", i, j.round, wantRound)
		}
	}
}

// TestCompareFailedRuns runs the whole command on servers that cannot start: every run
// fails at once, each is recorded in order, the table says so, the exit status is 1 and
// no data directory is left behind.
// failingCompare runs bench compare of rounds rounds with bins for both sides, which
// must fail every run (exit status 1), and returns what it printed, the results' path
// and the directory StartGregor made its data directories in.
func failingCompare(t *testing.T, bins string, rounds int) (stdout, stderr, out, tmp string) {
	t.Helper()
	tmp = t.TempDir()
	t.Setenv("TMPDIR", tmp) // where StartGregor makes its data directories
	wdir, _ := writeWorkload(t)
	out = filepath.Join(t.TempDir(), "compare.json")
	code, stdout, stderr := runCLI("bench", "compare", "--base-bin", bins, "--new-bin", bins, "--base-label", "HEAD~1",
		"--base-commit", "abc", "--new-commit", "def", "--workloads", wdir, "--rounds", fmt.Sprint(rounds), "--settle", "0", "--out", out)
	if code != 1 {
		t.Fatalf("code %d\n%s\n%s", code, stdout, stderr)
	}
	return stdout, stderr, out, tmp
}

func TestCompareFailedRuns(t *testing.T) {
	stdout, stderr, out, tmp := failingCompare(t, fakeBins(t), 2)
	for _, want := range []string{"[run 1/4] round 1/2 · base (HEAD~1) · tiny · kafka-raw", "[run 4/4", "round 2/2 · new (working tree)", "cannot start"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("progress lacks %q:\n%s", want, stderr)
		}
	}
	for _, want := range []string{"base: HEAD~1", "commit `abc`", "commit `def`", "Runs counted: base 0, new 0.", "- failed: round 2, new working tree:", "**4 run(s) failed**"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
	c, err := perf.ReadComparison(out)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, r := range c.Runs {
		order = append(order, r.Side)
	}
	if strings.Join(order, " ") != "base new new base" || c.Rounds != 2 || c.LoadAfter == "" {
		t.Errorf("runs %v, comparison %+v", order, c)
	}
	if md, err := os.ReadFile(strings.TrimSuffix(out, ".json") + ".md"); err != nil || string(md) != stdout {
		t.Errorf("the .md beside the JSON differs from what was printed (%v)", err)
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("left in TMPDIR: %v", left)
	}
}

// TestCompareReportExitStatus renders saved comparisons: 0 without a loss, 3 with one.
func TestCompareReportExitStatus(t *testing.T) {
	w := &perf.Workload{Name: "w"}
	result := func(rate float64) *perf.Result {
		return &perf.Result{Workload: w, Driver: "kafka-raw", PublishRateMsgs: rate, PublishRateMBs: rate / 1e4}
	}
	for _, tc := range []struct {
		newRate float64
		code    int
		want    string
	}{
		{95, 0, "**No judged figure lost 10% or more.**"},
		{90, exitLoss, "| publish rate (msg/s) | 100 | 90 | ×0.900 | 10.0% worse **LOSS** |"},
	} {
		c := &perf.Comparison{StartedAt: time.Now(), Rounds: 1, Base: perf.CompareSide{Label: "a"}, New: perf.CompareSide{Label: "b"},
			Runs: []perf.CompareRun{
				{Round: 1, Side: perf.SideBase, Workload: "w", Driver: "kafka-raw", Result: result(100)},
				{Round: 1, Side: perf.SideNew, Workload: "w", Driver: "kafka-raw", Result: result(tc.newRate)},
			}}
		path := filepath.Join(t.TempDir(), "c.json")
		if err := perf.WriteJSON(path, c); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runCLI("bench", "compare", "--report", path)
		if code != tc.code || !strings.Contains(stdout, tc.want) {
			t.Errorf("new rate %v: code %d (want %d), output lacks %q:\n%s%s", tc.newRate, code, tc.code, tc.want, stdout, stderr)
		}
	}
}

func TestRoughly(t *testing.T) {
	for d, want := range map[time.Duration]string{
		16400 * time.Millisecond: "16s", 90 * time.Second: "1m30s", 47*time.Minute + 40*time.Second: "48m", 2 * time.Hour: "2h0m",
	} {
		if got := roughly(d); got != want {
			t.Errorf("roughly(%v) = %q, want %q", d, got, want)
		}
	}
}

// listeningBins writes a gregor-cp and a gregor-dp that listen on the addresses they are
// given and close every connection: the cluster starts, and the run on it fails.
func listeningBins(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatalf("python3, which a fresh machine has and the fake servers run on: %v", err)
	}
	const script = `#!/usr/bin/env python3
import socket, sys, threading, time
args = sys.argv[1:]
addrs = [args[i + 1] for i, a in enumerate(args) if a in ('--client-addr', '--peer-addr', '--listen', '--http')]
print('fake server up on', ' '.join(addrs), flush=True)
def serve(s):
    while True:
        c, _ = s.accept()
        c.close()
for a in addrs:
    host, port = a.rsplit(':', 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen()
    threading.Thread(target=serve, args=(s,), daemon=True).start()
time.sleep(120)
`
	dir := t.TempDir()
	for _, b := range []string{"gregor-cp", "gregor-dp"} {
		if err := os.WriteFile(filepath.Join(dir, b), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestCompareKeepsFailedRunLogs: a run that fails once its servers are up keeps their
// output beside the results (their own directory is removed with them), and the table
// says where.
func TestCompareKeepsFailedRunLogs(t *testing.T) {
	stdout, stderr, out, tmp := failingCompare(t, listeningBins(t), 1)
	c, err := perf.ReadComparison(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Runs) != 2 {
		t.Fatalf("%d runs, want 2", len(c.Runs))
	}
	for _, r := range c.Runs {
		if r.Logs == "" {
			t.Fatalf("run %+v failed without its servers' logs kept\n%s", r, stderr)
		}
		for _, f := range []string{"gregor-cp.log", "gregor-dp.log"} {
			b, err := os.ReadFile(filepath.Join(r.Logs, f))
			if err != nil || !strings.Contains(string(b), "fake server up on") {
				t.Errorf("%s of run %d %s: %q %v", f, r.Round, r.Side, b, err)
			}
		}
		if !strings.Contains(stdout, "(servers' logs: "+r.Logs+")") {
			t.Errorf("the table does not say where run %d %s's logs are:\n%s", r.Round, r.Side, stdout)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("left in TMPDIR: %v", left)
	}
}
