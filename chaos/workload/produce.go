package workload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/chaos/history"
	"github.com/gregor-streaming/gregor/proto"
)

// Kind is a producer's client and settings.
type Kind string

// The producers.
const (
	// FranzIdempotent is franz-go's idempotent producer, acks=all, retrying until its
	// delivery timeout. Every error is an info send: a retried batch may have been
	// written by an earlier attempt.
	FranzIdempotent Kind = "franz-idem"
	// FranzPlain is a non-idempotent acks=all producer on a franz-go client that sends
	// each record in a Produce request of its own to the partition's leader, once, with
	// no retry: the broker's refusal (NOT_ENOUGH_REPLICAS, NOT_LEADER_OR_FOLLOWER, …) is
	// then a definite fail, and a timeout or a lost connection an info send.
	FranzPlain Kind = "franz-plain"
	// FranzAcks1 is franz-go with acks=1, not idempotent (runs apart from acks=all ones:
	// what a leader acknowledged alone may be lost on failover).
	FranzAcks1 Kind = "franz-acks1"
	// Librdkafka is confluent-kafka's idempotent acks=all producer in a python3
	// subprocess (Debian's python3-confluent-kafka on the librdkafka LibrdkafkaDir
	// holds, else the system's).
	Librdkafka Kind = "rdkafka"
)

// ProducerConfig configures one producer.
type ProducerConfig struct {
	// Name names the producer; its values are "<Name>-<n>", unique over a run if the
	// names are.
	Name    string
	Kind    Kind
	Brokers []string
	Topic   string
	// Partitions are written in turn, 0..Partitions-1.
	Partitions int32
	// Rate is records per second in all (default 200).
	Rate float64
	// Duration bounds the sending (0: until Stop or the context ends).
	Duration time.Duration
	// Timeout bounds one send, from its start to its answer (default 10s).
	Timeout time.Duration
}

func (c *ProducerConfig) defaults() {
	if c.Rate <= 0 {
		c.Rate = 200
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Partitions <= 0 {
		c.Partitions = 1
	}
}

// Producer is a running producer.
type Producer struct {
	cfg  ProducerConfig
	rec  *Recorder
	stop chan struct{}
	once sync.Once
	done chan struct{}
	err  error
}

// StartProducer starts a producer recording every send into rec. It stops by itself
// after cfg.Duration, on Stop, or at once (its pending sends recorded as info) when ctx
// ends.
func StartProducer(ctx context.Context, rec *Recorder, cfg ProducerConfig) (*Producer, error) {
	cfg.defaults()
	p := &Producer{cfg: cfg, rec: rec, stop: make(chan struct{}), done: make(chan struct{})}
	if cfg.Duration > 0 {
		t := time.AfterFunc(cfg.Duration, p.signalStop)
		go func() { <-p.done; t.Stop() }()
	}
	switch cfg.Kind {
	case FranzIdempotent, FranzAcks1:
		opts := []kgo.Opt{kgo.SeedBrokers(cfg.Brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.RecordDeliveryTimeout(cfg.Timeout), kgo.ProduceRequestTimeout(min(cfg.Timeout/2, 5*time.Second)),
			kgo.ProducerLinger(2 * time.Millisecond), kgo.UnknownTopicRetries(-1)}
		if cfg.Kind == FranzAcks1 {
			opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
		} else {
			opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
		}
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			return nil, err
		}
		go p.runFranz(ctx, cl)
	case FranzPlain:
		cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.RequestTimeoutOverhead(2*time.Second))
		if err != nil {
			return nil, err
		}
		go p.runPlain(ctx, cl)
	case Librdkafka:
		if err := p.startRdkafka(ctx); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("workload: unknown producer kind %q", cfg.Kind)
	}
	return p, nil
}

func (p *Producer) signalStop() { p.once.Do(func() { close(p.stop) }) }

// Stop stops sending and waits until every send has its outcome recorded.
func (p *Producer) Stop() error {
	p.signalStop()
	<-p.done
	return p.err
}

// Done is closed once the producer has stopped and recorded every outcome.
func (p *Producer) Done() <-chan struct{} { return p.done }

func (p *Producer) send(partition int32, value string, start time.Time) history.Send {
	s := history.Send{Producer: p.cfg.Name, Idempotent: p.cfg.Kind == FranzIdempotent || p.cfg.Kind == Librdkafka,
		Acks: -1, Topic: p.cfg.Topic, Partition: partition, Value: value, Offset: -1, Start: start}
	if p.cfg.Kind == FranzAcks1 {
		s.Acks = 1
	}
	return s
}

// pace returns a ticker channel at the producer's rate (at most every millisecond,
// several records a tick above 1000/s) and how many records each tick sends.
func pace(rate float64) (*time.Ticker, int) {
	per := 1
	interval := time.Duration(float64(time.Second) / rate)
	for interval < time.Millisecond {
		per *= 2
		interval *= 2
	}
	return time.NewTicker(interval), per
}

