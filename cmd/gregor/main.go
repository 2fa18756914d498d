// Command gregor is Gregor's command-line tool: it administers a cluster through the
// Kafka protocol (franz-go's kadm and kgo) and, for what Kafka has no API for, the
// control plane's HTTP API; and it runs the bench suite (package perf).
//
//	gregor topic create|delete|list|describe|add-partitions|alter-config|produce|consume
//	gregor group list|describe|seek|delete
//	gregor cluster info|health
//	gregor partition reassign|elect-leader
//	gregor node list|decommission|recommission
//	gregor transaction list|describe|describe-producers|find-hanging|abort
//	gregor bench run|suite|report|compare|txn
//
// The operator commands take rpk's nouns and verbs and Kafka's flag names: --brokers/-b
// (GREGOR_BROKERS, default 127.0.0.1:9092), --control-plane (GREGOR_CONTROL_PLANE,
// default 127.0.0.1:9645), --format text|json, --timeout. They print aligned tables or
// JSON on stdout, errors (named by their Kafka error, with what to do) and progress on
// stderr, and exit 0 on success, 1 when the operation failed, 2 on bad usage, 3 when
// the cluster does not answer. docs/cli.md describes every command.
//
// The transaction commands are kafka-transactions.sh's (KIP-664): they list and
// describe transactions and the producers each partition's leader keeps, find the open
// transactions that hang on partitions, and, as a last resort, abort one on a
// partition by writing its abort marker there.
//
// The bench commands: bench run runs one workload on one system and prints a table;
// bench suite runs every workload of perf/workloads on every system available and
// rewrites the generated section of BENCHMARKS.md (with --replication, the replication
// benchmarks of perf/replication and their section); bench report regenerates that
// section and the charts from a saved suite without running anything; bench compare
// runs the quick workloads on two builds of Gregor's servers, rounds interleaved, and
// prints a Markdown table of the medians, their ratios and the losses (make
// bench-compare BASE=<rev> builds the base); bench txn measures transactional produce
// with 1, 10 and 100 batches per transaction against idempotent produce (package
// perf/txn) and rewrites its section of BENCHMARKS.md.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

const usage = `usage: gregor <command> [flags]

Administer a Gregor cluster (Kafka protocol, and the control plane's HTTP API):
  topic        create, delete, list, describe, add-partitions, alter-config, produce, consume
  group        list, describe, seek, delete
  cluster      info, health
  partition    reassign, elect-leader
  node         list, decommission, recommission
  transaction  list, describe, describe-producers, find-hanging, abort

Benchmarks:
  bench        run, suite, report, compare, txn

Flags of every cluster command:
  -b, --brokers host:port,...   Kafka listeners (env GREGOR_BROKERS, default 127.0.0.1:9092)
  --control-plane host:port     a gregor-cp's HTTP address (env GREGOR_CONTROL_PLANE,
                                default 127.0.0.1:9645)
  --format text|json            aligned columns (default) or JSON
  --timeout 30s                 bound on the command's requests

Exit status: 0 ok, 1 the operation failed, 2 bad usage, 3 the cluster does not answer.
gregor <command> -h lists a command's verbs and flags; docs/cli.md has examples.

  gregor topic create demo -p 3
  printf 'k1:hello\nk2:world\n' | gregor topic produce demo --key-delimiter :
  gregor topic consume demo -n 2
`

const benchUsage = `usage:
  gregor bench run --workload FILE --driver kafka|kafka-raw|jetstream|redis [flags]
      run one workload on one system (gregor bench run -h for flags)
  gregor bench suite --quick|--full [flags]
      run every workload on every available system and rewrite BENCHMARKS.md
  gregor bench suite --replication --quick|--full [flags]
      the replication benchmarks on 1 gregor-cp and 3 gregor-dp processes: RF 3
      against RF 1, a follower's catch-up, failover, restart to ISR (make
      bench-replication)
  gregor bench report [--suite FILE] [--benchmarks FILE]
      regenerate BENCHMARKS.md's section and the charts from a saved suite
  gregor bench compare --base-bin DIR [flags]
      A/B two builds of gregor-cp and gregor-dp on the quick workloads (gregor
      bench compare -h for flags and exit statuses; make bench-compare BASE=<rev>)
  gregor bench txn [flags]
      transactional produce with 1, 10 and 100 batches per transaction against
      idempotent produce: records/s, MB/s, transactions/s, commit latency (gregor
      bench txn -h for flags; make bench-txn)
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// run dispatches a command line and returns the exit status: 0 success, 1 failure, 2
// bad usage, 3 cluster unreachable (and bench compare's own, see compare.go).
func run(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "bench":
		return benchDispatch(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	if sub, ok := strings.CutPrefix(args[0], "bench-"); ok {
		// The bench commands' names before they moved under gregor bench.
		fmt.Fprintf(stderr, "gregor: %s is now gregor bench %s\n", args[0], sub)
		return exitUsage
	}
	if strings.HasPrefix(args[0], "-") || tree().sub(args[0]) != nil {
		return runOperator(args, stdin, stdout, stderr, getenv)
	}
	fmt.Fprintf(stderr, "gregor: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// benchDispatch runs gregor bench's commands.
func benchDispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return benchCmd(args[1:], stdout, stderr)
	case "suite":
		return suiteCmd(args[1:], stdout, stderr)
	case "report":
		return reportCmd(args[1:], stdout, stderr)
	case "compare":
		return compareCmd(args[1:], stdout, stderr)
	case "txn":
		return txnBenchCmd(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, benchUsage)
		return exitOK
	}
	if strings.HasPrefix(args[0], "-") {
		// gregor bench --workload F …, as BENCHMARKS.md's generated sections written
		// before bench run existed still show it.
		return benchCmd(args, stdout, stderr)
	}
	fmt.Fprintf(stderr, "gregor bench: unknown command %q\n%s", args[0], benchUsage)
	return exitUsage
}
