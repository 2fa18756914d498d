package dataplane

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/segment"
)

// Topic configs reach the partitions' logs and the produce path: the configs a topic
// has when its log opens, and any it has later.

// configSnapshot is a metadata view in which node 0 (startServer's) leads partition 0 of
// topic with configs.
func configSnapshot(rev int64, topic string, configs map[string]string) *client.Snapshot {
	tp := cluster.TopicPartition{Topic: topic}
	return &client.Snapshot{
		Revision: rev,
		Topics:   map[string]cluster.Topic{topic: {Name: topic, ID: "id-" + topic, Partitions: 1, ReplicationFactor: 1, Configs: configs}},
		Partitions: map[cluster.TopicPartition]cluster.PartitionState{tp: {Topic: topic, Replicas: []int32{0},
			Leader: 0, ISR: []int32{0}}},
	}
}

// TestReconcileAppliesTopicConfigs: the log of a topic seen for the first time opens
// with the topic's configs (it used to open with the defaults: its settings were looked
// up in the view last reconciled, which did not have the topic yet), and an open log
// takes the configs of every later view.
func TestReconcileAppliesTopicConfigs(t *testing.T) {
	s := startServer(t, Config{})
	if err := s.Reconcile(configSnapshot(1, "t", map[string]string{
		cluster.ConfigMaxMessageBytes:      "2000",
		cluster.ConfigSegmentBytes:         "4096",
		cluster.ConfigMessageTimestampType: "LogAppendTime",
		cluster.ConfigMinInsyncReplicas:    "2",
	})); err != nil {
		t.Fatal(err)
	}
	p := s.replicas.Partition("t", 0)
	if p == nil || !p.IsLeader() {
		t.Fatal("the node does not lead t-0")
	}
	if p.Log().MaxBatchBytes() != 2000 || p.Log().SegmentBytes() != 4096 {
		t.Fatalf("log opened with max.message.bytes %d, segment.bytes %d", p.Log().MaxBatchBytes(), p.Log().SegmentBytes())
	}
	c := dial(t, s)
	big := batch(1, strings.Repeat("x", 3000), -1, -1, -1)
	mid := batch(1, strings.Repeat("m", 700), -1, -1, -1) // the tag is in the value and a header: about 1.5 KB
	small := batch(1, "s", -1, -1, -1)
	// expect produces records and checks the error code and, if accepted, whether the
	// broker stamped them (message.timestamp.type=LogAppendTime).
	expect := func(what string, acks int16, records []byte, want int16, stamped bool) {
		t.Helper()
		rp := produce(t, c, 7, "t", 0, acks, records)
		if rp.ErrorCode != want {
			t.Fatalf("%s: error %v, want %v", what, kerr.ErrorForCode(rp.ErrorCode), kerr.ErrorForCode(want))
		}
		if want == 0 && (rp.LogAppendTime != -1) != stamped {
			t.Fatalf("%s: log append time %d, want stamped %v", what, rp.LogAppendTime, stamped)
		}
	}
	expect("3000-byte batch, limit 2000", 1, big, kerr.MessageTooLarge.Code, false)
	expect("three batches of 1.5 KB, 4.5 KB in all, segment.bytes 4096", 1, bytes.Join([][]byte{mid, mid, mid}, nil), kerr.RecordListTooLarge.Code, false)
	expect("acks=all below min.insync.replicas", -1, small, kerr.NotEnoughReplicas.Code, false)
	expect("small batch", 1, small, 0, true)

	// The view changes, and the open log follows: the limit is the whole batch's size,
	// inclusive; max.message.bytes=0 refuses every batch.
	rev := int64(1)
	limit := func(v string) {
		t.Helper()
		rev++
		if err := s.Reconcile(configSnapshot(rev, "t", map[string]string{cluster.ConfigMaxMessageBytes: v})); err != nil {
			t.Fatal(err)
		}
	}
	limit(strconv.Itoa(len(small) - 1))
	expect("batch one byte over the limit", 1, small, kerr.MessageTooLarge.Code, false)
	limit(strconv.Itoa(len(small)))
	expect("batch of exactly the limit", 1, small, 0, false)
	limit("0")
	expect("any batch, limit 0", 1, small, kerr.MessageTooLarge.Code, false)
	// And back to the defaults: everything set before is undone.
	if err := s.Reconcile(configSnapshot(rev+1, "t", nil)); err != nil {
		t.Fatal(err)
	}
	if p.Log().MaxBatchBytes() != segment.DefaultMaxBatchBytes || p.Log().SegmentBytes() != segment.DefaultSegmentBytes {
		t.Fatalf("defaults not restored: %d %d", p.Log().MaxBatchBytes(), p.Log().SegmentBytes())
	}
	expect("3000-byte batch, default limit", -1, big, 0, false)
	if s.replicas.Partition("t", 0) != p {
		t.Fatal("the replica was reopened instead of reconfigured")
	}
}

