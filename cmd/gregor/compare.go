package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/gregor-streaming/gregor/perf"
	"github.com/gregor-streaming/gregor/perf/drivers"
)

// Exit statuses of bench compare beyond the usual 0 (no loss), 1 (failure) and 2 (bad
// usage).
const exitLoss = 3

// compareSide is one build under comparison, with where its servers are.
type compareSide struct {
	name string // perf.SideBase or perf.SideNew
	perf.CompareSide
}

// compareJob is one run of the plan.
type compareJob struct {
	round  int
	side   compareSide
	w      *perf.Workload
	path   string
	driver string
}

func compareCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gregor bench compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, compareUsage)
		fs.PrintDefaults()
	}
	baseBin := fs.String("base-bin", "", "directory with the base build's gregor-cp and gregor-dp (required)")
	newBin := fs.String("new-bin", "bin", "directory with the new build's gregor-cp and gregor-dp")
	baseLabel := fs.String("base-label", "base", "how the report names the base (e.g. the revision given to make)")
	baseCommit := fs.String("base-commit", "", "the base's commit, for the header (default: git rev-parse of --base-label, else unknown)")
	newLabel := fs.String("new-label", "working tree", "how the report names the new build")
	newCommit := fs.String("new-commit", "", "the new build's commit, for the header (default: the working tree's, -dirty if changed)")
	rounds := fs.Int("rounds", 3, "runs of every workload per side, interleaved A B, B A, …")
	drv := fs.String("drivers", "kafka-raw", "Kafka drivers, comma-separated: kafka-raw (pre-encoded batches: the broker's limit) and/or kafka (franz-go)")
	dir := fs.String("workloads", filepath.Join("perf", "workloads"), "directory of workload files, run scaled as --quick does")
	only := fs.String("only", "", "workloads to run, comma-separated names or file names (default: all in --workloads)")
	out := fs.String("out", "", "JSON file of every run, rewritten after each (default perf/results/compare-<UTC time>.json); the Markdown table goes beside it as .md")
	lossPct := fs.Float64("loss", perf.DefaultLossPercent, "percent worse than the base that marks a judged figure as a loss")
	settle := fs.Duration("settle", 2*time.Second, "pause between runs, so one run's teardown (stopping servers, deleting its data) does not overlap the next")
	command := fs.String("command", "", "command recorded in the header (default: this command line)")
	report := fs.String("report", "", "render the table from a saved JSON file instead of running anything")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gregor bench compare: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *report != "" {
		c, err := perf.ReadComparison(*report)
		if err != nil {
			fmt.Fprintln(stderr, "gregor bench compare:", err)
			return 1
		}
		return compareVerdict(c, stdout)
	}
	if *baseBin == "" {
		fmt.Fprintln(stderr, "gregor bench compare: --base-bin is required")
		fs.Usage()
		return 2
	}
	if *rounds < 1 || *lossPct <= 0 {
		fmt.Fprintln(stderr, "gregor bench compare: --rounds must be at least 1 and --loss above 0")
		return 2
	}
	drvs, err := compareDrivers(*drv)
	if err != nil {
		fmt.Fprintln(stderr, "gregor bench compare:", err)
		return 2
	}
	for _, b := range []string{*baseBin, *newBin} {
		if !drivers.GregorBinaries(b) {
			fmt.Fprintf(stderr, "gregor bench compare: no gregor-cp and gregor-dp in %s\n", b)
			return 1
		}
	}
	ws, paths, err := perf.LoadWorkloadDir(*dir)
	if err != nil {
		fmt.Fprintln(stderr, "gregor bench compare:", err)
		return 1
	}
	if ws, paths, err = selectWorkloads(ws, paths, *only); err != nil {
		fmt.Fprintln(stderr, "gregor bench compare:", err)
		return 2
	}
	for _, w := range ws {
		w.ScaleQuick()
	}

	if *baseCommit == "" {
		*baseCommit = gitRevParse(*baseLabel)
	}
	if *newCommit == "" {
		*newCommit = perf.GitCommit(".")
	}
	if *command == "" {
		*command = "bin/gregor bench compare " + strings.Join(args, " ")
	}
	start := time.Now().UTC()
	if *out == "" {
		*out = filepath.Join("perf", "results", "compare-"+start.Format("20060102-150405")+".json")
	}
	c := &perf.Comparison{
		StartedAt: start, Command: *command, Machine: perf.DescribeMachine(), LoadBefore: perf.LoadAverage(),
		Rounds: *rounds, Mode: "quick", LossPercent: *lossPct, ResultsPath: *out,
		Base: perf.CompareSide{Label: *baseLabel, Commit: *baseCommit, BinDir: *baseBin},
		New:  perf.CompareSide{Label: *newLabel, Commit: *newCommit, BinDir: *newBin},
	}
	base := compareSide{perf.SideBase, c.Base}
	next := compareSide{perf.SideNew, c.New}
	jobs := comparePlan(*rounds, ws, paths, drvs, base, next)

	ctx, cancel := signalContext()
	defer cancel()
	fmt.Fprintf(stderr, "bench compare: %s (%s) against %s (%s): %d workload(s) × %d driver(s) × %d round(s) × 2 sides = %d runs, each on freshly started servers\n",
		c.Base.Label, c.Base.Commit, c.New.Label, c.New.Commit, len(ws), len(drvs), *rounds, len(jobs))
	began := time.Now()
	for i, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		eta := ""
		if i > 0 {
			eta = ", about " + roughly(time.Since(began)/time.Duration(i)*time.Duration(len(jobs)-i)) + " left"
		}
		fmt.Fprintf(stderr, "\nbench compare: [run %d/%d%s] round %d/%d · %s (%s) · %s · %s\n",
			i+1, len(jobs), eta, j.round, *rounds, j.side.name, j.side.Label, j.w.Name, j.driver)
		run := perf.CompareRun{Round: j.round, Side: j.side.name, Workload: j.w.Name, Driver: j.driver, Load: perf.LoadAverage()}
		logs := fmt.Sprintf("%s-logs/run%02d-%s-%s-%s", strings.TrimSuffix(*out, filepath.Ext(*out)), i+1, j.side.name, j.w.Name, j.driver)
		res, kept, err := compareOne(ctx, j, stderr, logs)
		if err != nil && ctx.Err() != nil {
			// An interrupted run measured nothing worth keeping; its servers are stopped.
			fmt.Fprintf(stderr, "bench compare: interrupted during %s on %s\n", j.w.Name, j.side.name)
			break
		}
		run.Result, run.Logs = res, kept
		if err != nil {
			run.Error = err.Error()
			fmt.Fprintf(stderr, "bench compare: %s on %s failed: %v\n", j.w.Name, j.side.name, err)
		}
		c.Runs = append(c.Runs, run)
		if err := perf.WriteJSON(*out, c); err != nil {
			fmt.Fprintln(stderr, "gregor bench compare:", err)
			return 1
		}
		if i < len(jobs)-1 {
			perf.Sleep(ctx, *settle)
		}
	}
	c.FinishedAt = time.Now().UTC()
	c.LoadAfter = perf.LoadAverage()
	c.Interrupted = len(c.Runs) < len(jobs)
	if err := perf.WriteJSON(*out, c); err != nil {
		fmt.Fprintln(stderr, "gregor bench compare:", err)
		return 1
	}
	md := strings.TrimSuffix(*out, filepath.Ext(*out)) + ".md"
	if err := os.WriteFile(md, []byte(perf.RenderComparison(c, c.Tables())), 0o644); err != nil {
		fmt.Fprintln(stderr, "gregor bench compare:", err)
		return 1
	}
	fmt.Fprintf(stderr, "\nbench compare: raw results in %s, the table also in %s\n\n", *out, md)
	code := compareVerdict(c, stdout)
	if c.Interrupted {
		fmt.Fprintln(stderr, "gregor bench compare: interrupted")
		return 1
	}
	return code
}

