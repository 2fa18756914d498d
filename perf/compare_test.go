package perf

import (
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{10, 10, 1000}, 10}, // one wild round does not move it
	}
	for _, tc := range tests {
		in := append([]float64(nil), tc.in...)
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		for i := range in {
			if in[i] != tc.in[i] {
				t.Errorf("Median reordered its input: %v", tc.in)
			}
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median(nil) is not NaN")
	}
}

func TestChangeAndLoss(t *testing.T) {
	tests := []struct {
		name           string
		base, now      float64
		higherIsBetter bool
		change         float64
		loss           bool
	}{
		{"rate down 10%", 100, 90, true, -0.10, true},
		{"rate down 10%, float rounding", 1, 0.9, true, -0.10, true},
		{"rate down 9.9%", 1000, 901, true, -0.099, false},
		{"rate up 20%", 100, 120, true, 0.20, false},
		{"rate down 50%", 341, 170.5, true, -0.5, true},
		{"latency up 10%", 1, 1.1, false, -0.10, true},
		{"latency up 9%", 100, 109, false, -0.09, false},
		{"latency down 50%", 2, 1, false, 0.5, false},
		{"cpu up 7x", 0.3, 2.1, false, -6, true},
		{"same", 5, 5, true, 0, false},
	}
	for _, tc := range tests {
		c := Change(tc.base, tc.now, tc.higherIsBetter)
		if math.Abs(c-tc.change) > 1e-9 {
			t.Errorf("%s: Change = %v, want %v", tc.name, c, tc.change)
		}
		if got := IsLoss(c, DefaultLossPercent); got != tc.loss {
			t.Errorf("%s: IsLoss(%v) = %v, want %v", tc.name, c, got, tc.loss)
		}
	}
	if IsLoss(-0.15, 20) || !IsLoss(-0.2, 20) {
		t.Error("the threshold is not the one given")
	}
}

// compareResult is a result with the figures the comparison tests look at.
func compareResult(w *Workload, pubMsgs, e2eP99, cpuPerGB float64) *Result {
	return &Result{Workload: w, Driver: "kafka-raw", System: "Gregor",
		PublishRateMsgs: pubMsgs, PublishRateMBs: pubMsgs * 100 / 1e6,
		ConsumeRateMsgs: pubMsgs, ConsumeRateMBs: pubMsgs * 100 / 1e6,
		PublishLatency:  LatencySummary{Count: 100, P50Us: 100, P99Us: 500, P999Us: 900, MaxUs: 5000},
		EndToEndLatency: LatencySummary{Count: 100, P50Us: 200, P99Us: e2eP99, P999Us: 2000, MaxUs: 9000},
		ServerCPUPerGB:  cpuPerGB, ClientCPUSeconds: 4,
		ServerProcesses: []ProcessCPUUse{{Name: "gregor-dp", PerGB: cpuPerGB * 0.9}, {Name: "gregor-cp", PerGB: cpuPerGB * 0.1}},
		ZeroCopy:        &ZeroCopy{SendfileBytes: 99, CopyBytes: 1, Share: 0.99},
	}
}

// sampleComparison has two workloads: one where the new build loses a quarter of its
// publish rate and its CPU per GB doubles, one where it is no different.
func sampleComparison() *Comparison {
	w1 := &Workload{Name: "max-rate-16p-1kb", Description: "Max rate, 16 partitions", Scaled: "warmup 1m0s→2s, test 5m0s→8s"}
	w2 := &Workload{Name: "fixed-rate", Description: "Fixed rate"}
	c := &Comparison{
		StartedAt: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC), FinishedAt: time.Date(2026, 12, 3, 12, 30, 0, 0, time.UTC),
		Command: "make bench-compare BASE=edce2d0~1", Machine: Machine{Cores: 2, CPU: "Xeon", Kernel: "6.18", MemoryGB: "24 GiB", Go: "go1.26"},
		LoadBefore: "0.50 0.40 0.30", LoadAfter: "1.90 1.20 0.60", Rounds: 3, Mode: "quick", LossPercent: DefaultLossPercent,
		Base: CompareSide{Label: "edce2d0~1", Commit: "46b0e32aaaaa", BinDir: ".bench-compare/bin-46b0e32aaaaa"},
		New:  CompareSide{Label: "working tree", Commit: "5cc2ee7bbbbb-dirty", BinDir: "bin"},
	}
	add := func(round int, side string, r *Result) {
		c.Runs = append(c.Runs, CompareRun{Round: round, Side: side, Workload: r.Workload.Name, Driver: r.Driver, Result: r})
	}
	// Base rates 300k, 320k, 340k (median 320k); new 230k, 240k, 900k (median 240k, one
	// wild round that the median ignores): 25% worse, ranges overlapping.
	for i, v := range [][2]float64{{300e3, 230e3}, {320e3, 240e3}, {340e3, 900e3}} {
		add(i+1, SideBase, compareResult(w1, v[0], 1000, 1.0))
		add(i+1, SideNew, compareResult(w1, v[1], 1000, 2.0))
		add(i+1, SideBase, compareResult(w2, 50e3, 800, 1.0))
		add(i+1, SideNew, compareResult(w2, 50e3, 800, 1.0))
	}
	// The new build's third run of w2 failed: the medians are over two runs.
	c.Runs[len(c.Runs)-1] = CompareRun{Round: 3, Side: SideNew, Workload: "fixed-rate", Driver: "kafka-raw", Error: "gregor-dp exited while starting"}
	return c
}

