package groups

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/internal/kvstore"
)

// What the coordinator keeps beyond its term (keys in controlplane/cluster, described
// in SCHEMA.md):
//
//   - cluster.GroupKey(group): groupRecord, written when a generation becomes Stable,
//     when the group empties, when a static member is replaced; deleted with the group;
//   - cluster.OffsetKey(group, topic, partition): offsetRecord, one per committed offset.

// Store limits.
const (
	// storeBatchOpsMax and storeBatchBytesMax bound one store transaction, well inside
	// etcd's bounds (cluster.TxnOpsMax, cluster.RequestBytesMax). The coordinator splits
	// its own writes to fit them (chunkOps), so a Store may rely on them.
	storeBatchOpsMax   = kvstore.BatchOpsMax
	storeBatchBytesMax = kvstore.BatchBytesMax
	// groupRecordMax bounds one group's record; a bigger generation is refused.
	groupRecordMax = 3 << 20
	// storeWriteTimeout bounds one transaction, and loading.
	storeWriteTimeout = kvstore.WriteTimeout
)

// ErrNotActive is a Store's answer once the term is over: the store was closed, or its
// writes are fenced (another controller was elected). The coordinator answers the
// request "not active", and the data-plane node resends it to the next coordinator.
var ErrNotActive = kvstore.ErrNotActive

// Op is one write of a Store: a put (Value set), a delete (Delete), or the delete of
// every key under a prefix (Delete and Prefix).
type Op = kvstore.Op

// KV is one stored key and its value.
type KV = kvstore.KV

// Loader reads back what a Store holds.
type Loader interface {
	// Load returns every key under cluster.GroupsPrefix, cluster.OffsetsPrefix and
	// cluster.TxnOffsetsPrefix, all read at one point in time, so that groups and
	// offsets are one consistent view.
	Load(ctx context.Context) ([]KV, error)
}

// Store is where the coordinator keeps groups and offsets beyond its term: etcd on a
// control-plane node (EtcdStore), memory in unit tests.
//
// Contract: Submit never blocks and never calls done itself (the coordinator calls it
// with its lock held, and done takes that lock): done runs later, on another
// goroutine. Requests complete in the order they were submitted, and each is applied
// whole or not at all — ops of one request in one transaction. After Close, Submit
// fails every request with ErrNotActive, and so does Close for those still queued.
type Store interface {
	Loader
	Submit(ops []Op, done func(error))
	Close()
}

// groupRecord is a group's persisted state: what a new controller needs to carry on
// with the current generation (members heartbeat on, stale generations stay fenced).
type groupRecord struct {
	Generation   int32          `json:"generation"`
	ProtocolType string         `json:"protocolType,omitempty"`
	Protocol     string         `json:"protocol,omitempty"`
	Leader       string         `json:"leader,omitempty"`
	StateMs      int64          `json:"stateMs"` // when the group entered its state (for expiry)
	Members      []memberRecord `json:"members,omitempty"`
}

type memberRecord struct {
	ID               string  `json:"id"`
	InstanceID       *string `json:"instanceId,omitempty"`
	ClientID         string  `json:"clientId"`
	ClientHost       string  `json:"clientHost"`
	SessionTimeoutMs int32   `json:"sessionTimeoutMs"`
	RebalanceTimeout int32   `json:"rebalanceTimeoutMs"`
	// Metadata is the member's metadata for the selected protocol (dropped if the
	// record would be too large: it is only shown by DescribeGroups).
	Metadata   []byte `json:"metadata,omitempty"`
	Assignment []byte `json:"assignment,omitempty"`
}

// offsetRecord is one committed offset.
type offsetRecord struct {
	Offset      int64  `json:"offset"`
	LeaderEpoch int32  `json:"leaderEpoch"`
	Metadata    string `json:"metadata,omitempty"`
	CommitMs    int64  `json:"commitMs"`
	// ExpireMs is when the offset expires if its commit named a retention (OffsetCommit
	// v2-v4); 0 otherwise (it expires with the broker's retention).
	ExpireMs int64 `json:"expireMs,omitempty"`
}

// loadedGroups is what a new coordinator reads back.
type loadedGroups struct {
	groups  map[string]*groupRecord
	offsets map[string]map[topicPartition]offsetRecord
	// txnOffsets are the offsets of transactions not ended, by group and producer id.
	txnOffsets map[string]map[int64]map[topicPartition]offsetRecord
}

// loadGroups reads every group and committed offset.
func loadGroups(ctx context.Context, st Loader) (*loadedGroups, error) {
	out := &loadedGroups{groups: map[string]*groupRecord{}, offsets: map[string]map[topicPartition]offsetRecord{},
		txnOffsets: map[string]map[int64]map[topicPartition]offsetRecord{}}
	kvs, err := st.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("load groups: %w", err)
	}
	for _, kv := range kvs {
		switch {
		case strings.HasPrefix(kv.Key, cluster.GroupsPrefix):
			name, err := cluster.ParseGroupKey(kv.Key)
			if err != nil {
				return nil, err
			}
			rec := new(groupRecord)
			if err := json.Unmarshal(kv.Value, rec); err != nil {
				return nil, fmt.Errorf("group %q: %w", name, err)
			}
			out.groups[name] = rec
		case strings.HasPrefix(kv.Key, cluster.OffsetsPrefix):
			group, ctp, err := cluster.ParseOffsetKey(kv.Key)
			if err != nil {
				return nil, err
			}
			var rec offsetRecord
			if err := json.Unmarshal(kv.Value, &rec); err != nil {
				return nil, fmt.Errorf("offset %q: %w", kv.Key, err)
			}
			if out.offsets[group] == nil {
				out.offsets[group] = map[topicPartition]offsetRecord{}
			}
			out.offsets[group][topicPartition{ctp.Topic, ctp.Partition}] = rec
		case strings.HasPrefix(kv.Key, cluster.TxnOffsetsPrefix):
			group, pid, ctp, err := cluster.ParseTxnOffsetKey(kv.Key)
			if err != nil {
				return nil, err
			}
			var rec offsetRecord
			if err := json.Unmarshal(kv.Value, &rec); err != nil {
				return nil, fmt.Errorf("transactional offset %q: %w", kv.Key, err)
			}
			if out.txnOffsets[group] == nil {
				out.txnOffsets[group] = map[int64]map[topicPartition]offsetRecord{}
			}
			if out.txnOffsets[group][pid] == nil {
				out.txnOffsets[group][pid] = map[topicPartition]offsetRecord{}
			}
			out.txnOffsets[group][pid][topicPartition{ctp.Topic, ctp.Partition}] = rec
		}
	}
	return out, nil
}
