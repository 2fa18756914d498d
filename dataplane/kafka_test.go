package dataplane_test

// Tests of the data plane as its clients see it: a node on the cluster harness, with a
// real control plane, read through the Kafka APIs, its /metrics, its data directory and
// the control plane's client.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// startNode starts a one-member control plane and one data-plane node (in the test
// process) with opts, and returns the cluster and the node.
func startNode(t *testing.T, opts testcluster.Options) (*testcluster.Cluster, *testcluster.DP) {
	t.Helper()
	opts.ControlPlanes, opts.DataPlanes = 1, 1
	c := testcluster.New(t, opts)
	return c, c.DP(1)
}

// dial opens a raw Kafka connection to addr, closed when the test ends.
func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func splitHostPort(t testing.TB, addr string) (string, int32) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.ParseInt(port, 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	return host, int32(p)
}

// metric is the value of sample name in dp's /metrics; the test fails if it is absent.
func metric(t testing.TB, c *testcluster.Cluster, dp *testcluster.DP, name string) float64 {
	t.Helper()
	v, ok := c.Metric(t, dp, name)
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	return v
}

// partitionDir is where dp keeps its replica of topic-partition.
func partitionDir(dp *testcluster.DP, topic string, partition int32) string {
	return filepath.Join(dp.Dir(), topic+"-"+strconv.Itoa(int(partition)))
}

// segmentBases lists the base offsets of the segments of dp's replica of
// topic-partition, in order, from the names of its log files.
func segmentBases(t testing.TB, dp *testcluster.DP, topic string, partition int32) []int64 {
	t.Helper()
	entries, err := os.ReadDir(partitionDir(dp, topic, partition))
	if err != nil {
		t.Fatal(err)
	}
	var bases []int64
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".log"); ok {
			base, err := strconv.ParseInt(name, 10, 64)
			if err != nil {
				t.Fatalf("segment file %s: %v", e.Name(), err)
			}
			bases = append(bases, base)
		}
	}
	slices.Sort(bases)
	return bases
}

// getTopic reads topic from the control plane (not from a watch, which may lag); a
// missing topic is not an error: ok is false.
func getTopic(t testing.TB, c *testcluster.Cluster, topic string) (tp cluster.Topic, ok bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tp, _, err := c.ControlPlaneClient(t).GetTopic(ctx, topic)
	if code, isKafka := client.KafkaCode(err); isKafka && code == kerr.UnknownTopicOrPartition.Code {
		return tp, false
	}
	if err != nil {
		t.Fatalf("topic %s: %v", topic, err)
	}
	return tp, true
}

func kadmStr(s string) *string { return &s }

// TestFranzGoEndToEnd: franz-go with its defaults (idempotent producer, snappy, acks=all)
// creates a topic through the node, produces keyed records with headers, reads them
// back byte-exact in per-key order, lists offsets, and deletes the topic.
func TestFranzGoEndToEnd(t *testing.T) {
	c, dp := startNode(t, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := c.Client(t, kgo.ConsumeTopics("orders"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
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
	testutil.CheckFor(t, 10*time.Second, func() error {
		hws, err := c.ControlPlaneClient(t).HighWatermarks(ctx, "orders")
		if err != nil {
			return err
		}
		var hwSum int64
		for _, cp := range hws {
			hwSum += cp.HighWatermark
		}
		if hwSum != int64(len(records)) {
			return fmt.Errorf("high-watermark checkpoints sum to %d, want %d", hwSum, len(records))
		}
		return nil
	})
	if metric(t, c, dp, `gregor_fetch_bytes_total{path="sendfile"}`) == 0 {
		t.Fatal("nothing was sent by sendfile")
	}
	dresp, err := adm.DeleteTopics(ctx, "orders")
	if err != nil || dresp["orders"].Err != nil {
		t.Fatalf("delete: %v %+v", err, dresp)
	}
	// The node answers once its replicas reflect the deletion: the log is gone.
	if _, err := os.Stat(partitionDir(dp, "orders", 0)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("replica of a deleted topic still on disk: %v", err)
	}
}

// TestAutoCreateTopics: with auto creation on, producing to a missing topic creates it
// (with the defaults); with it off, the producer gets UNKNOWN_TOPIC_OR_PARTITION.
func TestAutoCreateTopics(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("auto=%v", on), func(t *testing.T) {
			c, _ := startNode(t, testcluster.Options{AutoCreateTopics: on})
			cl := c.Client(t, kgo.AllowAutoTopicCreation(), kgo.RecordDeliveryTimeout(3*time.Second))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := cl.ProduceSync(ctx, &kgo.Record{Topic: "auto", Value: []byte("x")}).FirstErr()
			switch {
			case on && err != nil:
				t.Fatalf("produce to an auto-created topic: %v", err)
			case on:
				if topic, ok := getTopic(t, c, "auto"); !ok || topic.Partitions != 1 {
					t.Fatalf("topic %+v (exists: %v)", topic, ok)
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
	c, dp := startNode(t, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.Client(t)
	adm := kadm.NewClient(cl)
	if resp, err := adm.CreateTopics(ctx, 2, 1, nil, "grow"); err != nil || resp["grow"].Err != nil {
		t.Fatalf("create: %v %+v", err, resp)
	}
	if resp, err := adm.ValidateCreatePartitions(ctx, 2, "grow"); err != nil || resp["grow"].Err != nil {
		t.Fatalf("validate-only: %v %+v", err, resp)
	}
	if got, _ := getTopic(t, c, "grow"); got.Partitions != 2 {
		t.Fatalf("validate-only changed the topic: %d partitions", got.Partitions)
	}
	if resp, err := adm.CreatePartitions(ctx, 2, "grow"); err != nil || resp["grow"].Err != nil {
		t.Fatalf("create partitions: %v %+v", err, resp)
	}
	if got, _ := getTopic(t, c, "grow"); got.Partitions != 4 {
		t.Fatalf("%d partitions after growing", got.Partitions)
	}
	// The node answers once its replicas reflect the new partitions: it leads the new
	// one, whose log it has opened.
	if _, err := os.Stat(partitionDir(dp, "grow", 3)); err != nil {
		t.Fatalf("the node does not lead the new partition: %v", err)
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
