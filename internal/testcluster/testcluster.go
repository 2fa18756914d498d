// Package testcluster runs real Gregor clusters for tests: N control-plane members
// (embedded etcd, fast timers) and M data-plane nodes, inside the test process or as
// real gregor-cp / gregor-dp processes, behind one interface, so that a scenario test
// reads like the scenario:
//
//	c := testcluster.New(t, testcluster.Options{ControlPlanes: 3, DataPlanes: 3, Processes: true})
//	c.CreateTopic(t, "t", 6, 3)
//	dp := c.Leader(t, "t", 0)
//	c.Kill(dp)
//	c.WaitLeader(t, "t", 0)
//
// Nodes are assembled as the commands assemble them (controlplane.Start,
// node.StartDataPlane), and every listener binds port 0 and is read back (in process
// from the node, from a process through its addresses file): no free-port race.
//
// Faults, per node: Kill (SIGKILL; in process an abrupt stop, see Kill), Pause/Resume
// (SIGSTOP/SIGCONT, processes only), Restart on the same data directory and id, Stop.
// On the network, through toxiproxy proxies (Link: Cut, CutOneWay, Delay, Heal) on the
// links the harness routes:
//   - clients → a data-plane node (ClientLink): the node advertises its proxy, so every
//     Kafka client the tests make goes through it;
//   - a data-plane node → a control-plane member (ControlPlaneLink): the node's etcd
//     endpoints are one proxy per member, so each pair can be cut apart;
//   - → a control-plane member from its peers (PeerLink): etcd gives each member one
//     peer URL for all peers, so there is no proxy per pair of members: the proxy in
//     front of a member's peer listener is shared by every peer dialing it, and cutting
//     it isolates that member. It stops every connection the peers open to the member;
//     the connections the member opens to the others go through their links and stay up,
//     but without the first half etcd cannot make progress with it: within about an
//     election timeout the member is unready and, if it led, the others elect a leader
//     (TestPeerLinkIsolatesMember). A cut between two given members is not possible;
//   - a data-plane node → another (ReplicaLink): the replica fetchers of a node dial
//     their leaders through it, one link per ordered pair of nodes.
//
// Not routed: the group requests data-plane nodes forward to the active controller's
// internal listener (they learn its address from etcd), and the harness's own control
// plane client (which goes through links of its own that are never faulted).
//
// Tests of the control plane alone start it with ControlPlaneOnly and register fake
// data-plane nodes (FakeDP, RegisterFakeDP): registrations with no node behind them,
// each on a control-plane client of its own; FakeDP.Crash stops its keepalives, as a
// killed node's process stops, and leaves the lease to expire. NewControlPlaneClient
// gives a test a client of its own over the harness's links.
//
// Logs are quiet unless GREGOR_TEST_LOG=1; a process's output is kept in its node's
// directory (log) and its tail printed when the test fails. Everything stops at the
// test's cleanup. Packages that use Processes call Main from TestMain.
package testcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/reserve"
	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/node"
)

// Timeouts of the harness's own waits.
const (
	// startTimeout bounds starting a node (for a new multi-member control plane, until a
	// quorum is up).
	startTimeout = 60 * time.Second
	// stopTimeout bounds a graceful stop before the process is killed.
	stopTimeout = 15 * time.Second
	// leaderTimeout bounds WaitLeader: a dead leader's lease (Options.RegistrationTTL)
	// must expire and the controller move the partition.
	leaderTimeout = 60 * time.Second
	// logTailLines is how much of a process's log a failed test prints.
	logTailLines = 60
	// Fast etcd timers for tests.
	etcdTickMs, etcdElectionMs = 10, 100
	// defaultMinSessionTimeout is the group coordinator's shortest session in tests
	// (Options.Groups), and minSessionEnv gregor-cp's variable for it.
	defaultMinSessionTimeout = time.Second
	minSessionEnv            = "GREGOR_CP_GROUP_MIN_SESSION_TIMEOUT"
	// defaultRegistrationTTL is the data-plane nodes' lease in tests: gregor-dp's own
	// default. Shorter leases make failover tests quicker but lose registrations when a
	// control-plane member dies under load: the etcd client may take more than 2 s to
	// leave a dead endpoint, and a lost registration stops the node. A test that wants
	// a quick failover sets Options.RegistrationTTL and kills no control-plane member.
	defaultRegistrationTTL = node.DefaultRegistrationTTL
)

