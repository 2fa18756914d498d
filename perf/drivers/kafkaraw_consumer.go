package drivers

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/gregor-streaming/gregor/perf"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Raw consumer settings.
const (
	// rawFetchVersionMin and rawFetchVersionMax bound the Fetch versions used: 4 is the
	// first returning RecordBatch v2, 11 the last before flexible encoding.
	rawFetchVersionMin = 4
	rawFetchVersionMax = 11
	// rawFetchMaxBytes and rawFetchPartitionMaxBytes size a fetch: large, so a
	// catch-up read streams (the client's per-request cost vanishes).
	rawFetchMaxBytes          = 64 << 20
	rawFetchPartitionMaxBytes = 16 << 20
	// rawFetchMaxWaitMs is how long the broker may hold a fetch at the log end.
	rawFetchMaxWaitMs = 100
	// rawFetchResponseMax bounds a fetch response the consumer accepts.
	rawFetchResponseMax = rawFetchMaxBytes + 1<<20
	// rawFetchTimeout bounds one fetch round trip.
	rawFetchTimeout = 30 * time.Second
	// rawFetchConnsMax is how many connections a consumer opens to one broker, its
	// partitions dealt among them. A Fetch cannot be pipelined on one connection (the
	// next request needs the offsets the response brings), so one connection leaves the
	// broker idle while the client walks a response; a few keep it streaming.
	rawFetchConnsMax = 4
)

// rawConsumer is the "kafka-raw" consumer: Fetch requests on plain connections (up to
// rawFetchConnsMax per partition leader), each response read into a reused buffer and
// its batches walked in place — no per-record allocation — so a catch-up read measures
// the broker's fetch path rather than a client library. Each record's value goes to the
// handler; responses are walked one at a time (handle is not called concurrently).
type rawConsumer struct {
	cancel context.CancelFunc
	conns  []net.Conn
	wg     sync.WaitGroup
}

func (d *kafkaDriver) newRawConsumer(ctx context.Context, topic string, partitions []int, handle perf.ConsumeFunc) (perf.Consumer, error) {
	md, err := d.adm.Metadata(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("kafka-raw: metadata: %w", err)
	}
	t, ok := md.Topics[topic]
	if !ok || t.Err != nil {
		return nil, fmt.Errorf("kafka-raw: topic %s not in metadata (%v)", topic, t.Err)
	}
	byLeader := map[int32][]int32{}
	for _, p := range partitions {
		pd, ok := t.Partitions[int32(p)]
		if !ok || pd.Err != nil || pd.Leader < 0 {
			return nil, fmt.Errorf("kafka-raw: %s[%d] has no leader", topic, p)
		}
		byLeader[pd.Leader] = append(byLeader[pd.Leader], int32(p))
	}
	cctx, cancel := context.WithCancel(context.Background())
	c := &rawConsumer{cancel: cancel}
	var mu sync.Mutex // held while a response is walked: handle is not concurrent
	type group struct {
		leader int32
		parts  []int32
	}
	var groups []group
	for leader, parts := range byLeader {
		k := min(len(parts), rawFetchConnsMax)
		for i := 0; i < k; i++ {
			var g group
			g.leader = leader
			for j := i; j < len(parts); j += k {
				g.parts = append(g.parts, parts[j])
			}
			groups = append(groups, g)
		}
	}
	for _, g := range groups {
		leader, parts := g.leader, g.parts
		var addr string
		for _, b := range md.Brokers {
			if b.NodeID == leader {
				addr = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
			}
		}
		if addr == "" {
			c.Close()
			return nil, fmt.Errorf("kafka-raw: leader %d of %s not in metadata", leader, topic)
		}
		f, err := dialFetcher(ctx, addr, topic, parts, &mu)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.conns = append(c.conns, f.c)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if err := f.loop(cctx, handle); err != nil && cctx.Err() == nil {
				d.log("consumer on %s: %v", topic, err)
			}
		}()
	}
	return c, nil
}

// Close implements perf.Consumer.
func (c *rawConsumer) Close() error {
	c.cancel()
	for _, nc := range c.conns {
		nc.Close() // unblocks a read in progress
	}
	c.wg.Wait()
	return nil
}

