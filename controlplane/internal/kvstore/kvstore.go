// Package kvstore is what the control plane's coordinators (package groups, package
// txn) share to keep their state in etcd: the Op and KV types of their Store
// interfaces, and Writer, the single writer of one term of controllership, which
// commits whatever has queued since its last transaction in one etcd transaction
// fenced on the controller's election key. Mem is a Store in memory with the same
// contract, for the coordinators' unit tests.
package kvstore

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Bounds of one store transaction, well inside etcd's (cluster.TxnOpsMax,
// cluster.RequestBytesMax). A coordinator splits its own writes to fit them, so a
// Writer may rely on them.
const (
	BatchOpsMax   = 1024
	BatchBytesMax = 2 << 20
	// WriteTimeout bounds one transaction, and loading.
	WriteTimeout = 10 * time.Second
)

// ErrNotActive is a Store's answer once the term is over: the store was closed, or its
// writes are fenced (another controller was elected).
var ErrNotActive = errors.New("not the active coordinator")

// Op is one write: a put (Value set), a delete (Delete), or the delete of every key
// under a prefix (Delete and Prefix).
type Op struct {
	Key    string
	Value  string
	Delete bool
	Prefix bool
}

// KV is one stored key and its value.
type KV struct {
	Key   string
	Value []byte
}

// TxnFunc commits one etcd transaction (on a control-plane node, the node's client,
// which times and counts it).
type TxnFunc func(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) (*clientv3.TxnResponse, error)

// request is a group of ops committed together (in one transaction) and told once.
type request struct {
	ops  []Op
	done func(error)
}

// Writer is the single writer of a coordinator's keys for one term. It takes whatever
// has queued since its last transaction and commits it in one etcd transaction (many
// requests arriving together cost one round), fenced on the controller's election key,
// so a deposed controller cannot write. Requests complete in the order they were
// queued, each applied whole or not at all.
type Writer struct {
	txn   TxnFunc
	fence clientv3.Cmp
	mu    sync.Mutex
	queue []request
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
	// observe records each transaction's ops and duration (metrics); may be nil.
	observe func(ops int, d time.Duration)
}

// NewWriter starts the writer of a term: transactions go to txn, each fenced on fence
// (the controller's election key still having the create revision it was won with);
// observe (if set) is told each transaction's size and duration.
func NewWriter(txn TxnFunc, fence clientv3.Cmp, observe func(ops int, d time.Duration)) *Writer {
	w := &Writer{txn: txn, fence: fence, wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), observe: observe}
	go w.run()
	return w
}

// Fence is the comparison every transaction of the writer carries.
func (w *Writer) Fence() clientv3.Cmp { return w.fence }

// Submit queues ops; done is called from the writer goroutine once they are committed
// (nil) or not (ErrNotActive after losing controllership, or the etcd error). Submit
// never blocks and never calls done itself.
func (w *Writer) Submit(ops []Op, done func(error)) {
	w.mu.Lock()
	if w.stopped() {
		w.mu.Unlock()
		// Not here: the caller may hold the coordinator's lock, which done takes.
		go done(ErrNotActive)
		return
	}
	w.queue = append(w.queue, request{ops: ops, done: done})
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Close stops the writer; queued writes fail with ErrNotActive.
func (w *Writer) Close() {
	w.mu.Lock()
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.mu.Unlock()
	<-w.done
}

// Stopped reports whether Close was called.
func (w *Writer) Stopped() bool { return w.stopped() }

func (w *Writer) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

// Context returns a context bounded by WriteTimeout that ends when the writer stops.
func (w *Writer) Context() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), WriteTimeout)
	go func() {
		select {
		case <-w.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func (w *Writer) run() {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			w.mu.Lock()
			q := w.queue
			w.queue = nil
			w.mu.Unlock()
			for _, r := range q {
				r.done(ErrNotActive)
			}
			return
		case <-w.wake:
		}
		for {
			batch := w.take()
			if len(batch) == 0 {
				break
			}
			err := w.commit(batch)
			for _, r := range batch {
				r.done(err)
			}
		}
	}
}

// take removes the longest prefix of the queue that fits one transaction: within the
// size bounds, and with no key (or prefix) written twice, which etcd refuses.
func (w *Writer) take() []request {
	w.mu.Lock()
	defer w.mu.Unlock()
	var (
		n, ops, bytes int
		keys          = map[string]bool{}
		prefixes      []string
	)
	overlaps := func(o Op) bool {
		if keys[o.Key] {
			return true
		}
		for _, p := range prefixes {
			if strings.HasPrefix(o.Key, p) {
				return true
			}
		}
		if o.Prefix {
			for k := range keys {
				if strings.HasPrefix(k, o.Key) {
					return true
				}
			}
		}
		return false
	}
outer:
	for ; n < len(w.queue); n++ {
		r := w.queue[n]
		size := 0
		for _, o := range r.ops {
			size += len(o.Key) + len(o.Value)
		}
		if n > 0 && (ops+len(r.ops) > BatchOpsMax || bytes+size > BatchBytesMax) {
			break
		}
		for _, o := range r.ops {
			if n > 0 && overlaps(o) {
				break outer
			}
		}
		for _, o := range r.ops {
			keys[o.Key] = true
			if o.Prefix {
				prefixes = append(prefixes, o.Key)
			}
		}
		ops += len(r.ops)
		bytes += size
	}
	batch := w.queue[:n:n]
	w.queue = w.queue[n:]
	if len(w.queue) == 0 {
		w.queue = w.queue[:0:0]
	}
	return batch
}

// commit writes a batch in one transaction fenced on the election key.
func (w *Writer) commit(batch []request) error {
	var ops []clientv3.Op
	for _, r := range batch {
		for _, o := range r.ops {
			switch {
			case o.Prefix:
				ops = append(ops, clientv3.OpDelete(o.Key, clientv3.WithPrefix()))
			case o.Delete:
				ops = append(ops, clientv3.OpDelete(o.Key))
			default:
				ops = append(ops, clientv3.OpPut(o.Key, o.Value))
			}
		}
	}
	if len(ops) == 0 {
		return nil
	}
	ctx, cancel := w.Context()
	defer cancel()
	start := time.Now()
	resp, err := w.txn(ctx, []clientv3.Cmp{w.fence}, ops)
	if w.observe != nil {
		w.observe(len(ops), time.Since(start))
	}
	if err != nil {
		if w.stopped() {
			return ErrNotActive
		}
		return err
	}
	if !resp.Succeeded {
		return ErrNotActive
	}
	return nil
}

// GetPrefixes reads every key under each prefix, all at the revision of the first
// read, so that they are one consistent view.
func GetPrefixes(ctx context.Context, kv clientv3.KV, prefixes ...string) ([]KV, error) {
	var out []KV
	var rev int64
	for _, p := range prefixes {
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := kv.Get(ctx, p, opts...)
		if err != nil {
			return nil, err
		}
		rev = resp.Header.Revision
		for _, x := range resp.Kvs {
			out = append(out, KV{Key: string(x.Key), Value: x.Value})
		}
	}
	return out, nil
}
