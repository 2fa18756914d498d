package node_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/node"
)

// startControlPlane starts a one-member control plane on ports 0.
func startControlPlane(t *testing.T) *controlplane.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Config{
		Name: "cp1", DataDir: filepath.Join(t.TempDir(), "cp1"), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0",
		HTTPAddr: "127.0.0.1:0", Listen: "127.0.0.1:0", TickMs: 10, ElectionMs: 100, Logger: testutil.Quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Close)
	for _, a := range []string{cp.ClientAddr(), cp.PeerAddr(), cp.HTTPAddr(), cp.ListenAddr()} {
		if _, port, _ := net.SplitHostPort(a); port == "0" || port == "" {
			t.Fatalf("control plane reports %q: want a bound port", a)
		}
	}
	return cp
}

// TestStartDataPlanePortZero: a node asked for port 0 everywhere binds its ports,
// registers the bound Kafka port, serves Kafka and HTTP there, and stops cleanly,
// revoking its registration.
func TestStartDataPlanePortZero(t *testing.T) {
	cp := startControlPlane(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dp, err := node.StartDataPlane(ctx, node.Config{
		ID: 7, DataDir: dir, Listen: "127.0.0.1:0", HTTP: "127.0.0.1:0",
		ControlPlane: []string{cp.ClientAddr()}, RegistrationTTL: 2 * time.Second, Logger: testutil.Quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if dp.AdvertisedAddr() != dp.Addr() {
		t.Errorf("advertised %s, want the bound %s", dp.AdvertisedAddr(), dp.Addr())
	}
	_, port, _ := net.SplitHostPort(dp.Addr())
	testutil.CheckFor(t, 10*time.Second, func() error {
		b, ok := cp.Metadata().Snapshot().Brokers[7]
		if !ok {
			return fmt.Errorf("node 7 not registered")
		}
		if strconv.Itoa(int(b.Port)) != port {
			return fmt.Errorf("registered port %d, bound %s", b.Port, port)
		}
		return nil
	})
	c, err := net.Dial("tcp", dp.Addr())
	if err != nil {
		t.Fatalf("kafka listener: %v", err)
	}
	c.Close()
	resp, err := http.Get("http://" + dp.HTTPAddr() + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	if err := dp.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-dp.Done()
	if dp.Err() != nil {
		t.Errorf("Err after Stop = %v, want nil", dp.Err())
	}
	testutil.CheckFor(t, 10*time.Second, func() error {
		if _, ok := cp.Metadata().Snapshot().Brokers[7]; ok {
			return fmt.Errorf("node 7 still registered after Stop")
		}
		return nil
	})
}

// TestDataPlaneStopsWhenTakenOver: a later process of the node (same data directory)
// takes the registration over at once after an Abort (no lease wait), and a node whose
// registration is taken over stops on its own with a reason.
func TestDataPlaneStopsWhenTakenOver(t *testing.T) {
	cp := startControlPlane(t)
	dir := t.TempDir()
	cfg := node.Config{ID: 1, DataDir: dir, Listen: "127.0.0.1:0", ControlPlane: []string{cp.ClientAddr()},
		RegistrationTTL: 5 * time.Second, Logger: testutil.Quiet()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, err := node.StartDataPlane(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	first.Abort() // the registration stays until its lease expires
	start := time.Now()
	second, err := node.StartDataPlane(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Stop(context.Background())
	if d := time.Since(start); d > cfg.RegistrationTTL {
		t.Errorf("restart on the same directory took %v: the old lease (TTL %v) was waited for", d, cfg.RegistrationTTL)
	}
	if second.Epoch() <= first.Epoch() {
		t.Errorf("epoch %d after takeover, want above %d", second.Epoch(), first.Epoch())
	}
	// Another process registering the id with the same incarnation takes it over: the
	// node notices and stops.
	cl, err := client.New(client.Config{Endpoints: []string{cp.ClientAddr()}, Logger: testutil.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	b := cp.Metadata().Snapshot().Brokers[1]
	later, err := cl.Register(ctx, cluster.Broker{ID: 1, Host: "127.0.0.1", Port: 1, Incarnation: b.Incarnation}, cfg.RegistrationTTL)
	if err != nil {
		t.Fatal(err)
	}
	defer later.Close()
	select {
	case <-second.Done():
	case <-time.After(cfg.RegistrationTTL):
		t.Fatal("the node still runs after its registration was taken over")
	}
	if second.Err() == nil {
		t.Error("Err = nil after a takeover, want the reason")
	}
}