func (p *Producer) runFranz(ctx context.Context, cl *kgo.Client) {
	defer close(p.done)
	defer cl.Close()
	tick, per := pace(p.cfg.Rate)
	defer tick.Stop()
	var wg sync.WaitGroup
	n := 0
loop:
	for {
		select {
		case <-p.stop:
			break loop
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		for range per {
			part := int32(n % int(p.cfg.Partitions))
			v := fmt.Sprintf("%s-%d", p.cfg.Name, n)
			n++
			s := p.send(part, v, time.Now())
			wg.Add(1)
			cl.Produce(ctx, &kgo.Record{Topic: p.cfg.Topic, Partition: part, Value: []byte(v)}, func(r *kgo.Record, err error) {
				defer wg.Done()
				s.End = time.Now()
				if err == nil {
					s.Outcome, s.Offset = history.OK, r.Offset
				} else {
					s.Outcome, s.Err = history.Info, err.Error()
				}
				p.rec.Send(s)
			})
		}
	}
	wg.Wait() // every record ends by its delivery timeout, or at once once ctx ends
}

// definiteRefusals are the produce errors a broker answers without writing anything.
// NOT_LEADER_OR_FOLLOWER is not one: an acks=all request appended before its leader
// lost the leadership is answered so (as Kafka's delayed produce is), and its records
// may yet be committed by the next leader.
var definiteRefusals = []error{kerr.NotEnoughReplicas, kerr.UnknownTopicOrPartition,
	kerr.LeaderNotAvailable, kerr.FencedLeaderEpoch, kerr.InvalidRecord, kerr.CorruptMessage, kerr.MessageTooLarge,
	kerr.RecordListTooLarge, kerr.InvalidRequiredAcks, kerr.TopicAuthorizationFailed}

// runPlain runs one sender per partition, each with one request in flight.
func (p *Producer) runPlain(ctx context.Context, cl *kgo.Client) {
	defer close(p.done)
	defer cl.Close()
	var leaders sync.Map // partition → leader id
	var mu sync.Mutex    // one metadata refresh at a time
	refresh := func() {
		mu.Lock()
		defer mu.Unlock()
		req := kmsg.NewPtrMetadataRequest()
		t := kmsg.NewMetadataRequestTopic()
		t.Topic = kmsg.StringPtr(p.cfg.Topic)
		req.Topics = append(req.Topics, t)
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := req.RequestWith(rctx, cl)
		if err != nil {
			return
		}
		for _, t := range resp.Topics {
			for _, pt := range t.Partitions {
				if pt.ErrorCode == 0 && pt.Leader >= 0 {
					leaders.Store(pt.Partition, pt.Leader)
				} else {
					leaders.Delete(pt.Partition)
				}
			}
		}
	}
	refresh()
	var wg sync.WaitGroup
	rate := p.cfg.Rate / float64(p.cfg.Partitions)
	for part := range p.cfg.Partitions {
		wg.Go(func() {
			interval := time.Duration(float64(time.Second) / rate)
			next := time.Now()
			for n := 0; ; n++ {
				if d := time.Until(next); d > 0 {
					select {
					case <-p.stop:
						return
					case <-ctx.Done():
						return
					case <-time.After(d):
					}
				}
				select {
				case <-p.stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				next = next.Add(interval)
				if time.Until(next) < -time.Second {
					next = time.Now() // behind after a stall: no burst to catch up
				}
				v := fmt.Sprintf("%s-%d", p.cfg.Name, n*int(p.cfg.Partitions)+int(part))
				s := p.send(part, v, time.Now())
				ld, ok := leaders.Load(part)
				if !ok {
					refresh()
					if ld, ok = leaders.Load(part); !ok {
						s.End, s.Outcome, s.Err = time.Now(), history.Fail, "no leader known: not sent"
						p.rec.Send(s)
						continue
					}
				}
				code, off, err := p.plainProduce(ctx, cl, ld.(int32), part, v)
				s.End = time.Now()
				var kerrErr *kerr.Error
				switch {
				case err != nil && isDialError(err):
					s.Outcome, s.Err = history.Fail, "not sent: "+err.Error()
				case err != nil:
					s.Outcome, s.Err = history.Info, err.Error()
				case code == 0:
					s.Outcome, s.Offset = history.OK, off
				case errors.As(kerr.ErrorForCode(code), &kerrErr) && isDefinite(kerrErr):
					s.Outcome, s.Err = history.Fail, kerrErr.Error()
				default:
					s.Outcome, s.Err = history.Info, kerr.ErrorForCode(code).Error()
				}
				p.rec.Send(s)
				if s.Outcome != history.OK {
					refresh()
				}
			}
		})
	}
	wg.Wait()
}

func isDefinite(e *kerr.Error) bool {
	for _, d := range definiteRefusals {
		if e == d {
			return true
		}
	}
	return false
}

// isDialError reports an error connecting to the broker: the request was not written.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// plainProduce sends one record to the leader in one Produce request (acks=all) and
// returns the partition's error code and base offset.
func (p *Producer) plainProduce(ctx context.Context, cl *kgo.Client, leader, partition int32, value string) (int16, int64, error) {
	batch := proto.AppendRecordBatch(nil, proto.RecordBatchHeader{PartitionLeaderEpoch: -1,
		BaseTimestamp: time.Now().UnixMilli(), ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1},
		[]proto.Record{{Value: []byte(value)}})
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, int32(min(p.cfg.Timeout/2, 5*time.Second).Milliseconds())
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = p.cfg.Topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition, rp.Records = partition, batch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	rctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	r, err := cl.Broker(int(leader)).Request(rctx, req)
	if err != nil {
		return 0, 0, err
	}
	resp := r.(*kmsg.ProduceResponse)
	for _, t := range resp.Topics {
		for _, pt := range t.Partitions {
			if pt.Partition == partition {
				return pt.ErrorCode, pt.BaseOffset, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("produce response without %s-%d", p.cfg.Topic, partition)
}