func findRow(t *testing.T, tb *CompareTable, name string) CompareRow {
	t.Helper()
	for _, r := range tb.Rows {
		if r.Figure.Name == name {
			return r
		}
	}
	t.Fatalf("%s: no row %q", tb.Workload.Name, name)
	return CompareRow{}
}

func TestComparisonTables(t *testing.T) {
	c := sampleComparison()
	tables := c.Tables()
	if len(tables) != 2 || tables[0].Workload.Name != "max-rate-16p-1kb" || tables[1].Workload.Name != "fixed-rate" {
		t.Fatalf("tables: %+v", tables)
	}
	t1, t2 := tables[0], tables[1]
	if t1.BaseRuns != 3 || t1.NewRuns != 3 || t2.BaseRuns != 3 || t2.NewRuns != 2 || len(t2.Failed) != 1 {
		t.Errorf("runs counted: %d/%d and %d/%d, failed %v", t1.BaseRuns, t1.NewRuns, t2.BaseRuns, t2.NewRuns, t2.Failed)
	}
	rate := findRow(t, t1, "publish rate (msg/s)")
	if rate.Base != 320e3 || rate.New != 240e3 || math.Abs(rate.Ratio-0.75) > 1e-9 || !rate.Loss || !rate.Overlap {
		t.Errorf("publish rate row: %+v", rate)
	}
	if rate.Verdict() != "25.0% worse" {
		t.Errorf("verdict %q", rate.Verdict())
	}
	cpu := findRow(t, t1, "server CPU (core-s per GB moved)")
	if cpu.Ratio != 2 || !cpu.Loss || cpu.Overlap || cpu.Verdict() != "100.0% worse" {
		t.Errorf("cpu row: %+v %q", cpu, cpu.Verdict())
	}
	// The breakdown doubles too, but is not judged.
	if dp := findRow(t, t1, "gregor-dp (core-s per GB)"); dp.Loss || dp.Ratio != 2 {
		t.Errorf("gregor-dp row: %+v", dp)
	}
	if p99 := findRow(t, t1, "end-to-end latency p99"); p99.Loss || p99.Verdict() != "same" {
		t.Errorf("e2e p99 row: %+v", p99)
	}
	for _, r := range t2.Rows {
		if r.Loss {
			t.Errorf("fixed-rate: %s marked a loss: %+v", r.Figure.Name, r)
		}
	}
	// The four rates and the CPU per GB.
	if s := Summarize(tables); len(s.Losses) != 5 || s.FailedRuns != 1 {
		t.Errorf("summary: %+v", s)
	}
}

func TestComparisonMissingFigureIsLoss(t *testing.T) {
	w := &Workload{Name: "w"}
	base, lost := compareResult(w, 1000, 500, 1), compareResult(w, 1000, 500, 1)
	lost.ZeroCopy = nil // nothing fetched by the new build
	c := &Comparison{Base: CompareSide{Label: "a"}, New: CompareSide{Label: "b"}, Runs: []CompareRun{
		{Round: 1, Side: SideBase, Workload: "w", Driver: "kafka-raw", Result: base},
		{Round: 1, Side: SideNew, Workload: "w", Driver: "kafka-raw", Result: lost},
	}}
	row := findRow(t, c.Tables()[0], "fetched bytes sent by sendfile (%)")
	if !row.Loss || row.Verdict() != "missing in new" {
		t.Errorf("row: %+v %q", row, row.Verdict())
	}
	// A run with failed publishes does not count.
	lost.PublishErrors = 3
	tb := c.Tables()[0]
	if tb.NewRuns != 0 || len(tb.Failed) != 1 || !strings.Contains(tb.Failed[0], "3 publishes failed") {
		t.Errorf("table: %+v", tb)
	}
	if r := findRow(t, tb, "publish rate (msg/s)"); r.Loss {
		t.Errorf("a side with no run counted marks losses: %+v", r)
	}
}

