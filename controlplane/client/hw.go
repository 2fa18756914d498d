package client

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// HW checkpoint limits.
const (
	// DefaultHWCheckpointInterval is how often a node writes its pending high watermarks.
	DefaultHWCheckpointInterval = time.Second
	// hwPutsPerTxnMax bounds one checkpoint transaction (well below TxnOpsMax and
	// RequestBytesMax: a put is about 150 bytes).
	hwPutsPerTxnMax = 1024
)

// HWCheckpointer collects the high watermarks of the partitions a node leads and writes
// them in batches: Record is an in-memory map update (no etcd call, safe on the produce
// path's slow side), and a background goroutine writes every pending partition in as
// few transactions as possible every interval. Only the newest value of a partition is
// written, so the etcd write rate is bounded by partitions/interval, not by produce rate.
type HWCheckpointer struct {
	r        *Registration
	interval time.Duration

	mu sync.Mutex
	// pending holds the newest unwritten checkpoint of each partition.
	pending map[cluster.TopicPartition]cluster.HWCheckpoint

	flushMu sync.Mutex // one flush at a time, so batches are written in order
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// NewHWCheckpointer starts a checkpointer writing every interval
// (DefaultHWCheckpointInterval if zero). Close it before closing the registration.
func (r *Registration) NewHWCheckpointer(interval time.Duration) *HWCheckpointer {
	if interval <= 0 {
		interval = DefaultHWCheckpointInterval
	}
	h := &HWCheckpointer{r: r, interval: interval, pending: map[cluster.TopicPartition]cluster.HWCheckpoint{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go h.loop()
	return h
}

// Record notes the high watermark of a partition; it is written at the next flush.
func (h *HWCheckpointer) Record(tp cluster.TopicPartition, cp cluster.HWCheckpoint) {
	h.mu.Lock()
	h.pending[tp] = cp
	h.mu.Unlock()
}

func (h *HWCheckpointer) loop() {
	defer close(h.done)
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
			if err := h.Flush(context.Background()); err != nil {
				h.r.c.logger.Warn("hw checkpoint failed; will retry", "err", err)
			}
		}
	}
}

// Flush writes every pending checkpoint now, in transactions of at most hwPutsPerTxnMax
// puts. Each transaction is fenced on this node's registration. Checkpoints that fail
// to be written stay pending unless a newer value was recorded meanwhile.
func (h *HWCheckpointer) Flush(ctx context.Context) error {
	h.flushMu.Lock()
	defer h.flushMu.Unlock()
	h.mu.Lock()
	batch := h.pending
	h.pending = make(map[cluster.TopicPartition]cluster.HWCheckpoint, len(batch))
	h.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	r := h.r
	fence := brokerEpochIs(r.broker.ID, r.broker.Epoch)
	var firstErr error
	var ops []clientv3.Op
	var tps []cluster.TopicPartition
	write := func() {
		if len(ops) == 0 {
			return
		}
		resp, err := r.c.txn(ctx, "hw_checkpoint", []clientv3.Cmp{fence}, ops)
		if err == nil && !resp.Succeeded {
			err = ErrRegistrationLost
		}
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("client: hw checkpoint of %d partitions: %w", len(ops), err)
			}
			h.requeue(batch, tps)
		}
		ops, tps = ops[:0], tps[:0]
	}
	for tp, cp := range batch {
		ops = append(ops, clientv3.OpPut(cluster.HWKey(tp.Topic, tp.Partition), cluster.MustJSON(cp)))
		tps = append(tps, tp)
		if len(ops) == hwPutsPerTxnMax {
			write()
		}
	}
	write()
	return firstErr
}

// requeue puts failed checkpoints back unless a newer one was recorded since.
func (h *HWCheckpointer) requeue(batch map[cluster.TopicPartition]cluster.HWCheckpoint, tps []cluster.TopicPartition) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, tp := range tps {
		if _, newer := h.pending[tp]; !newer {
			h.pending[tp] = batch[tp]
		}
	}
}

// Close stops the background writes and flushes what is pending.
func (h *HWCheckpointer) Close(ctx context.Context) error {
	h.once.Do(func() { close(h.stop) })
	<-h.done
	return h.Flush(ctx)
}

// HighWatermarks reads the HW checkpoints of one topic, by partition.
func (c *Client) HighWatermarks(ctx context.Context, topic string) (map[int32]cluster.HWCheckpoint, error) {
	prefix := cluster.TopicHWPrefix(topic)
	resp, err := c.get(ctx, "get_hw", prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("client: high watermarks of %s: %w", topic, err)
	}
	out := make(map[int32]cluster.HWCheckpoint, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		p, err := strconv.ParseInt(strings.TrimPrefix(string(kv.Key), prefix), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("client: high watermarks of %s: key %q: %w", topic, kv.Key, err)
		}
		var cp cluster.HWCheckpoint
		if err := json.Unmarshal(kv.Value, &cp); err != nil {
			return nil, fmt.Errorf("client: high watermarks of %s: %w", topic, err)
		}
		out[int32(p)] = cp
	}
	return out, nil
}
