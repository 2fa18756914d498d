package perf

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Markers of the generated section of BENCHMARKS.md. Everything outside them belongs to
// people and is left byte for byte as it is.
const (
	SectionBegin = "<!-- perf-suite:begin -->"
	SectionEnd   = "<!-- perf-suite:end -->"
)

// WriteTable writes results as a text table, one row per run.
func WriteTable(out *bytes.Buffer, results []*Result) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tsystem\tpub msg/s\tpub MB/s\tcons msg/s\tcons MB/s\tpub p50\tpub p99\tpub p99.9\te2e p50\te2e p99\te2e p99.9\te2e max\tsrv CPU s/GB\tzero-copy\terrors\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%s\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n",
			r.Workload.Name, r.Label(), groupInt(r.PublishRateMsgs), r.PublishRateMBs, groupInt(r.ConsumeRateMsgs), r.ConsumeRateMBs,
			FormatMicros(r.PublishLatency.P50Us), FormatMicros(r.PublishLatency.P99Us), FormatMicros(r.PublishLatency.P999Us),
			FormatMicros(r.EndToEndLatency.P50Us), FormatMicros(r.EndToEndLatency.P99Us), FormatMicros(r.EndToEndLatency.P999Us), FormatMicros(r.EndToEndLatency.MaxUs),
			cpuPerGB(r), zeroCopy(r), r.PublishErrors)
	}
	tw.Flush()
}

func cpuPerGB(r *Result) string {
	if r.ServerCPUPerGB <= 0 {
		return "-"
	}
	return strconv.FormatFloat(r.ServerCPUPerGB, 'f', 2, 64)
}

func zeroCopy(r *Result) string {
	if r.ZeroCopy == nil {
		return "-"
	}
	return strconv.FormatFloat(100*r.ZeroCopy.Share, 'f', 1, 64) + "%"
}

// groupInt writes v rounded, with thousands separators.
func groupInt(v float64) string {
	if v <= 0 {
		return "-"
	}
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// byWorkload groups results by workload name, in the order they first appear.
func byWorkload(results []*Result) (names []string, groups map[string][]*Result) {
	groups = map[string][]*Result{}
	for _, r := range results {
		n := r.Workload.Name
		if _, ok := groups[n]; !ok {
			names = append(names, n)
		}
		groups[n] = append(groups[n], r)
	}
	return names, groups
}

// row is one line of a workload's comparison table.
type row struct {
	name string
	// value extracts the figure; ok false prints "-".
	value  func(r *Result) (v float64, ok bool)
	format func(v float64) string
	// higherIsBetter orients the ratio: the reference's advantage is ref/this for
	// rates and this/ref for latencies and costs.
	higherIsBetter bool
}

func lat(f func(r *Result) float64) func(r *Result) (float64, bool) {
	return func(r *Result) (float64, bool) { v := f(r); return v, v > 0 }
}

var comparisonRows = []row{
	{"publish rate (msg/s)", func(r *Result) (float64, bool) { return r.PublishRateMsgs, r.PublishRateMsgs > 0 }, groupInt, true},
	{"publish rate (MB/s)", func(r *Result) (float64, bool) { return r.PublishRateMBs, r.PublishRateMBs > 0 }, func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }, true},
	{"consume rate (msg/s)", func(r *Result) (float64, bool) { return r.ConsumeRateMsgs, r.ConsumeRateMsgs > 0 }, groupInt, true},
	{"consume rate (MB/s)", func(r *Result) (float64, bool) { return r.ConsumeRateMBs, r.ConsumeRateMBs > 0 }, func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }, true},
	{"publish latency p50", lat(func(r *Result) float64 { return r.PublishLatency.P50Us }), FormatMicros, false},
	{"publish latency p99", lat(func(r *Result) float64 { return r.PublishLatency.P99Us }), FormatMicros, false},
	{"publish latency p99.9", lat(func(r *Result) float64 { return r.PublishLatency.P999Us }), FormatMicros, false},
	{"publish latency max", lat(func(r *Result) float64 { return r.PublishLatency.MaxUs }), FormatMicros, false},
	{"end-to-end latency p50", lat(func(r *Result) float64 { return r.EndToEndLatency.P50Us }), FormatMicros, false},
	{"end-to-end latency p99", lat(func(r *Result) float64 { return r.EndToEndLatency.P99Us }), FormatMicros, false},
	{"end-to-end latency p99.9", lat(func(r *Result) float64 { return r.EndToEndLatency.P999Us }), FormatMicros, false},
	{"end-to-end latency max", lat(func(r *Result) float64 { return r.EndToEndLatency.MaxUs }), FormatMicros, false},
	{"server CPU (core-s per GB moved)", func(r *Result) (float64, bool) { return r.ServerCPUPerGB, r.ServerCPUPerGB > 0 }, func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }, false},
	{"client CPU (core-s in window)", func(r *Result) (float64, bool) { return r.ClientCPUSeconds, r.ClientCPUSeconds > 0 }, func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }, false},
}

