package perf

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Sides of a comparison, as CompareRun.Side names them.
const (
	SideBase = "base"
	SideNew  = "new"
)

// DefaultLossPercent is how much worse a judged figure must be, in percent of the base's
// value, to count as a loss: a change that costs this much is a bug to fix or a trade to
// argue before it lands.
const DefaultLossPercent = 10

// Comparison is a whole-system A/B run: two builds of Gregor's servers on the same
// workloads, driven by the same client code, the two sides' runs interleaved round by
// round so that drift in the machine's load falls on both. It is what
// `gregor bench compare` saves as JSON and renders as Markdown.
type Comparison struct {
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
	Command    string    `json:"command"`
	Machine    Machine   `json:"machine"`
	LoadBefore string    `json:"loadBefore,omitempty"`
	LoadAfter  string    `json:"loadAfter,omitempty"`
	// Rounds is how many runs of every workload each side was given.
	Rounds int `json:"rounds"`
	// Mode is how the workloads were scaled ("quick").
	Mode string `json:"mode"`
	// LossPercent is the threshold a judged figure is marked at (DefaultLossPercent).
	LossPercent float64     `json:"lossPercent"`
	Base        CompareSide `json:"base"`
	New         CompareSide `json:"new"`
	// Runs are every run in the order they were made.
	Runs []CompareRun `json:"runs"`
	// Interrupted is set when the run was stopped before its last round.
	Interrupted bool `json:"interrupted,omitempty"`
	// ResultsPath is where the JSON was saved, for the header ("" if not saved).
	ResultsPath string `json:"-"`
}

// CompareSide is one of the two builds.
type CompareSide struct {
	// Label is how the report names it: a revision ("edce2d0~1"), "working tree".
	Label  string `json:"label"`
	Commit string `json:"commit"`
	// BinDir held its gregor-cp and gregor-dp.
	BinDir string `json:"binDir"`
}

// CompareRun is one workload run on one side: a result, or the error that stopped it.
type CompareRun struct {
	Round    int     `json:"round"`
	Side     string  `json:"side"`
	Workload string  `json:"workload"`
	Driver   string  `json:"driver"`
	Result   *Result `json:"result,omitempty"`
	Error    string  `json:"error,omitempty"`
	// Load is the load average when the run started: a run that stands out can be
	// checked against what else the machine was doing.
	Load string `json:"load,omitempty"`
	// Logs is where the servers' output of a failed run was kept (their temporary
	// directory goes with them).
	Logs string `json:"logs,omitempty"`
}

// OK reports whether the run produced a result that counts in the medians: one without
// an error and without failed publishes (those measured less work than the workload
// asks for).
func (r CompareRun) OK() bool {
	return r.Error == "" && r.Result != nil && r.Result.PublishErrors == 0
}

// ReadComparison reads a comparison saved with WriteJSON.
func ReadComparison(path string) (*Comparison, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c := &Comparison{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("perf: %s: %w", path, err)
	}
	c.ResultsPath = path
	return c, nil
}

// Figure is one number a result has, as a comparison row.
type Figure struct {
	Name   string
	Value  func(r *Result) (v float64, ok bool)
	Format func(v float64) string
	// HigherIsBetter orients the verdict: rates and the sendfile share are better
	// higher, latencies and CPU lower.
	HigherIsBetter bool
	// Judged figures are marked when they lose LossPercent or more. The others are shown
	// for context: a maximum is one sample, the publish delay and the client's CPU are
	// the harness's, and the per-process CPU is already judged in its sum.
	Judged bool
	// Part marks a breakdown of the figure above it.
	Part bool
}

func positive(v float64) (float64, bool) { return v, v > 0 }

func fixed(prec int) func(float64) string {
	return func(v float64) string { return strconv.FormatFloat(v, 'f', prec, 64) }
}

