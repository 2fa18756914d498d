package perf

import (
	"bytes"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRewriteSection(t *testing.T) {
	const human = "# Benchmarks\n\nHand-written notes, kept byte for byte.\r\n\n"
	const after = "\n## Storage engine\n\ntables by hand\n"
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"empty file", "", SectionBegin + "\nNEW\n" + SectionEnd + "\n"},
		{"no markers: appended", human, human + "\n" + SectionBegin + "\nNEW\n" + SectionEnd + "\n"},
		{"no trailing newline", "x", "x\n\n" + SectionBegin + "\nNEW\n" + SectionEnd + "\n"},
		{"replaced between markers", human + SectionBegin + "\nOLD\nOLDER\n" + SectionEnd + after,
			human + SectionBegin + "\nNEW\n" + SectionEnd + after},
		{"markers adjacent", human + SectionBegin + "\n" + SectionEnd + after,
			human + SectionBegin + "\nNEW\n" + SectionEnd + after},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RewriteSection([]byte(tc.doc), "NEW")
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
			// Idempotent: a second rewrite changes nothing.
			again, err := RewriteSection(got, "NEW")
			if err != nil || !bytes.Equal(again, got) {
				t.Errorf("second rewrite differs: %q (%v)", again, err)
			}
		})
	}
	for _, bad := range []string{SectionEnd + "\n" + SectionBegin + "\n", SectionBegin + "\n", SectionBegin + SectionEnd + SectionBegin + SectionEnd} {
		if _, err := RewriteSection([]byte(bad), "NEW"); err == nil {
			t.Errorf("no error for %q", bad)
		}
	}
}

func sampleSuite() *Suite {
	w := &Workload{Name: "fixed-rate", Description: "Fixed rate", Topics: 1, PartitionsPerTopic: 1, MessageSize: 1024,
		ProducerRate: 50000, Acks: "1", BatchSizeBytes: 16384, Warmup: time.Second, Test: 8 * time.Second, Scaled: "test 5m0s→8s"}
	mk := func(driver, system string, rate, p99 float64) *Result {
		return &Result{Workload: w, Driver: driver, System: system, Durability: "d-" + system, Command: "bin/gregor bench --driver " + driver,
			PublishRateMsgs: rate, PublishRateMBs: rate * 1024 / 1e6, ConsumeRateMsgs: rate, ConsumeRateMBs: rate * 1024 / 1e6,
			PublishLatency:  LatencySummary{Count: 10, P50Us: p99 / 4, P99Us: p99, P999Us: p99 * 2, MaxUs: p99 * 3},
			EndToEndLatency: LatencySummary{Count: 10, P50Us: p99 / 3, P99Us: p99 * 1.1, P999Us: p99 * 2, MaxUs: p99 * 4},
			ServerCPUPerGB:  1.5, ZeroCopy: nil}
	}
	g := mk("kafka-raw", "Gregor", 50000, 800)
	g.ZeroCopy = &ZeroCopy{SendfileBytes: 9, CopyBytes: 1, Share: 0.9}
	return &Suite{Mode: "quick", StartedAt: time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC), Commit: "abc", Machine: Machine{Cores: 2, CPU: "cpu", Kernel: "6", MemoryGB: "1 GiB", Go: "go1"},
		Command: "bin/gregor bench-suite --quick", Skipped: []string{"kafka: no broker"},
		Results: []*Result{g, mk("jetstream", "NATS JetStream 2.9.10", 49000, 4000), mk("redis", "Redis Streams 7.0.15", 50000, 2000)}}
}

func TestSection(t *testing.T) {
	s := Section(sampleSuite(), "perf/results", "### Reading\n\nBy hand.\n")
	for _, want := range []string{
		"**Date:** 2026-11-22 01:00 UTC", "**Commit:** `abc`", "`bin/gregor bench-suite --quick`",
		"| | Gregor (kafka-raw) | NATS JetStream 2.9.10 | Redis Streams 7.0.15 |",
		"| publish latency p99 | 800 µs | 4.00 ms (×5) | 2.00 ms (×2.5) |",
		"| fetched bytes sent by sendfile | 90.0% | - | - |",
		"![fixed-rate throughput](perf/results/fixed-rate-throughput.svg)",
		"- kafka: no broker", "quick: test 5m0s→8s", "d-NATS JetStream 2.9.10",
		"Lowest end-to-end p99: Gregor (kafka-raw)", "### Reading\n\nBy hand.",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("section lacks %q:\n%s", want, s)
		}
	}
}

func TestChartsAreSVG(t *testing.T) {
	dir := t.TempDir()
	s := sampleSuite()
	if err := WriteCharts(dir, s.Results); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"fixed-rate-throughput.svg", "fixed-rate-latency.svg"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		dec := xml.NewDecoder(bytes.NewReader(data))
		for {
			_, err := dec.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s is not well-formed XML: %v", f, err)
			}
		}
		if !bytes.Contains(data, []byte("Gregor (kafka-raw)")) {
			t.Errorf("%s has no label", f)
		}
	}
}

func TestWriteTableAndJSON(t *testing.T) {
	s := sampleSuite()
	var b bytes.Buffer
	WriteTable(&b, s.Results)
	if !strings.Contains(b.String(), "50,000") || !strings.Contains(b.String(), "90.0%") {
		t.Errorf("table:\n%s", b.String())
	}
	path := filepath.Join(t.TempDir(), "x", "suite.json")
	if err := WriteJSON(path, s); err != nil {
		t.Fatal(err)
	}
	back, err := ReadSuite(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Results) != 3 || back.Results[0].ZeroCopy.Share != 0.9 || back.Results[0].Workload.Test != 8*time.Second {
		t.Errorf("round trip: %+v", back.Results[0])
	}
}

func TestUpdateBenchmarksCreates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	if err := UpdateBenchmarks(path, "S"); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if string(data) != "# Benchmarks\n\n"+SectionBegin+"\nS\n"+SectionEnd+"\n" {
		t.Errorf("%q", data)
	}
}
