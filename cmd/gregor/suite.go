package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/gregor-streaming/gregor/perf"
	"github.com/gregor-streaming/gregor/perf/drivers"
)

// target is one system the suite runs, with how to reach it.
type target struct {
	driver  string
	opts    drivers.Options
	metrics string
	// bootstrapFlag is what a rerun of one workload needs as --bootstrap ("" for none).
	bootstrapFlag string
}

func suiteCmd(args []string, stdout, stderr io.Writer) int {
	if hasFlag(args, "replication") {
		return replicationCmd(args, stdout, stderr)
	}
	fs := flag.NewFlagSet("gregor bench suite", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f benchFlags
	f.register(fs)
	quick := fs.Bool("quick", false, fmt.Sprintf("the quick suite: warmup ≤ %v, test ≤ %v, backlog ≤ %d GiB (a few minutes)", perf.QuickWarmupMax, perf.QuickTestMax, perf.QuickBacklogMax>>30))
	full := fs.Bool("full", false, "the full suite: workloads as written (over an hour)")
	dir := fs.String("workloads", filepath.Join("perf", "workloads"), "directory of workload files")
	bench := fs.String("benchmarks", "BENCHMARKS.md", "file whose generated section is rewritten")
	only := fs.String("drivers", strings.Join(drivers.Names, ","), "drivers to run, comma-separated")
	reading := fs.String("reading", filepath.Join("perf", "READING.md"), "hand-written reading carried into the section (skipped if missing)")
	bin := fs.String("gregor-bin", "bin", "directory with gregor-cp and gregor-dp, started when no broker answers at --bootstrap")
	fs.Bool("replication", false, "instead, the replication benchmarks on 1 gregor-cp and 3 gregor-dp processes (gregor bench suite --replication -h for their flags)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *quick == *full || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "gregor bench suite: give exactly one of --quick and --full")
		fs.Usage()
		return 2
	}
	pids, err := f.pids()
	if err != nil {
		fmt.Fprintln(stderr, "gregor bench suite:", err)
		return 2
	}
	ws, paths, err := perf.LoadWorkloadDir(*dir)
	if err != nil {
		fmt.Fprintln(stderr, "gregor bench suite:", err)
		return 1
	}
	mode := scaleMode(*quick, ws)
	suite := &perf.Suite{Mode: mode, StartedAt: time.Now().UTC(), Commit: perf.GitCommit("."), Machine: perf.DescribeMachine(),
		Command: "bin/gregor bench suite " + strings.Join(args, " "), LoadBefore: perf.LoadAverage()}
	ctx, cancel := signalContext()
	defer cancel()

	// Which systems can run here, and why not the others.
	var targets []target
	var gregor *drivers.Gregor // started at most once, shared by both Kafka drivers
	defer func() {
		if gregor != nil {
			gregor.Stop()
		}
	}()
	for _, name := range strings.Split(*only, ",") {
		name = strings.TrimSpace(name)
		switch name {
		case "kafka", "kafka-raw":
			t, why := kafkaTarget(name, f, pids, *bin, &gregor, stderr)
			if why != "" {
				suite.Skipped = append(suite.Skipped, why)
				continue
			}
			targets = append(targets, t)
		case "jetstream", "redis":
			bin := map[string]string{"jetstream": "nats-server", "redis": "redis-server"}[name]
			if _, err := exec.LookPath(bin); err != nil {
				suite.Skipped = append(suite.Skipped, fmt.Sprintf("%s: %s is not installed (scripts/install-peers.sh installs it)", name, bin))
				continue
			}
			targets = append(targets, target{driver: name, opts: drivers.Options{Log: stderr}})
		case "":
		default:
			fmt.Fprintf(stderr, "gregor bench suite: unknown driver %q (one of %s)\n", name, strings.Join(drivers.Names, ", "))
			return 2
		}
	}
	for _, s := range suite.Skipped {
		fmt.Fprintln(stderr, "bench suite: not run:", s)
	}
	if len(targets) == 0 {
		fmt.Fprintln(stderr, "gregor bench suite: no system to run")
		return 1
	}

	failed := 0
	for i, w := range ws {
		for _, t := range targets {
			if ctx.Err() != nil {
				break
			}
			res, err := runOne(ctx, w, paths[i], t, *quick, stderr)
			if err != nil {
				failed++
				msg := fmt.Sprintf("%s on %s failed: %v", w.Name, t.driver, err)
				fmt.Fprintln(stderr, "bench suite:", msg)
				suite.Skipped = append(suite.Skipped, msg)
				continue
			}
			suite.Results = append(suite.Results, res)
			if err := perf.WriteJSON(filepath.Join(f.outDir, resultFile(res)), res); err != nil {
				fmt.Fprintln(stderr, "gregor bench suite:", err)
				return 1
			}
		}
	}
	if err := ctx.Err(); err != nil {
		fmt.Fprintln(stderr, "gregor bench suite: interrupted; BENCHMARKS.md left as it was")
		return 1
	}
	suite.LoadAfter = perf.LoadAverage()
	if err := writeSuite(suite, f.outDir, *bench, *reading); err != nil {
		fmt.Fprintln(stderr, "gregor bench suite:", err)
		return 1
	}
	var out bytes.Buffer
	perf.WriteTable(&out, suite.Results)
	stdout.Write(out.Bytes())
	fmt.Fprintf(stdout, "results: %s; section rewritten in %s\n", f.outDir, *bench)
	if failed > 0 {
		return 1
	}
	return 0
}

// scaleMode scales the workloads down as the quick suite does when quick is set, and
// names the mode: "quick" or "full".
func scaleMode(quick bool, ws []*perf.Workload) string {
	if !quick {
		return "full"
	}
	for _, w := range ws {
		w.ScaleQuick()
	}
	return "quick"
}

// kafkaTarget finds the broker for a Kafka driver: one answering at --bootstrap (or
// the default), else a Gregor started from binDir (once: *g keeps it for the next
// call). why says why the driver cannot run.
func kafkaTarget(name string, f benchFlags, pids []int, binDir string, g **drivers.Gregor, log io.Writer) (t target, why string) {
	addr := f.bootstrap
	if addr == "" {
		addr = drivers.DefaultBootstrap
	}
	t = target{driver: name, opts: drivers.Options{Bootstrap: addr, ServerPIDs: pids, Log: log}, metrics: f.metricsURL, bootstrapFlag: f.bootstrap}
	if *g == nil {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return t, ""
		}
		if f.bootstrap != "" || !drivers.GregorBinaries(binDir) {
			return t, fmt.Sprintf("%s: no Kafka-compatible broker at %s, and no %s/gregor-cp and %s/gregor-dp to start (Gregor's data-plane program has not landed yet)", name, addr, binDir, binDir)
		}
		fmt.Fprintf(log, "bench suite: starting Gregor from %s/\n", binDir)
		started, err := drivers.StartGregor(binDir)
		if err != nil {
			return t, fmt.Sprintf("%s: starting Gregor from %s failed: %v", name, binDir, err)
		}
		*g = started
	}
	t.opts.Bootstrap, t.opts.ServerPIDs, t.metrics = (*g).Bootstrap, (*g).PIDs(), (*g).MetricsURL
	return t, ""
}

