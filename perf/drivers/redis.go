package drivers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/gregor-streaming/gregor/perf"
	"github.com/redis/go-redis/v9"
)

// Redis settings.
const (
	// redisSenders is how many pipelines a producer keeps in flight: Redis runs
	// commands on one thread, so two keep it busy while a reply travels back.
	redisSenders = 2
	// redisReadCount is how many entries a consumer asks XREADGROUP for at once.
	redisReadCount = 1000
	// redisBlock is how long an XREADGROUP waits for new entries; it bounds how long
	// Close waits for the consumer loop.
	redisBlock = 100 * time.Millisecond
	// redisGroup is the consumer group every consumer reads through.
	redisGroup = "bench"
	// redisField is the stream entry's one field, holding the message.
	redisField = "v"
)

// redisDriver maps a topic partition to one stream key (<topic>:<partition>). Producers
// pipeline XADDs in batches (Kafka-like: size bound and linger); consumers read with
// XREADGROUP NOACK, from the start, so no pending-entries list grows — like a Kafka
// consumer that commits no offsets.
type redisDriver struct {
	addr    string
	cl      *redis.Client
	proc    *Process
	cleanup func()
	pids    []int
	version string
	log     func(format string, a ...any)
}

func newRedis(o Options) (d *redisDriver, err error) {
	d = &redisDriver{addr: o.Bootstrap, cleanup: func() {}}
	d.log = func(format string, a ...any) { fmt.Fprintf(o.Log, "bench: redis: "+format+"\n", a...) }
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if d.addr == "" {
		dir, cleanup, err := workDir(o, "redis")
		if err != nil {
			return nil, err
		}
		d.cleanup = cleanup
		ports, err := ReservePorts(1)
		if err != nil {
			return nil, err
		}
		defer ReleasePorts(ports)
		port := ports[0].Port()
		// AOF on, fsync every second (the default of appendonly): the reply is sent after
		// the command is written to the AOF (page cache), no RDB snapshots.
		d.proc, err = StartProcess("redis-server", dir, "redis-server",
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
			"--protected-mode", "no", "--daemonize", "no", "--logfile", "")
		if err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		d.addr = "127.0.0.1:" + strconv.Itoa(port)
		if err := d.proc.WaitListening(d.addr); err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		d.pids = []int{d.proc.PID()}
	} else {
		d.pids = serverPID(o, d.addr)
	}
	d.cl = d.client(4)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := d.cl.Info(ctx, "server").Result()
	if err != nil {
		return nil, fmt.Errorf("redis: %s: %w", d.addr, err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			d.version = v
		}
	}
	return d, nil
}

func (d *redisDriver) client(pool int) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: d.addr, PoolSize: pool, MaxRetries: -1,
		DialTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
	})
}

// Name implements perf.Driver.
func (d *redisDriver) Name() string { return "redis" }

// System implements perf.Driver.
func (d *redisDriver) System() string { return "Redis Streams " + d.version }

// Durability implements perf.Driver.
func (d *redisDriver) Durability() string {
	return "AOF (appendonly yes, appendfsync everysec), no RDB; a reply is sent after the command is written to the AOF (page cache), fsync once a second — as Gregor acks=1 without fsync; the stream itself lives in memory"
}

// ServerPIDs implements perf.Driver.
func (d *redisDriver) ServerPIDs() []int { return d.pids }

func redisKey(topic string, partition int) string { return topic + ":" + strconv.Itoa(partition) }

// CreateTopic implements perf.Driver.
func (d *redisDriver) CreateTopic(ctx context.Context, topic string, partitions int) error {
	for p := 0; p < partitions; p++ {
		err := d.cl.XGroupCreateMkStream(ctx, redisKey(topic, p), redisGroup, "0").Err()
		if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
			return err
		}
	}
	return nil
}

