package main

// The command tree of the operator commands (topic, group, cluster, partition, node,
// transaction): rpk's nouns and verbs, Kafka's flag names, GNU-style flags
// (spf13/pflag) that may come anywhere after the command's words, as in
// `gregor topic create demo -p 3`.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

// Exit statuses of the operator commands (docs/cli.md lists them).
const (
	exitOK = 0
	// exitFailed: the operation failed (the cluster refused it, a partition is
	// unhealthy for cluster health, a record could not be produced).
	exitFailed = 1
	// exitUsage: the command line is wrong (unknown command or flag, missing argument,
	// malformed value); nothing was sent.
	exitUsage = 2
	// exitUnreachable: no broker (or control plane, for the commands that need it)
	// answered at the addresses given.
	exitUnreachable = 3
)

// Defaults and their environment variables.
const (
	defaultBrokers      = "127.0.0.1:9092"
	defaultControlPlane = "127.0.0.1:9645"
	envBrokers          = "GREGOR_BROKERS"
	envControlPlane     = "GREGOR_CONTROL_PLANE"
	// defaultTimeout bounds one command's requests (not a consume or a --watch, which
	// run until done or interrupted).
	defaultTimeout = 30 * time.Second
	// dialTimeout bounds one connection attempt, so that an unreachable cluster is
	// reported within seconds.
	dialTimeout = 3 * time.Second
)

// exitError is an error with the exit status it ends the command with.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// usageErrorf is a bad command line (exit 2).
func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, args...)}
}

// failf is a failed operation (exit 1).
func failf(format string, args ...any) error {
	return &exitError{code: exitFailed, msg: fmt.Sprintf(format, args...)}
}

// unreachablef is a cluster that does not answer (exit 3).
func unreachablef(format string, args ...any) error {
	return &exitError{code: exitUnreachable, msg: fmt.Sprintf(format, args...)}
}

// errReported is returned by a command that has already written its errors (one per
// failed item of a table): the dispatcher only sets the exit status.
var errReported = &exitError{code: exitFailed}

// runFunc runs a command with its arguments (the flags removed).
type runFunc func(ctx context.Context, g *globals, args []string) error

// command is one node of the command tree: a noun with verbs under it (subs), or a
// verb that runs (setup).
type command struct {
	name    string
	args    string // the positional arguments, for the usage line: "TOPIC..."
	summary string
	long    string // optional text after the usage line
	subs    []*command
	// setup registers the verb's own flags and returns the function that runs it.
	setup func(fs *pflag.FlagSet) runFunc
	// nargs bounds the positional arguments: min, and max (-1: any).
	minArgs, maxArgs int
}

// globals are the flags every operator command takes, and what the command writes to.
type globals struct {
	brokers      string
	controlPlane string
	format       string
	timeout      time.Duration

	stdin          io.Reader
	stdout, stderr io.Writer
	// path is the command's words ("topic create"), for messages.
	path string

	kafka kafka
}

func (g *globals) register(fs *pflag.FlagSet, getenv func(string) string) {
	brokers := getenv(envBrokers)
	if brokers == "" {
		brokers = defaultBrokers
	}
	cp := getenv(envControlPlane)
	if cp == "" {
		cp = defaultControlPlane
	}
	fs.StringVarP(&g.brokers, "brokers", "b", brokers, "comma-separated Kafka listeners of the cluster (env "+envBrokers+")")
	fs.StringVar(&g.controlPlane, "control-plane", cp, "HTTP address of a gregor-cp (its --http) (env "+envControlPlane+")")
	fs.StringVar(&g.format, "format", "text", "output: text (aligned columns) or json")
	fs.DurationVar(&g.timeout, "timeout", defaultTimeout, "bound on the command's requests")
}

// globalValueFlags are the global flags that take a value, for finding the command's
// words among flags given before them (`gregor -b host:9092 topic list`).
var globalValueFlags = map[string]bool{"-b": true, "--brokers": true, "--control-plane": true, "--format": true, "--timeout": true}

// json reports whether the output is JSON.
func (g *globals) json() bool { return g.format == "json" }

// warnf writes a note or progress line on stderr.
func (g *globals) warnf(format string, args ...any) {
	fmt.Fprintf(g.stderr, "gregor %s: %s\n", g.path, fmt.Sprintf(format, args...))
}

