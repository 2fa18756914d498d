// Command gregor is Gregor's command-line tool. Its subcommands run the bench suite
// (package perf):
//
//	gregor bench --workload FILE --driver kafka|kafka-raw|jetstream|redis [--bootstrap ADDR]
//	gregor bench-suite --quick|--full [--bootstrap ADDR]
//	gregor bench-suite --replication --quick|--full [--registration-ttl 6s] [--session-grace 1s]
//	gregor bench-report [--suite perf/results/suite-quick.json]
//	gregor bench-compare --base-bin DIR [--new-bin bin] [--rounds 3] [--drivers kafka-raw]
//
// bench runs one workload on one system and prints a table; bench-suite runs every
// workload of perf/workloads on every system available and rewrites the generated
// section of BENCHMARKS.md (with --replication, the replication benchmarks of
// perf/replication and their section); bench-report regenerates that section and the charts from a
// saved suite without running anything; bench-compare runs the quick workloads on two
// builds of Gregor's servers, rounds interleaved, and prints a Markdown table of the
// medians, their ratios and the losses (make bench-compare BASE=<rev> builds the base).
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `usage:
  gregor bench --workload FILE --driver kafka|kafka-raw|jetstream|redis [flags]
      run one workload on one system (gregor bench -h for flags)
  gregor bench-suite --quick|--full [flags]
      run every workload on every available system and rewrite BENCHMARKS.md
  gregor bench-suite --replication --quick|--full [flags]
      the replication benchmarks on 1 gregor-cp and 3 gregor-dp processes: RF 3
      against RF 1, a follower's catch-up, failover, restart to ISR (make
      bench-replication)
  gregor bench-report [--suite FILE] [--benchmarks FILE]
      regenerate BENCHMARKS.md's section and the charts from a saved suite
  gregor bench-compare --base-bin DIR [flags]
      A/B two builds of gregor-cp and gregor-dp on the quick workloads (gregor
      bench-compare -h for flags and exit statuses; make bench-compare BASE=<rev>)
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the exit status: 0 success, 1 failure, 2 bad
// usage.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "bench":
		return benchCmd(args[1:], stdout, stderr)
	case "bench-suite":
		return suiteCmd(args[1:], stdout, stderr)
	case "bench-report":
		return reportCmd(args[1:], stdout, stderr)
	case "bench-compare":
		return compareCmd(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "gregor: unknown command %q\n%s", args[0], usage)
	return 2
}
