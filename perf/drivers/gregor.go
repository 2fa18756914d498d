package drivers

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/gregor-streaming/gregor/internal/reserve"
)

// Gregor is a Gregor cluster the harness started from built binaries — one gregor-cp and
// one or more gregor-dp — with the flags scripts/run.sh uses, on reserved loopback ports
// (ReservePorts) and with its data in a temporary directory. The ports stay reserved
// while the cluster runs, so a node killed and restarted (Kill, Restart) binds the same
// ones again and no other process takes them in between.
type Gregor struct {
	// Bootstrap is the first data-plane node's Kafka address.
	Bootstrap string
	// MetricsURL is the first data-plane node's /metrics page.
	MetricsURL string
	// Nodes are the data-plane nodes, ids 1, 2, … in order.
	Nodes []*GregorNode
	// CPMetricsURL is the control plane's /metrics page.
	CPMetricsURL string
	cp           *Process
	ports        []*reserve.Reservation
	cleanup      func()
}

// GregorNode is one gregor-dp process of a Gregor cluster.
type GregorNode struct {
	ID int32
	// Addr is the node's Kafka address; MetricsURL its /metrics page.
	Addr, MetricsURL string
	// DataDir holds the node's partition logs.
	DataDir string
	dir     string
	bin     string
	args    []string
	proc    *Process
}

// GregorOptions shape a cluster for StartGregorCluster.
type GregorOptions struct {
	// DataPlanes is the number of gregor-dp nodes (default 1).
	DataPlanes int
	// RegistrationTTL is gregor-dp's --registration-ttl (0: its default). etcd grants no
	// lease shorter than 1.5 election timeouts, rounded up to whole seconds, so a short
	// TTL needs EtcdElectionMs to match (see MinLeaseTTL).
	RegistrationTTL time.Duration
	// EtcdHeartbeatMs and EtcdElectionMs are gregor-cp's etcd timers (0: its defaults).
	EtcdHeartbeatMs, EtcdElectionMs int
	// SessionGrace is gregor-cp's --session-grace (0: its default): how soon after a
	// data-plane process dies its registration is revoked.
	SessionGrace time.Duration
	// ReplicaLagTimeMax is gregor-dp's --replica-lag-time-max (0: its default). A leader
	// reviews its ISRs every half of it, so it also bounds how soon a caught-up follower
	// rejoins.
	ReplicaLagTimeMax time.Duration
}

// MinLeaseTTL is the shortest lease etcd grants with these timers (a shorter TTL asked
// for is raised to it): etcd's ⌈(3·electionTicks/2)·heartbeat⌉ in whole seconds, with
// electionTicks = election/heartbeat. gregor-cp's defaults (100 ms, 1000 ms) give 2 s.
func MinLeaseTTL(heartbeatMs, electionMs int) time.Duration {
	if heartbeatMs <= 0 || electionMs <= 0 {
		return 0
	}
	ticks := electionMs / heartbeatMs
	min := time.Duration(3*ticks/2*heartbeatMs) * time.Millisecond
	return (min + time.Second - 1) / time.Second * time.Second
}

// GregorBinaries reports whether binDir holds gregor-cp and gregor-dp.
func GregorBinaries(binDir string) bool {
	for _, b := range []string{"gregor-cp", "gregor-dp"} {
		if st, err := os.Stat(filepath.Join(binDir, b)); err != nil || st.IsDir() {
			return false
		}
	}
	return true
}

// StartGregor starts a single-node cluster (gregor-cp and one gregor-dp) from binDir and
// waits for the Kafka port.
func StartGregor(binDir string) (*Gregor, error) {
	return StartGregorCluster(binDir, GregorOptions{DataPlanes: 1})
}

// dataPlanesMax bounds a cluster's size: a typo must not start a hundred processes.
const dataPlanesMax = 9

