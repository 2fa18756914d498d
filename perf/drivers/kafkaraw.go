package drivers

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gregor-streaming/gregor/perf"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Raw producer settings.
const (
	// rawMaxInflight bounds unanswered Produce requests per connection (Kafka's
	// max.in.flight.requests.per.connection is 5; more keeps a fast broker busier).
	rawMaxInflight = 8
	// rawProduceTimeoutMs is the Produce request's timeout field.
	rawProduceTimeoutMs = 30_000
	// rawResponseMax bounds a response the reader accepts.
	rawResponseMax = 16 << 20
	// rawProduceVersionMax is the newest Produce version used: 3–8 share one request
	// layout (non-flexible), which the producer writes itself.
	rawProduceVersionMax = 8
	rawClientID          = "gregor-bench-raw"
)

// rawProducer is the "kafka-raw" producer: it pre-encodes one RecordBatch v2 per
// partition (recordsPerBatch records of the workload's size) and, per message, only
// writes the 8-byte send stamp into the next record's value. A full batch gets a fresh
// timestamp and CRC (proto.SealRecordBatch) and goes in a Produce request written with
// writev — header and batch — on a plain connection to the partition's leader, several
// requests in flight. The client does a few bytes of work per message, so what is
// measured is the broker, not the client library.
type rawProducer struct {
	ack             perf.AckFunc
	linger          time.Duration
	recordsPerBatch int
	template        []byte
	slots           []int // offset of each record's value in template
	// recordEnds[i] is where record i ends in template: records 0..n-1 of a full batch
	// are exactly the records of an n-record batch (offset deltas count from 0), so a
	// partial batch is the template's prefix with its header's counts patched.
	recordEnds []int
	topic      string
	acks       int16

	// Lock order: mu, then freeMu. A connection's reader takes only freeMu: Send may
	// hold mu while it waits for the reader to free an in-flight slot.
	mu     sync.Mutex // guards parts
	parts  []rawPartition
	freeMu sync.Mutex // guards free
	free   []*rawBatch

	conns       []*rawConn
	outstanding atomic.Int64 // messages sent and not yet acknowledged
	kick        chan struct{}
	closing     chan struct{}
	wg          sync.WaitGroup
	closeOnce   sync.Once
}

type rawPartition struct {
	id      int32
	conn    *rawConn
	cur     *rawBatch
	firstAt time.Time
}

// rawBatch is one pre-encoded batch being filled, then in flight.
type rawBatch struct {
	buf       []byte // the full batch (a copy of the template)
	out       []byte // what is sent: buf, or a prefix of it for a partial batch
	partition int32
	intended  []int64
}

func newRawProducer(ctx context.Context, d *kafkaDriver, topic string, w *perf.Workload, ack perf.AckFunc) (*rawProducer, error) {
	md, err := d.adm.Metadata(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("kafka-raw: metadata: %w", err)
	}
	t, ok := md.Topics[topic]
	if !ok || t.Err != nil {
		return nil, fmt.Errorf("kafka-raw: topic %s not in metadata (%v)", topic, t.Err)
	}
	p := &rawProducer{ack: ack, linger: w.Linger(), topic: topic, acks: 1,
		kick: make(chan struct{}, 1), closing: make(chan struct{})}
	if w.Acks == "all" {
		p.acks = -1
	}
	p.buildTemplate(w)
	conns := map[int32]*rawConn{}
	fail := func(err error) (*rawProducer, error) {
		for _, c := range conns {
			c.c.Close()
		}
		return nil, err
	}
	for i := 0; i < w.PartitionsPerTopic; i++ {
		pd, ok := t.Partitions[int32(i)]
		ok = ok && pd.Err == nil
		if !ok || pd.Leader < 0 {
			return fail(fmt.Errorf("kafka-raw: %s[%d] has no leader", topic, i))
		}
		c := conns[pd.Leader]
		if c == nil {
			var b kadm.BrokerDetail
			ok = false
			for _, bd := range md.Brokers {
				if bd.NodeID == pd.Leader {
					b, ok = bd, true
				}
			}
			if !ok {
				return fail(fmt.Errorf("kafka-raw: leader %d of %s[%d] not in metadata", pd.Leader, topic, i))
			}
			addr := net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
			if c, err = dialRaw(ctx, addr, p); err != nil {
				return fail(err)
			}
			conns[pd.Leader] = c
			p.conns = append(p.conns, c)
		}
		p.parts = append(p.parts, rawPartition{id: int32(i), conn: c})
	}
	for _, c := range p.conns {
		p.wg.Add(1)
		go c.readLoop()
	}
	p.wg.Add(1)
	go p.lingerLoop()
	return p, nil
}

