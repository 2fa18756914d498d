package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// The admin APIs of issue #15 on real processes: one gregor-cp and three gregor-dp,
// a topic with replication factor 3, through franz-go's kadm, sarama's ClusterAdmin and
// kafka-python's KafkaAdminClient.

// logStartCheckpoint reads the log-start-offset checkpoint of a node's replica of
// topic-partition ("" if it has none).
func logStartCheckpoint(d *testcluster.DP, topic string, partition int32) string {
	b, err := os.ReadFile(filepath.Join(d.Dir(), fmt.Sprintf("%s-%d", topic, partition), "log-start-offset"))
	if err != nil {
		return ""
	}
	lines := strings.Fields(string(b))
	if len(lines) != 2 {
		return ""
	}
	return lines[1]
}

// earliest is topic-partition's log start as ListOffsets gives it.
func earliest(ctx context.Context, adm *kadm.Client, topic string, partition int32) (int64, error) {
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	o, ok := starts.Lookup(topic, partition)
	if !ok || o.Err != nil {
		return 0, fmt.Errorf("no start offset: %v", o.Err)
	}
	return o.Offset, nil
}

// TestDeleteRecordsReplicated: DeleteRecords through kadm answers once every follower
// has moved its log start too (the low watermark is the new start), which each replica
// checkpoints; a restart of the leader, and the leadership change it brings, keep the
// start: the new leader answers ListOffsets earliest with it and refuses a fetch below
// it, and the restarted node recovers it from its checkpoint. Then sarama's
// ClusterAdmin deletes further, and refuses an offset above the high watermark.
func TestDeleteRecordsReplicated(t *testing.T) {
	const topic = "delrec-r3"
	c := startReplicated(t, topic, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl := c.Client(t, kgo.ProducerLinger(0))
	adm := kadm.NewClient(cl)
	var rs []*kgo.Record
	for i := range 100 {
		rs = append(rs, &kgo.Record{Topic: topic, Value: []byte(fmt.Sprint(i))})
	}
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	o := kadm.Offsets{}
	o.Add(kadm.Offset{Topic: topic, Partition: 0, At: 40})
	resp, err := adm.DeleteRecords(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := resp.Lookup(topic, 0); r.Err != nil || r.LowWatermark != 40 {
		t.Fatalf("DeleteRecords: %+v", r)
	}
	// Answered with low watermark 40: every replica has moved, and checkpointed.
	for _, d := range c.DPs {
		if got := logStartCheckpoint(d, topic, 0); got != "40" {
			t.Fatalf("%s's log-start-offset checkpoint: %q, want 40", d.Name(), got)
		}
	}

	leader := c.Leader(t, topic, 0)
	c.Restart(leader)
	c.CheckFor(t, 30*time.Second, func() error {
		if c.WaitLeader(t, topic, 0) == leader {
			return errors.New("the restarted node still leads")
		}
		start, err := earliest(ctx, adm, topic, 0)
		if err != nil {
			return err
		}
		if start != 40 {
			t.Fatalf("log start after the leader's restart: %d, want 40", start)
		}
		return nil
	})
	fetch := kmsg.NewPtrFetchRequest()
	fetch.SetVersion(11)
	fetch.MaxWaitMillis, fetch.MaxBytes = 100, 1<<20
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = topic
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.FetchOffset, fp.PartitionMaxBytes, fp.CurrentLeaderEpoch = 39, 1<<20, -1
	ft.Partitions = append(ft.Partitions, fp)
	fetch.Topics = append(fetch.Topics, ft)
	c.CheckFor(t, 20*time.Second, func() error {
		fr, err := fetch.RequestWith(ctx, cl)
		if err != nil {
			return err
		}
		if code := fr.Topics[0].Partitions[0].ErrorCode; code != kerr.OffsetOutOfRange.Code {
			return fmt.Errorf("fetch below the log start: code %d", code)
		}
		return nil
	})
	c.CheckFor(t, 20*time.Second, func() error {
		if got := logStartCheckpoint(leader, topic, 0); got != "40" {
			return fmt.Errorf("restarted node's checkpoint %q", got)
		}
		return nil
	})

	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_8_0_0
	sadm, err := sarama.NewClusterAdmin(c.Brokers(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sadm.Close()
	c.CheckFor(t, 20*time.Second, func() error { return sadm.DeleteRecords(topic, map[int32]int64{0: 60}) })
	if start, err := earliest(ctx, adm, topic, 0); err != nil || start != 60 {
		t.Fatalf("log start after sarama's DeleteRecords: %d %v", start, err)
	}
	if err := sadm.DeleteRecords(topic, map[int32]int64{0: 1000}); err == nil || !strings.Contains(err.Error(), sarama.ErrOffsetOutOfRange.Error()) {
		t.Fatalf("sarama DeleteRecords above the high watermark: %v", err)
	}
	if err := sadm.DeleteRecords("no-such-topic", map[int32]int64{0: 1}); err == nil {
		t.Fatal("sarama DeleteRecords of an unknown topic succeeded")
	}
}

// TestAlterConfigsReplicated: a config changed through kadm reaches every replica's
// running log without a restart — after the leader is killed, a follower that opened
// its log before the change leads and enforces it; sarama's ClusterAdmin alters (both
// APIs), describes topic and node configs, refuses a bad value, an unknown config and
// a node setting, and describes the log dirs.
func TestAlterConfigsReplicated(t *testing.T) {
	const topic = "alter-r3"
	c := startReplicated(t, topic, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl := c.Client(t, kgo.ProducerLinger(0), kgo.RecordRetries(3), kgo.ProducerBatchCompression(kgo.NoCompression()))
	adm := kadm.NewClient(cl)
	resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: kadm.StringPtr("300")}}, topic)
	if err != nil || resp[0].Err != nil {
		t.Fatalf("alter: %v %+v", err, resp)
	}
	big := func() error {
		return cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: make([]byte, 1000)}).FirstErr()
	}
	if err := big(); !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("leader took a 1000-byte record under max.message.bytes=300: %v", err)
	}
	old := c.Leader(t, topic, 0)
	c.Kill(old)
	c.CheckFor(t, 30*time.Second, func() error {
		if d := c.WaitLeader(t, topic, 0); d == old {
			return errors.New("no new leader yet")
		}
		if err := big(); !errors.Is(err, kerr.MessageTooLarge) {
			return fmt.Errorf("new leader: %w", err)
		}
		return nil
	})
	c.Restart(old)

	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_8_0_0
	sadm, err := sarama.NewClusterAdmin(c.Brokers(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sadm.Close()
	// sdescribe describes one resource with synonyms and documentation (v3+).
	sdescribe := func(res sarama.ConfigResource) []sarama.ConfigEntry {
		t.Helper()
		results, err := sadm.DescribeConfigs([]*sarama.ConfigResource{&res}, sarama.DescribeConfigsOptions{IncludeSynonyms: true, IncludeDocumentation: true})
		if err != nil || len(results) != 1 || results[0].ErrorCode != 0 {
			t.Fatalf("sarama DescribeConfigs %+v: %v %+v", res, err, results)
		}
		return results[0].Configs
	}
	describe := func(name string) sarama.ConfigEntry {
		t.Helper()
		entries := sdescribe(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic, ConfigNames: []string{name}})
		if len(entries) != 1 || entries[0].Documentation == nil || entries[0].Type == sarama.UnknownConfigType {
			t.Fatalf("sarama DescribeConfigs %s: %+v", name, entries)
		}
		return entries[0]
	}
	if err := sadm.IncrementalAlterConfig(sarama.TopicResource, topic, map[string]sarama.IncrementalAlterConfigsEntry{
		"retention.ms": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: kadm.StringPtr("7200000")},
	}, false); err != nil {
		t.Fatal(err)
	}
	if e := describe("retention.ms"); e.Value != "7200000" || e.Source != sarama.SourceTopic || e.Default || e.Type != sarama.LongConfigType || len(e.Synonyms) != 2 {
		t.Fatalf("retention.ms after sarama's incremental alter: %+v", e)
	}
	if e := describe("max.message.bytes"); e.Value != "300" {
		t.Fatalf("an incremental alter lost max.message.bytes: %+v", e)
	}
	if err := sadm.AlterConfig(sarama.TopicResource, topic, map[string]*string{"segment.ms": kadm.StringPtr("600000")}, false); err != nil {
		t.Fatal(err)
	}
	if e := describe("max.message.bytes"); e.Source != sarama.SourceDefault {
		t.Fatalf("AlterConfigs kept max.message.bytes: %+v", e)
	}
	c.CheckFor(t, 20*time.Second, big) // every replica's log dropped the limit
	for name, value := range map[string]string{"retention.ms": "later", "no.such.config": "1"} {
		err := sadm.AlterConfig(sarama.TopicResource, topic, map[string]*string{name: &value}, false)
		if !errors.Is(err, sarama.ErrInvalidConfig) {
			t.Fatalf("sarama AlterConfig %s=%s: %v", name, value, err)
		}
	}
	err = sadm.IncrementalAlterConfig(sarama.BrokerResource, "1", map[string]sarama.IncrementalAlterConfigsEntry{
		"log.dirs": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: kadm.StringPtr("/elsewhere")},
	}, false)
	if !errors.Is(err, sarama.ErrInvalidConfig) || !strings.Contains(err.Error(), "--data-dir") {
		t.Fatalf("sarama alter of a node setting: %v", err)
	}
	entries := sdescribe(sarama.ConfigResource{Type: sarama.BrokerResource, Name: "2"})
	var id *sarama.ConfigEntry
	for i := range entries {
		if entries[i].Name == "broker.id" {
			id = &entries[i]
		}
	}
	if id == nil || id.Value != "2" || !id.ReadOnly || id.Source != sarama.SourceStaticBroker ||
		id.Documentation == nil || !strings.Contains(*id.Documentation, "--id") {
		t.Fatalf("node 2's broker.id: %+v", id)
	}
	dirs, err := sadm.DescribeLogDirs([]int32{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []int32{1, 2, 3} {
		if len(dirs[id]) != 1 || len(dirs[id][0].Topics) != 1 || dirs[id][0].Topics[0].Topic != topic ||
			dirs[id][0].Topics[0].Partitions[0].Size <= 0 {
			t.Fatalf("node %d's log dirs: %+v", id, dirs[id])
		}
	}
}

// kafkaPythonConfigsScript alters and describes a topic's configs with kafka-python's
// KafkaAdminClient (AlterConfigs and DescribeConfigs), then tries a bad value and a
// node setting, printing what each answered.
const kafkaPythonConfigsScript = `
import sys
from kafka.admin import KafkaAdminClient, NewTopic, ConfigResource, ConfigResourceType
addr, topic = sys.argv[1], sys.argv[2]
admin = KafkaAdminClient(bootstrap_servers=addr)
admin.create_topics([NewTopic(name=topic, num_partitions=1, replication_factor=1)])
def show(tag, resource):
    for resp in admin.describe_configs([resource]):
        for res in resp.resources:
            print("%s ERR %d" % (tag, res[0]), flush=True)
            for entry in res[4]:
                print("%s %s=%s" % (tag, entry[0], entry[1]), flush=True)
for resp in [admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "123456"})])]:
    for res in resp.resources:
        print("ALTER %d" % res[0], flush=True)
show("TOPIC", ConfigResource(ConfigResourceType.TOPIC, topic))
resp = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "never"})])
print("BAD %d" % resp.resources[0][0], flush=True)
show("BROKER", ConfigResource(ConfigResourceType.BROKER, "1"))
admin.close()
`

// TestKafkaPythonAdmin runs kafkaPythonConfigsScript against a process node.
func TestKafkaPythonAdmin(t *testing.T) {
	needBinary(t, "/usr/lib/python3/dist-packages/kafka/__init__.py", "python3-kafka")
	addr := startProcessCluster(t)
	out, err := exec.Command("/usr/bin/python3", "-c", kafkaPythonConfigsScript, addr, "kpy-admin").CombinedOutput()
	if err != nil {
		t.Fatalf("kafka-python: %v\n%s", err, out)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{
		"ALTER 0", "TOPIC ERR 0", "TOPIC retention.ms=123456", "TOPIC segment.bytes=1073741824",
		fmt.Sprintf("BAD %d", kerr.InvalidConfig.Code), "BROKER ERR 0", "BROKER broker.id=1",
	} {
		if !lines[want] {
			t.Fatalf("kafka-python output lacks %q:\n%s", want, out)
		}
	}
}
