package drivers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gregor-streaming/gregor/perf"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream settings.
const (
	// jsMaxPending bounds a producer's unacknowledged async publishes (back-pressure).
	jsMaxPending = 4096
	// jsPullBatch is how many messages a consumer asks for per pull.
	jsPullBatch = 1024
	// jsStallWait is how long PublishAsync waits for room below jsMaxPending.
	jsStallWait = 5 * time.Second
)

// jetStreamDriver maps a topic to one stream with file storage and one subject per
// partition (<topic>.<partition>); a consumer is an ack-none pull consumer reading
// from the stream's start, like a Kafka consumer that commits no offsets.
type jetStreamDriver struct {
	url     string
	nc      *nats.Conn
	js      jetstream.JetStream
	proc    *Process
	cleanup func()
	pids    []int
	version string
	log     func(format string, a ...any)
}

func newJetStream(o Options) (d *jetStreamDriver, err error) {
	d = &jetStreamDriver{url: o.Bootstrap, cleanup: func() {}}
	d.log = func(format string, a ...any) { fmt.Fprintf(o.Log, "bench: jetstream: "+format+"\n", a...) }
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if d.url == "" {
		dir, cleanup, err := workDir(o, "nats")
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
		// -js with the store in the run's directory; loopback only; no monitoring port.
		d.proc, err = StartProcess("nats-server", dir, "nats-server", "-js", "-sd", dir+"/js", "-a", "127.0.0.1", "-p", strconv.Itoa(port))
		if err != nil {
			return nil, fmt.Errorf("jetstream: %w", err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if err := d.proc.WaitListening(addr); err != nil {
			return nil, fmt.Errorf("jetstream: %w", err)
		}
		d.url = "nats://" + addr
		d.pids = []int{d.proc.PID()}
	} else {
		d.pids = serverPID(o, strings.TrimPrefix(d.url, "nats://"))
	}
	if d.nc, err = d.connect(); err != nil {
		return nil, err
	}
	d.version = d.nc.ConnectedServerVersion()
	if d.js, err = jetstream.New(d.nc); err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := d.js.AccountInfo(ctx); err != nil {
		return nil, fmt.Errorf("jetstream: %s: JetStream not available (is the server run with -js?): %w", d.url, err)
	}
	return d, nil
}

func (d *jetStreamDriver) connect() (*nats.Conn, error) {
	nc, err := nats.Connect(d.url, nats.Name("gregor-bench"), nats.Timeout(5*time.Second), nats.MaxReconnects(0))
	if err != nil {
		return nil, fmt.Errorf("jetstream: connect %s: %w", d.url, err)
	}
	return nc, nil
}

// Name implements perf.Driver.
func (d *jetStreamDriver) Name() string { return "jetstream" }

// System implements perf.Driver.
func (d *jetStreamDriver) System() string { return "NATS JetStream " + d.version }

// Durability implements perf.Driver.
func (d *jetStreamDriver) Durability() string {
	return "file storage, R1; a publish is acknowledged once written to the stream's block file (page cache); fsync happens periodically in the background, not before the ack — as Gregor acks=1 without fsync"
}

// ServerPIDs implements perf.Driver.
func (d *jetStreamDriver) ServerPIDs() []int { return d.pids }

// CreateTopic implements perf.Driver.
func (d *jetStreamDriver) CreateTopic(ctx context.Context, topic string, partitions int) error {
	_, err := d.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: topic, Subjects: []string{topic + ".*"}, Storage: jetstream.FileStorage,
		Replicas: 1, Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
	})
	return err
}

// DeleteTopic implements perf.Driver.
func (d *jetStreamDriver) DeleteTopic(ctx context.Context, topic string) error {
	return d.js.DeleteStream(ctx, topic)
}

// Close implements perf.Driver.
func (d *jetStreamDriver) Close() error {
	if d.nc != nil {
		d.nc.Close()
	}
	var err error
	if d.proc != nil {
		err = d.proc.Stop()
	}
	d.cleanup()
	return err
}

// jsProducer publishes asynchronously on its own connection; acks arrive on the
// connection's ack goroutine, which reads each message's intended time back from it.
type jsProducer struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	subjects []string
}

// NewProducer implements perf.Driver.
func (d *jetStreamDriver) NewProducer(ctx context.Context, topic string, w *perf.Workload, ack perf.AckFunc) (perf.Producer, error) {
	nc, err := d.connect()
	if err != nil {
		return nil, err
	}
	stamp := func(m *nats.Msg) int64 { ts, _ := perf.ValueStamp(m.Data); return ts }
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(jsMaxPending),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) { ack(stamp(m), nil) }),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) { ack(stamp(m), err) }),
	)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	p := &jsProducer{nc: nc, js: js}
	for i := 0; i < w.PartitionsPerTopic; i++ {
		p.subjects = append(p.subjects, topic+"."+strconv.Itoa(i))
	}
	return p, nil
}

// Send implements perf.Producer.
func (p *jsProducer) Send(ctx context.Context, partition int, _, value []byte, _ int64) error {
	// The client keeps the message until it is acknowledged (to retry it): a copy.
	data := append(make([]byte, 0, len(value)), value...)
	_, err := p.js.PublishAsync(p.subjects[partition], data, jetstream.WithStallWait(jsStallWait))
	return err
}

// Flush implements perf.Producer.
func (p *jsProducer) Flush(ctx context.Context) error {
	select {
	case <-p.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("jetstream: %d publishes unacknowledged: %w", p.js.PublishAsyncPending(), ctx.Err())
	}
}

// Close implements perf.Producer.
func (p *jsProducer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := p.Flush(ctx)
	p.nc.Close()
	return err
}

// jsConsumer is one or more pull consumers feeding one handler. nats-server before
// 2.10 filters a consumer on one subject only, so a consumer of some (not all)
// partitions is one JetStream consumer per partition, their callbacks serialised.
type jsConsumer struct {
	nc   *nats.Conn
	mu   sync.Mutex
	ccs  []jetstream.ConsumeContext
	stop bool
}

// NewConsumer implements perf.Driver.
func (d *jetStreamDriver) NewConsumer(ctx context.Context, topic string, partitions []int, w *perf.Workload, handle perf.ConsumeFunc) (perf.Consumer, error) {
	nc, err := d.connect()
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	c := &jsConsumer{nc: nc}
	filters := []string{""} // all partitions: no filter
	if len(partitions) != w.PartitionsPerTopic {
		filters = filters[:0]
		for _, p := range partitions {
			filters = append(filters, topic+"."+strconv.Itoa(p))
		}
	}
	cb := func(m jetstream.Msg) {
		c.mu.Lock()
		if !c.stop {
			handle(m.Data())
		}
		c.mu.Unlock()
	}
	for _, f := range filters {
		cons, err := js.CreateConsumer(ctx, topic, jetstream.ConsumerConfig{
			AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
			FilterSubject: f, InactiveThreshold: time.Minute,
		})
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("jetstream: consumer on %s: %w", topic, err)
		}
		cc, err := cons.Consume(cb, jetstream.PullMaxMessages(jsPullBatch),
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				if !errors.Is(err, nats.ErrConnectionClosed) {
					d.log("consumer on %s: %v", topic, err)
				}
			}))
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("jetstream: consume %s: %w", topic, err)
		}
		c.ccs = append(c.ccs, cc)
	}
	return c, nil
}

// Close implements perf.Consumer.
func (c *jsConsumer) Close() error {
	for _, cc := range c.ccs {
		cc.Stop()
	}
	c.mu.Lock()
	c.stop = true
	c.mu.Unlock()
	c.nc.Close()
	return nil
}
