package txn

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/internal/kvstore"
)

// What the coordinator keeps beyond its term (keys in controlplane/cluster, described
// in SCHEMA.md):
//
//   - cluster.TransactionKey(id): txnRecord, written at every state change before the
//     change is answered; deleted when the id expires;
//   - cluster.TxnCoordinatorEpochKey: the coordinator epoch, one more at every term.

// ErrNotActive is a Store's answer once the term is over: the store was closed, or its
// writes are fenced (another controller was elected).
var ErrNotActive = kvstore.ErrNotActive

// Op and KV are a Store's writes and reads.
type (
	Op = kvstore.Op
	KV = kvstore.KV
)

// Store is where the coordinator keeps its transactional ids beyond its term: etcd on a
// control-plane node (EtcdStore), memory in unit tests.
//
// Contract (that of package groups' Store): Submit never blocks and never calls done
// itself: done runs later, on another goroutine. Requests complete in the order they
// were submitted, each applied whole or not at all. After Close, Submit fails every
// request with ErrNotActive.
type Store interface {
	// Load returns every key under cluster.TransactionsPrefix.
	Load(ctx context.Context) ([]KV, error)
	// NextCoordinatorEpoch stores and returns the coordinator epoch of this term: one
	// more than the last term's.
	NextCoordinatorEpoch(ctx context.Context) (int32, error)
	// AllocateProducerIDs returns a block of producer ids no one else is handed.
	AllocateProducerIDs(ctx context.Context) (first, size int64, err error)
	Submit(ops []Op, done func(error))
	Close()
}

// EtcdStore is the Store of one term of controllership: the single writer of the
// transaction keys (kvstore.Writer, fenced on the controller's election key).
type EtcdStore struct {
	*kvstore.Writer
	kv    clientv3.KV
	txn   kvstore.TxnFunc
	alloc func(ctx context.Context) (first, size int64, err error)
}

// NewEtcdStore starts the writer of a term: reads go to kv, transactions to txn, each
// fenced on fence; alloc takes producer-id blocks (fenced on the same election);
// observe (if set) is told each transaction's size and duration.
func NewEtcdStore(kv clientv3.KV, txn kvstore.TxnFunc, fence clientv3.Cmp,
	alloc func(ctx context.Context) (first, size int64, err error), observe func(ops int, d time.Duration)) *EtcdStore {
	return &EtcdStore{Writer: kvstore.NewWriter(txn, fence, observe), kv: kv, txn: txn, alloc: alloc}
}

// Load reads every transactional id's record.
func (st *EtcdStore) Load(ctx context.Context) ([]KV, error) {
	return kvstore.GetPrefixes(ctx, st.kv, cluster.TransactionsPrefix)
}

// AllocateProducerIDs takes a block (fenced on the election).
func (st *EtcdStore) AllocateProducerIDs(ctx context.Context) (int64, int64, error) {
	first, size, err := st.alloc(ctx)
	if err != nil && st.Stopped() {
		return 0, 0, ErrNotActive
	}
	return first, size, err
}

// NextCoordinatorEpoch reads the epoch and writes one more, by a compare-and-swap on
// the key's revision fenced on the election key: a deposed controller gets
// ErrNotActive.
func (st *EtcdStore) NextCoordinatorEpoch(ctx context.Context) (int32, error) {
	for range 16 {
		resp, err := st.kv.Get(ctx, cluster.TxnCoordinatorEpochKey)
		if err != nil {
			return 0, err
		}
		var cur, modRev int64
		if len(resp.Kvs) > 0 {
			modRev = resp.Kvs[0].ModRevision
			if cur, err = strconv.ParseInt(string(resp.Kvs[0].Value), 10, 32); err != nil || cur < 0 {
				return 0, fmt.Errorf("bad %s value %q", cluster.TxnCoordinatorEpochKey, resp.Kvs[0].Value)
			}
		}
		next := cur + 1
		if next > 1<<31-1 {
			return 0, fmt.Errorf("%s: coordinator epochs exhausted", cluster.TxnCoordinatorEpochKey)
		}
		tr, err := st.txn(ctx, []clientv3.Cmp{st.Fence(),
			clientv3.Compare(clientv3.ModRevision(cluster.TxnCoordinatorEpochKey), "=", modRev)},
			[]clientv3.Op{clientv3.OpPut(cluster.TxnCoordinatorEpochKey, strconv.FormatInt(next, 10))})
		if err != nil {
			return 0, err
		}
		if tr.Succeeded {
			return int32(next), nil
		}
		// The fence or the epoch moved: a fenced write fails on the next try too; tell
		// the two apart by the fence alone.
		fr, err := st.txn(ctx, []clientv3.Cmp{st.Fence()}, nil)
		if err != nil {
			return 0, err
		}
		if !fr.Succeeded {
			return 0, ErrNotActive
		}
	}
	return 0, fmt.Errorf("%s: lost too many races", cluster.TxnCoordinatorEpochKey)
}

// decodeRecords reads the stored records back, by transactional id.
func decodeRecords(kvs []KV) (map[string]txnData, error) {
	out := map[string]txnData{}
	for _, kv := range kvs {
		if !strings.HasPrefix(kv.Key, cluster.TransactionsPrefix) {
			continue
		}
		id, err := cluster.ParseTransactionKey(kv.Key)
		if err != nil {
			return nil, err
		}
		var rec txnRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, fmt.Errorf("transaction %q: %w", id, err)
		}
		d, err := rec.data()
		if err != nil {
			return nil, fmt.Errorf("transaction %q: %w", id, err)
		}
		out[id] = d
	}
	return out, nil
}
