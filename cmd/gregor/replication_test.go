package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/perf/replication"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

// TestReplicationBench runs `bench-suite --replication` end to end on a tiny scale — one
// one-second workload on RF 1 and RF 3, a 16 MiB catch-up, one failover — against real
// gregor-cp and gregor-dp processes, and checks the report, its files and that only the
// replication section of BENCHMARKS.md is rewritten. The ISR is reviewed every second
// (replica lag time max 2 s), so that restart-to-ISR does not wait for the default 15 s;
// the registration TTL is etcd's default minimum, 2 s, since a 1 s lease can be lost on a
// machine busy with other tests (the benchmark's report shows it when that happens).
func TestReplicationBench(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 4 processes and kills two of them: about half a minute")
	}
	cp, _ := testcluster.Binaries(t)
	dir, _ := writeWorkload(t)
	out := t.TempDir()
	bench := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	const before, after = "# Benchmarks\n\n", "\n## By hand\n"
	if err := os.WriteFile(bench, []byte(before+replication.SectionBegin+"\nold\n"+replication.SectionEnd+after), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI("bench", "suite", "--replication", "--quick", "--gregor-bin", filepath.Dir(cp),
		"--workloads", dir, "--replication-workloads", "tiny", "--out", out, "--benchmarks", bench,
		"--backlog-gb", "0.015625", "--failover-trials", "1", "--replica-lag-time-max", "2s", "--registration-ttl", "2s")
	if code != 0 {
		t.Fatalf("code %d\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"replication", "catch-up:", "failover 1/1"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("no progress line with %q:\n%s", want, stderr)
		}
	}
	data, err := os.ReadFile(filepath.Join(out, "replication-quick-ttl2s.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep replication.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Produce) != 2 || rep.Produce[0].ReplicationFactor != 1 || rep.Produce[1].ReplicationFactor != 3 {
		t.Fatalf("produce runs: %+v", rep.Produce)
	}
	for _, pr := range rep.Produce {
		if pr.Result.PublishedMessages == 0 || pr.Result.ConsumedMessages == 0 || !pr.Fencing.Clean() {
			t.Errorf("%s: published %d, consumed %d, fencing %+v", pr.Setting, pr.Result.PublishedMessages, pr.Result.ConsumedMessages, pr.Fencing)
		}
	}
	if rep.Produce[1].Result.Workload.Acks != "all" {
		t.Errorf("RF 3 run at acks=%s", rep.Produce[1].Result.Workload.Acks)
	}
	cu := rep.CatchUp
	// 16 MiB may replicate between two polls: no rate is asserted, only what moved.
	if cu == nil || cu.BacklogBytes < 16<<20 || cu.ReplicatedBytes < float64(cu.BacklogBytes) || cu.RestartToCaughtUpSec <= 0 ||
		cu.RestartToISRSec < cu.RestartToCaughtUpSec || cu.LeaderFetch == nil || cu.LeaderFetch.SendfileBytes+cu.LeaderFetch.CopyBytes <= 0 {
		t.Errorf("catch-up: %+v", cu)
	}
	if fo := rep.Failover; fo == nil || len(fo.Trials) != 1 || fo.Trials[0].FirstAckSec <= 0 || fo.Trials[0].Successor == fo.Trials[0].Killed {
		t.Errorf("failover: %+v", fo)
	}
	for _, f := range []string{"replication-quick-ttl2s.md", "tiny-rf1-acks1-kafka-raw-ttl2s.json", "tiny-rf3-acksall-kafka-raw-ttl2s.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	doc, err := os.ReadFile(bench)
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	if !strings.HasPrefix(s, before+replication.SectionBegin+"\n") || !strings.HasSuffix(s, replication.SectionEnd+after) || strings.Contains(s, "\nold\n") {
		t.Errorf("BENCHMARKS.md outside the section changed, or the section was not rewritten:\n%s", s)
	}
	for _, want := range []string{"#### tiny", "A follower catching up", "Failover and restart to ISR"} {
		if !strings.Contains(s, want) {
			t.Errorf("section has no %q:\n%s", want, s)
		}
	}
}
