package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/api"
	"github.com/gregor-streaming/gregor/internal/reserve"
	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// gregorCLI runs operator commands in this process against one cluster, as a shell
// with GREGOR_BROKERS and GREGOR_CONTROL_PLANE set would run bin/gregor.
type gregorCLI struct {
	t   *testing.T
	env map[string]string
}

// result is one command's exit status and output.
type result struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d after %v\nstdout:\n%s\nstderr:\n%s", r.code, r.elapsed.Round(time.Millisecond), r.stdout, r.stderr)
}

func newCLI(t *testing.T, c *testcluster.Cluster) *gregorCLI {
	var cps []string
	for _, m := range c.CPs {
		cps = append(cps, m.HTTPAddr())
	}
	return &gregorCLI{t: t, env: map[string]string{
		envBrokers:      strings.Join(c.Brokers(), ","),
		envControlPlane: strings.Join(cps, ","),
	}}
}

// run runs a command line with stdin.
func (g *gregorCLI) run(stdin string, args ...string) result {
	var o, e bytes.Buffer
	start := time.Now()
	code := run(args, strings.NewReader(stdin), &o, &e, func(k string) string { return g.env[k] })
	return result{code: code, stdout: o.String(), stderr: e.String(), elapsed: time.Since(start)}
}

// ok runs a command that must succeed and returns its stdout.
func (g *gregorCLI) ok(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := g.run(stdin, args...)
	if r.code != 0 {
		t.Fatalf("gregor %s: %v", strings.Join(args, " "), r)
	}
	return r.stdout
}

// fails runs a command that must exit with code and say want on stderr.
func (g *gregorCLI) fails(t *testing.T, code int, want string, args ...string) result {
	t.Helper()
	r := g.run("", args...)
	if r.code != code || !strings.Contains(r.stderr, want) {
		t.Errorf("gregor %s: want exit %d and %q on stderr, got %v", strings.Join(args, " "), code, want, r)
	}
	return r
}

