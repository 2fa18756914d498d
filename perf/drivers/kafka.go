package drivers

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/gregor-streaming/gregor/perf"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Kafka client settings.
const (
	// kafkaDialTimeout bounds the first connection: pointed at nothing, the driver
	// fails in seconds with the address in the error.
	kafkaDialTimeout = 3 * time.Second
	// kafkaMaxBufferedRecords bounds a franz-go producer's unacknowledged records
	// (back-pressure: Produce blocks beyond it).
	kafkaMaxBufferedRecords = 1 << 17
	// kafkaFetchMaxBytes and kafkaFetchMaxPartitionBytes are a consumer's fetch sizes:
	// large enough for catch-up reads to stream (Kafka's defaults are 50 MiB / 1 MiB).
	kafkaFetchMaxBytes          = 64 << 20
	kafkaFetchMaxPartitionBytes = 8 << 20
	// kafkaFetchMaxWait is how long a fetch waits at the log end for new records;
	// short, so end-to-end latency is not the broker's long-poll timer.
	kafkaFetchMaxWait = 100 * time.Millisecond
	// kafkaTopicWait bounds waiting for a created topic to have leaders.
	kafkaTopicWait = 15 * time.Second
)

// kafkaDriver speaks the Kafka protocol to any Kafka-compatible broker: franz-go
// (driver "kafka"), or pre-encoded Produce and in-place-walked Fetch requests on plain
// connections (driver "kafka-raw"). Consumers are assigned partitions directly (no group
// coordinator needed) and read from the start.
type kafkaDriver struct {
	bootstrap string
	raw       bool
	admin     *kgo.Client
	adm       *kadm.Client
	pids      []int
	log       func(format string, a ...any)
	// rf and configs are what CreateTopic asks for (Options.ReplicationFactor,
	// Options.TopicConfigs).
	rf      int16
	configs map[string]*string
}

func newKafka(o Options, raw bool) (*kafkaDriver, error) {
	addr := o.Bootstrap
	if addr == "" {
		addr = DefaultBootstrap
	}
	name := "kafka"
	if raw {
		name = "kafka-raw"
	}
	// A plain dial first: franz-go retries unreachable seeds for a long time, and the
	// user pointed at nothing should hear so at once.
	c, err := net.DialTimeout("tcp", addr, kafkaDialTimeout)
	if err != nil {
		return nil, fmt.Errorf("%s: no Kafka-compatible broker at %s (--bootstrap): %w", name, addr, err)
	}
	c.Close()
	d := &kafkaDriver{bootstrap: addr, raw: raw, rf: o.ReplicationFactor}
	if d.rf == 0 {
		d.rf = -1 // the broker's default
	}
	for k, v := range o.TopicConfigs {
		if d.configs == nil {
			d.configs = map[string]*string{}
		}
		d.configs[k] = &v
	}
	d.log = func(format string, a ...any) { fmt.Fprintf(o.Log, "bench: "+name+": "+format+"\n", a...) }
	d.admin, err = kgo.NewClient(kgo.SeedBrokers(addr), kgo.ClientID("gregor-bench-admin"), kgo.DialTimeout(kafkaDialTimeout))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*kafkaDialTimeout)
	defer cancel()
	if err := d.admin.Ping(ctx); err != nil {
		d.admin.Close()
		return nil, fmt.Errorf("%s: broker at %s does not answer Kafka requests: %w", name, addr, err)
	}
	d.adm = kadm.NewClient(d.admin)
	d.pids = serverPID(o, addr)
	return d, nil
}

// Name implements perf.Driver.
func (d *kafkaDriver) Name() string {
	if d.raw {
		return "kafka-raw"
	}
	return "kafka"
}

// System is refined to "Gregor" by the harness when the broker's metrics say so.
func (d *kafkaDriver) System() string { return "Kafka API at " + d.bootstrap }

// Durability implements perf.Driver.
func (d *kafkaDriver) Durability() string {
	return "as the broker is configured; the workload's acks (1: the leader has the batch in its log, normally the page cache; all: every in-sync replica has it)"
}

// ServerPIDs implements perf.Driver.
func (d *kafkaDriver) ServerPIDs() []int { return d.pids }

// Close implements perf.Driver.
func (d *kafkaDriver) Close() error {
	d.admin.Close()
	return nil
}

