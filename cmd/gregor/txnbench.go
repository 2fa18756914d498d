package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/gregor-streaming/gregor/perf"
	"github.com/gregor-streaming/gregor/perf/drivers"
	"github.com/gregor-streaming/gregor/perf/txn"
)

// txnBenchCmd is `gregor bench txn`: transactional produce with 1, 10 and 100 batches
// per transaction against idempotent produce (package perf/txn), on the broker at
// --bootstrap or on a Gregor it starts from --gregor-bin, as bench suite finds one.
func txnBenchCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gregor bench txn", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f benchFlags
	fs.StringVar(&f.bootstrap, "bootstrap", "", "broker host:port (default "+drivers.DefaultBootstrap+"; when nothing answers there, Gregor is started from --gregor-bin)")
	fs.StringVar(&f.bootstrap, "brokers", "", "the same as --bootstrap")
	fs.StringVar(&f.serverPIDs, "server-pid", "", "comma-separated pids to account server CPU to, when not found from the listening port")
	fs.StringVar(&f.outDir, "out", filepath.Join("perf", "results"), "directory for the JSON and Markdown results (txn.json, txn.md)")
	bin := fs.String("gregor-bin", "bin", "directory with gregor-cp and gregor-dp, started when no broker answers at --bootstrap")
	bench := fs.String("benchmarks", "BENCHMARKS.md", "file whose transactions section is rewritten (\"\": none)")
	s := txn.DefaultSettings()
	fs.IntVar(&s.Partitions, "partitions", s.Partitions, "partitions of the topic each mode produces to")
	fs.IntVar(&s.RecordSize, "record-size", s.RecordSize, "bytes of each record's value")
	fs.IntVar(&s.BatchRecords, "batch-records", s.BatchRecords, "records a batch carries to each partition (a batch is one Produce request)")
	fs.IntVar(&s.Producers, "producers", s.Producers, "producers running at once, each a client of its own")
	batches := fs.String("batches-per-txn", "1,10,100", "the transactional modes: batches per transaction, comma-separated")
	fs.DurationVar(&s.Warmup, "warmup", s.Warmup, "each mode's warmup, before its measured window")
	fs.DurationVar(&s.Duration, "duration", s.Duration, "each mode's measured window")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gregor bench txn: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitUsage
	}
	var err error
	if s.BatchesPerTxn, err = txn.ParseBatchesPerTxn(*batches); err == nil {
		err = s.Validate()
	}
	if err != nil {
		fmt.Fprintln(stderr, "gregor bench txn:", err)
		return exitUsage
	}
	pids, err := f.pids()
	if err != nil {
		fmt.Fprintln(stderr, "gregor bench txn:", err)
		return exitUsage
	}
	ctx, cancel := signalContext()
	defer cancel()
	var gregor *drivers.Gregor
	defer func() {
		if gregor != nil {
			gregor.Stop()
		}
	}()
	t, why := kafkaTarget("kafka", f, pids, *bin, &gregor, stderr)
	if why != "" {
		fmt.Fprintln(stderr, "gregor bench txn:", why)
		return exitFailed
	}
	d, err := drivers.New(t.driver, t.opts)
	if err != nil {
		fmt.Fprintln(stderr, "gregor bench txn:", err)
		return exitFailed
	}
	defer d.Close()
	system := "the broker at " + t.opts.Bootstrap
	if gregor != nil {
		system = fmt.Sprintf("Gregor, 1 gregor-cp and 1 gregor-dp started from %s/ on loopback", *bin)
	}
	rep, err := txn.Run(ctx, txn.Config{Settings: s, Driver: d, Bootstrap: t.opts.Bootstrap, System: system,
		Progress: stderr, Command: strings.TrimSpace("bin/gregor bench txn " + strings.Join(args, " "))})
	if err != nil {
		fmt.Fprintln(stderr, "gregor bench txn:", err)
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "gregor bench txn: interrupted; no result written")
		}
		return exitFailed
	}
	var out bytes.Buffer
	txn.WriteTable(&out, rep)
	stdout.Write(out.Bytes())
	section := txn.Section(rep)
	if err := writeTxnReport(rep, section, f.outDir, *bench); err != nil {
		fmt.Fprintln(stderr, "gregor bench txn:", err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "results: %s", filepath.Join(f.outDir, "txn.{json,md}"))
	if *bench != "" {
		fmt.Fprintf(stdout, "; section rewritten in %s", *bench)
	}
	fmt.Fprintln(stdout)
	if len(rep.Failures) > 0 {
		return exitFailed
	}
	return exitOK
}

// writeTxnReport writes the report's JSON and Markdown and, unless benchmarks is "",
// its BENCHMARKS.md section.
func writeTxnReport(rep *txn.Report, section, outDir, benchmarks string) error {
	base := filepath.Join(outDir, "txn")
	if err := perf.WriteJSON(base+".json", rep); err != nil {
		return err
	}
	if err := os.WriteFile(base+".md", []byte(section), 0o644); err != nil {
		return err
	}
	if benchmarks == "" {
		return nil
	}
	return perf.UpdateBenchmarksBetween(benchmarks, txn.SectionBegin, txn.SectionEnd, section)
}