// tree is the operator commands; bench is dispatched apart (its commands keep the
// standard flag package and their own usage).
func tree() *command {
	return &command{name: "gregor", subs: []*command{
		topicCommand(), groupCommand(), clusterCommand(), partitionCommand(), nodeCommand(), transactionCommand(),
	}}
}

// runOperator runs an operator command line (args start with the noun) and returns
// its exit status.
func runOperator(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	root := tree()
	cmd, path, rest := root, []string{}, []string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			rest = append(rest, a)
			if globalValueFlags[a] && i+1 < len(args) {
				rest = append(rest, args[i+1])
				i++
			}
			continue
		}
		if cmd.setup != nil {
			rest = append(rest, a)
			continue
		}
		sub := cmd.sub(a)
		if sub == nil {
			fmt.Fprintf(stderr, "gregor %s: unknown command %q\n\n", strings.Join(path, " "), a)
			cmd.usage(stderr, path, nil)
			return exitUsage
		}
		cmd, path = sub, append(path, a)
	}
	if cmd.setup == nil {
		w, code := stderr, exitUsage
		if slices.Contains(rest, "-h") || slices.Contains(rest, "--help") {
			w, code = stdout, exitOK
		}
		cmd.usage(w, path, nil)
		return code
	}

	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr, path: strings.Join(path, " ")}
	fs := pflag.NewFlagSet("gregor "+g.path, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	runFn := cmd.setup(fs)
	g.register(fs, getenv)
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			cmd.usage(stdout, path, fs)
			return exitOK
		}
		fmt.Fprintf(stderr, "gregor %s: %v\n\n", g.path, err)
		cmd.usage(stderr, path, fs)
		return exitUsage
	}
	pos := fs.Args()
	if len(pos) < cmd.minArgs || (cmd.maxArgs >= 0 && len(pos) > cmd.maxArgs) {
		fmt.Fprintf(stderr, "gregor %s: %s\n\n", g.path, argCountError(cmd, len(pos)))
		cmd.usage(stderr, path, fs)
		return exitUsage
	}
	if g.format != "text" && g.format != "json" && !cmd.ownFormat() {
		fmt.Fprintf(stderr, "gregor %s: --format %q: text or json\n", g.path, g.format)
		return exitUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := runFn(ctx, g, pos)
	g.close()
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		ee = &exitError{code: exitFailed, msg: err.Error()}
		if ctx.Err() != nil {
			ee.msg = "interrupted"
		}
	}
	if ee.msg != "" {
		fmt.Fprintf(stderr, "gregor %s: %s\n", g.path, ee.msg)
	}
	return ee.code
}

// ownFormat reports whether the verb reads --format itself (topic consume's record
// formats).
func (c *command) ownFormat() bool { return c.name == "consume" }

func argCountError(c *command, n int) string {
	switch {
	case c.maxArgs == 0:
		return fmt.Sprintf("takes no arguments, got %d", n)
	case n < c.minArgs:
		return fmt.Sprintf("missing %s", c.args)
	default:
		return fmt.Sprintf("too many arguments (%d): %s", n, c.args)
	}
}

func (c *command) sub(name string) *command {
	for _, s := range c.subs {
		if s.name == name {
			return s
		}
	}
	return nil
}

// usage writes the command's usage: its verbs for a noun, its flags for a verb.
func (c *command) usage(w io.Writer, path []string, fs *pflag.FlagSet) {
	name := strings.Join(append([]string{"gregor"}, path...), " ")
	if c.setup == nil {
		fmt.Fprintf(w, "usage: %s <command> [flags]\n\n", name)
		if c.long != "" {
			fmt.Fprintf(w, "%s\n\n", c.long)
		}
		fmt.Fprintln(w, "commands:")
		width := 16
		for _, s := range c.subs {
			width = max(width, len(s.name))
		}
		for _, s := range c.subs {
			fmt.Fprintf(w, "  %-*s %s\n", width, s.name, s.summary)
		}
		fmt.Fprintf(w, "\n%s <command> -h shows a command's flags; docs/cli.md has examples.\n", name)
		return
	}
	fmt.Fprintf(w, "usage: %s %s[flags]\n\n%s\n", name, strings.TrimSpace(c.args+" "), c.summary)
	if c.long != "" {
		fmt.Fprintf(w, "\n%s\n", c.long)
	}
	if fs != nil {
		fmt.Fprintf(w, "\nflags:\n%s", fs.FlagUsages())
	}
}
