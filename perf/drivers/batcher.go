package drivers

import (
	"context"
	"sync"
	"time"
)

// batcher collects a producer's messages into batches and hands each to one of a fixed
// number of sender goroutines: the client-side batching Kafka's producer does (size
// bound, linger), for drivers whose client library has none. With linger 0 a batch goes
// as soon as a sender is free, so batches grow only while all senders are busy.
type batcher struct {
	maxBytes int
	linger   time.Duration
	send     func(ctx context.Context, b *batch) error
	ack      func(intendedNs int64, err error)

	mu      sync.Mutex
	cur     *batch
	space   *sync.Cond // signalled when cur is taken (Send may add to a new one)
	ready   chan struct{}
	closed  bool
	pending int // messages accepted and not yet acknowledged
	idle    *sync.Cond
	free    []*batch
	wg      sync.WaitGroup
	closing chan struct{}   // closed by close: senders drain and stop
	ctx     context.Context // of every send; cancelled only if close times out
	cancel  context.CancelFunc
}

// batcherCloseTimeout bounds how long close waits for queued batches to be sent.
const batcherCloseTimeout = 10 * time.Second

// batch is a run of messages for one send.
type batch struct {
	parts    []int
	values   [][]byte // slices of buf
	buf      []byte
	intended []int64
	bytes    int
	firstAt  time.Time
}

func newBatcher(senders, maxBytes int, linger time.Duration, send func(context.Context, *batch) error, ack func(int64, error)) *batcher {
	b := &batcher{maxBytes: maxBytes, linger: linger, send: send, ack: ack, cur: &batch{}, ready: make(chan struct{}, 1), closing: make(chan struct{})}
	b.space = sync.NewCond(&b.mu)
	b.idle = sync.NewCond(&b.mu)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	for i := 0; i < senders; i++ {
		b.wg.Add(1)
		go b.sender()
	}
	return b
}

// add queues one message, blocking while the current batch is full.
func (b *batcher) add(partition int, value []byte, intendedNs int64) error {
	b.mu.Lock()
	for b.cur.bytes+len(value) > b.maxBytes && len(b.cur.intended) > 0 && !b.closed {
		b.space.Wait()
	}
	if b.closed {
		b.mu.Unlock()
		return context.Canceled
	}
	c := b.cur
	if len(c.intended) == 0 {
		c.firstAt = time.Now()
	}
	// values point into buf, which may move when it grows: record offsets now and slice
	// when the batch is taken.
	start := len(c.buf)
	c.buf = append(c.buf, value...)
	c.values = append(c.values, c.buf[start:len(c.buf):len(c.buf)])
	c.parts = append(c.parts, partition)
	c.intended = append(c.intended, intendedNs)
	c.bytes += len(value)
	b.pending++
	b.mu.Unlock()
	select {
	case b.ready <- struct{}{}:
	default:
	}
	return nil
}

// take removes the current batch once it should go: it is full, has lingered long
// enough, or the batcher is closing. It returns nil when closed and drained.
func (b *batcher) take() *batch {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		c := b.cur
		n := len(c.intended)
		if n > 0 {
			wait := b.linger - time.Since(c.firstAt)
			if b.closed || wait <= 0 || c.bytes >= b.maxBytes {
				b.cur = b.newBatch()
				b.space.Broadcast()
				// values were sliced from buf as it grew; rebuild them on the final buf.
				off := 0
				for i, v := range c.values {
					c.values[i] = c.buf[off : off+len(v) : off+len(v)]
					off += len(v)
				}
				return c
			}
			b.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-b.ready:
			case <-b.closing:
			}
			t.Stop()
			b.mu.Lock()
			continue
		}
		if b.closed {
			return nil
		}
		b.mu.Unlock()
		select {
		case <-b.ready:
		case <-b.closing:
		}
		b.mu.Lock()
	}
}

func (b *batcher) newBatch() *batch {
	if n := len(b.free); n > 0 {
		c := b.free[n-1]
		b.free = b.free[:n-1]
		return c
	}
	return &batch{}
}

func (b *batcher) sender() {
	defer b.wg.Done()
	for {
		c := b.take()
		if c == nil {
			return
		}
		err := b.send(b.ctx, c)
		for _, ts := range c.intended {
			b.ack(ts, err)
		}
		b.mu.Lock()
		b.pending -= len(c.intended)
		if b.pending == 0 {
			b.idle.Broadcast()
		}
		c.parts, c.values, c.buf, c.intended, c.bytes = c.parts[:0], c.values[:0], c.buf[:0], c.intended[:0], 0
		b.free = append(b.free, c)
		b.mu.Unlock()
		select { // another batch may be waiting
		case b.ready <- struct{}{}:
		default:
		}
	}
}

// flush waits until every accepted message is acknowledged, or ctx is done.
func (b *batcher) flush(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		b.mu.Lock()
		for b.pending > 0 && ctx.Err() == nil {
			// Make the current batch go now: a flush does not wait out the linger.
			b.cur.firstAt = time.Time{}
			select {
			case b.ready <- struct{}{}:
			default:
			}
			b.idle.Wait()
		}
		b.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		b.idle.Broadcast() // lets the waiter see ctx is done and exit
		b.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// close sends what is queued, stops the senders and waits for them.
func (b *batcher) close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.space.Broadcast()
	b.mu.Unlock()
	close(b.closing)
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(batcherCloseTimeout):
		b.cancel() // a send is stuck: cut it short
		<-done
	}
	b.cancel()
}