// ratio is the reference's advantage over v: > 1 means the reference is better.
func ratio(ref, v float64, higherIsBetter bool) string {
	if ref <= 0 || v <= 0 {
		return ""
	}
	x := v / ref
	if higherIsBetter {
		x = ref / v
	}
	switch {
	case x >= 10:
		return fmt.Sprintf(" (×%.0f)", x)
	case x >= 0.1:
		return fmt.Sprintf(" (×%.2g)", x)
	}
	return fmt.Sprintf(" (×%.1g)", x)
}

// Section renders the generated part of BENCHMARKS.md for a suite run: how it was made,
// one table per workload with the systems side by side and ratios, and links to the
// charts (chartDir is their path relative to BENCHMARKS.md). handReading, when not empty,
// is a hand-written reading of the figures (perf/READING.md), placed before the tables:
// the generator owns the section, so the words a person writes live in a file of their
// own and are carried into it on every rewrite.
func Section(s *Suite, chartDir, handReading string) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("## Side by side: the bench suite (`perf/`)\n\n")
	p("Generated by `gregor bench-suite`; do not edit between the markers — rerun it.\n\n")
	p("- **Date:** %s  \n", s.StartedAt.UTC().Format("2006-01-02 15:04 UTC"))
	p("- **Commit:** `%s`  \n", s.Commit)
	p("- **Machine:** %s  \n", s.Machine)
	p("- **Suite:** %s  \n", s.Mode)
	p("- **Command:** `%s`  \n", s.Command)
	if s.LoadBefore != "" {
		p("- **Load average** (1/5/15 min) before: %s, after: %s — on %d cores; other work on the machine skews every figure\n", s.LoadBefore, s.LoadAfter, s.Machine.Cores)
	}
	if s.Mode == "quick" {
		p("\nThe quick suite scales workloads down: warmup ≤ %v, test ≤ %v, catch-up backlog ≤ %s. `make bench-full` runs them as written.\n",
			QuickWarmupMax, QuickTestMax, formatBytes(QuickBacklogMax))
	}
	p("\nClient and servers share the machine's cores, so every figure is a lower bound; compare systems by the ratios, measured in one run. Latencies run from each message's *intended* send time (coordinated omission corrected at fixed rates). Server CPU is user+system time of the server processes from `/proc/<pid>/stat`, per GB of payload published plus consumed in the window.\n")
	if len(s.Skipped) > 0 {
		p("\n**Not run:**\n\n")
		for _, sk := range s.Skipped {
			p("- %s\n", sk)
		}
	}
	// Durability, once per system.
	seen := map[string]bool{}
	var dur []string
	for _, r := range s.Results {
		if !seen[r.System] {
			seen[r.System] = true
			dur = append(dur, fmt.Sprintf("- **%s**: %s", r.System, r.Durability))
		}
	}
	if len(dur) > 0 {
		p("\n**Durability as run** (what an acknowledged publish means):\n\n%s\n", strings.Join(dur, "\n"))
	}
	if r := strings.TrimSpace(handReading); r != "" {
		p("\n%s\n", r)
	}
	names, groups := byWorkload(s.Results)
	for _, n := range names {
		rs := groups[n]
		w := rs[0].Workload
		p("\n### %s\n\n", n)
		if w.Description != "" {
			p("%s. ", w.Description)
		}
		p("acks=%s, batch ≤ %s, linger %v ms", w.Acks, formatBytes(float64(w.BatchSizeBytes)), w.LingerMs)
		if w.IsCatchUp() {
			p(", backlog %s", formatBytes(float64(w.BacklogBytes())))
		} else {
			p(", warmup %v, measured %v", w.Warmup, w.Test)
		}
		if w.ProducerRate > 0 {
			p(", fixed rate %s msg/s", groupInt(float64(w.ProducerRate)))
		} else {
			p(", max rate")
		}
		if w.Scaled != "" {
			p(" (**quick: %s**)", w.Scaled)
		}
		p(".\n\n")
		p("| | %s |\n|---|", strings.Join(labels(rs), " | "))
		for range rs {
			p("---:|")
		}
		p("\n")
		for _, rw := range comparisonRows {
			cells := make([]string, len(rs))
			has := false
			ref, refOK := rw.value(rs[0])
			for i, r := range rs {
				v, ok := rw.value(r)
				if !ok {
					cells[i] = "-"
					continue
				}
				has = true
				cells[i] = rw.format(v)
				if i > 0 && refOK {
					cells[i] += ratio(ref, v, rw.higherIsBetter)
				}
			}
			if has {
				p("| %s | %s |\n", rw.name, strings.Join(cells, " | "))
			}
		}
		multi := false // a system of several processes (Gregor: cp and dp) gets a breakdown
		for _, r := range rs {
			multi = multi || len(r.ServerProcesses) > 1
		}
		if multi {
			cells := make([]string, len(rs))
			for i, r := range rs {
				var ps []string
				for _, u := range r.ServerProcesses {
					ps = append(ps, fmt.Sprintf("%s %.2f", u.Name, u.PerGB))
				}
				cells[i] = strings.Join(ps, ", ")
				if cells[i] == "" {
					cells[i] = "-"
				}
			}
			p("| server CPU by process (core-s/GB) | %s |\n", strings.Join(cells, " | "))
		}
		zc := false
		for _, r := range rs {
			zc = zc || r.ZeroCopy != nil
		}
		if zc {
			cells := make([]string, len(rs))
			for i, r := range rs {
				cells[i] = zeroCopy(r)
			}
			p("| fetched bytes sent by sendfile | %s |\n", strings.Join(cells, " | "))
		}
		errs := false
		for _, r := range rs {
			errs = errs || r.PublishErrors > 0
		}
		if errs {
			cells := make([]string, len(rs))
			for i, r := range rs {
				cells[i] = strconv.FormatInt(r.PublishErrors, 10)
			}
			p("| publish errors | %s |\n", strings.Join(cells, " | "))
		}
		if len(rs) > 1 {
			p("\n(×r) is **%s**'s advantage over that system: above 1 it is ahead, below 1 behind.\n", rs[0].Label())
		}
		if w.ProducerRate == 0 && !w.IsCatchUp() {
			p("\nAt max rate a consumer slower than the producers falls behind: end-to-end latency then measures its lag, not the system's delivery time.\n")
		}
		p("\n%s\n", reading(rs))
		p("\n![%s throughput](%s/%s-throughput.svg) ![%s latency](%s/%s-latency.svg)\n", n, chartDir, n, n, chartDir, n)
		var cmds []string
		for _, r := range rs {
			cmds = append(cmds, "`"+r.Command+"`")
		}
		p("\nRun alone: %s\n", strings.Join(cmds, ", "))
		for _, r := range rs {
			for _, note := range r.Notes {
				p("\n- %s: %s", r.Label(), note)
			}
		}
		p("\n")
	}
	return b.String()
}