// TestTopicLogConfigValues: Kafka values that segment.Config has no direct spelling for
// (its zero fields mean "default") keep their Kafka meaning in the log, and values that
// would overflow a time.Duration saturate.
func TestTopicLogConfigValues(t *testing.T) {
	open := func(configs map[string]string) *segment.Log {
		t.Helper()
		l, err := segment.Open(t.TempDir(), TopicLogConfig(cluster.Topic{Configs: configs}, segment.Config{}))
		if err != nil {
			t.Fatalf("%v: %v", configs, err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l
	}
	appendN := func(l *segment.Log, n int) {
		t.Helper()
		for range n {
			if _, err := l.Append(batch(1, strings.Repeat("r", 100), -1, -1, -1), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Long.MAX_VALUE, Kafka's "never", for both times: the log opens and keeps rolling
	// by size only, and retention deletes nothing.
	const never = "9223372036854775807"
	l := open(map[string]string{cluster.ConfigSegmentMs: never, cluster.ConfigRetentionMs: never, cluster.ConfigSegmentBytes: "400"})
	appendN(l, 6)
	if res, err := l.DeleteRetained(l.LogEndOffset()); err != nil || res.Segments != 0 || l.NumSegments() < 3 {
		t.Fatalf("retention.ms=MAX deleted %+v (%v); %d segments", res, err, l.NumSegments())
	}
	if got := millis(math.MaxInt64); got != math.MaxInt64 {
		t.Fatalf("millis(MaxInt64) = %v", got)
	}
	// retention.ms=0: every segment whose records are older than now goes, once the
	// clock has moved past the newest record.
	l = open(map[string]string{cluster.ConfigRetentionMs: "0"})
	appendN(l, 3)
	waitPastMillis(t, time.Now().UnixMilli())
	if res, err := l.DeleteRetained(l.LogEndOffset()); err != nil || res.Segments != 1 || l.LogStartOffset() != 3 {
		t.Fatalf("retention.ms=0: %+v %v, log start %d", res, err, l.LogStartOffset())
	}
	// retention.bytes=1: only the active segment stays.
	l = open(map[string]string{cluster.ConfigRetentionBytes: "1", cluster.ConfigSegmentBytes: "400"})
	appendN(l, 6)
	n := l.NumSegments()
	if res, err := l.DeleteRetained(l.LogEndOffset()); err != nil || res.Segments != n-1 || l.NumSegments() != 1 {
		t.Fatalf("retention.bytes=1: %+v %v, %d of %d segments left", res, err, l.NumSegments(), n)
	}
	// retention.bytes=-1: no size limit.
	l = open(map[string]string{cluster.ConfigRetentionBytes: "-1", cluster.ConfigSegmentBytes: "400"})
	appendN(l, 6)
	if res, err := l.DeleteRetained(l.LogEndOffset()); err != nil || res.Segments != 0 {
		t.Fatalf("retention.bytes=-1 deleted %+v %v", res, err)
	}
	// flush.messages and flush.ms: the recovery point (everything below it on disk)
	// shows when the log flushes. Long.MAX_VALUE, the default, never does before a roll;
	// flush.messages=1 and flush.ms=0 before each append returns; flush.messages=3 every
	// third message; flush.ms=20 within a few ticks.
	for _, configs := range []map[string]string{nil, {cluster.ConfigFlushMessages: never, cluster.ConfigFlushMs: never}} {
		l = open(configs)
		appendN(l, 3)
		if l.RecoveryPoint() != 0 {
			t.Fatalf("%v: recovery point %d after 3 appends: flushed", configs, l.RecoveryPoint())
		}
	}
	for _, configs := range []map[string]string{{cluster.ConfigFlushMessages: "1"}, {cluster.ConfigFlushMs: "0"}} {
		l = open(configs)
		for i := range 3 {
			appendN(l, 1)
			if l.RecoveryPoint() != int64(i+1) {
				t.Fatalf("%v: recovery point %d after append %d", configs, l.RecoveryPoint(), i+1)
			}
		}
	}
	l = open(map[string]string{cluster.ConfigFlushMessages: "3"})
	appendN(l, 2)
	if l.RecoveryPoint() != 0 {
		t.Fatalf("flush.messages=3: recovery point %d after 2 messages", l.RecoveryPoint())
	}
	appendN(l, 1)
	if l.RecoveryPoint() != 3 {
		t.Fatalf("flush.messages=3: recovery point %d after 3 messages", l.RecoveryPoint())
	}
	l = open(map[string]string{cluster.ConfigFlushMs: "20"})
	appendN(l, 2)
	for deadline := time.Now().Add(5 * time.Second); l.RecoveryPoint() != 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("flush.ms=20: recovery point %d 5s after 2 appends", l.RecoveryPoint())
		}
	}
	// max.message.bytes=0: no batch fits.
	l = open(map[string]string{cluster.ConfigMaxMessageBytes: "0"})
	if _, err := l.Append(batch(1, "", -1, -1, -1), 0); err == nil {
		t.Fatal("max.message.bytes=0 accepted a batch")
	}
}

// waitPastMillis waits until the clock's millisecond is past ms.
func waitPastMillis(t *testing.T, ms int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().UnixMilli() <= ms {
		if time.Now().After(deadline) {
			t.Fatal("the clock does not move")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDescribeConfigsEffectiveValues: DescribeConfigs reports what the node enforces: a
// value set on the topic as set, and one stored by an earlier version that is refused now
// (and ignored) as the default.
func TestDescribeConfigsEffectiveValues(t *testing.T) {
	s := startServer(t, Config{})
	if err := s.Reconcile(configSnapshot(1, "t", map[string]string{
		cluster.ConfigMaxMessageBytes:   "51200",
		cluster.ConfigCompressionType:   "gzip",
		cluster.ConfigRetentionBytes:    "0",
		cluster.ConfigMinInsyncReplicas: "2",
	})); err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrDescribeConfigsRequest()
	res := kmsg.NewDescribeConfigsRequestResource()
	res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeTopic, "t"
	req.Resources = append(req.Resources, res)
	resp := roundTrip(t, dial(t, s), req, 2, 1).(*kmsg.DescribeConfigsResponse)
	got := map[string]kmsg.DescribeConfigsResponseResourceConfig{}
	for _, c := range resp.Resources[0].Configs {
		got[c.Name] = c
	}
	for name, want := range map[string]struct {
		value     string
		isDefault bool
	}{
		cluster.ConfigMaxMessageBytes:   {"51200", false},
		cluster.ConfigMinInsyncReplicas: {"2", false},
		cluster.ConfigCompressionType:   {"producer", true},
		cluster.ConfigRetentionBytes:    {"-1", true},
		cluster.ConfigSegmentBytes:      {strconv.Itoa(segment.DefaultSegmentBytes), true},
	} {
		c, ok := got[name]
		source := kmsg.ConfigSourceDynamicTopicConfig
		if want.isDefault {
			source = kmsg.ConfigSourceDefaultConfig
		}
		if !ok || c.Value == nil || *c.Value != want.value || c.Source != source {
			value := "<none>"
			if c.Value != nil {
				value = *c.Value
			}
			t.Errorf("%s: %q from %v, want %q from %v", name, value, c.Source, want.value, source)
		}
	}
	if p := s.replicas.Partition("t", 0); p.Log().MaxBatchBytes() != 51200 {
		t.Fatalf("the log enforces max.message.bytes %d", p.Log().MaxBatchBytes())
	}
}
