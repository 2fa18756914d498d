package dataplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// node is one in-process data-plane node registered with a real embedded control plane.
//
// These tests look inside the node (its replicas, counters, metrics), so they run in
// this package; the node assembly (package node) and the cluster harness
// (internal/testcluster) import dataplane and cannot be used here. startClusterListen
// is the minimal wiring they need: the control plane as its command starts it, and the
// node registered, started and reconciled in the assembly's order.
type node struct {
	srv *Server
	cp  *ClientControlPlane
	// coordinated: the control plane coordinates groups (it has an internal listener).
	coordinated bool
}

// startCluster starts a one-member control plane (real embedded etcd, fast timers) and
// one data-plane node following it, wired as cmd/dp wires them.
func startCluster(t *testing.T) *node { return startClusterWith(t, Config{}) }

// startClusterWith is startCluster with node settings (listen address, data directory,
// control plane and logger are filled in).
func startClusterWith(t *testing.T, cfg Config) *node {
	t.Helper()
	return startClusterListen(t, cfg, "127.0.0.1:0")
}

// startClusterWithoutGroups is startCluster with a control plane that coordinates no
// groups (no internal listener): group requests get no answer from it.
func startClusterWithoutGroups(t *testing.T) *node {
	t.Helper()
	return startClusterListen(t, Config{}, "")
}

