package dataplane

import (
	"context"
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/replica"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/twmb/franz-go/pkg/kerr"
)

// ControlPlane is what a data-plane node needs from the control plane. cmd/dp wires
// controlplane/client behind it. Snapshot is a memory read (the view is kept current by
// an etcd watch); every other method is a control-plane operation, never called on the
// produce or fetch path, and always from a goroutine of its own, never an event loop.
type ControlPlane interface {
	// Snapshot is the current metadata view.
	Snapshot() *client.Snapshot
	// WaitRevision waits until the view includes etcd revision rev.
	WaitRevision(ctx context.Context, rev int64) (*client.Snapshot, error)
	CreateTopic(ctx context.Context, spec client.TopicSpec) (cluster.Topic, int64, error)
	DeleteTopic(ctx context.Context, name string) (int64, error)
	CreatePartitions(ctx context.Context, name string, total int32) (int64, error)
	// AlterTopicConfigs changes a topic's configs by a compare-and-swap
	// (controlplane/client's Client.AlterTopicConfigs) and returns the etcd revision of
	// the change (0: none made).
	AlterTopicConfigs(ctx context.Context, name string, validateOnly bool, alter func(configs map[string]string) (map[string]string, error)) (int64, error)
	AllocateProducerIDs(ctx context.Context) (client.ProducerIDBlock, error)
	// AlterISR changes the ISR of a partition this node leads, as a compare-and-swap on
	// the epochs of the state it decided from (controlplane/client's
	// Registration.AlterISR).
	AlterISR(ctx context.Context, req client.AlterISRRequest) (cluster.PartitionState, error)
	// ForwardGroupRequest sends a Kafka group request (header and body as the client
	// sent it) to the active group coordinator, after the requests before it in its
	// client connection's order (place, from client.GroupOrder.Next; nil: no order), and
	// returns the response body, encoded at the request's version. It blocks until
	// answered (a JoinGroup may wait for a whole rebalance), so it is called from a
	// goroutine. client.ErrGroupBadRequest means the request was malformed: close the
	// connection. Other errors mean no answer: reply with a retriable coordinator error.
	ForwardGroupRequest(ctx context.Context, place *client.GroupPlace, clientHost string, request []byte) ([]byte, error)
}

// adminTimeout bounds a control-plane operation made for a client request when the
// request gives no timeout of its own.
const adminTimeout = 30 * time.Second

