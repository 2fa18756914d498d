package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/gregor-streaming/gregor/perf"
	"github.com/gregor-streaming/gregor/perf/drivers"
)

// defaultMetricsURL is Gregor's data-plane metrics as `make run` serves them.
const defaultMetricsURL = "http://127.0.0.1:9644/metrics"

// benchFlags are the flags bench run and bench suite share.
type benchFlags struct {
	bootstrap  string
	metricsURL string
	serverPIDs string
	outDir     string
}

func (f *benchFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.bootstrap, "bootstrap", "", "Kafka drivers: broker host:port (default "+drivers.DefaultBootstrap+"); jetstream/redis (bench only): address of a running server instead of starting one")
	fs.StringVar(&f.metricsURL, "metrics", defaultMetricsURL, "Gregor's /metrics URL, for the zero-copy share (Kafka drivers; ignored when it does not answer)")
	fs.StringVar(&f.serverPIDs, "server-pid", "", "comma-separated pids to account server CPU to, when not found from the listening port")
	fs.StringVar(&f.outDir, "out", filepath.Join("perf", "results"), "directory for JSON results (and charts)")
}

func (f *benchFlags) pids() ([]int, error) {
	var pids []int
	for _, s := range strings.Split(f.serverPIDs, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--server-pid: %q is not a pid", s)
		}
		pids = append(pids, n)
	}
	return pids, nil
}

// signalContext is cancelled on SIGINT or SIGTERM, so an interrupted run still stops the
// peers it started.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func benchCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gregor bench run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f benchFlags
	f.register(fs)
	workload := fs.String("workload", "", "workload file (YAML, OMB fields), e.g. perf/workloads/1-max-rate-1p-100b.yaml")
	driver := fs.String("driver", "", "system to drive: "+strings.Join(drivers.Names, ", "))
	quick := fs.Bool("quick", false, "scale the workload down as the quick suite does")
	cpuProfile := fs.String("cpuprofile", "", "write the harness's CPU profile to this file (is the client the bottleneck?)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *workload == "" || *driver == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "gregor bench run: --workload and --driver are required")
		fs.Usage()
		return 2
	}
	pids, err := f.pids()
	if err != nil {
		fmt.Fprintln(stderr, "gregor bench run:", err)
		return 2
	}
	w, err := perf.LoadWorkload(*workload)
	if err != nil {
		fmt.Fprintln(stderr, "gregor bench run:", err)
		return 1
	}
	if *quick {
		w.ScaleQuick()
	}
	ctx, cancel := signalContext()
	defer cancel()
	d, err := drivers.New(*driver, drivers.Options{Bootstrap: f.bootstrap, ServerPIDs: pids, Log: stderr})
	if err != nil {
		fmt.Fprintln(stderr, "gregor bench run:", err)
		return 1
	}
	defer d.Close()
	metrics := ""
	if strings.HasPrefix(*driver, "kafka") {
		metrics = f.metricsURL
	}
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "gregor bench run:", err)
			return 1
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			fmt.Fprintln(stderr, "gregor bench run:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	cmd := benchCommand(*workload, *driver, f.bootstrap, *quick)
	fmt.Fprintf(stderr, "bench: %s on %s (%s)\n", w.Name, d.System(), cmd)
	res, err := perf.Run(ctx, perf.RunConfig{Workload: w, Driver: d, MetricsURL: metrics, Progress: stderr, Command: cmd})
	if err != nil {
		fmt.Fprintln(stderr, "gregor bench run:", err)
		return 1
	}
	var out bytes.Buffer
	perf.WriteTable(&out, []*perf.Result{res})
	for _, n := range res.Notes {
		fmt.Fprintf(&out, "note: %s\n", n)
	}
	stdout.Write(out.Bytes())
	path := filepath.Join(f.outDir, resultFile(res))
	if err := perf.WriteJSON(path, res); err != nil {
		fmt.Fprintln(stderr, "gregor bench run:", err)
		return 1
	}
	fmt.Fprintf(stdout, "result: %s\n", path)
	if res.PublishErrors > 0 {
		fmt.Fprintf(stderr, "gregor bench run: %d publishes failed, first: %s\n", res.PublishErrors, res.FirstError)
		return 1
	}
	return 0
}

// resultFile names a run's JSON file.
func resultFile(r *perf.Result) string { return r.Workload.Name + "-" + r.Driver + ".json" }

// benchCommand is the command line that reruns one workload alone.
func benchCommand(workload, driver, bootstrap string, quick bool) string {
	c := "bin/gregor bench run --workload " + filepath.ToSlash(workload) + " --driver " + driver
	if bootstrap != "" {
		c += " --bootstrap " + bootstrap
	}
	if quick {
		c += " --quick"
	}
	return c
}