// Options configures a cluster. Zero fields take their defaults.
type Options struct {
	// ControlPlanes and DataPlanes are the numbers of nodes (default 1 each).
	ControlPlanes, DataPlanes int
	// ControlPlaneOnly starts no data-plane nodes (DataPlanes is ignored).
	ControlPlaneOnly bool
	// Processes runs the nodes as gregor-cp and gregor-dp processes (built once per test
	// binary; the package's TestMain must call Main) instead of inside the test.
	Processes bool
	// RegistrationTTL is the data-plane nodes' lease (default gregor-dp's, 6s).
	RegistrationTTL time.Duration
	// ControllerTTL is the controller session's lease (default controlplane's).
	ControllerTTL time.Duration
	// Groups configures the group coordinator (zero fields: controlplane's defaults,
	// except MinSessionTimeout: 1s, so that tests may ask for short sessions). Processes
	// get the fields set here as flags, and the 1s default through the environment, so
	// that a test may set any group setting through gregor-cp's environment variables.
	Groups controlplane.GroupConfig
	// AutoCreateTopics turns on auto.create.topics.enable on the data-plane nodes.
	AutoCreateTopics bool
	// DirectClients makes the data-plane nodes advertise their own Kafka listeners, not
	// their client links: for benchmarks, which must not measure a proxy. ClientLink
	// faults then reach no client, and a restarted node's address changes.
	DirectClients bool
	// ControlPlane and DataPlane adjust each in-process node's configuration before it
	// starts (ignored with Processes); CPFlags and DPFlags are extra command-line flags
	// of each process (ignored without).
	ControlPlane     func(*controlplane.Config)
	DataPlane        func(*node.Config)
	CPFlags, DPFlags []string
	// DPEnv are extra environment variables (NAME=value) of each gregor-dp process
	// (ignored without Processes): test-only hooks such as GREGOR_DP_FSYNC_JOURNAL.
	DPEnv []string
}

// Cluster is a running cluster.
type Cluster struct {
	t    testing.TB
	opts Options
	dir  string
	api  *toxiproxy.ApiServer

	// CPs and DPs are the nodes, in order (DPs[i] has id i+1).
	CPs []*CP
	DPs []*DP

	mu       sync.Mutex
	links    []*Link
	replicas map[[2]int32]*Link
	cpClient *client.Client
	md       *client.Metadata
}

// Node is a CP or a DP.
type Node interface {
	// Name is the node's name: "cp1", "dp2".
	Name() string
	// Dir is the node's directory: its data directory, and its log as a process.
	Dir() string
	// HTTPAddr is the node's HTTP listener (/metrics, /healthz, /readyz).
	HTTPAddr() string
	start() error
	kill()
	stop() error
	signal(syscall.Signal) error
	// Running reports whether the node runs (see nodeState.Running).
	Running() bool
	setDown(bool)
	isDown() bool
	process() *process
	logPath() string
}

// nodeState is what CP and DP share: where the node lives and whether it runs. Its
// fields change only while no test method runs on the node (New, Restart: they wait for
// the starts they launch), so the test's goroutine reads them without the lock, except
// the addresses and down, which the lock guards.
type nodeState struct {
	c    *Cluster
	name string
	dir  string
	proc *process

	mu    sync.Mutex
	addrs node.Addresses
	down  bool // killed, stopped or paused
}

// Name is the node's name: "cp1", "dp2".
func (n *nodeState) Name() string { return n.name }

// Dir is the node's data directory (gregor-dp's or gregor-cp's --data-dir), kept
// across restarts.
func (n *nodeState) Dir() string { return filepath.Join(n.dir, "data") }

// logPath is the node's log file as a process, beside its data directory.
func (n *nodeState) logPath() string { return filepath.Join(n.dir, "log") }

// HTTPAddr is the node's bound HTTP listener (it changes on restart).
func (n *nodeState) HTTPAddr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addrs.HTTP
}
func (n *nodeState) setAddrs(a node.Addresses) {
	n.mu.Lock()
	n.addrs = a
	n.mu.Unlock()
}
func (n *nodeState) setDown(down bool) {
	n.mu.Lock()
	n.down = down
	n.mu.Unlock()
}
func (n *nodeState) isDown() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.down
}
func (n *nodeState) process() *process { return n.proc }

// Running reports whether the node runs: started, not killed, stopped or paused by the
// harness, and (as a process) not exited on its own.
func (n *nodeState) Running() bool {
	if n.isDown() {
		return false
	}
	if n.proc != nil {
		select {
		case <-n.proc.done:
			return false
		default:
		}
	}
	return true
}

// Exited is closed when the node's current process exits (nil in process).
func (n *nodeState) Exited() <-chan struct{} {
	if n.proc == nil {
		return nil
	}
	return n.proc.done
}

// ExitErr is the exit status of the node's current process once Exited is closed.
func (n *nodeState) ExitErr() error {
	<-n.proc.done
	return n.proc.err
}

// Log returns what the node's processes have written so far (every start's output, in
// order; "" in process, where logs go to testutil.Quiet).
func (n *nodeState) Log() string {
	b, _ := os.ReadFile(n.logPath())
	return string(b)
}