// StartGregorCluster starts gregor-cp and o.DataPlanes gregor-dp nodes from binDir and
// waits until every node's Kafka port accepts connections.
func StartGregorCluster(binDir string, o GregorOptions) (g *Gregor, err error) {
	if o.DataPlanes == 0 {
		o.DataPlanes = 1
	}
	if o.DataPlanes < 0 || o.DataPlanes > dataPlanesMax {
		return nil, fmt.Errorf("gregor: %d data-plane nodes is outside [1, %d]", o.DataPlanes, dataPlanesMax)
	}
	dir, err := os.MkdirTemp("", "gregor-bench-gregor-")
	if err != nil {
		return nil, err
	}
	// started, not g: a failed return sets the result g to nil before this runs.
	started := &Gregor{cleanup: func() { os.RemoveAll(dir) }}
	g = started
	defer func() {
		if err != nil {
			started.Stop()
		}
	}()
	abs, err := filepath.Abs(binDir)
	if err != nil {
		return nil, err
	}
	// cp: client, peer, internal listener, HTTP; each dp: Kafka, HTTP.
	g.ports, err = ReservePorts(4 + 2*o.DataPlanes)
	if err != nil {
		return nil, fmt.Errorf("gregor: %w", err)
	}
	addr := func(i int) string { return g.ports[i].Addr() }
	cpDir := filepath.Join(dir, "cp1")
	if err := os.MkdirAll(cpDir, 0o755); err != nil {
		return nil, err
	}
	cpArgs := []string{"--name", "cp1", "--data-dir", cpDir, "--client-addr", addr(0), "--peer-addr", addr(1),
		"--initial-cluster", "cp1=" + addr(1), "--listen", addr(2), "--http", addr(3)}
	if o.EtcdHeartbeatMs > 0 {
		cpArgs = append(cpArgs, "--etcd-heartbeat-ms", strconv.Itoa(o.EtcdHeartbeatMs))
	}
	if o.EtcdElectionMs > 0 {
		cpArgs = append(cpArgs, "--etcd-election-ms", strconv.Itoa(o.EtcdElectionMs))
	}
	if o.SessionGrace != 0 {
		cpArgs = append(cpArgs, "--session-grace", o.SessionGrace.String())
	}
	g.cp, err = StartProcess("gregor-cp", dir, filepath.Join(abs, "gregor-cp"), cpArgs...)
	if err != nil {
		return nil, fmt.Errorf("gregor: %w", err)
	}
	if err := g.cp.WaitListening(addr(0)); err != nil {
		return nil, fmt.Errorf("gregor: %w", err)
	}
	g.CPMetricsURL = "http://" + addr(3) + "/metrics"
	for i := range o.DataPlanes {
		id := int32(i + 1)
		kafka, http := addr(4+2*i), addr(5+2*i)
		n := &GregorNode{ID: id, Addr: kafka, MetricsURL: "http://" + http + "/metrics", dir: dir,
			DataDir: filepath.Join(dir, fmt.Sprintf("dp%d", id)), bin: filepath.Join(abs, "gregor-dp")}
		if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
			return nil, err
		}
		n.args = []string{"--id", strconv.Itoa(int(id)), "--data-dir", n.DataDir, "--listen", kafka, "--cp", addr(0), "--http", http}
		if o.RegistrationTTL > 0 {
			n.args = append(n.args, "--registration-ttl", o.RegistrationTTL.String())
		}
		if o.ReplicaLagTimeMax > 0 {
			n.args = append(n.args, "--replica-lag-time-max", o.ReplicaLagTimeMax.String())
		}
		g.Nodes = append(g.Nodes, n)
		if err := n.start(); err != nil {
			return nil, fmt.Errorf("gregor: %w", err)
		}
	}
	g.Bootstrap, g.MetricsURL = g.Nodes[0].Addr, g.Nodes[0].MetricsURL
	return g, nil
}

// start starts the node's process and waits for its Kafka port.
func (n *GregorNode) start() error {
	name := "gregor-dp"
	if n.ID != 1 {
		name = fmt.Sprintf("gregor-dp%d", n.ID)
	}
	p, err := StartProcess(name, n.dir, n.bin, n.args...)
	if err != nil {
		return err
	}
	n.proc = p
	return p.WaitListening(n.Addr)
}

// PID is the node's current process.
func (n *GregorNode) PID() int { return n.proc.PID() }

// Running reports whether the node's process has not exited.
func (n *GregorNode) Running() bool {
	select {
	case <-n.proc.Exited():
		return false
	default:
		return true
	}
}

// LogPath is the node's output, over all its runs.
func (n *GregorNode) LogPath() string { return n.proc.LogPath() }

// Kill ends the node's process with SIGKILL, as a crash would, and waits for it to exit.
func (n *GregorNode) Kill() { n.proc.Kill() }

// Restart starts the node again on the same data directory and ports, and waits for its
// Kafka port; the node must have exited (Kill).
func (n *GregorNode) Restart() error {
	if n.Running() {
		return errors.New("gregor: restart of a running node")
	}
	return n.start()
}

// CopyLogs copies every process's output (over all its runs) into dir, so that what the
// nodes said outlives the cluster's temporary directory.
func (g *Gregor) CopyLogs(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	procs := []*Process{g.cp}
	for _, n := range g.Nodes {
		procs = append(procs, n.proc)
	}
	for _, p := range procs {
		if p == nil {
			continue
		}
		data, err := os.ReadFile(p.LogPath())
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p.LogPath())), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// PIDs are the data planes' processes, then the control plane's.
func (g *Gregor) PIDs() []int {
	var pids []int
	for _, n := range g.Nodes {
		pids = append(pids, n.PID())
	}
	return append(pids, g.cp.PID())
}

// Stop stops every process, releases the ports and removes the data.
func (g *Gregor) Stop() {
	for _, n := range g.Nodes {
		if n.proc != nil {
			_ = n.proc.Stop()
		}
	}
	if g.cp != nil {
		_ = g.cp.Stop()
	}
	ReleasePorts(g.ports)
	g.cleanup()
}