// startClusterListen is startClusterWith with the control plane's internal listener
// (empty: none, so no group coordinator is published).
func startClusterListen(t *testing.T, cfg Config, cpListen string) *node {
	t.Helper()
	quiet := testutil.Quiet()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cps, err := controlplane.Start(ctx, controlplane.Config{
		Name: "cp1", DataDir: filepath.Join(t.TempDir(), "etcd"),
		ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", TickMs: 10, ElectionMs: 100, Logger: quiet,
		Listen: cpListen, Groups: controlplane.GroupConfig{MinSessionTimeout: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cps.Close)
	cl, err := client.New(client.Config{Endpoints: []string{cps.ClientAddr()}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{cp: &ClientControlPlane{Client: cl}, coordinated: cpListen != ""}
	md, err := cl.WatchMetadata(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	n.cp.Metadata = md
	listen := listenAddr(t)
	host, port := splitHostPort(t, listen)
	reg, err := cl.Register(ctx, cluster.Broker{ID: 1, Host: host, Port: port}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	n.cp.Registration = reg
	hwc := reg.NewHWCheckpointer(50 * time.Millisecond)
	cfg.NodeID, cfg.Listen, cfg.DataDir, cfg.ControlPlane, cfg.Logger = 1, listen, t.TempDir(), n.cp, quiet
	cfg.HWRecorder, cfg.HWReportInterval = hwc, 50*time.Millisecond
	n.srv, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.srv.Start(); err != nil {
		t.Fatal(err)
	}
	// Follow the metadata as cmd/dp does.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			snap := md.Snapshot()
			if err := n.srv.Reconcile(snap); err != nil {
				t.Errorf("reconcile: %v", err)
			}
			select {
			case <-snap.Superseded():
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { // last registered, first run: stop the node before the control plane
		close(stop)
		<-done
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.srv.Stop(sctx)
		_ = hwc.Close(sctx)
		_ = reg.Close()
		md.Close()
		_ = cl.Close()
	})
	return n
}

func splitHostPort(t *testing.T, addr string) (string, int32) {
	t.Helper()
	var host string
	var port int32
	if _, err := fmt.Sscanf(addr, "127.0.0.1:%d", &port); err != nil {
		t.Fatal(err)
	}
	host = "127.0.0.1"
	return host, port
}

// TestFranzGoEndToEnd: franz-go with its defaults (idempotent producer, snappy, acks=all)
// creates a topic through the node, produces keyed records with headers, reads them
// back byte-exact in per-key order, lists offsets, and deletes the topic.
func TestFranzGoEndToEnd(t *testing.T) {
	n := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(n.srv.Addr()), kgo.ConsumeTopics("orders"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopics(ctx, 3, 1, map[string]*string{"retention.ms": kadmStr("3600000")}, "orders")
	if err != nil || resp["orders"].Err != nil {
		t.Fatalf("create topic: %v %+v", err, resp)
	}
	if _, err := adm.CreateTopics(ctx, 3, 1, nil, "orders"); err != nil {
		t.Fatal(err)
	} else if r2, _ := adm.CreateTopics(ctx, 3, 1, nil, "orders"); r2["orders"].Err == nil {
		t.Fatal("second creation of the same topic accepted")
	}
	const perKey, keys = 200, 5
	var records []*kgo.Record
	for i := range perKey {
		for k := range keys {
			records = append(records, &kgo.Record{Topic: "orders", Key: []byte(fmt.Sprintf("key-%d", k)),
				Value:   bytes.Repeat([]byte{byte('a' + k)}, 10+i%50),
				Headers: []kgo.RecordHeader{{Key: "seq", Value: []byte(fmt.Sprint(i))}}})
		}
	}
	if err := cl.ProduceSync(ctx, records...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	partitionOf := map[string]int32{}
	for _, r := range records {
		if p, ok := partitionOf[string(r.Key)]; ok && p != r.Partition {
			t.Fatalf("key %s went to partitions %d and %d", r.Key, p, r.Partition)
		}
		partitionOf[string(r.Key)] = r.Partition
	}
	got := map[string][]*kgo.Record{}
	total := 0
	for total < len(records) {
		fs := cl.PollFetches(ctx)
		if err := fs.Err(); err != nil {
			t.Fatalf("poll: %v", err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			got[string(r.Key)] = append(got[string(r.Key)], r)
			total++
		})
	}
	for k := range keys {
		key := fmt.Sprintf("key-%d", k)
		if len(got[key]) != perKey {
			t.Fatalf("%s: %d records, want %d", key, len(got[key]), perKey)
		}
		for i, r := range got[key] {
			want := bytes.Repeat([]byte{byte('a' + k)}, 10+i%50)
			if !bytes.Equal(r.Value, want) || string(r.Headers[0].Value) != fmt.Sprint(i) || r.Partition != partitionOf[key] {
				t.Fatalf("%s record %d: value %q header %q partition %d", key, i, r.Value, r.Headers[0].Value, r.Partition)
			}
		}
	}
	ends, err := adm.ListEndOffsets(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	ends.Each(func(o kadm.ListedOffset) { sum += o.Offset })
	if sum != int64(len(records)) {
		t.Fatalf("end offsets sum to %d, want %d", sum, len(records))
	}
	// High watermarks reach the control plane in batched, asynchronous checkpoints.
	deadline := time.Now().Add(10 * time.Second)
	for {
		hws, err := n.cp.Client.HighWatermarks(ctx, "orders")
		var hwSum int64
		for _, cp := range hws {
			hwSum += cp.HighWatermark
		}
		if err == nil && hwSum == int64(len(records)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("high-watermark checkpoints sum to %d (%v), want %d", hwSum, err, len(records))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if fetched := n.srv.fetchCounters.Sendfile.Load(); fetched == 0 {
		t.Fatal("nothing was sent by sendfile")
	}
	dresp, err := adm.DeleteTopics(ctx, "orders")
	if err != nil || dresp["orders"].Err != nil {
		t.Fatalf("delete: %v %+v", err, dresp)
	}
	if n.srv.replicas.Partition("orders", 0) != nil {
		t.Fatal("replica of a deleted topic still open")
	}
}

func kadmStr(s string) *string { return &s }

// TestAutoCreateTopics: with auto creation on, producing to a missing topic creates it
// (with the defaults); with it off, the producer gets UNKNOWN_TOPIC_OR_PARTITION.
func TestAutoCreateTopics(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("auto=%v", on), func(t *testing.T) {
			n := startClusterWith(t, Config{AutoCreateTopics: on})
			cl, err := kgo.NewClient(kgo.SeedBrokers(n.srv.Addr()), kgo.AllowAutoTopicCreation(),
				kgo.RecordDeliveryTimeout(3*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err = cl.ProduceSync(ctx, &kgo.Record{Topic: "auto", Value: []byte("x")}).FirstErr()
			switch {
			case on && err != nil:
				t.Fatalf("produce to an auto-created topic: %v", err)
			case on:
				if topic, ok := n.cp.Snapshot().Topics["auto"]; !ok || topic.Partitions != 1 {
					t.Fatalf("topic %+v", topic)
				}
			case err == nil:
				t.Fatal("topic created with auto creation off")
			}
		})
	}
}

// TestAdminRequests: CreatePartitions grows a topic (validate-only first, then for real)
// and the new partition takes writes; bad counts and empty requests are answered.
func TestAdminRequests(t *testing.T) {
	n := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(n.srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if resp, err := adm.CreateTopics(ctx, 2, 1, nil, "grow"); err != nil || resp["grow"].Err != nil {
		t.Fatalf("create: %v %+v", err, resp)
	}
	if resp, err := adm.ValidateCreatePartitions(ctx, 2, "grow"); err != nil || resp["grow"].Err != nil {
		t.Fatalf("validate-only: %v %+v", err, resp)
	}
	if got := n.cp.Snapshot().Topics["grow"].Partitions; got != 2 {
		t.Fatalf("validate-only changed the topic: %d partitions", got)
	}
	if resp, err := adm.CreatePartitions(ctx, 2, "grow"); err != nil || resp["grow"].Err != nil {
		t.Fatalf("create partitions: %v %+v", err, resp)
	}
	if got := n.cp.Snapshot().Topics["grow"].Partitions; got != 4 {
		t.Fatalf("%d partitions after growing", got)
	}
	if n.srv.replicas.Partition("grow", 3) == nil {
		t.Fatal("the node does not lead the new partition")
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "grow", Partition: 3, Value: []byte("new")}).FirstErr(); err != nil {
		t.Fatalf("produce to the new partition: %v", err)
	}
	if resp, err := adm.UpdatePartitions(ctx, 3, "grow"); err != nil || !errors.Is(resp["grow"].Err, kerr.InvalidPartitions) {
		t.Fatalf("shrinking: %v %+v", err, resp)
	}
	// An empty CreateTopics request is answered (with no topics), not left hanging.
	empty := kmsg.NewPtrCreateTopicsRequest()
	empty.TimeoutMillis = 5000
	resp, err := empty.RequestWith(ctx, cl)
	if err != nil || len(resp.Topics) != 0 {
		t.Fatalf("empty CreateTopics: %v %+v", err, resp)
	}
}