// processPerGB is the server CPU per GB of the server process called name.
func processPerGB(name string) func(r *Result) (float64, bool) {
	return func(r *Result) (float64, bool) {
		for _, p := range r.ServerProcesses {
			if p.Name == name {
				return positive(p.PerGB)
			}
		}
		return 0, false
	}
}

// CompareFigures are the rows of every comparison table, in order.
var CompareFigures = []Figure{
	{Name: "publish rate (msg/s)", Value: func(r *Result) (float64, bool) { return positive(r.PublishRateMsgs) }, Format: groupInt, HigherIsBetter: true, Judged: true},
	{Name: "publish rate (MB/s)", Value: func(r *Result) (float64, bool) { return positive(r.PublishRateMBs) }, Format: fixed(1), HigherIsBetter: true, Judged: true},
	{Name: "consume rate (msg/s)", Value: func(r *Result) (float64, bool) { return positive(r.ConsumeRateMsgs) }, Format: groupInt, HigherIsBetter: true, Judged: true},
	{Name: "consume rate (MB/s)", Value: func(r *Result) (float64, bool) { return positive(r.ConsumeRateMBs) }, Format: fixed(1), HigherIsBetter: true, Judged: true},
	{Name: "publish latency p50", Value: func(r *Result) (float64, bool) { return positive(r.PublishLatency.P50Us) }, Format: FormatMicros, Judged: true},
	{Name: "publish latency p99", Value: func(r *Result) (float64, bool) { return positive(r.PublishLatency.P99Us) }, Format: FormatMicros, Judged: true},
	{Name: "publish latency p99.9", Value: func(r *Result) (float64, bool) { return positive(r.PublishLatency.P999Us) }, Format: FormatMicros, Judged: true},
	{Name: "publish latency max", Value: func(r *Result) (float64, bool) { return positive(r.PublishLatency.MaxUs) }, Format: FormatMicros},
	{Name: "publish delay p99 (behind schedule)", Value: func(r *Result) (float64, bool) { return positive(r.PublishDelay.P99Us) }, Format: FormatMicros},
	{Name: "end-to-end latency p50", Value: func(r *Result) (float64, bool) { return positive(r.EndToEndLatency.P50Us) }, Format: FormatMicros, Judged: true},
	{Name: "end-to-end latency p99", Value: func(r *Result) (float64, bool) { return positive(r.EndToEndLatency.P99Us) }, Format: FormatMicros, Judged: true},
	{Name: "end-to-end latency p99.9", Value: func(r *Result) (float64, bool) { return positive(r.EndToEndLatency.P999Us) }, Format: FormatMicros, Judged: true},
	{Name: "end-to-end latency max", Value: func(r *Result) (float64, bool) { return positive(r.EndToEndLatency.MaxUs) }, Format: FormatMicros},
	{Name: "server CPU (core-s per GB moved)", Value: func(r *Result) (float64, bool) { return positive(r.ServerCPUPerGB) }, Format: fixed(3), Judged: true},
	{Name: "gregor-dp (core-s per GB)", Value: processPerGB("gregor-dp"), Format: fixed(3), Part: true},
	{Name: "gregor-cp (core-s per GB)", Value: processPerGB("gregor-cp"), Format: fixed(3), Part: true},
	{Name: "fetched bytes sent by sendfile (%)", Value: func(r *Result) (float64, bool) {
		if r.ZeroCopy == nil || r.ZeroCopy.SendfileBytes+r.ZeroCopy.CopyBytes <= 0 {
			return 0, false
		}
		return 100 * r.ZeroCopy.Share, true
	}, Format: fixed(1), HigherIsBetter: true, Judged: true},
	{Name: "client CPU (core-s in window)", Value: func(r *Result) (float64, bool) { return positive(r.ClientCPUSeconds) }, Format: fixed(2)},
}

// Median is the middle of vs (the mean of the two middle values for an even count), NaN
// for none. vs is not modified.
func Median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// Change is how much better now is than base, as a fraction of base: positive better,
// negative worse, whichever way the figure runs (higherIsBetter).
func Change(base, now float64, higherIsBetter bool) float64 {
	if higherIsBetter {
		return (now - base) / base
	}
	return (base - now) / base
}