// buildTemplate encodes the batch every full batch is a copy of, and finds where each
// record's value starts in it.
func (p *rawProducer) buildTemplate(w *perf.Workload) {
	perRecord := w.MessageSize + 16 // value, and a record's framing at most
	p.recordsPerBatch = max(1, (w.BatchSizeBytes-proto.RecordBatchHeaderSize)/perRecord)
	value := make([]byte, w.MessageSize)
	for i := range value {
		value[i] = byte(i*131 + 7) // a fixed payload, like OMB's payload file
	}
	recs := make([]proto.Record, p.recordsPerBatch)
	for i := range recs {
		recs[i].Value = value
	}
	p.template = proto.AppendRecordBatch(nil, rawHeader(), recs)
	pos := proto.RecordBatchHeaderSize // records start after the batch header
	for i := 0; i < p.recordsPerBatch; i++ {
		length, n := kbin.Varint(p.template[pos:])
		q := pos + n + 1 // attributes
		_, n2 := kbin.Varlong(p.template[q:])
		q += n2
		_, n3 := kbin.Varint(p.template[q:]) // offset delta
		q += n3
		_, n4 := kbin.Varint(p.template[q:]) // key length (-1)
		q += n4
		_, n5 := kbin.Varint(p.template[q:]) // value length
		q += n5
		p.slots = append(p.slots, q)
		pos += n + int(length)
		p.recordEnds = append(p.recordEnds, pos)
	}
	if pos != len(p.template) {
		panic("kafka-raw: template walk ended at " + strconv.Itoa(pos) + " of " + strconv.Itoa(len(p.template)))
	}
}

// rawHeader is a non-idempotent, non-transactional batch header stamped now.
func rawHeader() proto.RecordBatchHeader {
	return proto.RecordBatchHeader{PartitionLeaderEpoch: -1, ProducerID: -1, ProducerEpoch: -1,
		BaseSequence: -1, BaseTimestamp: time.Now().UnixMilli()}
}

// Byte offsets of the v2 batch header's fields the producer patches (KIP-98 layout).
const (
	batchLastOffsetDeltaPos = 23
	batchBaseTimestampPos   = 27
	batchMaxTimestampPos    = 35
	batchRecordCountPos     = 57
)

func (p *rawProducer) newBatch() *rawBatch {
	p.freeMu.Lock()
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		p.freeMu.Unlock()
		return b
	}
	p.freeMu.Unlock()
	return &rawBatch{buf: append([]byte(nil), p.template...), intended: make([]int64, 0, p.recordsPerBatch)}
}

// Send implements perf.Producer.
func (p *rawProducer) Send(_ context.Context, partition int, _, value []byte, intended int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	pt := &p.parts[partition]
	if pt.cur == nil {
		pt.cur = p.newBatch()
		pt.firstAt = time.Now()
	}
	b := pt.cur
	copy(b.buf[p.slots[len(b.intended)]:], value[:8])
	b.intended = append(b.intended, intended)
	if len(b.intended) == p.recordsPerBatch || (p.linger == 0 && pt.conn.inflight.Load() == 0) {
		return p.sendLocked(pt)
	}
	return nil
}

// sealLocked takes the partition's batch and makes it ready to send: the first n
// records of the buffer, its header patched — counts, timestamps — and sealed (length,
// CRC). p.mu is held.
func (p *rawProducer) sealLocked(pt *rawPartition) *rawBatch {
	b := pt.cur
	pt.cur = nil
	n := len(b.intended)
	b.partition = pt.id
	b.out = b.buf[:p.recordEnds[n-1]]
	now := uint64(time.Now().UnixMilli())
	binary.BigEndian.PutUint32(b.out[batchLastOffsetDeltaPos:], uint32(n-1))
	binary.BigEndian.PutUint32(b.out[batchRecordCountPos:], uint32(n))
	binary.BigEndian.PutUint64(b.out[batchBaseTimestampPos:], now)
	binary.BigEndian.PutUint64(b.out[batchMaxTimestampPos:], now)
	proto.SealRecordBatch(b.out)
	return b
}

// sendLocked sends the partition's batch alone (it is full, or the connection idle).
// p.mu is held.
func (p *rawProducer) sendLocked(pt *rawPartition) error {
	return p.sendBatches(pt.conn, []*rawBatch{p.sealLocked(pt)})
}

