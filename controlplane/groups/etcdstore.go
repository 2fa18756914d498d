package groups

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/internal/kvstore"
)

// TxnFunc commits one etcd transaction (on a control-plane node, the node's client,
// which times and counts it).
type TxnFunc = kvstore.TxnFunc

// EtcdStore is the Store of one term of controllership: the single writer of group
// keys (kvstore.Writer: what has queued since its last transaction goes in one etcd
// transaction, fenced on the controller's election key, so a deposed controller
// cannot write; writes complete in the order they were queued).
type EtcdStore struct {
	*kvstore.Writer
	kv clientv3.KV
}

// NewEtcdStore starts the writer of a term: reads go to kv, transactions to txn, each
// fenced on fence (the controller's election key still having the create revision it
// was won with); observe (if set) is told each transaction's size and duration.
func NewEtcdStore(kv clientv3.KV, txn TxnFunc, fence clientv3.Cmp, observe func(ops int, d time.Duration)) *EtcdStore {
	return &EtcdStore{Writer: kvstore.NewWriter(txn, fence, observe), kv: kv}
}

// Load reads every group, committed offset and pending transactional offset, at one
// revision, so that they are one consistent view.
func (st *EtcdStore) Load(ctx context.Context) ([]KV, error) { return LoadEtcd(ctx, st.kv) }

// LoadEtcd reads every group, committed offset and pending transactional offset from
// etcd, unfenced: for a node that is not the active coordinator, to show the last
// persisted state.
func LoadEtcd(ctx context.Context, kv clientv3.KV) ([]KV, error) {
	return kvstore.GetPrefixes(ctx, kv, cluster.GroupsPrefix, cluster.OffsetsPrefix, cluster.TxnOffsetsPrefix)
}