// fetcher reads some partitions of a topic from one broker.
type fetcher struct {
	c       net.Conn
	addr    string
	version int16
	topic   string
	parts   []int32
	offsets []int64 // next offset to fetch, per parts[i]
	walkMu  *sync.Mutex
	corr    int32
	req     []byte
	buf     []byte
}

func dialFetcher(ctx context.Context, addr, topic string, parts []int32, walkMu *sync.Mutex) (*fetcher, error) {
	dctx, cancel := context.WithTimeout(ctx, kafkaDialTimeout)
	defer cancel()
	nc, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("kafka-raw: dial %s: %w", addr, err)
	}
	f := &fetcher{c: nc, addr: addr, topic: topic, parts: parts, offsets: make([]int64, len(parts)), walkMu: walkMu}
	v, err := f.fetchVersion()
	if err != nil {
		nc.Close()
		return nil, err
	}
	f.version = v
	return f, nil
}

// roundTrip writes one request (header v1, body) and reads its response (header v0),
// returning the body. Fetch ≤ 11 and ApiVersions have non-flexible response headers.
func (f *fetcher) roundTrip(key, version int16, body func([]byte) []byte) ([]byte, error) {
	f.corr++
	r := append(f.req[:0], 0, 0, 0, 0)
	r = kbin.AppendInt16(r, key)
	r = kbin.AppendInt16(r, version)
	r = kbin.AppendInt32(r, f.corr)
	r = kbin.AppendString(r, rawClientID)
	r = body(r)
	binary.BigEndian.PutUint32(r, uint32(len(r)-4))
	f.req = r
	_ = f.c.SetDeadline(time.Now().Add(rawFetchTimeout))
	if _, err := f.c.Write(r); err != nil {
		return nil, err
	}
	var sz [4]byte
	if _, err := io.ReadFull(f.c, sz[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(sz[:]))
	if n < 4 || n > rawFetchResponseMax {
		return nil, fmt.Errorf("response size %d", n)
	}
	if cap(f.buf) < n {
		f.buf = make([]byte, n)
	}
	b := f.buf[:n]
	if _, err := io.ReadFull(f.c, b); err != nil {
		return nil, err
	}
	if got := int32(binary.BigEndian.Uint32(b)); got != f.corr {
		return nil, fmt.Errorf("correlation id %d, want %d", got, f.corr)
	}
	return b[4:], nil
}

func (f *fetcher) fetchVersion() (int16, error) {
	body, err := f.roundTrip(int16(kmsg.ApiVersions), 0, func(b []byte) []byte { return b })
	if err != nil {
		return 0, fmt.Errorf("kafka-raw: %s: ApiVersions: %w", f.addr, err)
	}
	resp := kmsg.NewApiVersionsResponse()
	if err := resp.ReadFrom(body); err != nil {
		return 0, fmt.Errorf("kafka-raw: %s: ApiVersions: %w", f.addr, err)
	}
	for _, k := range resp.ApiKeys {
		if k.ApiKey == int16(kmsg.Fetch) && k.MaxVersion >= rawFetchVersionMin && k.MinVersion <= rawFetchVersionMax {
			return min(k.MaxVersion, rawFetchVersionMax), nil
		}
	}
	return 0, fmt.Errorf("kafka-raw: %s serves no Fetch version in %d–%d", f.addr, rawFetchVersionMin, rawFetchVersionMax)
}

// loop fetches until ctx is done or the connection fails.
func (f *fetcher) loop(ctx context.Context, handle perf.ConsumeFunc) error {
	req := kmsg.NewPtrFetchRequest()
	req.Version = f.version
	req.ReplicaID = -1
	req.MaxWaitMillis = rawFetchMaxWaitMs
	req.MinBytes = 1
	req.MaxBytes = rawFetchMaxBytes
	req.SessionEpoch = -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = f.topic
	rt.Partitions = make([]kmsg.FetchRequestTopicPartition, len(f.parts))
	for i, p := range f.parts {
		rt.Partitions[i] = kmsg.NewFetchRequestTopicPartition()
		rt.Partitions[i].Partition = p
		rt.Partitions[i].PartitionMaxBytes = rawFetchPartitionMaxBytes
	}
	req.Topics = []kmsg.FetchRequestTopic{rt}
	index := map[int32]int{}
	for i, p := range f.parts {
		index[p] = i
	}
	resp := kmsg.NewPtrFetchResponse()
	// Bounded by the consumer's life: each round trip ends within rawFetchTimeout, and
	// Close cancels ctx and closes the connection.
	for ctx.Err() == nil {
		for i := range rt.Partitions {
			req.Topics[0].Partitions[i].FetchOffset = f.offsets[i]
		}
		body, err := f.roundTrip(int16(kmsg.Fetch), f.version, req.AppendTo)
		if err != nil {
			return fmt.Errorf("%s: fetch: %w", f.addr, err)
		}
		resp.Default()
		resp.Version = f.version
		if err := resp.ReadFrom(body); err != nil {
			return fmt.Errorf("%s: fetch response: %w", f.addr, err)
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return fmt.Errorf("%s: fetch: %w", f.addr, err)
		}
		if err := f.walk(resp, index, handle); err != nil {
			return err
		}
	}
	return nil
}

// walk hands a response's records to handle, holding walkMu.
func (f *fetcher) walk(resp *kmsg.FetchResponse, index map[int32]int, handle perf.ConsumeFunc) error {
	f.walkMu.Lock()
	defer f.walkMu.Unlock()
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			i, ok := index[p.Partition]
			if !ok {
				continue
			}
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return fmt.Errorf("%s[%d] at offset %d: %w", t.Topic, p.Partition, f.offsets[i], err)
			}
			next, err := walkBatches(p.RecordBatches, f.offsets[i], handle)
			if err != nil {
				return fmt.Errorf("%s[%d]: %w", t.Topic, p.Partition, err)
			}
			f.offsets[i] = next
		}
	}
	return nil
}