func TestRenderComparison(t *testing.T) {
	c := sampleComparison()
	c.ResultsPath = "perf/results/compare-20261203-120000.json"
	md := RenderComparison(c, c.Tables())
	for _, want := range []string{
		"## Whole-system A/B: `edce2d0~1` → working tree — 2026-12-03",
		"**Date:** 2026-12-03 12:00 UTC (took 30m0s)",
		"**Base (A):** edce2d0~1, commit `46b0e32aaaaa`",
		"**New (B):** working tree, commit `5cc2ee7bbbbb-dirty`",
		"**Machine:** 2 cores (Xeon), Linux 6.18, 24 GiB RAM, go1.26",
		"before: 0.50 0.40 0.30, after: 1.90 1.20 0.60",
		"**Rounds:** 3 per side",
		"**Command:** `make bench-compare BASE=edce2d0~1`",
		"**Raw results:** `perf/results/compare-20261203-120000.json`",
		"### max-rate-16p-1kb — kafka-raw",
		"(quick: warmup 1m0s→2s, test 5m0s→8s)",
		"| figure | base: edce2d0~1 | new: working tree | new/base | verdict |",
		"| publish rate (msg/s) | 320,000 ±6% | 240,000 ±140% | ×0.750 | 25.0% worse **LOSS** (ranges overlap) |",
		"| server CPU (core-s per GB moved) | 1.000 ±0% | 2.000 ±0% | ×2.000 | 100.0% worse **LOSS** |",
		"| ↳ gregor-dp (core-s per GB) | 0.900 ±0% | 1.800 ±0% | ×2.000 | 100.0% worse (not judged) |",
		"| end-to-end latency p99 | 1.00 ms ±0% | 1.00 ms ±0% | ×1.000 | same |",
		"| fetched bytes sent by sendfile (%) | 99.0 ±0% | 99.0 ±0% | ×1.000 | same |",
		"Runs counted: base 3, new 2.",
		"- failed: round 3, new working tree: gregor-dp exited while starting",
		"**5 judged figure(s) lost 10% or more** (**LOSS**)",
		"- max-rate-16p-1kb (kafka-raw): publish rate (msg/s), 25.0% worse",
		"**1 run(s) failed**",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	// Every table row has as many cells as its header.
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "| ") && strings.Count(line, "|") != 6 {
			t.Errorf("row with %d separators: %s", strings.Count(line, "|"), line)
		}
	}

	// Without a loss or a failure it says so.
	clean := sampleComparison()
	clean.Runs = clean.Runs[:0]
	for _, r := range sampleComparison().Runs {
		if r.Workload == "fixed-rate" && r.OK() {
			clean.Runs = append(clean.Runs, r)
		}
	}
	md = RenderComparison(clean, clean.Tables())
	if !strings.Contains(md, "**No judged figure lost 10% or more.**") || strings.Contains(md, LossMarker+" (") || strings.Contains(md, "failed") {
		t.Errorf("clean comparison:\n%s", md)
	}
}

func TestComparisonJSONRoundTrip(t *testing.T) {
	c := sampleComparison()
	path := filepath.Join(t.TempDir(), "compare.json")
	if err := WriteJSON(path, c); err != nil {
		t.Fatal(err)
	}
	back, err := ReadComparison(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.ResultsPath != path || len(back.Runs) != len(c.Runs) || back.Base.Commit != c.Base.Commit {
		t.Fatalf("round trip: %+v", back)
	}
	// Rendered from the file, it is the same table (less the line naming the file).
	back.ResultsPath = ""
	if a, b := RenderComparison(c, c.Tables()), RenderComparison(back, back.Tables()); a != b {
		t.Errorf("rendered from JSON:\n%s\noriginal:\n%s", b, a)
	}
}
