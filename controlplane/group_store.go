package controlplane

// Group state in etcd (keys in client/schema.go, described in SCHEMA.md):
//
//   - GroupsPrefix/<group>: groupRecord, written when a generation becomes Stable, when
//     the group empties, when a static member is replaced; deleted with the group;
//   - OffsetsPrefix/<group>/<topic>/<partition>: offsetRecord, one per committed offset.
//
// Every write goes through one groupStore: a single writer that takes whatever has
// queued since its last transaction and commits it in one etcd transaction (many
// OffsetCommits arriving together cost one round), fenced on the controller's election
// key, so a deposed controller cannot write. Writes complete in the order they were
// queued.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane/client"
)

// Store limits.
const (
	// storeBatchOpsMax and storeBatchBytesMax bound one transaction of the store, well
	// inside etcd's bounds (client.TxnOpsMax, client.RequestBytesMax).
	storeBatchOpsMax   = 1024
	storeBatchBytesMax = 2 << 20
	// groupRecordMax bounds one group's record; a bigger generation is refused.
	groupRecordMax = 3 << 20
	// storeWriteTimeout bounds one transaction.
	storeWriteTimeout = 10 * time.Second
)

// errNotActive: this node is not (any more) the active controller.
var errNotActive = errors.New("controlplane: not the active group coordinator")

// groupKey, offsetKey and offsetsPrefix name a group's keys; group ids may hold any
// character, so they are path-escaped. Topic names cannot hold '/'.
func groupKey(group string) string { return client.GroupsPrefix + url.PathEscape(group) }

func offsetsPrefix(group string) string {
	return client.OffsetsPrefix + url.PathEscape(group) + "/"
}

func offsetKey(group string, tp topicPartition) string {
	return offsetsPrefix(group) + tp.topic + "/" + strconv.Itoa(int(tp.partition))
}

// parseOffsetKey splits an offset key.
func parseOffsetKey(key string) (group string, tp topicPartition, err error) {
	rest, ok := strings.CutPrefix(key, client.OffsetsPrefix)
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 3 {
		return "", tp, fmt.Errorf("offset key %q: bad shape", key)
	}
	if group, err = url.PathUnescape(parts[0]); err != nil {
		return "", tp, fmt.Errorf("offset key %q: %w", key, err)
	}
	p, err := strconv.ParseInt(parts[2], 10, 32)
	if err != nil {
		return "", tp, fmt.Errorf("offset key %q: %w", key, err)
	}
	return group, topicPartition{parts[1], int32(p)}, nil
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

// storeOp is one queued write: a put (value set), a delete, or a prefix delete.
type storeOp struct {
	key    string
	value  string
	del    bool
	prefix bool
}

// storeReq is a group of ops committed together (in one transaction) and told once.
type storeReq struct {
	ops  []storeOp
	done func(error)
}

// groupStore is the single writer of group keys for one term of controllership.
type groupStore struct {
	cli   *client.Client
	key   string // the election key
	rev   int64  // its create revision
	mu    sync.Mutex
	queue []storeReq
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
	// batches and batchedOps count transactions and the ops in them (metrics).
	observe func(ops int, d time.Duration)
}

func newGroupStore(cli *client.Client, electionKey string, electionRev int64, observe func(int, time.Duration)) *groupStore {
	st := &groupStore{cli: cli, key: electionKey, rev: electionRev, wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), observe: observe}
	go st.run()
	return st
}

// submit queues ops; done is called from the writer goroutine once they are committed
// (nil) or not (errNotActive after losing controllership, or the etcd error).
func (st *groupStore) submit(ops []storeOp, done func(error)) {
	st.mu.Lock()
	if st.stopped() {
		st.mu.Unlock()
		// Not here: the caller may hold the runtime's lock, which done takes.
		go done(errNotActive)
		return
	}
	st.queue = append(st.queue, storeReq{ops: ops, done: done})
	st.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

func (st *groupStore) stopped() bool {
	select {
	case <-st.stop:
		return true
	default:
		return false
	}
}

// close stops the writer; queued writes fail with errNotActive.
func (st *groupStore) close() {
	close(st.stop)
	<-st.done
}

func (st *groupStore) run() {
	defer close(st.done)
	for {
		select {
		case <-st.stop:
			st.mu.Lock()
			q := st.queue
			st.queue = nil
			st.mu.Unlock()
			for _, r := range q {
				r.done(errNotActive)
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
func (st *groupStore) take() []storeReq {
	st.mu.Lock()
	defer st.mu.Unlock()
	var (
		n, ops, bytes int
		keys          = map[string]bool{}
		prefixes      []string
	)
	overlaps := func(o storeOp) bool {
		if keys[o.key] {
			return true
		}
		for _, p := range prefixes {
			if strings.HasPrefix(o.key, p) {
				return true
			}
		}
		if o.prefix {
			for k := range keys {
				if strings.HasPrefix(k, o.key) {
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
			size += len(o.key) + len(o.value)
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
			keys[o.key] = true
			if o.prefix {
				prefixes = append(prefixes, o.key)
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
func (st *groupStore) commit(batch []storeReq) error {
	var ops []clientv3.Op
	for _, r := range batch {
		for _, o := range r.ops {
			switch {
			case o.prefix:
				ops = append(ops, clientv3.OpDelete(o.key, clientv3.WithPrefix()))
			case o.del:
				ops = append(ops, clientv3.OpDelete(o.key))
			default:
				ops = append(ops, clientv3.OpPut(o.key, o.value))
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
	resp, err := st.cli.Txn(ctx, "group_store",
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(st.key), "=", st.rev)}, ops)
	if st.observe != nil {
		st.observe(len(ops), time.Since(start))
	}
	if err != nil {
		if st.stopped() {
			return errNotActive
		}
		return err
	}
	if !resp.Succeeded {
		return errNotActive
	}
	return nil
}

// loadedGroups is what a new controller reads back.
type loadedGroups struct {
	groups  map[string]*groupRecord
	offsets map[string]map[topicPartition]offsetRecord
}

// loadGroups reads every group and committed offset.
func loadGroups(ctx context.Context, ec *clientv3.Client) (*loadedGroups, error) {
	out := &loadedGroups{groups: map[string]*groupRecord{}, offsets: map[string]map[topicPartition]offsetRecord{}}
	resp, err := ec.Get(ctx, client.GroupsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("load groups: %w", err)
	}
	for _, kv := range resp.Kvs {
		name, err := url.PathUnescape(strings.TrimPrefix(string(kv.Key), client.GroupsPrefix))
		if err != nil {
			return nil, fmt.Errorf("group key %q: %w", kv.Key, err)
		}
		rec := new(groupRecord)
		if err := json.Unmarshal(kv.Value, rec); err != nil {
			return nil, fmt.Errorf("group %q: %w", name, err)
		}
		out.groups[name] = rec
	}
	// Offsets are read at the groups' revision, so the two are one consistent view.
	resp, err = ec.Get(ctx, client.OffsetsPrefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision))
	if err != nil {
		return nil, fmt.Errorf("load offsets: %w", err)
	}
	for _, kv := range resp.Kvs {
		group, tp, err := parseOffsetKey(string(kv.Key))
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
		out.offsets[group][tp] = rec
	}
	return out, nil
}
