package dataplane

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Pipelined produce: what clients that keep many requests in flight do to the read path.
// A ping-pong benchmark (one request in flight) cannot see it: one change once made every
// buffered byte be copied again on each read event, cutting 16-partition produce by 5×,
// and no ping-pong figure moved.

// pipelineTopic is the topic the pipelined tests and benchmark produce to.
const pipelineTopic = "pipe"

// produceFrame encodes one acks=1 Produce v7 request with a batch of records×valueBytes
// records for each of partitions partitions.
func produceFrame(partitions, records, valueBytes int) []byte {
	req := kmsg.NewPtrProduceRequest()
	req.Acks = 1
	req.TimeoutMillis = 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = pipelineTopic
	recs := make([]proto.Record, records)
	for i := range recs {
		recs[i] = proto.Record{Value: make([]byte, valueBytes)}
	}
	for p := range partitions {
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition = int32(p)
		rp.Records = proto.AppendRecordBatch(nil, proto.RecordBatchHeader{BaseTimestamp: time.Now().UnixMilli(), ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1}, recs)
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	return frameRequest(req, 7, 0)
}

// setCorrelationID rewrites a framed request's correlation id in place.
func setCorrelationID(frame []byte, corr int32) {
	binary.BigEndian.PutUint32(frame[proto.FrameSizeBytes+4:], uint32(corr))
}

// leadPartitions makes s the leader of pipelineTopic's partitions.
func leadPartitions(t testing.TB, s *Server, partitions int) {
	t.Helper()
	for p := range partitions {
		if err := s.BecomeLeader(pipelineTopic, int32(p), 0, 1, 1); err != nil {
			t.Fatal(err)
		}
	}
}

// pipeliner keeps depth copies of one produce request in flight on a connection: a
// writer sends while fewer than depth are unanswered, a reader takes the answers. It
// reuses its buffers, so the process's allocations are the node's.
type pipeliner struct {
	c     net.Conn
	frame []byte
	depth int
	resp  []byte
}

// run sends n requests and reads their n answers. check, if set, is given each answer's
// body (after the correlation id) with its index; answers must come in request order.
func (p *pipeliner) run(n int, check func(i int, body []byte) error) error {
	window := make(chan struct{}, p.depth)
	werr := make(chan error, 1)
	go func() {
		for i := range n {
			window <- struct{}{}
			setCorrelationID(p.frame, int32(i))
			if _, err := p.c.Write(p.frame); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	var size [4]byte
	for i := range n {
		if _, err := io.ReadFull(p.c, size[:]); err != nil {
			return fmt.Errorf("answer %d: %w", i, err)
		}
		m := int(binary.BigEndian.Uint32(size[:]))
		if cap(p.resp) < m {
			p.resp = make([]byte, m)
		}
		b := p.resp[:m]
		if _, err := io.ReadFull(p.c, b); err != nil {
			return fmt.Errorf("answer %d: %w", i, err)
		}
		if corr := int32(binary.BigEndian.Uint32(b)); corr != int32(i) {
			return fmt.Errorf("answer %d has correlation id %d", i, corr)
		}
		if check != nil {
			if err := check(i, b[4:]); err != nil {
				return err
			}
		}
		<-window
	}
	return <-werr
}

// checkProduceOK decodes a Produce v7 answer and fails on any partition error.
func checkProduceOK(i int, body []byte) error {
	resp := kmsg.NewPtrProduceResponse()
	resp.SetVersion(7)
	if err := resp.ReadFrom(body); err != nil {
		return fmt.Errorf("answer %d: %w", i, err)
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 {
				return fmt.Errorf("answer %d: partition %d error %d", i, p.Partition, p.ErrorCode)
			}
		}
	}
	return nil
}

// allocatedPerByte returns the bytes the process allocated per byte of records produced
// while running fn, which produces bytes record bytes. No collection runs meanwhile: one
// would empty the pools at a moment that depends on timing, and the count would not be
// the same from run to run.
func allocatedPerByte(fn func(), bytes int) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return float64(after.TotalAlloc-before.TotalAlloc) / float64(bytes)
}

// TestProduceAllocationsFlat: the bytes the node allocates per byte produced do not grow
// with the pipeline's depth, with the size of requests (how much is buffered while one
// arrives), or when the in-flight limit holds requests back. Allocation is counted with
// runtime.MemStats over a fixed amount of data: a count, not a timing.
func TestProduceAllocationsFlat(t *testing.T) {
	const partitions, volume = 16, 24 << 20
	const perRequestSlackBytes = 4 << 10
	cases := []struct {
		name            string
		records, depth  int
		maxInFlight     int
		valueBytes      int
		perByteMaxRatio float64
	}{
		// The baseline: one request of 16 × 16 KiB in flight.
		{name: "depth1-256KiB", records: 16, depth: 1},
		{name: "depth8-256KiB", records: 16, depth: 8},
		{name: "depth32-256KiB", records: 16, depth: 32},
		{name: "depth4-4MiB", records: 256, depth: 4},
		{name: "depth32-limit4-64KiB", records: 4, depth: 32, maxInFlight: 4},
	}
	var base float64
	for i, tc := range cases {
		start := time.Now()
		s := startServer(t, Config{MaxInFlightPerConnection: tc.maxInFlight})
		leadPartitions(t, s, partitions)
		frame := produceFrame(partitions, tc.records, 1024)
		perRequest := partitions * tc.records * 1024
		n := max(volume/perRequest, 2*tc.depth)
		p := &pipeliner{c: dial(t, s), frame: frame, depth: tc.depth}
		// Warm up: pools, the log's first segment, the socket's buffers.
		if err := p.run(n, checkProduceOK); err != nil {
			t.Fatal(err)
		}
		var runErr error
		perByte := allocatedPerByte(func() { runErr = p.run(n, nil) }, n*perRequest)
		if runErr != nil {
			t.Fatal(runErr)
		}
		t.Logf("%s: %.4f bytes allocated per byte produced (%d requests of %d KiB, %v)", tc.name, perByte, n, len(frame)>>10, time.Since(start))
		// In steady state the node's buffers come from pools: a few allocations per
		// request, nothing per byte. Up to 4 KiB per request (a response, the closures
		// that resume a connection the in-flight limit held back — more of them on a
		// loaded machine, where more frames wait — a buffer class seen for the first
		// time) is allowed for, but never more than 1 byte in 64: copying what is
		// buffered costs a byte per byte or more, far above either. Under the race
		// detector sync.Pool drops a share of what is put back on purpose, so the
		// per-request objects are allocated again now and then: 1 in 16.
		// On top, two buffers of a whole frame over the whole run: on a loaded machine a
		// connection may once need one more buffer at a time than the warm-up left in
		// the pool (with 8 requests of 4 MiB, a single such miss is 0.16 bytes per
		// byte). A constant, however much is produced; copying per request is not.
		perRequestSlack := max(1.0/64, float64(perRequestSlackBytes)/float64(perRequest)) +
			float64(2*len(frame))/float64(n*perRequest)
		absLimit := perRequestSlack
		if raceEnabled {
			perRequestSlack, absLimit = max(1.0/16, perRequestSlack), 1
		}
		if perByte > absLimit {
			t.Errorf("%s: %.4f bytes allocated per byte produced, more than %.4f", tc.name, perByte, absLimit)
		}
		if i == 0 {
			base = perByte
			continue
		}
		// Flat: at most twice the baseline, plus the per-request slack. Copying what is
		// buffered again on every read event allocates bytes per byte, growing with the
		// size of requests.
		if limit := 2*base + perRequestSlack; perByte > limit {
			t.Errorf("%s: %.4f bytes allocated per byte produced, more than %.4f (twice the depth-1 figure %.4f): allocation grows with what is buffered", tc.name, perByte, limit, base)
		}
	}
}

// TestPipelinedProduceRandomSplits: pipelined requests that reach the node in pieces of
// any size — a size prefix split, a frame spread over many reads, many frames in one
// read — with a small in-flight limit holding some back, are all answered, in order, with
// consecutive offsets, and the log holds them all.
func TestPipelinedProduceRandomSplits(t *testing.T) {
	s := startServer(t, Config{MaxInFlightPerConnection: 3})
	leadPartitions(t, s, 2)
	rng := rand.New(rand.NewPCG(1, 2))
	var wire []byte
	var sizes []int // records per request
	for i := range 200 {
		records := 1 + rng.IntN(20)
		valueBytes := []int{10, 1000, 8000}[rng.IntN(3)]
		frame := produceFrame(2, records, valueBytes)
		setCorrelationID(frame, int32(i))
		wire = append(wire, frame...)
		sizes = append(sizes, records)
	}
	c := dial(t, s)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for rest := wire; len(rest) > 0; {
			n := min(len(rest), []int{1, 3, 5, 700, 64 << 10, 300 << 10}[rng.IntN(6)])
			if _, err := c.Write(rest[:n]); err != nil {
				t.Errorf("write: %v", err)
				return
			}
			rest = rest[n:]
			if rng.IntN(8) == 0 {
				time.Sleep(time.Millisecond) // let the node read what is there
			}
		}
	}()
	next := int64(0)
	for i := range sizes {
		req := produceReq(pipelineTopic, 0, 1, nil)
		req.SetVersion(7)
		resp := readAnswer(t, c, req, int32(i)).(*kmsg.ProduceResponse)
		for _, rp := range resp.Topics[0].Partitions {
			if rp.ErrorCode != 0 || rp.BaseOffset != next {
				t.Fatalf("request %d partition %d: %+v, want base offset %d", i, rp.Partition, rp, next)
			}
		}
		next += int64(sizes[i])
	}
	wg.Wait()
	for p := range int32(2) {
		if leo := s.replicas.Partition(pipelineTopic, p).Log().LogEndOffset(); leo != next {
			t.Fatalf("partition %d: log end offset %d, want %d", p, leo, next)
		}
	}
}

