package groups

import (
	"context"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// TxnFunc commits one etcd transaction (on a control-plane node, the node's client,
// which times and counts it).
type TxnFunc func(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) (*clientv3.TxnResponse, error)

// storeReq is a group of ops committed together (in one transaction) and told once.
type storeReq struct {
	ops  []Op
	done func(error)
}

// EtcdStore is the Store of one term of controllership: the single writer of group
// keys. It takes whatever has queued since its last transaction and commits it in one
// etcd transaction (many OffsetCommits arriving together cost one round), fenced on the
// controller's election key, so a deposed controller cannot write. Writes complete in
// the order they were queued.
type EtcdStore struct {
	kv    clientv3.KV
	txn   TxnFunc
	fence clientv3.Cmp
	mu    sync.Mutex
	queue []storeReq
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
	// observe records each transaction's ops and duration (metrics); may be nil.
	observe func(ops int, d time.Duration)
}

// NewEtcdStore starts the writer of a term: reads go to kv, transactions to txn, each
// fenced on fence (the controller's election key still having the create revision it
// was won with); observe (if set) is told each transaction's size and duration.
func NewEtcdStore(kv clientv3.KV, txn TxnFunc, fence clientv3.Cmp, observe func(ops int, d time.Duration)) *EtcdStore {
	st := &EtcdStore{kv: kv, txn: txn, fence: fence, wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), observe: observe}
	go st.run()
	return st
}

// Submit queues ops; done is called from the writer goroutine once they are committed
// (nil) or not (ErrNotActive after losing controllership, or the etcd error).
func (st *EtcdStore) Submit(ops []Op, done func(error)) {
	st.mu.Lock()
	if st.stopped() {
		st.mu.Unlock()
		// Not here: the caller may hold the coordinator's lock, which done takes.
		go done(ErrNotActive)
		return
	}
	st.queue = append(st.queue, storeReq{ops: ops, done: done})
	st.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// Close stops the writer; queued writes fail with ErrNotActive.
func (st *EtcdStore) Close() {
	close(st.stop)
	<-st.done
}

func (st *EtcdStore) stopped() bool {
	select {
	case <-st.stop:
		return true
	default:
		return false
	}
}

func (st *EtcdStore) run() {
	defer close(st.done)
	for {
		select {
		case <-st.stop:
			st.mu.Lock()
			q := st.queue
			st.queue = nil
			st.mu.Unlock()
			for _, r := range q {
				r.done(ErrNotActive)
			}
			return
		case <-st.wake:
		}
		for {
			batch := st.take()
			if len(batch) == 0 {
				break
			}
			err := st.commit(batch)
			for _, r := range batch {
				r.done(err)
			}
		}
	}
}

// take removes the longest prefix of the queue that fits one transaction: within the
// size bounds, and with no key (or prefix) written twice, which etcd refuses.
func (st *EtcdStore) take() []storeReq {
	st.mu.Lock()
	defer st.mu.Unlock()
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
	for ; n < len(st.queue); n++ {
		r := st.queue[n]
		size := 0
		for _, o := range r.ops {
			size += len(o.Key) + len(o.Value)
		}
		if n > 0 && (ops+len(r.ops) > storeBatchOpsMax || bytes+size > storeBatchBytesMax) {
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
	batch := st.queue[:n:n]
	st.queue = st.queue[n:]
	if len(st.queue) == 0 {
		st.queue = st.queue[:0:0]
	}
	return batch
}

// commit writes a batch in one transaction fenced on the election key.
func (st *EtcdStore) commit(batch []storeReq) error {
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
	ctx, cancel := context.WithTimeout(context.Background(), storeWriteTimeout)
	defer cancel()
	go func() {
		select {
		case <-st.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	start := time.Now()
	resp, err := st.txn(ctx, []clientv3.Cmp{st.fence}, ops)
	if st.observe != nil {
		st.observe(len(ops), time.Since(start))
	}
	if err != nil {
		if st.stopped() {
			return ErrNotActive
		}
		return err
	}
	if !resp.Succeeded {
		return ErrNotActive
	}
	return nil
}

// Load reads every group and committed offset: the offsets at the groups' revision, so
// the two are one consistent view.
func (st *EtcdStore) Load(ctx context.Context) ([]KV, error) { return LoadEtcd(ctx, st.kv) }

// LoadEtcd reads every group and committed offset from etcd, unfenced: for a node that
// is not the active coordinator, to show the last persisted state.
func LoadEtcd(ctx context.Context, kv clientv3.KV) ([]KV, error) {
	resp, err := kv.Get(ctx, cluster.GroupsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make([]KV, 0, len(resp.Kvs))
	for _, x := range resp.Kvs {
		out = append(out, KV{Key: string(x.Key), Value: x.Value})
	}
	resp, err = kv.Get(ctx, cluster.OffsetsPrefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision))
	if err != nil {
		return nil, err
	}
	for _, x := range resp.Kvs {
		out = append(out, KV{Key: string(x.Key), Value: x.Value})
	}
	return out, nil
}