func labels(rs []*Result) []string {
	l := make([]string, len(rs))
	for i, r := range rs {
		l[i] = r.Label()
	}
	return l
}

// reading states, from the figures alone, which system led on throughput and on tail
// latency in a workload — the sentence a reader would otherwise work out from the table.
func reading(rs []*Result) string {
	if len(rs) < 2 {
		return "Only " + rs[0].Label() + " was run."
	}
	best := func(v func(*Result) float64, higher bool) (*Result, *Result) {
		s := append([]*Result(nil), rs...)
		s = filter(s, func(r *Result) bool { return v(r) > 0 })
		if len(s) < 2 {
			return nil, nil
		}
		sort.SliceStable(s, func(i, j int) bool {
			if higher {
				return v(s[i]) > v(s[j])
			}
			return v(s[i]) < v(s[j])
		})
		return s[0], s[1]
	}
	var parts []string
	rate := func(r *Result) float64 { return r.PublishRateMBs }
	if rs[0].Workload.IsCatchUp() {
		rate = func(r *Result) float64 { return r.ConsumeRateMBs }
	}
	if a, b := best(rate, true); a != nil {
		what := "publish"
		if rs[0].Workload.IsCatchUp() {
			what = "catch-up read"
		}
		parts = append(parts, fmt.Sprintf("Fastest %s: %s, %.2g× the next (%s).", what, a.Label(), rate(a)/rate(b), b.Label()))
	}
	p99 := func(r *Result) float64 { return r.EndToEndLatency.P99Us }
	kind := "end-to-end"
	if rs[0].Workload.IsCatchUp() || func() bool {
		for _, r := range rs {
			if r.EndToEndLatency.Count == 0 {
				return true
			}
		}
		return false
	}() {
		p99, kind = func(r *Result) float64 { return r.PublishLatency.P99Us }, "publish"
	}
	if a, b := best(p99, false); a != nil {
		parts = append(parts, fmt.Sprintf("Lowest %s p99: %s (%s vs %s for %s).", kind, a.Label(), FormatMicros(p99(a)), FormatMicros(p99(b)), b.Label()))
	}
	return strings.Join(parts, " ")
}