// BenchmarkProducePipelined drives the node as pipelining producers do: conns
// connections, each keeping depth produce requests in flight, 16 partitions, 1 KiB
// records (16 per partition per request: 256 KiB requests). It reports MB/s of records,
// bytes allocated per MB produced, and core-seconds per GB (the whole process: client and
// node share it, as they share the machine).
func BenchmarkProducePipelined(b *testing.B) {
	const partitions, records = 16, 16
	for _, bc := range []struct{ conns, depth, readBuffer int }{
		{1, 8, 0}, {4, 8, 0}, {4, 32, 0},
		// gnet's default read buffer: most requests span reads and are assembled by copy.
		{4, 8, 64 << 10},
	} {
		name := fmt.Sprintf("conns%d-depth%d", bc.conns, bc.depth)
		if bc.readBuffer != 0 {
			name += fmt.Sprintf("-read%dKiB", bc.readBuffer>>10)
		}
		b.Run(name, func(b *testing.B) {
			s := startServer(b, Config{ReadBufferBytes: bc.readBuffer})
			leadPartitions(b, s, partitions)
			ps := make([]*pipeliner, bc.conns)
			for i := range ps {
				ps[i] = &pipeliner{c: dial(b, s), frame: produceFrame(partitions, records, 1024), depth: bc.depth}
				if err := ps[i].run(bc.depth, checkProduceOK); err != nil {
					b.Fatal(err)
				}
			}
			perRequest := partitions * records * 1024
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			cpu0 := cpuTime()
			b.ResetTimer()
			// b.N requests in all, spread over the connections.
			var wg sync.WaitGroup
			errs := make(chan error, len(ps))
			for i, p := range ps {
				n := b.N / len(ps)
				if i < b.N%len(ps) {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := p.run(n, nil); err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			runtime.ReadMemStats(&after)
			bytes := float64(b.N) * float64(perRequest)
			b.SetBytes(int64(perRequest))
			b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/(bytes/1e6), "B-alloc/MB")
			b.ReportMetric((cpuTime()-cpu0).Seconds()/(bytes/1e9), "core-s/GB")
		})
	}
}