const compareUsage = `usage: gregor bench compare --base-bin DIR [flags]

Whole-system A/B comparison of two builds of Gregor's servers (gregor-cp, gregor-dp) on
the quick bench workloads: every workload is run on each side in turn (A B, then B A, …) for
--rounds rounds, each run on a freshly started cluster with an empty data directory
(removed after the run), both sides driven by this binary's client code. Prints, per
workload and driver, the median of every figure for each side, the ratio new/base and
whether it is better or worse, as Markdown for BENCHMARKS.md; saves every run as JSON.
make bench-compare BASE=<rev> builds the base in a git worktree and calls this.

A judged figure (rates, latency p50/p99/p99.9, server CPU per GB, sendfile share) that
is --loss percent or more worse than the base is marked **LOSS**.
Exit status: 0 no loss, 3 some figure marked **LOSS**, 1 a run failed or the run was
interrupted (the table is still printed), 2 bad usage.

flags:
`

// compareVerdict prints the comparison's Markdown and returns the exit status it earns.
func compareVerdict(c *perf.Comparison, stdout io.Writer) int {
	tables := c.Tables()
	io.WriteString(stdout, perf.RenderComparison(c, tables))
	s := perf.Summarize(tables)
	switch {
	case s.FailedRuns > 0 || len(tables) == 0:
		return 1
	case len(s.Losses) > 0:
		return exitLoss
	}
	return 0
}