func filter(rs []*Result, keep func(*Result) bool) []*Result {
	out := rs[:0]
	for _, r := range rs {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// RewriteSection returns doc with the part between the lines SectionBegin and SectionEnd
// replaced by section; every byte outside the markers is kept. With no markers, the
// section is appended, markers included.
func RewriteSection(doc []byte, section string) ([]byte, error) {
	if !strings.HasSuffix(section, "\n") {
		section += "\n"
	}
	bi := bytes.Index(doc, []byte(SectionBegin))
	ei := bytes.Index(doc, []byte(SectionEnd))
	if bi < 0 && ei < 0 {
		out := append([]byte(nil), doc...)
		if len(out) > 0 && !bytes.HasSuffix(out, []byte("\n")) {
			out = append(out, '\n')
		}
		if len(out) > 0 {
			out = append(out, '\n')
		}
		out = append(out, SectionBegin+"\n"+section+SectionEnd+"\n"...)
		return out, nil
	}
	if bi < 0 || ei < 0 || ei < bi {
		return nil, fmt.Errorf("perf: BENCHMARKS.md has %q and %q out of order or one without the other", SectionBegin, SectionEnd)
	}
	if bytes.Count(doc, []byte(SectionBegin)) > 1 || bytes.Count(doc, []byte(SectionEnd)) > 1 {
		return nil, fmt.Errorf("perf: BENCHMARKS.md has more than one generated section")
	}
	// Replace from the end of the begin marker's line to the start of the end marker's.
	start := bi + len(SectionBegin)
	if nl := bytes.IndexByte(doc[start:], '\n'); nl >= 0 && start+nl < ei {
		start += nl + 1
	} else {
		doc = append(doc[:start:start], append([]byte("\n"), doc[start:]...)...)
		start++
		ei++
	}
	out := make([]byte, 0, len(doc)+len(section))
	out = append(out, doc[:start]...)
	out = append(out, section...)
	out = append(out, doc[ei:]...)
	return out, nil
}

// UpdateBenchmarks rewrites the generated section of the file at path (creating the
// file if it does not exist).
func UpdateBenchmarks(path, section string) error {
	doc, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	if os.IsNotExist(err) {
		doc = []byte("# Benchmarks\n")
	}
	out, err := RewriteSection(doc, section)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}

// WriteCharts writes, for every workload in results, a throughput and a latency chart
// (SVG) into dir, named <workload>-throughput.svg and <workload>-latency.svg.
func WriteCharts(dir string, results []*Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	names, groups := byWorkload(results)
	for _, n := range names {
		rs := groups[n]
		if err := os.WriteFile(filepath.Join(dir, n+"-throughput.svg"), []byte(throughputSVG(n, rs)), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, n+"-latency.svg"), []byte(latencySVG(n, rs)), 0o644); err != nil {
			return err
		}
	}
	return nil
}
