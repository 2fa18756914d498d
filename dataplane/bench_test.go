package dataplane

import (
	"encoding/binary"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/proto"
)

// rawClient sends pre-encoded requests and reads answers into a reused buffer, so that
// allocations per op are the node's.
type rawClient struct {
	c   net.Conn
	buf []byte
}

func (rc *rawClient) roundTrip(b *testing.B, frame []byte) int {
	if _, err := rc.c.Write(frame); err != nil {
		b.Fatal(err)
	}
	var size [4]byte
	if _, err := io.ReadFull(rc.c, size[:]); err != nil {
		b.Fatal(err)
	}
	n := int(binary.BigEndian.Uint32(size[:]))
	if cap(rc.buf) < n {
		rc.buf = make([]byte, n)
	}
	if _, err := io.ReadFull(rc.c, rc.buf[:n]); err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkProduce measures one acks=1 Produce request of one batch per round trip,
// over loopback, client and node on the same two cores. allocs/op are the node's.
func BenchmarkProduce(b *testing.B) {
	for _, bc := range []struct {
		name          string
		records, size int
	}{{"16x1KiB", 16, 1024}, {"160x100B", 160, 100}} {
		b.Run(bc.name, func(b *testing.B) {
			s := startServer(b, Config{})
			if err := s.BecomeLeader("bench", 0, 0, 1, 1); err != nil {
				b.Fatal(err)
			}
			recs := make([]proto.Record, bc.records)
			for i := range recs {
				recs[i] = proto.Record{Value: make([]byte, bc.size)}
			}
			batch := proto.AppendRecordBatch(nil, proto.RecordBatchHeader{BaseTimestamp: time.Now().UnixMilli(), ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1}, recs)
			frame := frameRequest(produceReq("bench", 0, 1, batch), 7, 1)
			rc := &rawClient{c: dial(b, s)}
			b.SetBytes(int64(len(batch)))
			b.ReportAllocs()
			for b.Loop() {
				rc.roundTrip(b, frame)
			}
			b.ReportMetric(float64(bc.records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkFetch measures catch-up Fetch requests of 1 MiB from the page cache, one
// request per round trip, by sendfile and by the copy path (pread + write). core-s/GB is
// the CPU time of the whole test process (client and node) per GB fetched.
func BenchmarkFetch(b *testing.B) {
	for _, bc := range []struct {
		name      string
		copyBelow int64
	}{{"sendfile", 0}, {"copy", 1 << 30}} {
		b.Run(bc.name, func(b *testing.B) {
			s := startServer(b, Config{CopyBelowBytes: bc.copyBelow})
			if err := s.BecomeLeader("bench", 0, 0, 1, 1); err != nil {
				b.Fatal(err)
			}
			c := dial(b, s)
			value := make([]byte, 64<<10)
			const batches = 1024 // 64 MiB
			for range batches {
				b2 := proto.AppendRecordBatch(nil, proto.RecordBatchHeader{BaseTimestamp: time.Now().UnixMilli(), ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1}, []proto.Record{{Value: value}})
				if rp := produce(b, c, 7, "bench", 0, 1, b2); rp.ErrorCode != 0 {
					b.Fatal(rp)
				}
			}
			frames := make([][]byte, batches)
			for i := range frames {
				frames[i] = frameRequest(fetchReq("bench", 0, int64(i), 1<<20, 1, 0), 11, int32(i))
			}
			rc := &rawClient{c: c}
			var bytes int64
			cpu0 := cpuTime()
			b.ReportAllocs()
			var i int
			for b.Loop() {
				bytes += int64(rc.roundTrip(b, frames[i%len(frames)]))
				i++
			}
			b.ReportMetric(float64(bytes)/b.Elapsed().Seconds()/1e9, "GB/s")
			b.ReportMetric((cpuTime()-cpu0).Seconds()/(float64(bytes)/1e9), "core-s/GB")
		})
	}
}

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
