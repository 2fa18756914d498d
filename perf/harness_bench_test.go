package perf

import (
	"context"
	"testing"
)

// instantDriver acknowledges and delivers every message inside Send: a run against it
// measures the harness alone (pacing, keys, stamps, latency accounting).
type instantDriver struct {
	*sinkDriver
	deliver ConsumeFunc
}

type instantProducer struct {
	d   *instantDriver
	ack AckFunc
}

func (p instantProducer) Send(_ context.Context, _ int, _, value []byte, intended int64) error {
	p.ack(intended, nil)
	if p.d.deliver != nil {
		p.d.deliver(value)
	}
	return nil
}
func (instantProducer) Flush(context.Context) error { return nil }
func (instantProducer) Close() error                { return nil }

func (d *instantDriver) NewProducer(_ context.Context, _ string, _ *Workload, ack AckFunc) (Producer, error) {
	return instantProducer{d: d, ack: ack}, nil
}

func (d *instantDriver) NewConsumer(_ context.Context, _ string, _ []int, _ *Workload, handle ConsumeFunc) (Consumer, error) {
	d.deliver = handle
	return sinkConsumer{}, nil
}

// BenchmarkHarnessMaxRate reports the harness's own ceiling: one producer and one
// consumer at max rate with a system that costs nothing. b.N is ignored beyond running
// the one-second workload once per iteration.
func BenchmarkHarnessMaxRate(b *testing.B) {
	w, err := ParseWorkload([]byte("name: h\ntopics: 1\npartitionsPerTopic: 16\nmessageSize: 100\nproducersPerTopic: 1\nconsumerPerSubscription: 1\nkeyDistributor: RANDOM_NANO\nwarmupDurationSeconds: 0.2\ntestDurationSeconds: 1\n"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var rate float64
	for i := 0; i < b.N; i++ {
		res, err := Run(context.Background(), RunConfig{Workload: w, Driver: &instantDriver{sinkDriver: newSinkDriver()}})
		if err != nil {
			b.Fatal(err)
		}
		rate = res.PublishRateMsgs
	}
	b.ReportMetric(rate, "msg/s")
}