// lossEpsilon absorbs float rounding at the threshold: 100 → 90 is a 10% loss, though
// (1-0.9)/1 computes to a hair under 0.1.
const lossEpsilon = 1e-9

// IsLoss reports whether change (as Change returns it) is a loss of lossPercent or more.
func IsLoss(change, lossPercent float64) bool {
	return change <= -lossPercent/100+lossEpsilon
}

// CompareRow is one figure of one comparison table.
type CompareRow struct {
	Figure Figure
	// Base and New are the medians over the side's runs that have the figure; the OK
	// flags say whether any had it.
	Base, New     float64
	BaseOK, NewOK bool
	// BaseRange and NewRange are the smallest and largest value over the rounds, of
	// BaseN and NewN values.
	BaseRange, NewRange [2]float64
	BaseN, NewN         int
	// Ratio is New/Base; Change is Change(Base, New) (both 0 unless both sides have it).
	Ratio, Change float64
	// Loss is set for a judged figure that lost LossPercent or more, or that the base
	// has and the new build lost altogether.
	Loss bool
	// Overlap is set when the two sides' ranges over the rounds overlap: a difference
	// in the medians is then within the round-to-round noise.
	Overlap bool
}

// CompareTable is one workload on one driver, both sides.
type CompareTable struct {
	Workload *Workload
	Driver   string
	// BaseRuns and NewRuns count the runs that counted; Failed says what failed.
	BaseRuns, NewRuns int
	Failed            []string
	Rows              []CompareRow
}

// Losses are the rows marked as losses.
func (t *CompareTable) Losses() []CompareRow {
	var l []CompareRow
	for _, r := range t.Rows {
		if r.Loss {
			l = append(l, r)
		}
	}
	return l
}

