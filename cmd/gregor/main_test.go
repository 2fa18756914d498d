package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gregor-streaming/gregor/internal/reserve"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/perf"
)

// tinyWorkload is a one-second fixed-rate run.
const tinyWorkload = `
name: tiny
topics: 1
partitionsPerTopic: 2
messageSize: 256
producersPerTopic: 1
consumerPerSubscription: 1
producerRate: 2000
batchSizeBytes: 16384
lingerMs: 1
warmupDurationSeconds: 0.2
testDurationSeconds: 1
`

func writeWorkload(t *testing.T) (dir, file string) {
	t.Helper()
	dir = t.TempDir()
	file = filepath.Join(dir, "tiny.yaml")
	if err := os.WriteFile(file, []byte(tinyWorkload), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, file
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, strings.NewReader(""), &o, &e, func(string) string { return "" })
	return code, o.String(), e.String()
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage:"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"bench", "run"}, 2, "--workload and --driver are required"},
		{[]string{"bench", "run", "--workload", "x.yaml"}, 2, "required"},
		{[]string{"bench", "suite"}, 2, "exactly one of --quick and --full"},
		{[]string{"bench", "suite", "--quick", "--full"}, 2, "exactly one"},
		{[]string{"bench", "run", "--workload", "x", "--driver", "redis", "--server-pid", "abc"}, 2, "not a pid"},
		{[]string{"bench", "run", "--workload", "/nonexistent.yaml", "--driver", "redis"}, 1, "no such file"},
	}
	for _, tc := range tests {
		code, _, stderr := runCLI(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: code %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}

func TestBenchNoBroker(t *testing.T) {
	_, file := writeWorkload(t)
	// A reserved port: bound by no listener, and no other test's either.
	res, err := reserve.TCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	addr := res.Addr()
	code, _, stderr := runCLI("bench", "run", "--workload", file, "--driver", "kafka", "--bootstrap", addr)
	if code != 1 || !strings.Contains(stderr, "no Kafka-compatible broker at "+addr) {
		t.Errorf("code %d, stderr %q", code, stderr)
	}
}

// TestBenchAgainstGregor runs one workload through the CLI against a real single-node
// Gregor cluster and checks the table and the JSON result.
func TestBenchAgainstGregor(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	_, file := writeWorkload(t)
	out := t.TempDir()
	code, stdout, stderr := runCLI("bench", "run", "--workload", file, "--driver", "kafka-raw", "--bootstrap", c.Brokers()[0],
		"--metrics", "http://127.0.0.1:1/metrics", "--out", out)
	if code != 0 {
		t.Fatalf("code %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "tiny") || !strings.Contains(stderr, "pub") {
		t.Errorf("no table or progress line:\n%s\n%s", stdout, stderr)
	}
	data, err := os.ReadFile(filepath.Join(out, "tiny-kafka-raw.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(`"publishRateMsgs"`)) {
		t.Errorf("json: %s", data)
	}
}

// TestSuiteRewritesOnlyItsSection runs the suite on one tiny workload with the peers
// that are installed and a real single-node Gregor cluster, and checks BENCHMARKS.md
// outside the markers is untouched.
func TestSuiteRewritesOnlyItsSection(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	dir, _ := writeWorkload(t)
	out := t.TempDir()
	bench := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	const before, after = "# Benchmarks\n\nBy hand.\n\n", "\n## Storage engine\n\nAlso by hand.\n"
	if err := os.WriteFile(bench, []byte(before+perf.SectionBegin+"\nold\n"+perf.SectionEnd+after), 0o644); err != nil {
		t.Fatal(err)
	}
	drv := "kafka"
	for _, b := range [][2]string{{"jetstream", "nats-server"}, {"redis", "redis-server"}} {
		if _, err := exec.LookPath(b[1]); err == nil {
			drv += "," + b[0]
		}
	}
	code, stdout, stderr := runCLI("bench", "suite", "--quick", "--workloads", dir, "--out", out, "--benchmarks", bench,
		"--drivers", drv, "--bootstrap", c.Brokers()[0], "--metrics", "http://127.0.0.1:1/metrics")
	if code != 0 {
		t.Fatalf("code %d\n%s\n%s", code, stdout, stderr)
	}
	data, err := os.ReadFile(bench)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	if !strings.HasPrefix(s, before+perf.SectionBegin+"\n") || !strings.HasSuffix(s, perf.SectionEnd+after) || strings.Contains(s, "\nold\n") {
		t.Errorf("BENCHMARKS.md outside the section changed, or the section was not rewritten:\n%s", s)
	}
	if !strings.Contains(s, "### tiny") || !strings.Contains(s, "(kafka)") {
		t.Errorf("section:\n%s", s)
	}
	for _, f := range []string{"suite-quick.json", "tiny-kafka.json", "tiny-throughput.svg", "tiny-latency.svg"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}

	// bench-report regenerates the same section from the saved suite.
	if err := os.WriteFile(bench, []byte(before+perf.SectionBegin+"\n"+perf.SectionEnd+after), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI("bench", "report", "--suite", filepath.Join(out, "suite-quick.json"), "--benchmarks", bench); code != 0 {
		t.Fatalf("bench-report: %d %s", code, stderr)
	}
	again, _ := os.ReadFile(bench)
	if string(again) != s {
		t.Errorf("bench-report wrote\n%s\nbench-suite wrote\n%s", again, s)
	}
}
