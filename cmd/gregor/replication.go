package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gregor-streaming/gregor/perf"
	"github.com/gregor-streaming/gregor/perf/drivers"
	"github.com/gregor-streaming/gregor/perf/replication"
)

// replicationWorkloads are the suite's workloads the replication benchmarks produce with.
const replicationWorkloads = "max-rate-16p-1kb,fixed-rate-50k-1kb-e2e"

// hasFlag reports whether args hold the boolean flag name (-name, --name, --name=true).
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		a = strings.TrimLeft(a, "-")
		if a == name || a == name+"=true" {
			return true
		}
	}
	return false
}

// replicationCmd is `gregor bench suite --replication`: the cluster part of the suite
// (package perf/replication) on 1 gregor-cp and 3 gregor-dp processes it starts.
func replicationCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gregor bench suite --replication", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Bool("replication", true, "run the replication benchmarks (this command)")
	quick := fs.Bool("quick", false, fmt.Sprintf("quick: workloads scaled as the quick suite scales them (warmup ≤ %v, test ≤ %v); about 3 minutes", perf.QuickWarmupMax, perf.QuickTestMax))
	full := fs.Bool("full", false, "full: the workloads as written (about 25 minutes)")
	dir := fs.String("workloads", filepath.Join("perf", "workloads"), "directory of workload files")
	names := fs.String("replication-workloads", replicationWorkloads, "workloads (by name) produced on RF 1 and RF 3, comma-separated")
	bin := fs.String("gregor-bin", "bin", "directory with gregor-cp and gregor-dp")
	out := fs.String("out", filepath.Join("perf", "results"), "directory for the JSON and Markdown results")
	bench := fs.String("benchmarks", "BENCHMARKS.md", "file whose replication section is rewritten")
	ttl := fs.Duration("registration-ttl", replication.DefaultRegistrationTTL, "gregor-dp's --registration-ttl; etcd's timers are shortened when its default minimum lease (2 s) is longer")
	grace := fs.Duration("session-grace", 0, "gregor-cp's --session-grace (0: its default, 1s): how soon a killed node's registration is revoked")
	heartbeat := fs.Int("etcd-heartbeat-ms", 0, "gregor-cp's --etcd-heartbeat-ms (0: picked for the TTL)")
	election := fs.Int("etcd-election-ms", 0, "gregor-cp's --etcd-election-ms (0: picked for the TTL)")
	lag := fs.Duration("replica-lag-time-max", 0, "gregor-dp's --replica-lag-time-max (0: its default); leaders review ISRs every half of it")
	backlogGB := fs.Float64("backlog-gb", float64(replication.DefaultBacklogBytes)/(1<<30), "the follower catch-up's backlog, GiB")
	trials := fs.Int("failover-trials", 0, "leaders killed (0: 3 quick, 5 full)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *quick == *full || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "gregor bench suite --replication: give exactly one of --quick and --full")
		fs.Usage()
		return 2
	}
	if !drivers.GregorBinaries(*bin) {
		fmt.Fprintf(stderr, "gregor bench suite --replication: no %s/gregor-cp and %s/gregor-dp (make build)\n", *bin, *bin)
		return 1
	}
	all, _, err := perf.LoadWorkloadDir(*dir)
	if err != nil {
		fmt.Fprintln(stderr, "gregor bench suite --replication:", err)
		return 1
	}
	var ws []*perf.Workload
	for _, n := range strings.Split(*names, ",") {
		n = strings.TrimSpace(n)
		found := false
		for _, w := range all {
			if w.Name == n {
				ws, found = append(ws, w), true
			}
		}
		if !found && n != "" {
			fmt.Fprintf(stderr, "gregor bench suite --replication: no workload %q in %s\n", n, *dir)
			return 2
		}
	}
	mode := scaleMode(*quick, ws)
	if *trials == 0 {
		*trials = 5
		if *quick {
			*trials = 3
		}
	}
	ctx, cancel := signalContext()
	defer cancel()
	start := time.Now()
	rep, err := replication.Run(ctx, replication.Config{BinDir: *bin, Workloads: ws, Mode: mode,
		RegistrationTTL: *ttl, SessionGrace: *grace, EtcdHeartbeatMs: *heartbeat, EtcdElectionMs: *election, ReplicaLagTimeMax: *lag,
		BacklogBytes: int64(*backlogGB * (1 << 30)), FailoverTrials: *trials, Progress: stderr,
		LogDir:  filepath.Join(*out, "tmp", "replication-logs"),
		Command: "bin/gregor bench suite " + strings.Join(args, " ")})
	if err != nil {
		fmt.Fprintln(stderr, "gregor bench suite --replication:", err)
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "gregor bench suite --replication: interrupted; BENCHMARKS.md left as it was")
		}
		return 1
	}
	for _, pr := range rep.Produce {
		if pr.Result == nil { // failed: in rep.Failures
			continue
		}
		name := strings.TrimSuffix(resultFile(pr.Result), ".json") + ttlSuffix(rep) + ".json"
		if err := perf.WriteJSON(filepath.Join(*out, name), pr.Result); err != nil {
			fmt.Fprintln(stderr, "gregor bench suite --replication:", err)
			return 1
		}
	}
	section := replication.Section(rep)
	if err := writeReplication(rep, section, *out, *bench); err != nil {
		fmt.Fprintln(stderr, "gregor bench suite --replication:", err)
		return 1
	}
	fmt.Fprint(stdout, section)
	fmt.Fprintf(stdout, "results: %s/replication-%s*.{json,md}; section rewritten in %s (%.0f s)\n", *out, mode, *bench, time.Since(start).Seconds())
	if len(rep.Failures) > 0 {
		return 1
	}
	return 0
}

// ttlSuffix tells apart the files of a run at another registration TTL than the
// default ("-ttl2s"), so that runs at two TTLs can be kept side by side.
func ttlSuffix(rep *replication.Report) string {
	if ttl := rep.Cluster.RegistrationTTL; ttl != replication.DefaultRegistrationTTL {
		return "-ttl" + ttl.String()
	}
	return ""
}

// writeReplication writes the report's JSON and Markdown and its BENCHMARKS.md section.
func writeReplication(rep *replication.Report, section, outDir, benchmarks string) error {
	base := filepath.Join(outDir, "replication-"+rep.Mode+ttlSuffix(rep))
	if err := perf.WriteJSON(base+".json", rep); err != nil {
		return err
	}
	if err := os.WriteFile(base+".md", []byte(section), 0o644); err != nil {
		return err
	}
	return perf.UpdateBenchmarksBetween(benchmarks, replication.SectionBegin, replication.SectionEnd, section)
}