// runOne runs one workload on one target with a fresh driver (and so a fresh peer).
func runOne(ctx context.Context, w *perf.Workload, path string, t target, quick bool, log io.Writer) (*perf.Result, error) {
	d, err := drivers.New(t.driver, t.opts)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	cmd := benchCommand(path, t.driver, t.bootstrapFlag, quick)
	fmt.Fprintf(log, "bench suite: %s on %s\n", w.Name, d.System())
	wc := *w // Run records the workload; each result keeps its own copy
	return perf.Run(ctx, perf.RunConfig{Workload: &wc, Driver: d, MetricsURL: t.metrics, Progress: log, Command: cmd})
}

// writeSuite writes the suite's JSON, its charts and the BENCHMARKS.md section.
func writeSuite(s *perf.Suite, outDir, benchmarks, readingPath string) error {
	if err := perf.WriteJSON(filepath.Join(outDir, "suite-"+s.Mode+".json"), s); err != nil {
		return err
	}
	if err := perf.WriteCharts(outDir, s.Results); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(benchmarks), outDir)
	if err != nil {
		rel = outDir
	}
	reading, err := readReading(readingPath)
	if err != nil {
		return err
	}
	return perf.UpdateBenchmarks(benchmarks, perf.Section(s, filepath.ToSlash(rel), reading))
}

// readReading returns the hand-written reading, "" when the file does not exist.
func readReading(path string) (string, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return "", nil
	}
	return string(data), err
}

// reportCmd regenerates the BENCHMARKS.md section and the charts from a suite file, e.g.
// after BENCHMARKS.md was rewritten by hand or the report's layout changed.
func reportCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gregor bench report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	suitePath := fs.String("suite", filepath.Join("perf", "results", "suite-quick.json"), "suite file written by bench suite")
	bench := fs.String("benchmarks", "BENCHMARKS.md", "file whose generated section is rewritten")
	readingPath := fs.String("reading", filepath.Join("perf", "READING.md"), "hand-written reading carried into the section (skipped if missing)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	s, err := perf.ReadSuite(*suitePath)
	if err != nil {
		fmt.Fprintln(stderr, "gregor bench report:", err)
		return 1
	}
	outDir := filepath.Dir(*suitePath)
	if err := perf.WriteCharts(outDir, s.Results); err != nil {
		fmt.Fprintln(stderr, "gregor bench report:", err)
		return 1
	}
	rel, err := filepath.Rel(filepath.Dir(*bench), outDir)
	if err != nil {
		rel = outDir
	}
	reading, err := readReading(*readingPath)
	if err != nil {
		fmt.Fprintln(stderr, "gregor bench report:", err)
		return 1
	}
	if err := perf.UpdateBenchmarks(*bench, perf.Section(s, filepath.ToSlash(rel), reading)); err != nil {
		fmt.Fprintln(stderr, "gregor bench report:", err)
		return 1
	}
	fmt.Fprintf(stdout, "section rewritten in %s from %s\n", *bench, *suitePath)
	return 0
}