func (n *nodeState) signal(sig syscall.Signal) error {
	if n.proc == nil {
		return fmt.Errorf("testcluster: %s runs in the test process: only processes can be paused", n.name)
	}
	return n.proc.signal(sig)
}

// startProc starts the node's binary and waits for its addresses file.
func (n *nodeState) startProc(bin string, env []string, args ...string) error {
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return err
	}
	p, err := startProcess(bin, n.logPath(), env, args...)
	if err != nil {
		return err
	}
	a, err := p.waitAddresses(n.Dir(), startTimeout)
	if err != nil {
		p.kill()
		return fmt.Errorf("testcluster: %s: %w\n%s", n.name, err, logTail(n.logPath(), logTailLines))
	}
	n.proc = p
	n.setAddrs(a)
	return nil
}

// CP is a control-plane member.
type CP struct {
	nodeState
	// peers is the proxy in front of the member's etcd peer listener: its advertised
	// peer URL. front is the harness's own, never-faulted way to its client listener.
	peers, front *Link
	peerRes      *reserve.Reservation // the peer port reserved for the first start
	srv          *controlplane.Server // in process
}

// ClientAddr is the member's etcd client listener (it changes on restart; the harness
// reaches members through links that follow it).
func (m *CP) ClientAddr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addrs.Client
}

// Server is the in-process member (nil with Processes).
func (m *CP) Server() *controlplane.Server { return m.srv }

// DP is a data-plane node.
type DP struct {
	nodeState
	// ID is the node id.
	ID int32
	// clients is the proxy the node advertises to Kafka clients; cps are its etcd
	// endpoints, one link per control-plane member, in CPs' order.
	clients *Link
	cps     []*Link
	dp      *node.DataPlane // in process
}

// Addr is the node's advertised Kafka address: its ClientLink, which stays the same
// across restarts (with Options.DirectClients, its own listener).
func (d *DP) Addr() string {
	if d.c.opts.DirectClients {
		return d.kafkaAddr()
	}
	return d.clients.Addr()
}

// Node is the in-process node (nil with Processes).
func (d *DP) Node() *node.DataPlane { return d.dp }

// Running reports whether the node runs (see nodeState.Running); an in-process node
// that stopped on its own does not.
func (d *DP) Running() bool {
	if d.dp != nil {
		select {
		case <-d.dp.Done():
			return false
		default:
		}
	}
	return d.nodeState.Running()
}