// walkBatches hands the value of every record at or after offset in a fetch's record
// batches to handle, and returns the offset to fetch next. A truncated batch at the end
// (the broker stops at max bytes) is left for the next fetch.
func walkBatches(b []byte, offset int64, handle perf.ConsumeFunc) (int64, error) {
	for len(b) >= proto.RecordBatchHeaderSize {
		h, err := proto.ParseRecordBatchHeader(b)
		if err != nil {
			return offset, err
		}
		size := h.Size()
		if size > len(b) {
			break
		}
		if h.Codec() != proto.CodecNone {
			return offset, fmt.Errorf("batch at offset %d is compressed: the raw consumer reads only what the bench's producers write (uncompressed)", h.BaseOffset)
		}
		if !h.IsControl() {
			if err := walkRecords(b[proto.RecordBatchHeaderSize:size], h, offset, handle); err != nil {
				return offset, err
			}
		}
		if next := h.NextOffset(); next > offset {
			offset = next
		}
		b = b[size:]
	}
	return offset, nil
}

// walkRecords decodes the records of one uncompressed batch just far enough to find
// each value: length, attributes, timestamp delta, offset delta, key, value.
func walkRecords(recs []byte, h proto.RecordBatchHeader, offset int64, handle perf.ConsumeFunc) error {
	bad := fmt.Errorf("malformed record in batch at offset %d", h.BaseOffset)
	for i := int32(0); i < h.RecordCount; i++ {
		length, n := kbin.Varint(recs)
		if n == 0 || length < 0 || int(length) > len(recs)-n {
			return bad
		}
		r := recs[n : n+int(length)]
		recs = recs[n+int(length):]
		if len(r) < 1 {
			return bad
		}
		r = r[1:] // attributes
		_, n = kbin.Varlong(r)
		if n == 0 {
			return bad
		}
		r = r[n:]
		delta, n := kbin.Varint(r)
		if n == 0 {
			return bad
		}
		r = r[n:]
		kl, n := kbin.Varint(r)
		if n == 0 || int(kl) > len(r)-n {
			return bad
		}
		r = r[n+max(0, int(kl)):]
		vl, n := kbin.Varint(r)
		if n == 0 || int(vl) > len(r)-n {
			return bad
		}
		if h.BaseOffset+int64(delta) < offset {
			continue // before the fetch offset: a batch may start earlier
		}
		if vl >= 0 {
			handle(r[n : n+int(vl)])
		} else {
			handle(nil)
		}
	}
	return nil
}