// Tables groups the runs by workload and driver, in the order they were first run, and
// computes every figure's medians and verdict.
func (c *Comparison) Tables() []*CompareTable {
	type key struct{ workload, driver string }
	var order []key
	groups := map[key][]CompareRun{}
	for _, r := range c.Runs {
		k := key{r.Workload, r.Driver}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	loss := c.LossPercent
	if loss <= 0 {
		loss = DefaultLossPercent
	}
	var tables []*CompareTable
	for _, k := range order {
		t := &CompareTable{Driver: k.driver}
		sides := map[string][]*Result{}
		for _, r := range groups[k] {
			if r.Result != nil && t.Workload == nil {
				t.Workload = r.Result.Workload
			}
			if !r.OK() {
				why := r.Error
				if why == "" && r.Result != nil {
					why = fmt.Sprintf("%d publishes failed, first: %s", r.Result.PublishErrors, r.Result.FirstError)
				}
				if r.Logs != "" {
					why += " (servers' logs: " + r.Logs + ")"
				}
				t.Failed = append(t.Failed, fmt.Sprintf("round %d, %s: %s", r.Round, c.sideLabel(r.Side), why))
				continue
			}
			sides[r.Side] = append(sides[r.Side], r.Result)
		}
		if t.Workload == nil {
			t.Workload = &Workload{Name: k.workload}
		}
		t.BaseRuns, t.NewRuns = len(sides[SideBase]), len(sides[SideNew])
		for _, f := range CompareFigures {
			row := CompareRow{Figure: f}
			row.Base, row.BaseRange, row.BaseN = figureMedian(f, sides[SideBase])
			row.New, row.NewRange, row.NewN = figureMedian(f, sides[SideNew])
			row.BaseOK, row.NewOK = row.BaseN > 0, row.NewN > 0
			bRange, nRange := row.BaseRange, row.NewRange
			if !row.BaseOK && !row.NewOK {
				continue
			}
			switch {
			case row.BaseOK && row.NewOK:
				row.Ratio = row.New / row.Base
				row.Change = Change(row.Base, row.New, f.HigherIsBetter)
				row.Loss = f.Judged && IsLoss(row.Change, loss)
				row.Overlap = bRange[0] <= nRange[1] && nRange[0] <= bRange[1]
			case row.BaseOK:
				// The new build lost the figure altogether (nothing consumed, no
				// fetch counted): worse than any ratio — but only if the new side ran.
				row.Loss = f.Judged && t.NewRuns > 0
			}
			t.Rows = append(t.Rows, row)
		}
		tables = append(tables, t)
	}
	return tables
}

// figureMedian is f's median over the n results that have it, with its range.
func figureMedian(f Figure, rs []*Result) (median float64, rng [2]float64, n int) {
	var vs []float64
	for _, r := range rs {
		if v, has := f.Value(r); has {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return 0, rng, 0
	}
	rng = [2]float64{vs[0], vs[0]}
	for _, v := range vs {
		rng[0], rng[1] = math.Min(rng[0], v), math.Max(rng[1], v)
	}
	return Median(vs), rng, len(vs)
}

func (c *Comparison) sideLabel(side string) string {
	if side == SideBase {
		return "base " + c.Base.Label
	}
	return "new " + c.New.Label
}

// Verdict says in words how a row changed: "12.5% better", "3.0% worse", "same".
func (r CompareRow) Verdict() string {
	switch {
	case r.BaseOK && !r.NewOK:
		return "missing in new"
	case !r.BaseOK:
		return "new only"
	}
	pct := 100 * math.Abs(r.Change)
	switch {
	case pct < 0.05:
		return "same"
	case r.Change > 0:
		return fmt.Sprintf("%.1f%% better", pct)
	}
	return fmt.Sprintf("%.1f%% worse", pct)
}

// spread is a range as a share of its median, "±x%" (half the range), or "" for one
// value or none.
func spread(median float64, rng [2]float64, n int) string {
	if n < 2 || median == 0 {
		return ""
	}
	return fmt.Sprintf(" ±%.0f%%", 100*(rng[1]-rng[0])/2/math.Abs(median))
}

// ComparisonSummary counts what a comparison found.
type ComparisonSummary struct {
	// Losses are "workload (driver): figure, 12.0% worse" for every loss.
	Losses []string
	// FailedRuns counts runs that errored or had failed publishes.
	FailedRuns int
}

// Summarize lists the losses and failed runs of the tables.
func Summarize(tables []*CompareTable) ComparisonSummary {
	var s ComparisonSummary
	for _, t := range tables {
		s.FailedRuns += len(t.Failed)
		for _, r := range t.Losses() {
			s.Losses = append(s.Losses, fmt.Sprintf("%s (%s): %s, %s", t.Workload.Name, t.Driver, r.Figure.Name, r.Verdict()))
		}
	}
	return s
}

// LossMarker marks a loss in the Markdown table.
const LossMarker = "**LOSS**"

// RenderComparison writes the comparison as Markdown, ready for BENCHMARKS.md: a header
// saying when, what, where and how, then one table per workload and driver with each
// side's median, the ratio new/base and a verdict, and a closing list of the losses.
func RenderComparison(c *Comparison, tables []*CompareTable) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	loss := c.LossPercent
	if loss <= 0 {
		loss = DefaultLossPercent
	}
	p("## Whole-system A/B: `%s` → %s — %s\n\n", c.Base.Label, c.New.Label, c.StartedAt.UTC().Format("2006-01-02"))
	p("Generated by `gregor bench compare`.\n\n")
	took := ""
	if !c.FinishedAt.IsZero() {
		took = fmt.Sprintf(" (took %s)", c.FinishedAt.Sub(c.StartedAt).Round(time.Second))
	}
	p("- **Date:** %s%s  \n", c.StartedAt.UTC().Format("2006-01-02 15:04 UTC"), took)
	p("- **Base (A):** %s, commit `%s`  \n", c.Base.Label, c.Base.Commit)
	p("- **New (B):** %s, commit `%s`  \n", c.New.Label, c.New.Commit)
	p("- **Machine:** %s  \n", c.Machine)
	if c.LoadBefore != "" {
		p("- **Load average** (1/5/15 min) before: %s, after: %s — on %d cores; other work on the machine skews every figure  \n", c.LoadBefore, c.LoadAfter, c.Machine.Cores)
	}
	p("- **Rounds:** %d per side, interleaved (A B in odd rounds, B A in even ones); every run on a freshly started gregor-cp and gregor-dp with an empty data directory, both sides driven by the same client (`bin/gregor` of the new tree)  \n", c.Rounds)
	if c.Mode == "quick" {
		p("- **Workloads:** quick (warmup ≤ %v, test ≤ %v, catch-up backlog ≤ %s)  \n", QuickWarmupMax, QuickTestMax, formatBytes(QuickBacklogMax))
	}
	p("- **Command:** `%s`", c.Command)
	if c.ResultsPath != "" {
		p("  \n- **Raw results:** `%s`", c.ResultsPath)
	}
	p("\n")
	if c.Interrupted {
		p("\n**Interrupted** before the last round: the medians are over fewer runs than planned.\n")
	}
	p("\nMedians over the rounds, with ±half the range of the rounds as a share of the median. "+
		"new/base is the plain ratio; the last column reads it: rates and the sendfile share are better higher, "+
		"latencies and CPU lower. %s marks a judged figure %s%% or more worse than the base; "+
		"\"(ranges overlap)\" says the rounds of the two sides overlap, so the difference is within the noise of this run. "+
		"Maxima, the publish delay, the per-process CPU and the client's CPU are shown but not judged.\n", LossMarker, trimFloat(loss))

	for _, t := range tables {
		w := t.Workload
		p("\n### %s — %s\n\n", w.Name, t.Driver)
		if w.Description != "" {
			p("%s", w.Description)
			if w.Scaled != "" {
				p(" (quick: %s)", w.Scaled)
			}
			p(". ")
		}
		p("Runs counted: base %d, new %d.\n\n", t.BaseRuns, t.NewRuns)
		p("| figure | base: %s | new: %s | new/base | verdict |\n", c.Base.Label, c.New.Label)
		p("|---|---:|---:|---:|---|\n")
		for _, r := range t.Rows {
			base, now, ratio := "-", "-", "-"
			if r.BaseOK {
				base = r.Figure.Format(r.Base) + spread(r.Base, r.BaseRange, r.BaseN)
			}
			if r.NewOK {
				now = r.Figure.Format(r.New) + spread(r.New, r.NewRange, r.NewN)
			}
			if r.BaseOK && r.NewOK {
				ratio = "×" + strconv.FormatFloat(r.Ratio, 'f', 3, 64)
			}
			verdict := r.Verdict()
			switch {
			case r.Loss:
				verdict += " " + LossMarker
				if r.Overlap {
					verdict += " (ranges overlap)"
				}
			case !r.Figure.Judged && r.BaseOK && r.NewOK:
				verdict += " (not judged)"
			}
			name := r.Figure.Name
			if r.Figure.Part {
				name = "↳ " + name
			}
			p("| %s | %s | %s | %s | %s |\n", name, base, now, ratio, verdict)
		}
		for _, f := range t.Failed {
			p("\n- failed: %s", f)
		}
		if len(t.Failed) > 0 {
			p("\n")
		}
	}
	s := Summarize(tables)
	p("\n")
	if len(s.Losses) == 0 {
		p("**No judged figure lost %s%% or more.**", trimFloat(loss))
	} else {
		p("**%d judged figure(s) lost %s%% or more** (%s):\n", len(s.Losses), trimFloat(loss), LossMarker)
		for _, l := range s.Losses {
			p("\n- %s", l)
		}
	}
	if s.FailedRuns > 0 {
		p("\n\n**%d run(s) failed**; see above.", s.FailedRuns)
	}
	p("\n")
	return b.String()
}