// Reconcile brings this node's replicas in line with a metadata snapshot: it leads the
// partitions whose state names it leader (opening or creating their logs), follows the
// others assigned to it (opening or creating their logs, and fetching from their
// leaders: fetcher.go), and deletes the replicas of topics that no longer exist and those
// of partitions reassigned away from it. cmd/dp calls it for every snapshot the watch delivers; it
// is idempotent. Calls are serialised and a snapshot older than one already applied is
// ignored, so a slow reconcile of an old view cannot reopen the log of a topic a newer
// view deleted. With Config.BrokerEpoch set, a
// leadership is taken only from a state written for this process's registration.
func (s *Server) Reconcile(snap *client.Snapshot) error {
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()
	if cur := s.cluster.Load(); cur != nil && snap.Revision < cur.Revision {
		return nil
	}
	// mine reports whether a state naming this node leader was written for this process.
	mine := func(cluster.PartitionState) bool { return true }
	if epoch := s.cfg.BrokerEpoch; epoch != 0 {
		me, ok := snap.Brokers[s.cfg.NodeID]
		ours := ok && me.Epoch == epoch // else another process of this node took over
		mine = func(st cluster.PartitionState) bool { return ours && st.ModRevision > epoch }
	}
	var errs []error
	var follow []followTarget
	for tp, st := range snap.Partitions {
		if !contains(st.Replicas, s.cfg.NodeID) {
			continue
		}
		topic, ok := snap.Topics[tp.Topic]
		if !ok {
			continue
		}
		minISR := 1
		if v, err := strconv.Atoi(topic.Configs[cluster.ConfigMinInsyncReplicas]); err == nil {
			minISR = v
		}
		rst := replica.PartitionState{
			LeaderAndIsr: replica.LeaderAndIsr{Leader: st.Leader, LeaderEpoch: st.LeaderEpoch, ISR: st.ISR,
				PartitionEpoch: st.PartitionEpoch},
			Replicas:          st.Replicas,
			MinInsyncReplicas: minISR,
			TopicID:           topic.ID,
		}
		key := tpKey{tp.Topic, tp.Partition}
		switch {
		case st.Leader == s.cfg.NodeID && mine(st):
			// No fetcher appends to a log this node leads.
			s.fetchers.remove(key)
			rst.BrokerEpochs = brokerEpochs(snap, st.Replicas)
			// The log's settings come from this snapshot's topic, not from the view
			// last reconciled: that one lacks a topic created since, and the log
			// would open with the defaults.
			if err := s.becomeLeader(topic, tp.Partition, rst); err != nil {
				errs = append(errs, err)
			}
		case st.Leader == s.cfg.NodeID:
			// Another process of this node leads: refuse produce and fetch.
			s.fetchers.remove(key)
			if p := s.replicas.Partition(tp.Topic, tp.Partition); p != nil {
				p.Resign()
			}
		default:
			// Follow: open the replica and fetch from the leader, if it has one and it
			// is registered.
			p, err := s.replicas.Follow(tp.Topic, tp.Partition, rst, topic.Configs,
				func() segment.Config { return s.logConfig(topic) })
			if err != nil {
				errs = append(errs, err)
			}
			if b, ok := snap.Brokers[st.Leader]; ok && p != nil {
				id, _ := uuid.Parse(topic.ID) // zero if not a UUID: fetched by name
				follow = append(follow, followTarget{tpKey: key, topicID: id, p: p, leader: st.Leader,
					addr: brokerAddr(b.Host, b.Port), epoch: st.LeaderEpoch})
			}
		}
	}
	s.fetchers.set(follow)
	local, err := s.replicas.ReplicasOnDisk()
	if err != nil {
		errs = append(errs, err)
	}
	for topic, parts := range local {
		if _, ok := snap.Topics[topic]; !ok {
			if err := s.replicas.DeleteTopic(topic); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		// A replica the partition's state no longer names was reassigned away: its
		// fetcher is gone (set above), and its log goes, as Kafka's StopReplica with
		// deletion does.
		for _, p := range parts {
			if st, ok := snap.Partitions[cluster.TopicPartition{Topic: topic, Partition: p}]; ok && !contains(st.Replicas, s.cfg.NodeID) {
				s.logger.Info("replica reassigned away: deleting it", "topic", topic, "partition", p, "replicas", st.Replicas)
				if err := s.replicas.DeletePartition(topic, p); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	s.cluster.Store(snap)
	return errors.Join(errs...)
}

// brokerEpochs are the broker epochs of replicas in snap, in their order
// (replica.PartitionState.BrokerEpochs): a leader adds a follower to the ISR only on
// fetches made under its registration in the view (KIP-903).
//
// A replica in controlled shutdown counts as not registered: it is stopping, and the
// control plane refuses to add it to an ISR (KIP-841), so proposing it would only hold
// back the rest of the change.
func brokerEpochs(snap *client.Snapshot, replicas []int32) []int64 {
	epochs := make([]int64, len(replicas))
	for i, id := range replicas {
		epochs[i] = replica.BrokerNotRegistered
		if b, ok := snap.Brokers[id]; ok && !snap.InControlledShutdown(id) {
			epochs[i] = b.Epoch
		}
	}
	return epochs
}

// logConfig gives the storage settings of topic's logs: Config.LogConfig's if set, else
// the topic's configs over the storage engine's defaults.
func (s *Server) logConfig(topic cluster.Topic) segment.Config {
	if s.cfg.LogConfig != nil {
		return s.cfg.LogConfig(topic.Name)
	}
	return TopicLogConfig(topic, segment.Config{Logger: s.logger})
}

// snapshot is the metadata view last reconciled; before the first reconcile, the
// control plane's current view. The listener opens before the node's first reconcile
// (which opens its logs), and a Metadata request answered from an empty view in that
// window tells clients every topic is gone: librdkafka then fails its queued messages
// with "unknown topic". Requests for a partition not yet opened are refused as
// retriable instead.
func (s *Server) snapshot() *client.Snapshot {
	if snap := s.cluster.Load(); snap != nil {
		return snap
	}
	if s.cp != nil {
		if snap := s.cp.Snapshot(); snap != nil {
			return snap
		}
	}
	return &client.Snapshot{}
}

func contains(ids []int32, id int32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// TopicLogConfig turns a topic's configs into its logs' storage settings; values were
// validated by the control plane when set. Where a Kafka value has no direct counterpart
// in segment.Config (whose zero fields mean "default"), it is mapped to one that behaves
// the same.
func TopicLogConfig(topic cluster.Topic, base segment.Config) segment.Config {
	cfg := base
	num := func(key string) (int64, bool) {
		v, err := strconv.ParseInt(topic.Configs[key], 10, 64)
		return v, err == nil
	}
	if v, ok := num(cluster.ConfigRetentionMs); ok {
		switch {
		case v < 0:
			cfg.RetentionAge = -1
		case v == 0:
			// retention.ms=0 deletes every segment whose newest record is older than
			// now; an age of 1ns, 0 whole milliseconds, does exactly that.
			cfg.RetentionAge = time.Nanosecond
		default:
			cfg.RetentionAge = millis(v)
		}
	}
	if v, ok := num(cluster.ConfigRetentionBytes); ok {
		cfg.RetentionBytes = v
	}
	if v, ok := num(cluster.ConfigSegmentBytes); ok {
		cfg.SegmentBytes = v
	}
	if v, ok := num(cluster.ConfigSegmentMs); ok {
		cfg.SegmentAge = millis(v)
	}
	if v, ok := num(cluster.ConfigMaxMessageBytes); ok {
		// Every batch is larger than 0 bytes, so max.message.bytes=0 refuses all of
		// them, as a limit of 1 byte does; 0 would mean the default here.
		cfg.MaxBatchBytes = int(max(v, 1))
	}
	if topic.Configs[cluster.ConfigMessageTimestampType] == "LogAppendTime" {
		cfg.TimestampType = segment.LogAppendTime
	}
	// flush.messages and flush.ms: Long.MAX_VALUE (the default) never flushes. A flush
	// every message, or whenever anything is unflushed (flush.ms=0), is an fdatasync
	// before each append is acknowledged: FlushPolicy.Sync, whose concurrent appends
	// share one sync.
	if v, ok := num(cluster.ConfigFlushMessages); ok && v < math.MaxInt64 {
		if v <= 1 {
			cfg.Flush.Sync = true
		} else {
			cfg.Flush.Messages = v
		}
	}
	if v, ok := num(cluster.ConfigFlushMs); ok && v < math.MaxInt64 {
		if v <= 0 {
			cfg.Flush.Sync = true
		} else {
			cfg.Flush.Interval = millis(v)
		}
	}
	return cfg
}

// millis converts a config's milliseconds to a duration, saturating: Kafka users set
// segment.ms or retention.ms to Long.MAX_VALUE to mean "never", which would overflow.
func millis(ms int64) time.Duration {
	if ms > math.MaxInt64/int64(time.Millisecond) {
		return math.MaxInt64
	}
	return time.Duration(ms) * time.Millisecond
}

// errorCode maps a control-plane error to the Kafka code a client gets: the code it
// carries, or REQUEST_TIMED_OUT for an unavailable or slow control plane (retriable).
func errorCode(err error) int16 {
	if err == nil {
		return 0
	}
	if code, ok := client.KafkaCode(err); ok {
		return code
	}
	return kerr.RequestTimedOut.Code
}

// errorMessage is the message a v1+ admin response carries for err (nil for none).
func errorMessage(err error) *string {
	if err == nil {
		return nil
	}
	m := err.Error()
	return &m
}
