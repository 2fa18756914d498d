package client

import (
	"context"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// startEtcd starts a single embedded etcd member for this package's tests (the
// control-plane server's harness lives in package controlplane, which imports this one).
func startEtcd(t *testing.T) string {
	t.Helper()
	free := func() url.URL {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return url.URL{Scheme: "http", Host: ln.Addr().String()}
	}
	// A port released by free can be taken by a parallel test process before etcd binds
	// it: try again with new ports.
	var e *embed.Etcd
	var cu url.URL
	for attempt := 0; ; attempt++ {
		cfg := embed.NewConfig()
		cfg.Dir = t.TempDir()
		var pu url.URL
		cu, pu = free(), free()
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
		cfg.InitialCluster = cfg.Name + "=" + pu.String()
		cfg.TickMs, cfg.ElectionMs = 10, 100
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		var err error
		if e, err = embed.StartEtcd(cfg); err == nil {
			break
		}
		if attempt == 2 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd not ready")
	}
	return cu.Host
}

// TestMetadataResyncAfterCompaction: a view whose watch fell behind etcd's compaction
// reloads, reports Resync, and ends up with every change.
func TestMetadataResyncAfterCompaction(t *testing.T) {
	ep := startEtcd(t)
	c, err := New(Config{Endpoints: []string{ep}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg, err := c.Register(ctx, cluster.Broker{ID: 1, Host: "127.0.0.1", Port: 9092}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()

	// A view frozen at this revision, as if its watch had stalled here.
	var mu sync.Mutex
	var kinds []ChangeKind
	m := &Metadata{c: c, done: make(chan struct{}), onChange: func(ch Change) {
		mu.Lock()
		kinds = append(kinds, ch.Kind)
		mu.Unlock()
	}}
	stale, err := m.load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m.cur.Store(stale)
	var rev int64
	for _, name := range []string{"a", "b", "c"} {
		if _, rev, err = c.CreateTopic(ctx, TopicSpec{Name: name, Partitions: 2, ReplicationFactor: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Etcd().Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(context.Background())
	m.cancel = wcancel
	go m.run(wctx)
	defer m.Close()
	snap, err := m.WaitRevision(ctx, rev)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Topics) != 3 || len(snap.Partitions) != 6 || len(snap.Brokers) != 1 {
		t.Fatalf("after resync: %d topics, %d partitions, %d brokers", len(snap.Topics), len(snap.Partitions), len(snap.Brokers))
	}
	// onChange runs after the snapshot is published, so WaitRevision can return first:
	// wait for the callbacks.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		seen := append([]ChangeKind(nil), kinds...)
		mu.Unlock()
		if len(seen) > 0 {
			if seen[0] != Resync {
				t.Fatalf("changes %v; want a Resync first", seen)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no change reported after the resync")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
