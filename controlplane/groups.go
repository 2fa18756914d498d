package controlplane

// Group coordination. The active controller runs every consumer group: data-plane
// nodes forward the Kafka group requests they receive to its internal listener
// (Config.Listen; protocol in controlplane/client/groups.go, served by
// group_server.go). The rules are package groups'; the node gives each term of
// controllership a coordinator with an etcd store fenced on the election, publishes
// its listener once the groups are loaded, and shows the groups over HTTP. Only the
// active controller answers; any other node answers "not active" and the data-plane
// node looks the coordinator up again.

import (
	"context"
	"encoding/json"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/controller"
	"github.com/gregor-streaming/gregor/controlplane/groups"
)

// GroupConfig holds the group coordinator's settings (Kafka's group.* and offsets.*
// broker configs); see groups.Config.
type GroupConfig = groups.Config

// Defaults of GroupConfig.
const (
	DefaultGroupMinSessionTimeout = groups.DefaultMinSessionTimeout
	DefaultGroupMaxSessionTimeout = groups.DefaultMaxSessionTimeout
	DefaultOffsetsRetention       = groups.DefaultOffsetsRetention
	DefaultOffsetMetadataMaxBytes = groups.DefaultOffsetMetadataMaxBytes
	DefaultInitialRebalanceDelay  = groups.DefaultInitialRebalanceDelay
)

// GroupView, GroupMemberView and GroupOffsetView are how /v1/cluster shows a group;
// see groups.View.
type (
	GroupView       = groups.View
	GroupMemberView = groups.MemberView
	GroupOffsetView = groups.OffsetView
)

// Limits.
const (
	// hwCacheTTL is how long the HW checkpoints read for lag are reused.
	hwCacheTTL = time.Second
	// coordinatorPublishRetryMax bounds the wait between attempts to publish the
	// internal listener.
	coordinatorPublishRetryMax = 2 * time.Second
)

// runGroups is the coordinator for the term of controllership held by e: its writes
// are fenced on e's key; once it has loaded the groups, this node's internal listener
// is published (under the controller session's lease, so it goes with the session).
// It returns when ctx ends, the coordinator stopped.
func (s *Server) runGroups(ctx context.Context, term controller.Term) {
	sess, e := term.Session, term.Election
	txn := func(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) (*clientv3.TxnResponse, error) {
		return s.cli.Txn(ctx, "group_store", cmps, ops)
	}
	fence := clientv3.Compare(clientv3.CreateRevision(e.Key()), "=", e.Rev())
	co := groups.New(groups.Options{
		Config:     s.cfg.Groups,
		Store:      groups.NewEtcdStore(s.ec, txn, fence, s.groupMetrics.ObserveStore),
		Partitions: s.partitions,
		Logger:     s.logger,
		Metrics:    s.groupMetrics,
		VerifyTxn:  s.verifyTxn,
	})
	s.groupRT.Store(co)
	defer s.groupRT.CompareAndSwap(co, nil)
	co.Run(ctx, func(ctx context.Context) {
		if s.listener == nil {
			return
		}
		backoff := 50 * time.Millisecond
		for ctx.Err() == nil {
			err := s.cli.PutGroupCoordinator(ctx, e.Key(), e.Rev(), sess.Lease(),
				cluster.GroupCoordinator{Name: s.cfg.Name, Addr: s.listener.Addr().String()})
			if err == nil {
				return
			}
			s.logger.Warn("publishing the group coordinator failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, coordinatorPublishRetryMax)
		}
	})
}

// partitions is the coordinator's view of which partitions exist (groups.Options).
func (s *Server) partitions(topic string) (int32, bool) {
	snap := s.snapshot()
	if snap == nil {
		return 0, false
	}
	t, ok := snap.Topics[topic]
	return t.Partitions, ok
}

// highWatermarks reads the leaders' HW checkpoints (cached for hwCacheTTL), keeping
// only those of the topics' current incarnation.
func (s *Server) highWatermarks(ctx context.Context) groups.HighWatermarks {
	s.hwMu.Lock()
	defer s.hwMu.Unlock()
	if time.Since(s.hwAt) >= hwCacheTTL || s.hwCache == nil {
		out := map[cluster.TopicPartition]int64{}
		snap := s.snapshot()
		resp, err := s.ec.Get(ctx, cluster.HWPrefix, clientv3.WithPrefix())
		if err == nil && snap != nil {
			for _, kv := range resp.Kvs {
				tp, ok := cluster.ParseHWKey(string(kv.Key))
				if !ok {
					continue
				}
				var cp cluster.HWCheckpoint
				if json.Unmarshal(kv.Value, &cp) != nil {
					continue
				}
				if t, ok := snap.Topics[tp.Topic]; ok && t.ID == cp.TopicID {
					out[tp] = cp.HighWatermark
				}
			}
		}
		s.hwCache, s.hwAt = out, time.Now()
	}
	hws := s.hwCache
	return func(topic string, partition int32) (int64, bool) {
		hw, ok := hws[cluster.TopicPartition{Topic: topic, Partition: partition}]
		return hw, ok
	}
}

// groupViewsFromStore describes groups from etcd, for a node that is not the active
// coordinator: the last persisted generation, members and offsets.
func (s *Server) groupViewsFromStore(ctx context.Context, hw groups.HighWatermarks) ([]GroupView, error) {
	return groups.LoadViews(ctx, etcdLoader{s.ec}, hw)
}

// etcdLoader reads the groups from etcd unfenced (groups.LoadEtcd).
type etcdLoader struct{ kv clientv3.KV }

func (l etcdLoader) Load(ctx context.Context) ([]groups.KV, error) { return groups.LoadEtcd(ctx, l.kv) }
