// Package testcluster runs a real single-node Gregor cluster inside a test process: one
// control-plane member on an embedded etcd (fast timers) and one data-plane node following
// it, wired as cmd/cp and cmd/dp wire them. Tests of the tools that talk to Gregor (the
// bench drivers, the CLI) use it in place of any fake broker. Everything stops at the
// test's cleanup.
package testcluster

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/dataplane"
)

// Cluster is a running single-node cluster.
type Cluster struct {
	// Kafka is the data-plane node's Kafka address (host:port).
	Kafka string
	// Node is the data-plane node.
	Node *dataplane.Server
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// New starts a cluster for the test.
func New(t testing.TB) *Cluster {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	etcdAddr := freeAddr(t)
	cp, err := controlplane.Start(ctx, controlplane.Config{
		Name: "cp1", DataDir: filepath.Join(t.TempDir(), "etcd"), ClientAddr: etcdAddr, PeerAddr: freeAddr(t),
		TickMs: 10, ElectionMs: 100, Logger: quiet,
		Listen: "127.0.0.1:0", Groups: controlplane.GroupConfig{MinSessionTimeout: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Close)
	cl, err := client.New(client.Config{Endpoints: []string{etcdAddr}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	md, err := cl.WatchMetadata(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	listen := freeAddr(t)
	host, portStr, _ := net.SplitHostPort(listen)
	port, _ := strconv.Atoi(portStr)
	reg, err := cl.Register(ctx, client.Broker{ID: 1, Host: host, Port: int32(port)}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	node, err := dataplane.New(dataplane.Config{
		NodeID: 1, Listen: listen, DataDir: t.TempDir(), Logger: quiet,
		ControlPlane:   &dataplane.ClientControlPlane{Client: cl, Metadata: md, Registration: reg},
		LeaseSafeUntil: reg.SafeUntil,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { // follow the metadata, as cmd/dp does
		defer close(done)
		for {
			snap := md.Snapshot()
			_ = node.Reconcile(snap)
			select {
			case <-snap.Superseded():
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { // registered after cp.Close, so it runs first
		close(stop)
		<-done
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = node.Stop(sctx)
		_ = reg.Close()
		md.Close()
		_ = cl.Close()
	})
	return &Cluster{Kafka: listen, Node: node}
}