// sendDueLocked sends, per connection in one Produce request, the batches of every
// partition that has lingered long enough (all of them when force is set) — as a Kafka
// client puts all its ready partitions for a broker in one request. p.mu is held.
func (p *rawProducer) sendDueLocked(force bool) error {
	now := time.Now()
	var first error
	for _, c := range p.conns {
		var bs []*rawBatch
		for i := range p.parts {
			pt := &p.parts[i]
			if pt.conn == c && pt.cur != nil && (force || now.Sub(pt.firstAt) >= p.linger) {
				bs = append(bs, p.sealLocked(pt))
			}
		}
		if len(bs) > 0 {
			if err := p.sendBatches(c, bs); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// sendBatches writes one Produce request with bs on c.
func (p *rawProducer) sendBatches(c *rawConn, bs []*rawBatch) error {
	n := 0
	for _, b := range bs {
		n += len(b.intended)
	}
	p.outstanding.Add(int64(n))
	if err := c.produce(p, bs); err != nil {
		p.outstanding.Add(-int64(n))
		return err
	}
	return nil
}

// lingerLoop sends partial batches: those older than the linger, or — with linger 0 —
// whatever accumulated while a request was in flight, as soon as a response arrives.
func (p *rawProducer) lingerLoop() {
	defer p.wg.Done()
	tick := max(p.linger/2, time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-p.closing:
			return
		case <-t.C:
		case <-p.kick:
		}
		p.mu.Lock()
		_ = p.sendDueLocked(false) // a failed connection fails the next Send too
		p.mu.Unlock()
	}
}

// done is called by a connection's reader for each answered batch.
func (p *rawProducer) done(b *rawBatch, err error) {
	for _, ts := range b.intended {
		p.ack(ts, err)
	}
	p.outstanding.Add(-int64(len(b.intended)))
	b.intended = b.intended[:0]
	p.freeMu.Lock()
	p.free = append(p.free, b)
	p.freeMu.Unlock()
	if p.linger == 0 {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// Flush implements perf.Producer.
func (p *rawProducer) Flush(ctx context.Context) error {
	p.mu.Lock()
	err := p.sendDueLocked(true)
	p.mu.Unlock()
	if err != nil {
		return err
	}
	for p.outstanding.Load() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka-raw: %d messages unacknowledged: %w", p.outstanding.Load(), ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// Close implements perf.Producer.
func (p *rawProducer) Close() error {
	var err error
	p.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = p.Flush(ctx)
		cancel()
		close(p.closing)
		for _, c := range p.conns {
			c.c.Close()
		}
		p.wg.Wait()
	})
	return err
}

// rawConn is one plain connection to a broker, requests pipelined: the writer queues
// each request's batch before writing it, the reader answers them in order.
type rawConn struct {
	c        net.Conn
	addr     string
	version  int16
	p        *rawProducer
	writeMu  sync.Mutex
	corr     int32
	hdr      []byte
	queue    chan rawInflight
	inflight atomic.Int32
	failed   atomic.Pointer[error]
}

type rawInflight struct {
	corr    int32
	batches []*rawBatch
}

func dialRaw(ctx context.Context, addr string, p *rawProducer) (*rawConn, error) {
	dctx, cancel := context.WithTimeout(ctx, kafkaDialTimeout)
	defer cancel()
	nc, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("kafka-raw: dial %s: %w", addr, err)
	}
	c := &rawConn{c: nc, addr: addr, p: p, queue: make(chan rawInflight, rawMaxInflight)}
	if err := c.negotiate(); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// negotiate asks the broker for its Produce versions (ApiVersions v0) and picks the
// newest this producer writes.
func (c *rawConn) negotiate() error {
	_ = c.c.SetDeadline(time.Now().Add(kafkaDialTimeout))
	defer c.c.SetDeadline(time.Time{})
	req := c.header(nil, int16(kmsg.ApiVersions), 0)
	binary.BigEndian.PutUint32(req, uint32(len(req)-4))
	if _, err := c.c.Write(req); err != nil {
		return fmt.Errorf("kafka-raw: %s: ApiVersions: %w", c.addr, err)
	}
	body, err := c.readResponse()
	if err != nil {
		return fmt.Errorf("kafka-raw: %s: ApiVersions: %w", c.addr, err)
	}
	resp := kmsg.NewApiVersionsResponse()
	if err := resp.ReadFrom(body[4:]); err != nil {
		return fmt.Errorf("kafka-raw: %s: ApiVersions: %w", c.addr, err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return fmt.Errorf("kafka-raw: %s: ApiVersions: %w", c.addr, err)
	}
	for _, k := range resp.ApiKeys {
		if k.ApiKey == int16(kmsg.Produce) && k.MaxVersion >= 3 && k.MinVersion <= rawProduceVersionMax {
			c.version = min(k.MaxVersion, rawProduceVersionMax)
			return nil
		}
	}
	return fmt.Errorf("kafka-raw: %s serves no Produce version in 3–%d (RecordBatch v2)", c.addr, rawProduceVersionMax)
}

// header appends a request header v1 (size placeholder, key, version, correlation id,
// client id) to dst.
func (c *rawConn) header(dst []byte, key, version int16) []byte {
	c.corr++
	dst = append(dst, 0, 0, 0, 0)
	dst = kbin.AppendInt16(dst, key)
	dst = kbin.AppendInt16(dst, version)
	dst = kbin.AppendInt32(dst, c.corr)
	return kbin.AppendString(dst, rawClientID)
}

// readResponse reads one response frame: the correlation id (response header v0 —
// Produce 3–8 and ApiVersions are not flexible) and the body.
func (c *rawConn) readResponse() ([]byte, error) {
	var sz [8]byte
	if _, err := io.ReadFull(c.c, sz[:4]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(sz[:4]))
	if n < 4 || n > rawResponseMax {
		return nil, fmt.Errorf("response size %d", n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c.c, buf); err != nil {
		return nil, err
	}
	if got := int32(binary.BigEndian.Uint32(buf)); c.version == 0 && got != c.corr {
		return nil, fmt.Errorf("correlation id %d, want %d", got, c.corr)
	}
	return buf, nil
}

// produce writes one Produce request carrying batches bs (one per partition), header
// and batches gathered in one writev. It blocks while rawMaxInflight requests are
// unanswered.
func (c *rawConn) produce(p *rawProducer, bs []*rawBatch) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if e := c.failed.Load(); e != nil {
		return *e
	}
	h := c.header(c.hdr[:0], int16(kmsg.Produce), c.version)
	h = kbin.AppendInt16(h, -1) // transactional id: null
	h = kbin.AppendInt16(h, p.acks)
	h = kbin.AppendInt32(h, rawProduceTimeoutMs)
	h = kbin.AppendArrayLen(h, 1)
	h = kbin.AppendString(h, p.topic)
	h = kbin.AppendArrayLen(h, len(bs))
	// Each batch is preceded by its partition and length: 8 bytes kept in h too.
	prefix := len(h)
	size := len(h) - 4
	for _, b := range bs {
		h = kbin.AppendInt32(h, b.partition)
		h = kbin.AppendInt32(h, int32(len(b.out)))
		size += 8 + len(b.out)
	}
	binary.BigEndian.PutUint32(h, uint32(size))
	c.hdr = h
	bufs := make(net.Buffers, 0, 2*len(bs)+1)
	bufs = append(bufs, h[:prefix])
	for i, b := range bs {
		at := prefix + 8*i
		bufs = append(bufs, h[at:at+8], b.out)
	}
	c.inflight.Add(1)
	c.queue <- rawInflight{corr: c.corr, batches: bs} // back-pressure
	if _, err := bufs.WriteTo(c.c); err != nil {
		err = fmt.Errorf("kafka-raw: %s: write: %w", c.addr, err)
		c.failed.Store(&err)
		c.c.Close() // the reader fails what is queued
		return err
	}
	return nil
}

// readLoop answers queued requests in order until the connection closes; then it fails
// whatever is still queued.
func (c *rawConn) readLoop() {
	defer c.p.wg.Done()
	var err error
	for err == nil {
		var body []byte
		if body, err = c.readResponse(); err != nil {
			break
		}
		var in rawInflight
		select {
		case in = <-c.queue:
		default:
			err = errors.New("a response to no request")
			continue
		}
		c.inflight.Add(-1)
		if got := int32(binary.BigEndian.Uint32(body)); got != in.corr {
			err = fmt.Errorf("correlation id %d, want %d", got, in.corr)
			c.doneAll(in, err)
			break
		}
		resp := kmsg.NewProduceResponse()
		resp.Version = c.version
		if perr := resp.ReadFrom(body[4:]); perr != nil {
			c.doneAll(in, perr)
			continue
		}
		for _, b := range in.batches {
			perr := fmt.Errorf("kafka-raw: no response for partition %d", b.partition)
			for _, t := range resp.Topics {
				for _, pr := range t.Partitions {
					if pr.Partition == b.partition {
						perr = kerr.ErrorForCode(pr.ErrorCode)
					}
				}
			}
			c.p.done(b, perr)
		}
	}
	ferr := fmt.Errorf("kafka-raw: %s: %w", c.addr, err)
	c.failed.CompareAndSwap(nil, &ferr)
	for {
		select {
		case in := <-c.queue:
			c.inflight.Add(-1)
			c.doneAll(in, ferr)
		default:
			return
		}
	}
}

// doneAll fails (or acknowledges) every batch of a request alike.
func (c *rawConn) doneAll(in rawInflight, err error) {
	for _, b := range in.batches {
		c.p.done(b, err)
	}
}
