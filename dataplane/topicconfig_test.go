package dataplane

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Topic configs reach the partitions' logs and the produce path: the configs a topic
// has when its log opens, and any it has later.

// configSnapshot is a metadata view in which node 0 (startServer's) leads partition 0 of
// topic with configs.
func configSnapshot(rev int64, topic string, configs map[string]string) *client.Snapshot {
	tp := client.TopicPartition{Topic: topic}
	return &client.Snapshot{
		Revision: rev,
		Topics:   map[string]client.Topic{topic: {Name: topic, ID: "id-" + topic, Partitions: 1, ReplicationFactor: 1, Configs: configs}},
		Partitions: map[client.TopicPartition]client.PartitionState{tp: {Topic: topic, Replicas: []int32{0},
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
		client.ConfigMaxMessageBytes:      "2000",
		client.ConfigSegmentBytes:         "4096",
		client.ConfigMessageTimestampType: "LogAppendTime",
		client.ConfigMinInsyncReplicas:    "2",
	})); err != nil {
		t.Fatal(err)
	}
	p := s.replicas.get("t", 0)
	if p == nil || !p.IsLeader() {
		t.Fatal("the node does not lead t-0")
	}
	if p.log.MaxBatchBytes() != 2000 || p.log.SegmentBytes() != 4096 {
		t.Fatalf("log opened with max.message.bytes %d, segment.bytes %d", p.log.MaxBatchBytes(), p.log.SegmentBytes())
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
	// inclusive.
	rev := int64(1)
	limit := func(v string) {
		t.Helper()
		rev++
		if err := s.Reconcile(configSnapshot(rev, "t", map[string]string{client.ConfigMaxMessageBytes: v})); err != nil {
			t.Fatal(err)
		}
	}
	limit(strconv.Itoa(len(small) - 1))
	expect("batch one byte over the limit", 1, small, kerr.MessageTooLarge.Code, false)
	limit(strconv.Itoa(len(small)))
	expect("batch of exactly the limit", 1, small, 0, false)
	// And back to the defaults: everything set before is undone.
	if err := s.Reconcile(configSnapshot(rev+1, "t", nil)); err != nil {
		t.Fatal(err)
	}
	if p.log.MaxBatchBytes() != segment.DefaultMaxBatchBytes || p.log.SegmentBytes() != segment.DefaultSegmentBytes {
		t.Fatalf("defaults not restored: %d %d", p.log.MaxBatchBytes(), p.log.SegmentBytes())
	}
	expect("3000-byte batch, default limit", -1, big, 0, false)
	if s.replicas.get("t", 0) != p {
		t.Fatal("the replica was reopened instead of reconfigured")
	}
}