// CreateTopic implements perf.Driver.
func (d *kafkaDriver) CreateTopic(ctx context.Context, topic string, partitions int) error {
	resp, err := d.adm.CreateTopic(ctx, int32(partitions), d.rf, d.configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create topic %s (%d partitions): %w", topic, partitions, err)
	}
	// Wait until every partition has a leader, so the first produce does not race the
	// broker's own topic setup.
	deadline := time.Now().Add(kafkaTopicWait)
	for {
		md, err := d.adm.Metadata(ctx, topic)
		if err == nil {
			if t, ok := md.Topics[topic]; ok && t.Err == nil && len(t.Partitions) == partitions {
				ready := true
				for _, p := range t.Partitions {
					if p.Err != nil || p.Leader < 0 {
						ready = false
					}
				}
				if ready {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topic %s has no leader for every partition after %v (last error: %v)", topic, kafkaTopicWait, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DeleteTopic implements perf.Driver.
func (d *kafkaDriver) DeleteTopic(ctx context.Context, topic string) error {
	resp, err := d.adm.DeleteTopic(ctx, topic)
	if err == nil {
		err = resp.Err
	}
	return err
}

func acksOption(w *perf.Workload) kgo.Acks {
	if w.Acks == "all" {
		return kgo.AllISRAcks()
	}
	return kgo.LeaderAck()
}

// NewProducer implements perf.Driver.
func (d *kafkaDriver) NewProducer(ctx context.Context, topic string, w *perf.Workload, ack perf.AckFunc) (perf.Producer, error) {
	if d.raw {
		return newRawProducer(ctx, d, topic, w, ack)
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(d.bootstrap), kgo.ClientID("gregor-bench"), kgo.DialTimeout(kafkaDialTimeout),
		kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(acksOption(w)), kgo.ProducerBatchMaxBytes(int32(w.BatchSizeBytes)),
		kgo.ProducerLinger(w.Linger()), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.MaxBufferedRecords(kafkaMaxBufferedRecords),
		// Idempotence needs acks=all and InitProducerID; off so that acks=1 is possible
		// and the same protocol surface is used for every workload.
		kgo.DisableIdempotentWrite(),
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	return &kgoProducer{cl: cl, ack: ack}, nil
}

type kgoProducer struct {
	cl  *kgo.Client
	ack perf.AckFunc
}

// Send implements perf.Producer.
func (p *kgoProducer) Send(ctx context.Context, partition int, key, value []byte, intended int64) error {
	// franz-go keeps the record until it is acknowledged: copies of key and value.
	rec := &kgo.Record{Partition: int32(partition), Value: append(make([]byte, 0, len(value)), value...)}
	if key != nil {
		rec.Key = append(make([]byte, 0, len(key)), key...)
	}
	// Errors, including a ctx done while Produce waited for buffer space, arrive
	// through the promise, so Send itself never fails.
	p.cl.Produce(ctx, rec, func(_ *kgo.Record, err error) { p.ack(intended, err) })
	return nil
}

// Flush implements perf.Producer.
func (p *kgoProducer) Flush(ctx context.Context) error { return p.cl.Flush(ctx) }

// Close implements perf.Producer.
func (p *kgoProducer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := p.cl.Flush(ctx)
	p.cl.Close()
	return err
}

type kgoConsumer struct {
	cl     *kgo.Client
	cancel context.CancelFunc
	done   chan struct{}
}

// NewConsumer implements perf.Driver.
func (d *kafkaDriver) NewConsumer(ctx context.Context, topic string, partitions []int, _ *perf.Workload, handle perf.ConsumeFunc) (perf.Consumer, error) {
	if d.raw {
		return d.newRawConsumer(ctx, topic, partitions, handle)
	}
	offsets := map[int32]kgo.Offset{}
	for _, p := range partitions {
		offsets[int32(p)] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(d.bootstrap), kgo.ClientID("gregor-bench-consumer"), kgo.DialTimeout(kafkaDialTimeout),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchMaxBytes(kafkaFetchMaxBytes), kgo.FetchMaxPartitionBytes(kafkaFetchMaxPartitionBytes),
		kgo.FetchMaxWait(kafkaFetchMaxWait),
	)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &kgoConsumer{cl: cl, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		warned := 0
		// Bounded by the consumer's life: PollFetches returns when ctx is cancelled.
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachError(func(t string, p int32, err error) {
				if ctx.Err() == nil && warned < 3 {
					d.log("consumer on %s[%d]: %v", t, p, err)
					warned++
				}
			})
			fs.EachRecord(func(r *kgo.Record) { handle(r.Value) })
		}
	}()
	return c, nil
}

// Close implements perf.Consumer.
func (c *kgoConsumer) Close() error {
	c.cancel()
	<-c.done
	c.cl.Close()
	return nil
}
