package dataplane_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gregor-streaming/gregor/dataplane"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/node"
)

// TestTopicConfigsThroughCreateTopics creates topics with franz-go's admin client on a
// node following a real control plane and checks each config at work: retention by
// bytes and by time (the node's retention check runs every 20 ms), segment.ms,
// min.insync.replicas; and the values refused (INVALID_CONFIG) create no topic.
func TestTopicConfigsThroughCreateTopics(t *testing.T) {
	c, dp := startNode(t, testcluster.Options{DataPlane: func(cfg *node.Config) {
		cfg.Server.RetentionCheckInterval = 20 * time.Millisecond
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := c.Client(t, kgo.RequiredAcks(kgo.LeaderAck()),
		kgo.DisableIdempotentWrite(), kgo.ProducerLinger(0), kgo.RecordRetries(0),
		kgo.ProducerBatchCompression(kgo.NoCompression())) // sizes as written
	adm := kadm.NewClient(cl)
	create := func(topic string, configs map[string]*string) error {
		t.Helper()
		resp, err := adm.CreateTopics(ctx, 1, 1, configs, topic)
		if err != nil {
			t.Fatal(err)
		}
		return resp[topic].Err
	}
	for topic, configs := range map[string]map[string]*string{
		"by-bytes": {"retention.bytes": kadmStr("1"), "segment.bytes": kadmStr("1024")},
		"by-time":  {"retention.ms": kadmStr("0")},
		"seg-ms":   {"segment.ms": kadmStr("1")},
		"min-isr":  {"min.insync.replicas": kadmStr("2")},
		"flush":    {"flush.messages": kadmStr("1"), "flush.ms": kadmStr("1000")},
	} {
		if err := create(topic, configs); err != nil {
			t.Fatalf("create %s: %v", topic, err)
		}
	}
	for topic, configs := range map[string]map[string]*string{
		"zstd":         {"compression.type": kadmStr("zstd")},
		"uncompressed": {"compression.type": kadmStr("uncompressed")},
		"compact":      {"cleanup.policy": kadmStr("compact")},
		"purge":        {"retention.bytes": kadmStr("0")},
		"flush-0":      {"flush.messages": kadmStr("0")},
		"flush-ms-neg": {"flush.ms": kadmStr("-1")},
	} {
		if err := create(topic, configs); !errors.Is(err, kerr.InvalidConfig) {
			t.Fatalf("%s: %v, want INVALID_CONFIG", topic, err)
		}
		if _, ok := getTopic(t, c, topic); ok {
			t.Fatalf("topic %s, refused for its configs, exists", topic)
		}
	}
	described, err := adm.DescribeTopicConfigs(ctx, "flush")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"flush.messages", "flush.ms"} {
		v, err := described.On("flush", nil)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		for _, c := range v.Configs {
			if c.Key == name && c.Value != nil {
				got = *c.Value
			}
		}
		if want := map[string]string{"flush.messages": "1", "flush.ms": "1000"}[name]; got != want {
			t.Fatalf("DescribeConfigs of flush: %s=%q, want %q", name, got, want)
		}
	}
	produce := func(topic string, count int) {
		t.Helper()
		for range count {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: bytes.Repeat([]byte("v"), 300)}).FirstErr(); err != nil {
				t.Fatalf("produce to %s: %v", topic, err)
			}
		}
	}
	startOf := func(topic string) int64 {
		listed, err := adm.ListStartOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		o, _ := listed.Lookup(topic, 0)
		return o.Offset
	}
	waitStart := func(what, topic string, want int64) {
		t.Helper()
		testutil.CheckFor(t, 10*time.Second, func() error {
			if got := startOf(topic); got != want {
				return fmt.Errorf("%s: log start offset %d, want %d", what, got, want)
			}
			return nil
		})
	}
	produce("by-bytes", 10)
	bases := segmentBases(t, dp, "by-bytes", 0)
	active := bases[len(bases)-1]
	if active < 6 { // retention may have deleted the older segments already
		t.Fatalf("segment.bytes=1024: the active segment starts at %d after 10 batches of 300 bytes", active)
	}
	waitStart("retention.bytes=1 keeps only the active segment", "by-bytes", active)

	produce("by-time", 3)
	waitStart("retention.ms=0 deletes what was written", "by-time", 3)

	produce("seg-ms", 1)
	dataplane.WaitPastMillis(t, time.Now().UnixMilli()+1)
	produce("seg-ms", 1)
	if got := len(segmentBases(t, dp, "seg-ms", 0)); got != 2 {
		t.Fatalf("segment.ms=1: %d segments after two appends 2 ms apart", got)
	}

	all := c.Client(t, kgo.RecordRetries(0), kgo.RequestRetries(0))
	if err := all.ProduceSync(ctx, &kgo.Record{Topic: "min-isr", Value: []byte("x")}).FirstErr(); !errors.Is(err, kerr.NotEnoughReplicas) {
		t.Fatalf("acks=all with min.insync.replicas=2 and an ISR of 1: %v", err)
	}
	produce("min-isr", 1) // acks=1 does not need the ISR
	produce("flush", 3)   // each append fsynced before it is acknowledged
}
