package dataplane_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// describedConfig returns one config of a topic or broker as DescribeConfigs gives it.
func describedConfig(t *testing.T, ctx context.Context, adm *kadm.Client, topic, key string) kadm.Config {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil || rc.Err != nil {
		t.Fatalf("describe %s: %v %v", topic, err, rc.Err)
	}
	for _, c := range rc.Configs {
		if c.Key == key {
			return c
		}
	}
	t.Fatalf("%s has no config %s", topic, key)
	return kadm.Config{}
}

// TestAlterConfigsKadm changes a topic's configs with franz-go's admin through both
// APIs — IncrementalAlterConfigs (SET, DELETE, APPEND, SUBTRACT) and AlterConfigs (the
// whole set) — and checks each change in DescribeConfigs and at work in the log
// (max.message.bytes refuses a record at once, no restart); refusals carry their codes
// and messages; validate-only changes nothing; the node's settings are described
// read-only and refused with the flag named.
func TestAlterConfigsKadm(t *testing.T) {
	c, _ := startNode(t, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := c.Client(t, kgo.RecordRetries(0), kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()))
	adm := kadm.NewClient(cl)
	const topic = "alter"
	if resp, err := adm.CreateTopics(ctx, 1, 1, map[string]*string{"retention.ms": kadmStr("3600000")}, topic); err != nil || resp[topic].Err != nil {
		t.Fatalf("create: %v %+v", err, resp)
	}
	alter := func(configs ...kadm.AlterConfig) error {
		t.Helper()
		resp, err := adm.AlterTopicConfigs(ctx, configs, topic)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := resp.On(topic, nil)
		if r.Err != nil {
			return fmt.Errorf("%w: %s", r.Err, r.ErrMessage)
		}
		return nil
	}
	if err := alter(kadm.AlterConfig{Op: kadm.SetConfig, Name: "max.message.bytes", Value: kadmStr("200")},
		kadm.AlterConfig{Op: kadm.SetConfig, Name: "segment.ms", Value: kadmStr("600000")}); err != nil {
		t.Fatal(err)
	}
	got := describedConfig(t, ctx, adm, topic, "max.message.bytes")
	if got.MaybeValue() != "200" || got.Source != kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("max.message.bytes after SET: %+v", got)
	}
	if len(got.Synonyms) != 2 || got.Synonyms[1].Key != "message.max.bytes" || got.Synonyms[1].Source != kmsg.ConfigSourceDefaultConfig {
		t.Fatalf("max.message.bytes synonyms: %+v", got.Synonyms)
	}
	if got := describedConfig(t, ctx, adm, topic, "retention.ms"); got.MaybeValue() != "3600000" {
		t.Fatalf("an incremental SET lost retention.ms: %+v", got)
	}
	big := &kgo.Record{Topic: topic, Value: make([]byte, 1000)}
	if err := cl.ProduceSync(ctx, big).FirstErr(); !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("1000-byte record under max.message.bytes=200: %v", err)
	}
	if err := alter(kadm.AlterConfig{Op: kadm.DeleteConfig, Name: "max.message.bytes"}); err != nil {
		t.Fatal(err)
	}
	if got := describedConfig(t, ctx, adm, topic, "max.message.bytes"); got.Source != kmsg.ConfigSourceDefaultConfig {
		t.Fatalf("max.message.bytes after DELETE: %+v", got)
	}
	if err := cl.ProduceSync(ctx, big).FirstErr(); err != nil {
		t.Fatalf("1000-byte record after DELETE: %v", err)
	}
	// Lists: APPEND of what the default holds, SUBTRACT of what it lacks.
	if err := alter(kadm.AlterConfig{Op: kadm.AppendConfig, Name: "cleanup.policy", Value: kadmStr("delete")}); err != nil {
		t.Fatal(err)
	}
	if err := alter(kadm.AlterConfig{Op: kadm.SubtractConfig, Name: "cleanup.policy", Value: kadmStr("compact")}); err != nil {
		t.Fatal(err)
	}
	if got := describedConfig(t, ctx, adm, topic, "cleanup.policy"); got.MaybeValue() != "delete" || got.Source != kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("cleanup.policy after APPEND: %+v", got)
	}
	for _, tc := range []struct {
		c    kadm.AlterConfig
		want error
		msg  string
	}{
		{kadm.AlterConfig{Op: kadm.SetConfig, Name: "retention.ms", Value: kadmStr("soon")}, kerr.InvalidConfig, "retention.ms"},
		{kadm.AlterConfig{Op: kadm.SetConfig, Name: "no.such.config", Value: kadmStr("1")}, kerr.InvalidConfig, "no.such.config"},
		{kadm.AlterConfig{Op: kadm.AppendConfig, Name: "cleanup.policy", Value: kadmStr("compact")}, kerr.InvalidConfig, "compaction"},
		{kadm.AlterConfig{Op: kadm.AppendConfig, Name: "retention.ms", Value: kadmStr("1")}, kerr.InvalidConfig, "not a list"},
		{kadm.AlterConfig{Op: kadm.SetConfig, Name: "retention.ms"}, kerr.InvalidRequest, "null"},
	} {
		if err := alter(tc.c); !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Fatalf("%+v: %v, want %v saying %q", tc.c, err, tc.want, tc.msg)
		}
	}
	// An operation Kafka does not define (kadm sends only the four).
	raw := kmsg.NewPtrIncrementalAlterConfigsRequest()
	rr := kmsg.NewIncrementalAlterConfigsRequestResource()
	rr.ResourceType, rr.ResourceName = kmsg.ConfigResourceTypeTopic, topic
	rr.Configs = []kmsg.IncrementalAlterConfigsRequestResourceConfig{{Name: "retention.ms", Op: 9, Value: kadmStr("1")}}
	raw.Resources = append(raw.Resources, rr)
	if rresp, err := raw.RequestWith(ctx, cl); err != nil || rresp.Resources[0].ErrorCode != kerr.InvalidRequest.Code {
		t.Fatalf("operation 9: %v %+v", err, rresp)
	}
	if resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: kadmStr("1")}}, "nope"); err != nil || !errors.Is(resp[0].Err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("unknown topic: %v %+v", err, resp)
	}
	if resp, err := adm.ValidateAlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: kadmStr("5")}}, topic); err != nil || resp[0].Err != nil {
		t.Fatalf("validate only: %v %+v", err, resp)
	}
	if got := describedConfig(t, ctx, adm, topic, "retention.ms"); got.MaybeValue() != "3600000" {
		t.Fatalf("validate only changed retention.ms: %+v", got)
	}

	// AlterConfigs: the set given replaces the topic's.
	resp, err := adm.AlterTopicConfigsState(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: kadmStr("300")}}, topic)
	if err != nil || resp[0].Err != nil {
		t.Fatalf("AlterConfigs: %v %+v", err, resp)
	}
	if got := describedConfig(t, ctx, adm, topic, "retention.ms"); got.Source != kmsg.ConfigSourceDefaultConfig {
		t.Fatalf("AlterConfigs kept retention.ms: %+v", got)
	}
	if got := describedConfig(t, ctx, adm, topic, "max.message.bytes"); got.MaybeValue() != "300" {
		t.Fatalf("AlterConfigs max.message.bytes: %+v", got)
	}
	if err := cl.ProduceSync(ctx, big).FirstErr(); !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("1000-byte record under max.message.bytes=300: %v", err)
	}
	if resp, err := adm.AlterTopicConfigsState(ctx, []kadm.AlterConfig{{Name: "segment.bytes", Value: kadmStr("1")}}, topic); err != nil || !errors.Is(resp[0].Err, kerr.InvalidConfig) {
		t.Fatalf("AlterConfigs bad value: %v %+v", err, resp)
	}

	// The node's settings: described read-only, refused with the flag named.
	brokers, err := adm.DescribeBrokerConfigs(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := brokers.On("1", nil)
	if err != nil || b.Err != nil {
		t.Fatalf("describe broker: %v %v", err, b.Err)
	}
	seen := map[string]kadm.Config{}
	for _, c := range b.Configs {
		seen[c.Key] = c
	}
	if id := seen["broker.id"]; id.MaybeValue() != "1" || id.Source != kmsg.ConfigSourceStaticBrokerConfig {
		t.Fatalf("broker.id: %+v", id)
	}
	for _, k := range []string{"log.dirs", "listeners", "advertised.listeners", "replica.lag.time.max.ms", "auto.create.topics.enable", "message.max.bytes", "log.retention.ms"} {
		if _, ok := seen[k]; !ok {
			t.Fatalf("broker configs lack %s", k)
		}
	}
	for _, alterBroker := range []func() (kadm.AlterConfigsResponses, error){
		func() (kadm.AlterConfigsResponses, error) {
			return adm.AlterBrokerConfigs(ctx, []kadm.AlterConfig{{Name: "replica.lag.time.max.ms", Value: kadmStr("1000")}}, 1)
		},
		func() (kadm.AlterConfigsResponses, error) {
			return adm.AlterBrokerConfigsState(ctx, []kadm.AlterConfig{{Name: "replica.lag.time.max.ms", Value: kadmStr("1000")}}, 1)
		},
	} {
		resp, err := alterBroker()
		if err != nil || len(resp) != 1 || !errors.Is(resp[0].Err, kerr.InvalidConfig) || !strings.Contains(resp[0].ErrMessage, "--replica-lag-time-max") {
			t.Fatalf("alter broker config: %v %+v", err, resp)
		}
	}
}