// okJSON runs a command with --format json and decodes its output into v.
func (g *gregorCLI) okJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := g.ok(t, "", append(args, "--format", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("gregor %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// syncBuffer is a buffer a command writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestOperatorUsage checks bad command lines: exit 2, nothing sent (no cluster runs).
func TestOperatorUsage(t *testing.T) {
	env := map[string]string{envBrokers: "127.0.0.1:1"}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"topic"}, "usage: gregor topic <command>"},
		{[]string{"topic", "frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"topic", "create"}, "missing TOPIC..."},
		{[]string{"topic", "create", "x", "--partitions", "many"}, `invalid argument "many"`},
		{[]string{"topic", "create", "x", "-p", "0"}, "at least 1"},
		{[]string{"topic", "create", "x", "-c", "retention.ms"}, "want name=value"},
		{[]string{"topic", "list", "--format", "yaml"}, `--format "yaml"`},
		{[]string{"topic", "list", "extra"}, "takes no arguments"},
		{[]string{"topic", "alter-config", "x"}, "nothing to change"},
		{[]string{"topic", "add-partitions", "x"}, "give one of --num N"},
		{[]string{"topic", "produce", "x", "--acks", "2"}, `--acks "2"`},
		{[]string{"topic", "produce", "x", "-z", "brotli"}, `--compression "brotli"`},
		{[]string{"topic", "consume", "x", "--offset", "yesterday"}, `--offset "yesterday"`},
		{[]string{"topic", "consume", "x", "--format", "%q"}, "unknown verb"},
		{[]string{"topic", "consume", "x", "-g", "g", "-e"}, "--group takes no -e"},
		{[]string{"group", "seek", "g"}, "--to is required"},
		{[]string{"group", "seek", "g", "--to", "never"}, `--to "never"`},
		{[]string{"partition", "reassign", "t/0"}, "want TOPIC/PARTITION:REPLICAS"},
		{[]string{"partition", "reassign", "t/0:1,1"}, "node 1 twice"},
		{[]string{"partition", "elect-leader"}, "or give --all"},
		{[]string{"partition", "elect-leader", "t", "--type", "random"}, `--type "random"`},
		{[]string{"cluster", "health", "--watch", "--exit-when-healthy"}, "give one of"},
		{[]string{"node", "decommission", "three"}, `"three" is not a node id`},
		{[]string{"node", "recommission"}, "missing NODE-ID"},
		{[]string{"transaction", "describe"}, "missing TRANSACTIONAL-ID..."},
		{[]string{"transaction", "list", "--state", "Frozen"}, `--state "Frozen"`},
		{[]string{"transaction", "list", "--producer-id", "x"}, `invalid argument "x"`},
		{[]string{"transaction", "describe-producers"}, "--topic is required"},
		{[]string{"transaction", "find-hanging", "--topic", "t", "--node", "1"}, "not both"},
		{[]string{"transaction", "abort", "--topic", "t", "--partition", "0"}, "give --start-offset, or --producer-id"},
		{[]string{"transaction", "abort", "--topic", "t", "--partition", "0", "--producer-id", "5"}, "go together"},
		{[]string{"topic", "list", "-b", "nocolon"}, `"nocolon" is not host:port`},
		{[]string{"bench-suite", "--quick"}, "bench-suite is now gregor bench suite"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
	}
	for _, tc := range tests {
		var o, e bytes.Buffer
		code := run(tc.args, strings.NewReader(""), &o, &e, func(k string) string { return env[k] })
		if code != exitUsage || !strings.Contains(e.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, e.String(), tc.want)
		}
	}
	// -h prints the usage on stdout and exits 0.
	for _, args := range [][]string{{"topic", "-h"}, {"topic", "create", "-h"}, {"--help"}, {"bench", "-h"}} {
		var o, e bytes.Buffer
		if code := run(args, strings.NewReader(""), &o, &e, func(string) string { return "" }); code != 0 || !strings.Contains(o.String(), "usage:") {
			t.Errorf("%v: exit %d, stdout %q", args, code, o.String())
		}
	}
}

// TestUnreachable checks that a cluster that does not answer is reported in seconds,
// with exit status 3 and the addresses tried.
func TestUnreachable(t *testing.T) {
	res, err := reserve.TCP("127.0.0.1:0") // bound by no listener, and no other test's either
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	g := &gregorCLI{t: t, env: map[string]string{envBrokers: res.Addr(), envControlPlane: res.Addr()}}
	for _, args := range [][]string{
		{"topic", "list"}, {"topic", "create", "x"}, {"cluster", "health"}, {"group", "list"},
		{"topic", "produce", "x"}, {"topic", "consume", "x", "-n", "1"}, {"node", "list"},
	} {
		r := g.fails(t, exitUnreachable, res.Addr(), args...)
		if r.elapsed > 2*dialTimeout {
			t.Errorf("%v: %v to report an unreachable cluster", args, r.elapsed)
		}
	}
	g.fails(t, exitUnreachable, "no broker answers at", "topic", "list")
	g.fails(t, exitUnreachable, "no control plane answers at", "node", "list")
}

// TestOperatorCommands runs every operator command against one cluster of real
// processes (1 gregor-cp, 3 gregor-dp), right and wrong input alike, and ends with a
// node killed: health goes bad, and good again once it is back.
func TestOperatorCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 4 processes")
	}
	c := testcluster.New(t, testcluster.Options{DataPlanes: 3, Processes: true})
	g := newCLI(t, c)

	t.Run("topic create", func(t *testing.T) {
		out := g.ok(t, "", "topic", "create", "demo", "-p", "3", "-r", "3", "-c", "min.insync.replicas=2")
		if !strings.Contains(out, "TOPIC") || !strings.Contains(out, "demo") || !strings.Contains(out, "OK") {
			t.Errorf("table:\n%s", out)
		}
		g.ok(t, "", "topic", "create", "one", "--partitions=1", "--replication-factor=1")
		g.fails(t, exitFailed, `TOPIC_ALREADY_EXISTS: topic "demo" exists; see it with gregor topic describe demo`, "topic", "create", "demo")
		g.fails(t, exitFailed, "INVALID_REPLICATION_FACTOR", "topic", "create", "big", "-r", "5")
		g.fails(t, exitFailed, "INVALID_CONFIG", "topic", "create", "bad", "-c", "retention.ms=soon")
		g.fails(t, exitFailed, "INVALID_CONFIG", "topic", "create", "bad", "-c", "cleanup.policy=compact")
		// --dry-run validates and creates nothing.
		g.ok(t, "", "topic", "create", "dry", "--dry-run")
		// Every node knows both topics a moment after the one that created them.
		want := map[string]topicSummary{"demo": {Topic: "demo", Partitions: 3, ReplicationFactor: 3}, "one": {Topic: "one", Partitions: 1, ReplicationFactor: 1}}
		c.CheckFor(t, 10*time.Second, func() error {
			for range c.DPs { // the command asks a node at random
				var list []topicSummary
				g.okJSON(t, &list, "topic", "list")
				if len(list) != len(want) {
					return fmt.Errorf("topics %+v, want %+v", list, want)
				}
				for _, s := range list {
					if w := want[s.Topic]; s.Partitions != w.Partitions || s.ReplicationFactor != w.ReplicationFactor {
						return fmt.Errorf("topic %+v, want %+v", s, w)
					}
				}
			}
			return nil
		})
	})

	t.Run("topic describe", func(t *testing.T) {
		out := g.ok(t, "", "topic", "describe", "demo")
		for _, want := range []string{"SUMMARY", "CONFIGS", "PARTITIONS", "min.insync.replicas", "HIGH-WATERMARK"} {
			if !strings.Contains(out, want) {
				t.Errorf("no %q in\n%s", want, out)
			}
		}
		var views []topicView
		g.okJSON(t, &views, "topic", "describe", "demo")
		if len(views) != 1 || len(views[0].PartitionsList) != 3 {
			t.Fatalf("describe: %+v", views)
		}
		for _, p := range views[0].PartitionsList {
			if p.Leader < 1 || len(p.Replicas) != 3 || p.HighWatermark != 0 || p.LogStartOffset != 0 {
				t.Errorf("partition %+v", p)
			}
		}
		var mir configView
		for _, cv := range views[0].Configs {
			if cv.Name == "min.insync.replicas" {
				mir = cv
			}
		}
		if mir.Value != "2" || !strings.Contains(mir.Source, "TOPIC") {
			t.Errorf("min.insync.replicas: %+v", mir)
		}
		g.fails(t, exitFailed, `UNKNOWN_TOPIC_OR_PARTITION: topic "nope" does not exist; list topics with gregor topic list`, "topic", "describe", "nope")
	})

	t.Run("produce and consume", func(t *testing.T) {
		out := g.ok(t, "k1:hello\nk2:world\nk3:again\nno key\n", "topic", "produce", "demo", "--key-delimiter", ":", "-z", "zstd")
		if !strings.Contains(out, "FIRST-OFFSET") {
			t.Errorf("produce table:\n%s", out)
		}
		var produced []producedPartition
		if err := json.Unmarshal([]byte(g.ok(t, "x\ny\n", "topic", "produce", "one", "--acks", "1", "--format", "json")), &produced); err != nil ||
			len(produced) != 1 || produced[0].Records != 2 || produced[0].FirstOffset != 0 || produced[0].LastOffset != 1 {
			t.Errorf("produce json: %+v %v", produced, err)
		}
		// Every record once, with its key, whatever the partition.
		out = g.ok(t, "", "topic", "consume", "demo", "-n", "4", "--format", `%k=%v\n`)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		got := map[string]bool{}
		for _, l := range lines {
			got[l] = true
		}
		for _, w := range []string{"k1=hello", "k2=world", "k3=again", "=no key"} {
			if !got[w] || len(lines) != 4 {
				t.Errorf("consumed %q, want %q among 4 lines", lines, w)
			}
		}
		// -e stops at the end; json carries offsets and keys.
		r := g.run("", "topic", "consume", "one", "-e", "--format", "json")
		var recs []recordJSON
		for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			var rec recordJSON
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Fatalf("%v: %v", r, err)
			}
			recs = append(recs, rec)
		}
		if r.code != 0 || len(recs) != 2 || recs[0].Value != "x" || recs[1].Offset != 1 || recs[0].Key != nil {
			t.Errorf("consume -e: %+v\n%v", recs, r)
		}
		// --offset N from partition 0 of "one".
		if out := g.ok(t, "", "topic", "consume", "one", "-o", "1", "-p", "0", "-e"); out != "y\n" {
			t.Errorf("consume -o 1: %q", out)
		}
		g.fails(t, exitFailed, `topic "nope" does not exist; create it with gregor topic create nope`, "topic", "produce", "nope")
		g.fails(t, exitFailed, `topic "nope" does not exist`, "topic", "consume", "nope", "-n", "1")
		g.fails(t, exitFailed, `has no partition 7`, "topic", "produce", "one", "-p", "7")
	})

	t.Run("groups", func(t *testing.T) {
		// A group member that prints and commits two records of "one", then leaves.
		if out := g.ok(t, "", "topic", "consume", "one", "-g", "readers", "-n", "1"); out != "x\n" {
			t.Errorf("group consume: %q", out)
		}
		var views []groupView
		g.okJSON(t, &views, "group", "describe", "readers")
		if len(views) != 1 || views[0].State != "Empty" || len(views[0].Offsets) != 1 ||
			views[0].Offsets[0].CurrentOffset != 1 || views[0].Offsets[0].Lag != 1 || views[0].TotalLag != 1 {
			t.Fatalf("describe: %+v", views)
		}
		if out := g.ok(t, "", "group", "list"); !strings.Contains(out, "readers") || !strings.Contains(out, "Empty") {
			t.Errorf("group list:\n%s", out)
		}
		// Seek back to the start: the next member reads both.
		out := g.ok(t, "", "group", "seek", "readers", "--to", "start")
		if !strings.Contains(out, "PREVIOUS-OFFSET") || !strings.Contains(out, "one") {
			t.Errorf("seek:\n%s", out)
		}
		var seek []seekResult
		g.okJSON(t, &seek, "group", "seek", "readers", "--to", "end", "--dry-run")
		if len(seek) != 1 || seek[0].PreviousOffset != 0 || seek[0].NewOffset != 2 {
			t.Errorf("seek --dry-run: %+v", seek)
		}
		g.okJSON(t, &seek, "group", "seek", "readers", "--to", "1")
		if len(seek) != 1 || seek[0].NewOffset != 1 {
			t.Errorf("seek --to 1: %+v", seek)
		}
		if out := g.ok(t, "", "topic", "consume", "one", "-g", "readers", "-n", "1"); out != "y\n" {
			t.Errorf("after seek to 1: %q", out)
		}
		g.fails(t, exitFailed, `GROUP_ID_NOT_FOUND: group "ghost" does not exist`, "group", "describe", "ghost")
		g.fails(t, exitUsage, "no committed offsets", "group", "seek", "ghost", "--to", "start")
		g.fails(t, exitFailed, `topic "nope" does not exist`, "group", "seek", "readers", "--to", "start", "--topics", "nope")
		g.ok(t, "", "group", "delete", "readers")
		g.fails(t, exitFailed, `GROUP_ID_NOT_FOUND: group "readers" does not exist`, "group", "delete", "readers")
	})

	t.Run("add-partitions and elect-leader", func(t *testing.T) {
		g.ok(t, "", "topic", "add-partitions", "one", "-n", "2")
		// The node that answered has the new partitions; the others see them soon after.
		c.CheckFor(t, 10*time.Second, func() error {
			var list []topicSummary
			g.okJSON(t, &list, "topic", "list")
			for _, s := range list {
				if s.Topic == "one" && s.Partitions != 3 {
					return fmt.Errorf("one has %d partitions, want 3", s.Partitions)
				}
			}
			return nil
		})
		g.fails(t, exitFailed, "INVALID_PARTITIONS", "topic", "add-partitions", "one", "--partitions", "2")
		g.fails(t, exitFailed, `topic "nope" does not exist`, "topic", "add-partitions", "nope", "-n", "1")
		var elected []electResult
		g.okJSON(t, &elected, "partition", "elect-leader", "demo")
		if len(elected) != 3 {
			t.Errorf("elect-leader: %+v", elected)
		}
		for _, e := range elected {
			if e.Error != "" || e.Leader < 1 {
				t.Errorf("elect-leader: %+v", e)
			}
		}
		g.fails(t, exitFailed, `topic "nope" does not exist`, "partition", "elect-leader", "nope")
	})

	t.Run("alter-config", func(t *testing.T) {
		config := func(name string) configView {
			t.Helper()
			var views []topicView
			g.okJSON(t, &views, "topic", "describe", "demo")
			for _, cv := range views[0].Configs {
				if cv.Name == name {
					return cv
				}
			}
			t.Fatalf("no config %s in %+v", name, views[0].Configs)
			return configView{}
		}
		g.ok(t, "", "topic", "alter-config", "demo", "--set", "retention.ms=3600000")
		// Incremental: the config set at creation stays; DescribeConfigs gives sources.
		if cv := config("retention.ms"); cv.Value != "3600000" || cv.Source != "DYNAMIC_TOPIC_CONFIG" {
			t.Errorf("retention.ms after alter: %+v", cv)
		}
		if cv := config("min.insync.replicas"); cv.Value != "2" || cv.Source != "DYNAMIC_TOPIC_CONFIG" {
			t.Errorf("min.insync.replicas after altering another config: %+v", cv)
		}
		g.ok(t, "", "topic", "alter-config", "demo", "--set", "retention.ms=1000", "--dry-run")
		if cv := config("retention.ms"); cv.Value != "3600000" {
			t.Errorf("retention.ms after --dry-run: %+v", cv)
		}
		g.fails(t, exitFailed, "INVALID_CONFIG", "topic", "alter-config", "demo", "--set", "retention.ms=soon")
		g.fails(t, exitFailed, `topic "nope" does not exist`, "topic", "alter-config", "nope", "--set", "retention.ms=1")
		g.ok(t, "", "topic", "alter-config", "demo", "--delete", "retention.ms")
		if cv := config("retention.ms"); cv.Source == "DYNAMIC_TOPIC_CONFIG" {
			t.Errorf("retention.ms after --delete: %+v", cv)
		}
	})

	t.Run("cluster info and node list", func(t *testing.T) {
		var info clusterInfoView
		g.okJSON(t, &info, "cluster", "info")
		if len(info.Nodes) != 3 || info.Controller != "cp1" || !info.Healthy || info.Topics != 2 || len(info.NotAnswering) != 0 {
			t.Errorf("cluster info: %+v", info)
		}
		infoReplicas := 0
		for _, n := range info.Nodes {
			infoReplicas += n.Replicas
			if n.State != api.NodeLive || n.Addr == "" || n.ControlledShutdown {
				t.Errorf("cluster info: node %+v", n)
			}
		}
		if infoReplicas != 3*3+3 {
			t.Errorf("cluster info counts %d replicas, want 12: %+v", infoReplicas, info.Nodes)
		}
		out := g.ok(t, "", "cluster", "info")
		for _, want := range []string{"CONTROLLER", "cp1 (control plane", "NODES", "live", "GROUPS"} {
			if !strings.Contains(out, want) {
				t.Errorf("no %q in\n%s", want, out)
			}
		}
		// node list is the control plane's document: 3 live nodes, 3×3 + 3 replicas,
		// one leader per partition.
		var nodes []api.Node
		g.okJSON(t, &nodes, "node", "list")
		if len(nodes) != 3 {
			t.Fatalf("node list: %+v", nodes)
		}
		replicas, leaders := 0, 0
		for i, n := range nodes {
			replicas += n.Replicas
			leaders += n.Leaders
			if n.ID != int32(i+1) || n.State != api.NodeLive || !n.Registered || n.Host == "" || n.Port == 0 || n.ControlledShutdown || len(n.Blocked) != 0 {
				t.Errorf("node %+v", n)
			}
		}
		if replicas != 3*3+3 || leaders != 6 {
			t.Errorf("node list counts %d replicas and %d leaders, want 12 and 6: %+v", replicas, leaders, nodes)
		}
		out = g.ok(t, "", "node", "list")
		for _, want := range []string{"STATE", "ADDRESS", "REPLICAS", "LEADERS", "live", fmt.Sprintf("%s:%d", nodes[0].Host, nodes[0].Port)} {
			if !strings.Contains(out, want) {
				t.Errorf("no %q in node list:\n%s", want, out)
			}
		}
		g.ok(t, "", "cluster", "health")
	})

	// noMoves waits until no partition is being reassigned and every ISR is full.
	noMoves := func(t *testing.T) {
		t.Helper()
		c.CheckFor(t, 30*time.Second, func() error {
			var moving []reassignment
			g.okJSON(t, &moving, "partition", "reassign", "--status")
			if len(moving) != 0 {
				return fmt.Errorf("reassignments in progress: %+v", moving)
			}
			if r := g.run("", "cluster", "health"); r.code != 0 {
				return fmt.Errorf("%v", r)
			}
			return nil
		})
	}

	t.Run("reassign", func(t *testing.T) {
		// "one"/0 lives on one node: move it to another and wait.
		var views []topicView
		g.okJSON(t, &views, "topic", "describe", "one")
		from := views[0].PartitionsList[0].Replicas[0]
		to := from%3 + 1
		var moves []reassignment
		g.okJSON(t, &moves, "partition", "reassign", fmt.Sprintf("one/0:%d", to))
		if len(moves) != 1 || !moves[0].Done || len(moves[0].Replicas) != 1 || moves[0].Replicas[0] != to {
			t.Errorf("reassign: %+v", moves)
		}
		if out := g.ok(t, "", "partition", "reassign", "--status"); strings.Contains(out, "one ") || !strings.Contains(out, "IN-SYNC") {
			t.Errorf("--status after the move:\n%s", out)
		}
		// A move that takes a while (a new replica of a partition with records), seen
		// in progress by --status with the control plane's view, then waited for.
		g.ok(t, "", "partition", "reassign", fmt.Sprintf("one/0:%d,%d", to, from), "--no-wait")
		var status []reassignment
		g.okJSON(t, &status, "partition", "reassign", "--status", "one/0")
		if len(status) > 1 || (len(status) == 1 && (len(status[0].Target) != 2 || status[0].Leader != to)) {
			t.Errorf("--status while moving: %+v", status)
		}
		g.ok(t, "", "partition", "reassign", fmt.Sprintf("one/0:%d", to))
		noMoves(t)
		// The server's reason for a refused target is shown.
		g.fails(t, exitFailed, "INVALID_REPLICA_ASSIGNMENT: replicas 9 refused for one/0 (The manual partition assignment includes broker 9, but no such broker is registered.)",
			"partition", "reassign", "one/0:9")
		g.fails(t, exitFailed, "does not exist", "partition", "reassign", "nope/0:1")
	})

	t.Run("decommission", func(t *testing.T) {
		// Three nodes hold RF 3 topics: node 3 cannot drain, and says why. The wait
		// prints progress and the reasons, and ends at --timeout with what to do.
		r := g.run("", "node", "decommission", "3", "--timeout", "2s", "--interval", "100ms")
		for _, want := range []string{"node 3: draining", "replica(s) left to move", "cannot move now", "not decommissioned within 2s (--timeout): blocked: ",
			"add a node", "gregor partition reassign", "gregor node recommission 3"} {
			if r.code != exitFailed || !strings.Contains(r.stderr, want) {
				t.Errorf("decommission of a node that cannot drain: no %q in %v", want, r)
			}
		}
		// Printed when they change (the partitions of "one" on node 3 move away
		// meanwhile), not at every look (every 100ms).
		if n := strings.Count(r.stderr, "cannot move now"); n < 1 || n > 4 {
			t.Errorf("the blocked reasons printed %d times, want once and again only when they change:\n%s", n, r.stderr)
		}
		var nodes []api.Node
		g.okJSON(t, &nodes, "node", "list")
		if len(nodes) != 3 || nodes[2].State != api.NodeDraining || len(nodes[2].Blocked) == 0 {
			t.Errorf("node list while draining: %+v", nodes)
		}
		if out := g.ok(t, "", "node", "list"); !strings.Contains(out, "draining") || !strings.Contains(out, "BLOCKED") {
			t.Errorf("node list while draining:\n%s", out)
		}
		var info clusterInfoView
		g.okJSON(t, &info, "cluster", "info")
		if len(info.Nodes) != 3 || info.Nodes[2].State != api.NodeDraining || len(info.Nodes[2].Blocked) == 0 {
			t.Errorf("cluster info while draining: %+v", info.Nodes)
		}
		// Asked again, --no-wait: the node as the control plane has it.
		var n api.Node
		g.okJSON(t, &n, "node", "decommission", "3", "--no-wait")
		if n.ID != 3 || n.State != api.NodeDraining {
			t.Errorf("decommission --no-wait: %+v", n)
		}
		g.okJSON(t, &n, "node", "recommission", "3")
		if n.ID != 3 || n.State != api.NodeLive {
			t.Errorf("recommission: %+v", n)
		}
		g.okJSON(t, &nodes, "node", "list")
		if len(nodes) != 3 || nodes[2].State != api.NodeLive {
			t.Errorf("node list after recommission: %+v", nodes)
		}
		for _, verb := range []string{"decommission", "recommission"} {
			g.fails(t, exitFailed, "node 9 is not known: not registered", "node", verb, "9")
			g.fails(t, exitFailed, "gregor node list shows the nodes", "node", verb, "9")
		}
		// Moves the decommission started go on after the recommission: let them end.
		noMoves(t)
	})

	t.Run("a node down", func(t *testing.T) {
		dp := c.DP(3)
		c.Kill(dp)
		// The ISRs shrink once its registration is gone: health says so, exit 1.
		c.CheckFor(t, time.Minute, func() error {
			r := g.run("", "cluster", "health")
			if r.code != exitFailed || !strings.Contains(r.stderr, "under-replicated") {
				return fmt.Errorf("%v", r)
			}
			return nil
		})
		// The control plane knows node 3 is down at once; Metadata lists it until its
		// registration expires.
		var h health
		r := g.run("", "cluster", "health", "--format", "json")
		if err := json.Unmarshal([]byte(r.stdout), &h); err != nil || h.Healthy || len(h.UnderReplicatedPartitions) == 0 ||
			len(h.NodesDown) != 1 || h.NodesDown[0] != 3 {
			t.Errorf("health: %+v %v\n%v", h, err, r)
		}
		// cluster info answers, whether or not node 3 is still in Metadata (a broadcast
		// to it fails: the command names it and goes on).
		r = g.run("", "cluster", "info")
		if r.code != 0 || !strings.Contains(r.stdout, "UNHEALTHY PARTITIONS") || !strings.Contains(r.stdout, "under-replicated") ||
			!strings.Contains(r.stdout, "unregistered") || !strings.Contains(r.stdout, "down: not registered") || r.elapsed > 15*time.Second {
			t.Errorf("cluster info: %v", r)
		}
		var info clusterInfoView
		g.okJSON(t, &info, "cluster", "info")
		if len(info.Nodes) != 3 || info.Nodes[2].State != api.NodeUnregistered || info.Healthy {
			t.Errorf("cluster info: %+v", info)
		}
		for _, na := range info.NotAnswering {
			if na.Node != 3 || na.Request != "ListGroups" {
				t.Errorf("cluster info: a node other than 3 did not answer: %+v", na)
			}
		}
		if r := g.run("", "group", "list"); r.code != 0 {
			t.Errorf("group list: %v", r)
		}
		// A reassignment to the dead node is refused with the server's reason.
		g.fails(t, exitFailed, "INVALID_REPLICA_ASSIGNMENT: replicas 1,2,3 refused for demo/0 (The manual partition assignment includes broker 3, but no such broker is registered.)",
			"partition", "reassign", "demo/0:1,2,3")
		// --exit-when-healthy, started while the node is down, ends once it is back in
		// every ISR.
		var out, errs syncBuffer
		waited := make(chan int, 1)
		go func() {
			waited <- run([]string{"cluster", "health", "--exit-when-healthy", "--interval", "200ms", "--timeout", "90s"},
				strings.NewReader(""), &out, &errs, func(k string) string { return g.env[k] })
		}()
		c.CheckFor(t, 10*time.Second, func() error { // its first look, before the node is back
			if !strings.Contains(out.String(), "HEALTHY") {
				return fmt.Errorf("no report yet: %q %q", out.String(), errs.String())
			}
			return nil
		})
		c.Restart(dp)
		r = result{code: <-waited, stdout: out.String(), stderr: errs.String()}
		if r.code != 0 || !strings.Contains(r.stdout, "HEALTHY                      no") || !strings.HasSuffix(strings.TrimSpace(r.stdout), "UNDER-REPLICATED-PARTITIONS  -") {
			t.Errorf("--exit-when-healthy: %v", r)
		}
	})

	t.Run("topic delete", func(t *testing.T) {
		g.ok(t, "", "topic", "delete", "demo", "one")
		g.fails(t, exitFailed, `UNKNOWN_TOPIC_OR_PARTITION: topic "demo" does not exist`, "topic", "delete", "demo")
	})
}