// New starts a cluster and stops it at the test's cleanup.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.ControlPlanes <= 0 {
		opts.ControlPlanes = 1
	}
	if opts.DataPlanes <= 0 {
		opts.DataPlanes = 1
	}
	if opts.ControlPlaneOnly {
		opts.DataPlanes = 0
	}
	if opts.RegistrationTTL <= 0 {
		opts.RegistrationTTL = defaultRegistrationTTL
	}
	c := &Cluster{t: t, opts: opts, dir: t.TempDir(), api: newToxiServer(), replicas: map[[2]int32]*Link{}}
	t.Cleanup(c.close)
	if opts.Processes {
		if _, _, err := binaries(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.startControlPlane(); err != nil {
		t.Fatal(err)
	}
	for i := range opts.DataPlanes {
		d := &DP{nodeState: nodeState{c: c, name: fmt.Sprintf("dp%d", i+1), dir: filepath.Join(c.dir, fmt.Sprintf("dp%d", i+1))}, ID: int32(i + 1)}
		var err error
		if d.clients, err = c.newLink("clients->"+d.name, ""); err != nil {
			t.Fatal(err)
		}
		for _, m := range c.CPs {
			l, err := c.newLink(d.name+"->"+m.name, m.ClientAddr())
			if err != nil {
				t.Fatal(err)
			}
			d.cps = append(d.cps, l)
		}
		c.DPs = append(c.DPs, d)
	}
	// The links between data-plane nodes exist before the nodes start: each node is
	// told, by id, the link to dial for every other node's replicas.
	for _, from := range c.DPs {
		for _, to := range c.DPs {
			if from != to {
				l, err := c.newLink(from.name+"->"+to.name, "")
				if err != nil {
					t.Fatal(err)
				}
				c.replicas[[2]int32{from.ID, to.ID}] = l
			}
		}
	}
	errs := make(chan error, len(c.DPs))
	for _, d := range c.DPs {
		go func() { errs <- d.start() }()
	}
	for range c.DPs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (c *Cluster) newLink(name, upstream string) (*Link, error) {
	l, err := newLink(c.api, name, upstream)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.links = append(c.links, l)
	c.mu.Unlock()
	return l, nil
}

// startControlPlane starts every member at once (a new multi-member cluster is ready
// only once a quorum is up). Each member's advertised peer URL is its peers link, bound
// first; its peer listener's port is reserved before the member starts, so the link
// knows its upstream before any peer dials it.
func (c *Cluster) startControlPlane() error {
	var initial []string
	for i := range c.opts.ControlPlanes {
		m := &CP{nodeState: nodeState{c: c, name: fmt.Sprintf("cp%d", i+1), dir: filepath.Join(c.dir, fmt.Sprintf("cp%d", i+1))}}
		// The member's peer port is reserved now, so that its link starts with the
		// upstream it will have (startWith reserves a new one on a restart).
		res, err := reserve.TCP("127.0.0.1:0")
		if err != nil {
			return err
		}
		m.peerRes = res
		if m.peers, err = c.newLink("peers->"+m.name, res.Addr()); err != nil {
			return err
		}
		if m.front, err = c.newLink("harness->"+m.name, ""); err != nil {
			return err
		}
		initial = append(initial, m.name+"="+m.peers.Addr())
		c.CPs = append(c.CPs, m)
	}
	initialCluster := strings.Join(initial, ",")
	errs := make(chan error, len(c.CPs))
	for _, m := range c.CPs {
		go func() { errs <- m.startWith(initialCluster) }()
	}
	var all []error
	for range c.CPs {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

func (m *CP) start() error { return m.startWith("") }

// startWith starts the member (initialCluster is ignored by etcd on a restart).
func (m *CP) startWith(initialCluster string) error {
	c := m.c
	res := m.peerRes // reserved by startControlPlane for the first start
	m.peerRes = nil
	if res == nil {
		var err error
		if res, err = reserve.TCP("127.0.0.1:0"); err != nil {
			return err
		}
	}
	defer res.Close()
	if err := m.peers.setUpstream(res.Addr()); err != nil {
		return err
	}
	if initialCluster == "" {
		initialCluster = m.name + "=" + m.peers.Addr()
	}
	if c.opts.Processes {
		cpBin, _, _ := binaries()
		args := []string{"--name", m.name, "--data-dir", m.Dir(), "--client-addr", "127.0.0.1:0",
			"--peer-addr", res.Addr(), "--advertise-peer-addr", m.peers.Addr(), "--initial-cluster", initialCluster,
			"--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
			"--etcd-heartbeat-ms", strconv.Itoa(etcdTickMs), "--etcd-election-ms", strconv.Itoa(etcdElectionMs)}
		if c.opts.ControllerTTL > 0 {
			args = append(args, "--controller-ttl", c.opts.ControllerTTL.String())
		}
		args = append(args, groupFlags(c.opts.Groups)...)
		var env []string
		if _, ok := os.LookupEnv(minSessionEnv); !ok && c.opts.Groups.MinSessionTimeout == 0 {
			env = append(env, minSessionEnv+"="+defaultMinSessionTimeout.String())
		}
		if err := m.startProc(cpBin, env, append(args, c.opts.CPFlags...)...); err != nil {
			return err
		}
	} else {
		groups := c.opts.Groups
		if groups.MinSessionTimeout == 0 {
			groups.MinSessionTimeout = defaultMinSessionTimeout
		}
		cfg := controlplane.Config{Name: m.name, DataDir: m.Dir(), ClientAddr: "127.0.0.1:0", PeerAddr: res.Addr(),
			AdvertisePeerAddr: m.peers.Addr(), InitialCluster: initialCluster, Listen: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
			Groups: groups, TickMs: etcdTickMs, ElectionMs: etcdElectionMs, ControllerTTL: c.opts.ControllerTTL,
			Logger: testutil.Quiet().With("node", m.name)}
		if c.opts.ControlPlane != nil {
			c.opts.ControlPlane(&cfg)
		}
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		srv, err := controlplane.Start(ctx, cfg)
		if err != nil {
			return fmt.Errorf("testcluster: %s: %w", m.name, err)
		}
		m.srv = srv
		m.setAddrs(node.Addresses{Client: srv.ClientAddr(), Peer: srv.PeerAddr(), Listen: srv.ListenAddr(), HTTP: srv.HTTPAddr()})
	}
	m.setDown(false)
	// The links to the member's client listener follow it to its new port.
	if err := m.front.setUpstream(m.ClientAddr()); err != nil {
		return err
	}
	for _, d := range c.DPs {
		if err := d.cps[c.cpIndex(m)].setUpstream(m.ClientAddr()); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) cpIndex(m *CP) int {
	for i, x := range c.CPs {
		if x == m {
			return i
		}
	}
	panic("testcluster: not a member of this cluster")
}

// groupFlags turns the group coordinator's settings into gregor-cp flags.
func groupFlags(g controlplane.GroupConfig) []string {
	var args []string
	dur := func(name string, d time.Duration) {
		if d != 0 {
			args = append(args, "--"+name, d.String())
		}
	}
	dur("group-initial-rebalance-delay", g.InitialRebalanceDelay)
	dur("group-min-session-timeout", g.MinSessionTimeout)
	dur("group-max-session-timeout", g.MaxSessionTimeout)
	dur("offsets-retention", g.OffsetsRetention)
	if g.MaxSize != 0 {
		args = append(args, "--group-max-size", strconv.Itoa(g.MaxSize))
	}
	if g.OffsetMetadataMaxBytes != 0 {
		args = append(args, "--offset-metadata-max-bytes", strconv.Itoa(g.OffsetMetadataMaxBytes))
	}
	return args
}

func (m *CP) kill() {
	if m.proc != nil {
		m.proc.kill()
		return
	}
	m.srv.Close()
}

func (m *CP) stop() error {
	if m.proc != nil {
		return m.proc.stop(stopTimeout)
	}
	m.srv.Close()
	return nil
}

// start starts the node on its directory, advertising its clients link, with one etcd
// endpoint per control-plane member (its links to them).
func (d *DP) start() error {
	c := d.c
	var eps []string
	for _, l := range d.cps {
		eps = append(eps, l.Addr())
	}
	advertise := d.clients.Addr()
	if c.opts.DirectClients {
		advertise = "" // the bound listener
	}
	if c.opts.Processes {
		_, dpBin, _ := binaries()
		args := []string{"--id", strconv.Itoa(int(d.ID)), "--data-dir", d.Dir(), "--listen", "127.0.0.1:0",
			"--advertise", advertise, "--http", "127.0.0.1:0", "--cp", strings.Join(eps, ","),
			"--registration-ttl", c.opts.RegistrationTTL.String(), "--log-level", "debug"}
		if c.opts.AutoCreateTopics {
			args = append(args, "--auto-create-topics")
		}
		if routes := d.replicaRoutes(); len(routes) > 0 {
			args = append(args, "--replica-route", node.FormatReplicaRoutes(routes))
		}
		if err := d.startProc(dpBin, c.opts.DPEnv, append(args, c.opts.DPFlags...)...); err != nil {
			return err
		}
	} else {
		cfg := node.Config{ID: d.ID, DataDir: d.Dir(), Listen: "127.0.0.1:0", Advertise: advertise, HTTP: "127.0.0.1:0",
			ControlPlane: eps, RegistrationTTL: c.opts.RegistrationTTL, Logger: testutil.Quiet().With("node", d.name)}
		cfg.Server.AutoCreateTopics = c.opts.AutoCreateTopics
		cfg.ReplicaRoutes = d.replicaRoutes()
		if c.opts.DataPlane != nil {
			c.opts.DataPlane(&cfg)
		}
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		dp, err := node.StartDataPlane(ctx, cfg)
		if err != nil {
			return fmt.Errorf("testcluster: %s: %w", d.name, err)
		}
		d.dp = dp
		d.setAddrs(dp.Addresses())
	}
	d.setDown(false)
	// The links to the node's Kafka listener follow it to its new port.
	if err := d.clients.setUpstream(d.kafkaAddr()); err != nil {
		return err
	}
	c.mu.Lock()
	var replicas []*Link
	for pair, l := range c.replicas {
		if pair[1] == d.ID {
			replicas = append(replicas, l)
		}
	}
	c.mu.Unlock()
	for _, l := range replicas {
		if err := l.setUpstream(d.kafkaAddr()); err != nil {
			return err
		}
	}
	return nil
}

// replicaRoutes are the links node d's replica fetchers dial, by the leader's id.
func (d *DP) replicaRoutes() map[int32]string {
	c := d.c
	c.mu.Lock()
	defer c.mu.Unlock()
	routes := map[int32]string{}
	for pair, l := range c.replicas {
		if pair[0] == d.ID {
			routes[pair[1]] = l.Addr()
		}
	}
	return routes
}

// kafkaAddr is the node's bound Kafka listener (behind its clients link).
func (d *DP) kafkaAddr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.addrs.Kafka
}

func (d *DP) kill() {
	if d.proc != nil {
		d.proc.kill()
		return
	}
	d.dp.Abort()
}

func (d *DP) stop() error {
	if d.proc != nil {
		return d.proc.stop(stopTimeout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	return d.dp.Stop(ctx)
}

// StoppedOnItsOwn reports whether node n does not run although the harness neither
// killed, stopped nor paused it: it exited by itself (a data-plane node that lost its
// registration stops), as a supervisor would see it.
func StoppedOnItsOwn(n Node) bool { return !n.isDown() && !n.Running() }

// Kill ends node n at once: a process gets SIGKILL. An in-process data-plane node is
// aborted (node.DataPlane.Abort: its registration is left to expire, no last HW
// checkpoint); an in-process control-plane member can only be closed, which resigns its
// controllership — use Processes where a member's crash matters.
func (c *Cluster) Kill(n Node) {
	c.t.Helper()
	n.setDown(true)
	n.kill()
}

// Stop stops node n gracefully (SIGTERM for a process, killed after 15s) and returns
// how it ended: a process's exit status, an in-process node's Stop error.
func (c *Cluster) Stop(n Node) error {
	c.t.Helper()
	n.setDown(true)
	return n.stop()
}

// Pause stops process n with SIGSTOP: it holds its sockets and answers nothing.
func (c *Cluster) Pause(n Node) {
	c.t.Helper()
	if err := n.signal(syscall.SIGSTOP); err != nil {
		c.t.Fatal(err)
	}
	n.setDown(true)
	if err := n.process().waitStopped(10 * time.Second); err != nil {
		c.t.Fatal(err)
	}
}

// Resume continues a paused process (SIGCONT).
func (c *Cluster) Resume(n Node) {
	c.t.Helper()
	if err := n.signal(syscall.SIGCONT); err != nil {
		c.t.Fatal(err)
	}
	n.setDown(false)
}

// Restart starts nodes again on their data directories, with the same names and ids;
// a node still running (or paused) is killed first. The nodes start at once — members
// of a control plane restarted whole wait for each other's quorum — and their links
// follow them to their new ports.
func (c *Cluster) Restart(nodes ...Node) {
	c.t.Helper()
	for _, n := range nodes {
		if n.process() != nil || !n.isDown() {
			c.Kill(n) // a no-op for an exited process; SIGKILL ends a paused one too
		}
	}
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() { errs <- n.start() }()
	}
	var all []error
	for range nodes {
		all = append(all, <-errs)
	}
	if err := errors.Join(all...); err != nil {
		c.t.Fatal(err)
	}
}

// ClientLink is the link from Kafka clients to data-plane node d.
func (c *Cluster) ClientLink(d *DP) *Link { return d.clients }

// ControlPlaneLink is the link from data-plane node d to control-plane member m (d's
// etcd endpoint for m).
func (c *Cluster) ControlPlaneLink(d *DP, m *CP) *Link { return d.cps[c.cpIndex(m)] }

// PeerLink is the link from every peer to control-plane member m (the proxy its peer
// URL names): cutting it isolates m from the other members (see the package comment).
func (c *Cluster) PeerLink(m *CP) *Link { return m.peers }

// ReplicaLink is the link from data-plane node from to node to: the replica fetchers
// of from dial their leader on to through it (node.Config.ReplicaRoutes, gregor-dp's
// --replica-route). The links between every two nodes are made when the cluster
// starts; any other (a node to itself) on first use.
func (c *Cluster) ReplicaLink(from, to *DP) *Link {
	c.t.Helper()
	c.mu.Lock()
	l := c.replicas[[2]int32{from.ID, to.ID}]
	c.mu.Unlock()
	if l != nil {
		return l
	}
	l, err := c.newLink(from.name+"->"+to.name, to.kafkaAddr())
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.replicas[[2]int32{from.ID, to.ID}] = l
	c.mu.Unlock()
	return l
}

// HealAll removes every network fault.
func (c *Cluster) HealAll() {
	c.t.Helper()
	c.mu.Lock()
	links := append([]*Link(nil), c.links...)
	c.mu.Unlock()
	for _, l := range links {
		if err := l.Heal(); err != nil {
			c.t.Fatal(err)
		}
	}
}

// close stops everything: the harness's clients, then the data plane, then the control
// plane, then the links. On failure it prints the tail of every process log.
func (c *Cluster) close() {
	c.mu.Lock()
	md, cl := c.md, c.cpClient
	c.mu.Unlock()
	if md != nil {
		md.Close()
	}
	if cl != nil {
		_ = cl.Close()
	}
	// Processes are killed: what a test checks has happened by now, and a graceful stop
	// of a control plane losing its members one by one waits out quorum losses. Nodes
	// in the test process stop cleanly, to release what they hold.
	end := func(n Node) {
		if n.process() != nil {
			n.kill()
		} else {
			_ = n.stop()
		}
	}
	var wg sync.WaitGroup
	for _, d := range c.DPs {
		if d.proc != nil || d.dp != nil {
			wg.Go(func() { end(d) })
		}
	}
	wg.Wait()
	for _, m := range c.CPs {
		if m.proc != nil || m.srv != nil {
			wg.Go(func() { end(m) })
		}
	}
	wg.Wait()
	for _, l := range c.links {
		l.close()
	}
	if c.t.Failed() && c.opts.Processes {
		for _, n := range c.nodes() {
			c.t.Logf("--- %s: last lines of %s\n%s", n.Name(), n.logPath(), logTail(n.logPath(), logTailLines))
		}
	}
}

func (c *Cluster) nodes() []Node {
	var ns []Node
	for _, m := range c.CPs {
		ns = append(ns, m)
	}
	for _, d := range c.DPs {
		ns = append(ns, d)
	}
	return ns
}

// Brokers are the running data-plane nodes' advertised addresses (their client links):
// a Kafka bootstrap list.
func (c *Cluster) Brokers() []string {
	var bs []string
	for _, d := range c.DPs {
		if d.Running() {
			bs = append(bs, d.Addr())
		}
	}
	return bs
}

// DP returns data-plane node id.
func (c *Cluster) DP(id int32) *DP {
	c.t.Helper()
	if id < 1 || int(id) > len(c.DPs) {
		c.t.Fatalf("testcluster: no data-plane node %d", id)
	}
	return c.DPs[id-1]
}

// Client returns a franz-go client seeded with every broker, closed at t's cleanup.
func (c *Cluster) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Brokers()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Admin returns a kadm client over a Client of its own.
func (c *Cluster) Admin(t testing.TB) *kadm.Client {
	t.Helper()
	return kadm.NewClient(c.Client(t))
}

// ControlPlaneClient is the harness's control-plane client, over links that are never
// faulted and follow members across restarts. It is closed with the cluster.
func (c *Cluster) ControlPlaneClient(t testing.TB) *client.Client {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cpClient == nil {
		cl, err := client.New(c.clientConfig(client.Config{}))
		if err != nil {
			t.Fatal(err)
		}
		c.cpClient = cl
	}
	return c.cpClient
}

// NewControlPlaneClient opens a control-plane client of the test's own, configured as
// cfg but for its endpoints: every member, over the same never-faulted links as
// ControlPlaneClient's (a nil Logger is a quiet one). It is closed at t's cleanup,
// before the cluster stops. A test needs one of its own where closing a client is part
// of the scenario (see FakeDP.Crash) or where it observes the client's operations.
func (c *Cluster) NewControlPlaneClient(t testing.TB, cfg client.Config) *client.Client {
	t.Helper()
	cl, err := client.New(c.clientConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// clientConfig is cfg with the harness's endpoints (and a quiet logger if it has none).
func (c *Cluster) clientConfig(cfg client.Config) client.Config {
	cfg.Endpoints = nil
	for _, m := range c.CPs {
		cfg.Endpoints = append(cfg.Endpoints, m.front.Addr())
	}
	if cfg.Logger == nil {
		cfg.Logger = testutil.Quiet()
	}
	return cfg
}

// FakeDP is a data-plane node's registration with no node behind it, for tests of the
// control plane that need registered nodes rather than running ones (partition
// assignment, lease expiry, ISR changes): a control-plane client of its own, as a
// node's process has, and the registration it made.
type FakeDP struct {
	Client       *client.Client
	Registration *client.Registration
}

// Crash stops the fake node's keepalives without revoking its lease, as a killed
// process does: its registration expires after its lease's TTL.
func (f *FakeDP) Crash() { _ = f.Client.Close() }

// RegisterFakeDP registers data-plane node b with lease ttl (0: the client's default)
// through a client of its own (NewControlPlaneClient), and returns the registration's
// error, if any, as a refused registration may be what a test expects. The
// registration is closed at t's cleanup, before its client.
func (c *Cluster) RegisterFakeDP(t testing.TB, b cluster.Broker, ttl time.Duration) (*FakeDP, error) {
	t.Helper()
	cl := c.NewControlPlaneClient(t, client.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	reg, err := cl.Register(ctx, b, ttl)
	if err != nil {
		return nil, fmt.Errorf("testcluster: register node %d: %w", b.ID, err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	return &FakeDP{Client: cl, Registration: reg}, nil
}

// FakeDP registers fake data-plane node id, at 127.0.0.1:9000+id, with lease ttl
// (RegisterFakeDP); the test fails if it cannot.
func (c *Cluster) FakeDP(t testing.TB, id int32, ttl time.Duration) *FakeDP {
	t.Helper()
	f, err := c.RegisterFakeDP(t, cluster.Broker{ID: id, Host: "127.0.0.1", Port: 9000 + id}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// Metadata returns the cluster metadata as the harness's control-plane client last saw
// it (a watch: cheap to call in a CheckFor loop).
func (c *Cluster) Metadata(t testing.TB) *client.Snapshot {
	t.Helper()
	cl := c.ControlPlaneClient(t)
	c.mu.Lock()
	md := c.md
	c.mu.Unlock()
	if md == nil {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		var err error
		if md, err = cl.WatchMetadata(ctx, nil); err != nil {
			t.Fatal(err)
		}
		c.mu.Lock()
		if c.md != nil {
			md.Close()
			md = c.md
		} else {
			c.md = md
		}
		c.mu.Unlock()
	}
	return md.Snapshot()
}

// CreateTopic creates topic with partitions partitions of replication factor rf through
// the Kafka API, and waits for every partition to have a leader.
func (c *Cluster) CreateTopic(t testing.TB, topic string, partitions int32, rf int16) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.Admin(t).CreateTopic(ctx, partitions, rf, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	for p := range partitions {
		c.WaitLeader(t, topic, p)
	}
}

// leader returns the live data-plane node that leads topic-partition, by the metadata.
func (c *Cluster) leader(t testing.TB, topic string, partition int32) (*DP, error) {
	snap := c.Metadata(t)
	st, ok := snap.Partitions[cluster.TopicPartition{Topic: topic, Partition: partition}]
	if !ok {
		return nil, fmt.Errorf("%s-%d: no such partition", topic, partition)
	}
	if _, ok := snap.Brokers[st.Leader]; !ok || st.Leader < 1 || int(st.Leader) > len(c.DPs) {
		return nil, fmt.Errorf("%s-%d: leader %d is not a live node", topic, partition, st.Leader)
	}
	d := c.DPs[st.Leader-1]
	if !d.Running() {
		return nil, fmt.Errorf("%s-%d: leader %s is down (its lease has not expired yet)", topic, partition, d.name)
	}
	return d, nil
}

// Leader returns the node that leads topic-partition now; the test fails if none does.
func (c *Cluster) Leader(t testing.TB, topic string, partition int32) *DP {
	t.Helper()
	d, err := c.leader(t, topic, partition)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// WaitLeader waits for topic-partition to be led by a node that is up (not killed,
// stopped or paused by the harness) and returns it.
func (c *Cluster) WaitLeader(t testing.TB, topic string, partition int32) *DP {
	t.Helper()
	var d *DP
	testutil.CheckFor(t, leaderTimeout, func() (err error) {
		d, err = c.leader(t, topic, partition)
		return err
	})
	return d
}

// CheckFor waits for cond (testutil.CheckFor).
func (c *Cluster) CheckFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	testutil.CheckFor(t, timeout, cond)
}

// Metrics scrapes node n's /metrics.
func (c *Cluster) Metrics(t testing.TB, n Node) string {
	t.Helper()
	s, err := scrape(n.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// MetricsText scrapes the node's /metrics.
func (n *nodeState) MetricsText() (string, error) { return scrape(n.HTTPAddr()) }

// RunningCPs are the control-plane members that run (see Node.Running).
func (c *Cluster) RunningCPs() []*CP {
	var ms []*CP
	for _, m := range c.CPs {
		if m.Running() {
			ms = append(ms, m)
		}
	}
	return ms
}

// scrape GETs /metrics from an HTTP listener.
func scrape(addr string) (string, error) {
	hc := http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s/metrics: %s", addr, resp.Status)
	}
	return string(b), nil
}

// Metric returns the value of the sample named name (with its labels, as written:
// `gregor_requests_total{api="Produce"}`) in node n's metrics, and whether it is there.
func (c *Cluster) Metric(t testing.TB, n Node, name string) (float64, bool) {
	t.Helper()
	for line := range strings.SplitSeq(c.Metrics(t, n), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f, true
		}
	}
	return 0, false
}

// WaitController waits until the running members are ready and agree on one active
// controller among them, exactly one reporting itself as it, and returns it.
func (c *Cluster) WaitController(t testing.TB) *CP {
	t.Helper()
	var ctl *CP
	testutil.CheckFor(t, leaderTimeout, func() (err error) {
		ctl, err = c.agreedController()
		return err
	})
	return ctl
}

func (c *Cluster) agreedController() (*CP, error) {
	name, self := "", 0
	var ms []*CP
	for _, m := range c.CPs {
		if !m.Running() {
			continue
		}
		ms = append(ms, m)
		if err := m.Ready(); err != nil {
			return nil, err
		}
		v, err := m.View()
		if err != nil {
			return nil, err
		}
		if v.Controller == "" || (name != "" && v.Controller != name) {
			return nil, fmt.Errorf("%s sees controller %q, others %q", m.name, v.Controller, name)
		}
		name = v.Controller
		if v.IsController {
			self++
		}
	}
	if self != 1 {
		return nil, fmt.Errorf("%d of %d running members act as controller", self, len(ms))
	}
	for _, m := range ms {
		if m.name == name {
			return m, nil
		}
	}
	return nil, fmt.Errorf("controller %s is none of the running members", name)
}

// Ready returns nil when the member answers /readyz with 200 (etcd has a leader and a
// linearizable read succeeds).
func (m *CP) Ready() error {
	hc := http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get("http://" + m.HTTPAddr() + "/readyz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s /readyz: %s", m.name, resp.Status)
	}
	return nil
}

// View returns the member's /v1/cluster document.
func (m *CP) View() (controlplane.ClusterView, error) {
	var v controlplane.ClusterView
	hc := http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + m.HTTPAddr() + "/v1/cluster")
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("%s: GET /v1/cluster: %s", m.name, resp.Status)
	}
	return v, json.NewDecoder(resp.Body).Decode(&v)
}