// DeleteTopic implements perf.Driver.
func (d *redisDriver) DeleteTopic(ctx context.Context, topic string) error {
	keys, err := d.cl.Keys(ctx, topic+":*").Result()
	if err != nil || len(keys) == 0 {
		return err
	}
	return d.cl.Del(ctx, keys...).Err()
}

// Close implements perf.Driver.
func (d *redisDriver) Close() error {
	if d.cl != nil {
		d.cl.Close()
	}
	var err error
	if d.proc != nil {
		err = d.proc.Stop()
	}
	d.cleanup()
	return err
}

type redisProducer struct {
	cl   *redis.Client
	keys []string
	b    *batcher
}

// NewProducer implements perf.Driver.
func (d *redisDriver) NewProducer(_ context.Context, topic string, w *perf.Workload, ack perf.AckFunc) (perf.Producer, error) {
	p := &redisProducer{cl: d.client(redisSenders)}
	for i := 0; i < w.PartitionsPerTopic; i++ {
		p.keys = append(p.keys, redisKey(topic, i))
	}
	p.b = newBatcher(redisSenders, w.BatchSizeBytes, w.Linger(), p.send, ack)
	return p, nil
}

// send pipelines one XADD per message. An error fails the whole batch: go-redis returns
// the first failed command's error, and a partial retry would reorder.
func (p *redisProducer) send(ctx context.Context, b *batch) error {
	pipe := p.cl.Pipeline()
	args := make([]redis.XAddArgs, len(b.values))
	for i, v := range b.values {
		args[i] = redis.XAddArgs{Stream: p.keys[b.parts[i]], Values: []any{redisField, v}}
		pipe.XAdd(ctx, &args[i])
	}
	_, err := pipe.Exec(ctx)
	return err
}

// Send implements perf.Producer.
func (p *redisProducer) Send(_ context.Context, partition int, _, value []byte, intended int64) error {
	return p.b.add(partition, value, intended)
}

// Flush implements perf.Producer.
func (p *redisProducer) Flush(ctx context.Context) error { return p.b.flush(ctx) }

// Close implements perf.Producer.
func (p *redisProducer) Close() error {
	p.b.close()
	return p.cl.Close()
}

type redisConsumer struct {
	cl     *redis.Client
	cancel context.CancelFunc
	done   chan struct{}
}

// NewConsumer implements perf.Driver.
func (d *redisDriver) NewConsumer(_ context.Context, topic string, partitions []int, _ *perf.Workload, handle perf.ConsumeFunc) (perf.Consumer, error) {
	streams := make([]string, 0, 2*len(partitions))
	for _, p := range partitions {
		streams = append(streams, redisKey(topic, p))
	}
	for range partitions {
		streams = append(streams, ">")
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &redisConsumer{cl: d.client(1), cancel: cancel, done: make(chan struct{})}
	name := "c-" + strconv.Itoa(partitions[0])
	go func() {
		defer close(c.done)
		warned := 0
		// Bounded by the consumer's life: every call returns within redisBlock plus the
		// read timeout, and the loop ends once ctx is cancelled.
		for ctx.Err() == nil {
			res, err := c.cl.XReadGroup(ctx, &redis.XReadGroupArgs{
				Group: redisGroup, Consumer: name, Streams: streams,
				Count: redisReadCount, Block: redisBlock, NoAck: true,
			}).Result()
			if err != nil {
				if !errors.Is(err, redis.Nil) && ctx.Err() == nil {
					if warned < 3 {
						d.log("consumer on %s: %v", topic, err)
						warned++
					}
					time.Sleep(10 * time.Millisecond)
				}
				continue
			}
			for _, s := range res {
				for _, m := range s.Messages {
					if v, ok := m.Values[redisField].(string); ok {
						// handle does not retain the value: view the string's bytes.
						handle(unsafe.Slice(unsafe.StringData(v), len(v)))
					}
				}
			}
		}
	}()
	return c, nil
}

// Close implements perf.Consumer.
func (c *redisConsumer) Close() error {
	c.cancel()
	<-c.done
	return c.cl.Close()
}
