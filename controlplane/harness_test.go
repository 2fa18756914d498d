package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/client/zapslog"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// testLogger keeps test output quiet (members being stopped make etcd warn a lot);
// GREGOR_TEST_LOG=1 shows warnings and errors.
var testLogger = func() *slog.Logger {
	if os.Getenv("GREGOR_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}()

func TestMain(m *testing.M) {
	zapslog.SetGRPCLogger(testLogger)
	os.Exit(m.Run())
}

// checkFor calls f every interval until it returns nil, failing the test with f's last
// error after timeout.
func checkFor(t testing.TB, timeout, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}

// freeAddr returns a free 127.0.0.1 port. The port is released before use, so another
// process could take it in between; on this test machine that is rare enough.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// testCluster is n in-process control-plane members on 127.0.0.1 with fast etcd timers.
type testCluster struct {
	t       testing.TB
	cfgs    []Config
	mu      sync.Mutex
	servers []*Server // nil while stopped
}

// newTestCluster starts n members and waits until all are ready. Stopped at cleanup,
// after any client opened with c.client (cleanups run last-registered first).
func newTestCluster(t testing.TB, n int) *testCluster {
	t.Helper()
	// A port released by freeAddr can be taken by a parallel test process before etcd
	// binds it: start again on new ports.
	for attempt := 0; ; attempt++ {
		c, err := tryTestCluster(t, n)
		if err == nil {
			return c
		}
		c.stopAll()
		if attempt == 2 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}
}

func tryTestCluster(t testing.TB, n int) (*testCluster, error) {
	c := &testCluster{t: t, servers: make([]*Server, n)}
	var initial []string
	for i := 0; i < n; i++ {
		cfg := Config{
			Name:          fmt.Sprintf("cp%d", i+1),
			DataDir:       filepath.Join(t.TempDir(), "etcd"),
			ClientAddr:    freeAddr(t),
			PeerAddr:      freeAddr(t),
			HTTPAddr:      "127.0.0.1:0",
			TickMs:        10,
			ElectionMs:    100,
			ControllerTTL: time.Second,
			Logger:        testLogger,
			Listen:        "127.0.0.1:0",
			Groups:        GroupConfig{MinSessionTimeout: 100 * time.Millisecond},
		}
		initial = append(initial, cfg.Name+"="+cfg.PeerAddr)
		c.cfgs = append(c.cfgs, cfg)
	}
	for i := range c.cfgs {
		c.cfgs[i].InitialCluster = strings.Join(initial, ",")
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range c.cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.start(i)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return c, err
		}
	}
	t.Cleanup(c.stopAll)
	return c, nil
}

func (c *testCluster) start(i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Start(ctx, c.cfgs[i])
	if err != nil {
		return fmt.Errorf("start %s: %w", c.cfgs[i].Name, err)
	}
	c.mu.Lock()
	c.servers[i] = s
	c.mu.Unlock()
	return nil
}

// server returns member i (nil if stopped).
func (c *testCluster) server(i int) *Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[i]
}

// stop closes member i.
func (c *testCluster) stop(i int) {
	c.mu.Lock()
	s := c.servers[i]
	c.servers[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Close()
	}
}

// restart starts member i again on its data dir.
func (c *testCluster) restart(i int) {
	c.t.Helper()
	if err := c.start(i); err != nil {
		c.t.Fatal(err)
	}
}

// stopAll stops every member at once, so that members still have a quorum while they
// resign.
func (c *testCluster) stopAll() {
	var wg sync.WaitGroup
	for i := range c.servers {
		wg.Add(1)
		go func() { defer wg.Done(); c.stop(i) }()
	}
	wg.Wait()
}

func (c *testCluster) endpoints() []string {
	var eps []string
	for _, cfg := range c.cfgs {
		eps = append(eps, cfg.ClientAddr)
	}
	return eps
}

// client opens a client to every member; closed at cleanup, before the members.
func (c *testCluster) client() *client.Client {
	c.t.Helper()
	cli, err := client.New(client.Config{Endpoints: c.endpoints(), Logger: testLogger, DialTimeout: 5 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// waitController waits until exactly one running member is the controller and every
// running member agrees on its name; it returns its index.
func (c *testCluster) waitController(timeout time.Duration) int {
	c.t.Helper()
	idx := -1
	checkFor(c.t, timeout, 10*time.Millisecond, func() error {
		idx = -1
		for i := range c.servers {
			s := c.server(i)
			if s == nil || !s.IsController() {
				continue
			}
			if idx >= 0 {
				return fmt.Errorf("two controllers: %s and %s", c.cfgs[idx].Name, s.Name())
			}
			idx = i
		}
		if idx < 0 {
			return fmt.Errorf("no controller")
		}
		for i := range c.servers {
			if s := c.server(i); s != nil && s.Controller() != c.cfgs[idx].Name {
				return fmt.Errorf("%s sees controller %q, want %q", s.Name(), s.Controller(), c.cfgs[idx].Name)
			}
		}
		return nil
	})
	return idx
}

// dataPlane is a registered fake-free stand-in for a data-plane node: its own client
// (so that closing it stops the keepalives the way a dying process does) and its
// registration.
type dataPlane struct {
	cli *client.Client
	reg *client.Registration
}

// registerDP registers node id (rack optional) with its own client and lease ttl.
func (c *testCluster) registerDP(id int32, rack string, ttl time.Duration) *dataPlane {
	c.t.Helper()
	cli := c.client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg, err := cli.Register(ctx, cluster.Broker{ID: id, Host: "127.0.0.1", Port: 9000 + id, Rack: rack}, ttl)
	if err != nil {
		c.t.Fatalf("register %d: %v", id, err)
	}
	c.t.Cleanup(func() { _ = reg.Close() })
	return &dataPlane{cli: cli, reg: reg}
}

// crash stops the node's keepalives without revoking its lease, as a killed process
// would: its registration expires after the lease TTL.
func (d *dataPlane) crash() { _ = d.cli.Close() }

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