// TestDeleteRecordsKadm moves a partition's log start with franz-go's admin: the low
// watermark is answered, ListOffsets earliest and a consumer starting at the
// beginning see it, a fetch below it is OFFSET_OUT_OF_RANGE; an offset above the high
// watermark and an unknown topic are refused; -1 means the high watermark. The log
// dirs and the producer state are described as well.
func TestDeleteRecordsKadm(t *testing.T) {
	c, dp := startNode(t, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := c.Client(t, kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	adm := kadm.NewClient(cl)
	const topic = "delrec"
	if resp, err := adm.CreateTopics(ctx, 2, 1, nil, topic); err != nil || resp[topic].Err != nil {
		t.Fatalf("create: %v %+v", err, resp)
	}
	for i := range 10 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 0, Value: []byte{byte(i)}}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	del := func(p int32, offset int64) kadm.DeleteRecordsResponse {
		t.Helper()
		o := kadm.Offsets{}
		o.Add(kadm.Offset{Topic: topic, Partition: p, At: offset})
		resp, err := adm.DeleteRecords(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := resp.Lookup(topic, p)
		return r
	}
	if r := del(0, 4); r.Err != nil || r.LowWatermark != 4 {
		t.Fatalf("delete below 4: %+v", r)
	}
	if r := del(0, 11); !errors.Is(r.Err, kerr.OffsetOutOfRange) {
		t.Fatalf("delete above the high watermark: %+v", r)
	}
	if r := del(0, 2); r.Err != nil || r.LowWatermark != 4 {
		t.Fatalf("delete below the log start: %+v", r)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := starts.Lookup(topic, 0); o.Offset != 4 {
		t.Fatalf("ListOffsets earliest: %+v", o)
	}
	fetchAt := func(offset int64) int16 {
		req := kmsg.NewPtrFetchRequest()
		req.SetVersion(11)
		req.MaxWaitMillis, req.MaxBytes = 100, 1<<20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = 0, offset, 1<<20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Topics[0].Partitions[0].LogStartOffset != 4 && resp.Topics[0].Partitions[0].ErrorCode == 0 {
			t.Fatalf("fetch answers log start %d", resp.Topics[0].Partitions[0].LogStartOffset)
		}
		return resp.Topics[0].Partitions[0].ErrorCode
	}
	if code := fetchAt(3); code != kerr.OffsetOutOfRange.Code {
		t.Fatalf("fetch below the log start: code %d", code)
	}
	if code := fetchAt(4); code != 0 {
		t.Fatalf("fetch at the log start: code %d", code)
	}
	if r := del(0, -1); r.Err != nil || r.LowWatermark != 10 {
		t.Fatalf("delete to the high watermark: %+v", r)
	}
	o := kadm.Offsets{}
	o.Add(kadm.Offset{Topic: "no-such-topic", Partition: 0, At: 1})
	if resp, err := adm.DeleteRecords(ctx, o); err == nil {
		if r, _ := resp.Lookup("no-such-topic", 0); !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
			t.Fatalf("unknown topic: %+v", r)
		}
	}

	dirs, err := adm.DescribeAllLogDirs(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var parts int
	dirs.Each(func(d kadm.DescribedLogDir) {
		if d.Err != nil {
			t.Fatalf("log dir %s: %v", d.Dir, d.Err)
		}
		for _, ps := range d.Topics {
			for p, dp := range ps {
				parts++
				if dp.Topic == topic && p == 0 && dp.Size <= 0 {
					t.Fatalf("partition 0 is %d bytes", dp.Size)
				}
			}
		}
	})
	if parts != 2 {
		t.Fatalf("log dirs hold %d partitions, want 2", parts)
	}
	req := kmsg.NewPtrDescribeLogDirsRequest()
	req.SetVersion(4)
	// To the node itself: the client's merge of answers from all brokers drops the
	// v4 fields.
	kr, err := cl.Broker(1).Request(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	ld := kr.(*kmsg.DescribeLogDirsResponse)
	if err != nil || len(ld.Dirs) != 1 || ld.Dirs[0].TotalBytes <= 0 || ld.Dirs[0].UsableBytes <= 0 || ld.Dirs[0].UsableBytes > ld.Dirs[0].TotalBytes {
		t.Fatalf("DescribeLogDirs v4: %v %+v", err, ld)
	}

	producers, err := adm.DescribeProducers(ctx, kadm.TopicsSet{topic: {0: {}}})
	if err != nil {
		t.Fatal(err)
	}
	var active []kadm.DescribedProducer
	producers.EachPartition(func(p kadm.DescribedProducersPartition) {
		if p.Err != nil {
			t.Fatalf("producers of %s-%d: %v", p.Topic, p.Partition, p.Err)
		}
		active = append(active, p.ActiveProducers.Sorted()...)
	})
	if len(active) != 1 || active[0].ProducerID < 0 || active[0].LastSequence != 9 || active[0].CoordinatorEpoch != -1 || active[0].CurrentTxnStartOffset != -1 {
		t.Fatalf("producers: %+v", active)
	}
	if dp == nil {
		t.Fatal("no node")
	}
}
