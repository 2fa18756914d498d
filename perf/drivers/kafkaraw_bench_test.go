package drivers

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/perf"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// produceSink is a loopback server that answers every Produce request with success and
// does nothing else: what the raw producer achieves against it is the client's own
// ceiling on this machine, the figure that must stay well above any broker's.
func produceSink(tb testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serveSink(c)
		}
	}()
	return l.Addr().String()
}

func serveSink(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 1<<20)
	var out []byte
	for {
		var sz [4]byte
		if _, err := io.ReadFull(c, sz[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(sz[:]))
		if n > len(buf) {
			buf = make([]byte, n)
		}
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		key, version := int16(binary.BigEndian.Uint16(buf)), int16(binary.BigEndian.Uint16(buf[2:]))
		corr := buf[4:8]
		var body []byte
		switch key {
		case int16(kmsg.ApiVersions):
			r := kmsg.NewApiVersionsResponse()
			k := kmsg.NewApiVersionsResponseApiKey()
			k.ApiKey, k.MinVersion, k.MaxVersion = int16(kmsg.Produce), 3, 8
			r.ApiKeys = append(r.ApiKeys, k)
			body = r.AppendTo(nil)
		case int16(kmsg.Produce):
			// Answer every partition of the request: skip the header's client id.
			idLen := int(int16(binary.BigEndian.Uint16(buf[8:])))
			req := kmsg.NewProduceRequest()
			req.Version = version
			if err := req.ReadFrom(buf[10+max(0, idLen) : n]); err != nil {
				return
			}
			r := kmsg.NewProduceResponse()
			r.Version = version
			for _, rt := range req.Topics {
				t := kmsg.NewProduceResponseTopic()
				t.Topic = rt.Topic
				for _, rp := range rt.Partitions {
					pr := kmsg.NewProduceResponseTopicPartition()
					pr.Partition = rp.Partition
					t.Partitions = append(t.Partitions, pr)
				}
				r.Topics = append(r.Topics, t)
			}
			body = r.AppendTo(nil)
		default:
			return
		}
		out = binary.BigEndian.AppendUint32(out[:0], uint32(4+len(body)))
		out = append(out, corr...)
		out = append(out, body...)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// newSinkProducer builds a raw producer on one connection to the sink, as
// newRawProducer would after reading metadata.
func newSinkProducer(tb testing.TB, w *perf.Workload, ack perf.AckFunc) *rawProducer {
	p := &rawProducer{ack: ack, linger: w.Linger(), topic: "t", acks: 1, kick: make(chan struct{}, 1), closing: make(chan struct{})}
	p.buildTemplate(w)
	c, err := dialRaw(context.Background(), produceSink(tb), p)
	if err != nil {
		tb.Fatal(err)
	}
	p.conns = []*rawConn{c}
	for i := 0; i < w.PartitionsPerTopic; i++ {
		p.parts = append(p.parts, rawPartition{id: int32(i), conn: c})
	}
	p.wg.Add(2)
	go c.readLoop()
	go p.lingerLoop()
	return p
}

// TestRawProducerAgainstSink: every message sent is acknowledged once, across full and
// partial (flushed) batches.
func TestRawProducerAgainstSink(t *testing.T) {
	w, err := perf.ParseWorkload([]byte("name: s\ntopics: 1\npartitionsPerTopic: 3\nmessageSize: 100\nproducersPerTopic: 1\ntestDurationSeconds: 1\nbatchSizeBytes: 8192\nlingerMs: 5\n"))
	if err != nil {
		t.Fatal(err)
	}
	var acked atomic.Int64
	p := newSinkProducer(t, w, func(_ int64, err error) {
		if err != nil {
			t.Error(err)
		}
		acked.Add(1)
	})
	value := make([]byte, 100)
	const n = 10_007
	for i := 0; i < n; i++ {
		if err := p.Send(context.Background(), i%3, nil, value, int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if acked.Load() != n {
		t.Errorf("acked %d of %d", acked.Load(), n)
	}
}

// BenchmarkRawProducer measures the raw producer's own ceiling (client side only)
// against the sink, per message size.
func BenchmarkRawProducer(b *testing.B) {
	for _, size := range []int{100, 1024} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			w, err := perf.ParseWorkload([]byte("name: s\ntopics: 1\npartitionsPerTopic: 1\nmessageSize: " + strconv.Itoa(size) + "\nproducersPerTopic: 1\ntestDurationSeconds: 1\nbatchSizeBytes: 1048576\nlingerMs: 1\n"))
			if err != nil {
				b.Fatal(err)
			}
			p := newSinkProducer(b, w, func(int64, error) {})
			value := make([]byte, size)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				_ = p.Send(context.Background(), 0, nil, value, int64(i))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
			p.Close()
		})
	}
}