// compareDrivers parses --drivers: only the Kafka drivers can drive Gregor.
func compareDrivers(list string) ([]string, error) {
	var ds []string
	for _, d := range strings.Split(list, ",") {
		switch d = strings.TrimSpace(d); d {
		case "kafka", "kafka-raw":
			ds = append(ds, d)
		case "":
		default:
			return nil, fmt.Errorf("--drivers: %q cannot drive Gregor (kafka-raw or kafka)", d)
		}
	}
	if len(ds) == 0 {
		return nil, errors.New("--drivers: none given")
	}
	return ds, nil
}

// selectWorkloads keeps the workloads named in only (by name or file name, with or
// without .yaml), in directory order; "" keeps all.
func selectWorkloads(ws []*perf.Workload, paths []string, only string) ([]*perf.Workload, []string, error) {
	if strings.TrimSpace(only) == "" {
		return ws, paths, nil
	}
	want := map[string]bool{}
	for _, n := range strings.Split(only, ",") {
		if n = strings.TrimSpace(n); n != "" {
			want[strings.TrimSuffix(n, ".yaml")] = false
		}
	}
	var kw []*perf.Workload
	var kp []string
	var names []string
	for i, w := range ws {
		file := strings.TrimSuffix(filepath.Base(paths[i]), ".yaml")
		names = append(names, w.Name)
		hit := false
		for _, n := range []string{w.Name, file} {
			if _, ok := want[n]; ok {
				want[n], hit = true, true
			}
		}
		if hit {
			kw, kp = append(kw, w), append(kp, paths[i])
		}
	}
	for n, found := range want {
		if !found {
			return nil, nil, fmt.Errorf("--only: no workload %q (have %s)", n, strings.Join(names, ", "))
		}
	}
	return kw, kp, nil
}

// comparePlan orders the runs: round by round, workload by workload, the two builds
// back to back (base first in odd rounds, new first in even ones), so each pair of runs
// that is compared is made minutes apart at most and a drift in the machine's load falls
// on both sides.
func comparePlan(rounds int, ws []*perf.Workload, paths []string, drvs []string, base, next compareSide) []compareJob {
	var jobs []compareJob
	for r := 1; r <= rounds; r++ {
		// Odd rounds run the base first, even ones the new tree (A B, then B A), so a
		// steady drift of the machine or an advantage of going first or second falls on
		// both sides alike.
		order := []compareSide{base, next}
		if r%2 == 0 {
			order = []compareSide{next, base}
		}
		for i, w := range ws {
			for _, d := range drvs {
				for _, s := range order {
					jobs = append(jobs, compareJob{round: r, side: s, w: w, path: paths[i], driver: d})
				}
			}
		}
	}
	return jobs
}

// compareOne starts a fresh cluster from the side's binaries, runs the workload on it
// and stops it. When it returns the servers have exited and their data directory — up
// to the catch-up workload's whole backlog — is gone. A run that failed once its servers
// were up (an error, or failed publishes) first has their output copied to logs,
// returned as kept.
func compareOne(ctx context.Context, j compareJob, log io.Writer, logs string) (res *perf.Result, kept string, err error) {
	g, err := drivers.StartGregor(j.side.BinDir)
	if err != nil {
		return nil, "", err
	}
	defer g.Stop()
	defer func() { // before Stop removes the servers' directory
		if (err == nil || ctx.Err() != nil) && (res == nil || res.PublishErrors == 0) {
			return
		}
		if cerr := g.CopyLogs(logs); cerr != nil {
			fmt.Fprintf(log, "bench compare: the servers' logs of the failed run were not kept: %v\n", cerr)
			return
		}
		kept = logs
		fmt.Fprintf(log, "bench compare: the servers' logs of the failed run are in %s\n", logs)
	}()
	d, err := drivers.New(j.driver, drivers.Options{Bootstrap: g.Bootstrap, ServerPIDs: g.PIDs(), Log: log})
	if err != nil {
		return nil, "", err
	}
	defer d.Close()
	wc := *j.w // each result keeps its own copy of the workload
	res, err = perf.Run(ctx, perf.RunConfig{
		Workload: &wc, Driver: d, MetricsURL: g.MetricsURL, Progress: log,
		Command: benchCommand(j.path, j.driver, "", true),
	})
	return res, "", err
}

// gitRevParse is rev's short commit in the current repository, "unknown" if it is not
// one.
func gitRevParse(rev string) string {
	out, err := exec.Command("git", "rev-parse", "--short=12", "--verify", "--quiet", rev+"^{commit}").Output()
	if c := strings.TrimSpace(string(out)); err == nil && c != "" {
		return c
	}
	return "unknown"
}

// roughly writes an estimate to the second below two minutes, to the minute above.
func roughly(d time.Duration) string {
	if d < 2*time.Minute {
		return d.Round(time.Second).String()
	}
	return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}
