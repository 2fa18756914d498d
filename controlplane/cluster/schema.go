package cluster

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Key schema. SCHEMA.md in controlplane/ describes every key, its value and its writer;
// keep the two in step.
//
// Everything a data-plane node must watch lives under one prefix, MetaPrefix, so that a
// single etcd watch delivers brokers, topics and partition states as one totally
// ordered stream with one revision. Frequently written keys (high-watermark
// checkpoints, producer-id blocks) live outside it so they do not wake every watcher.
const (
	// RootPrefix is the prefix of every key Gregor writes to etcd.
	RootPrefix = "/gregor/"
	// MetaPrefix is the watched metadata prefix: brokers, topics, partitions.
	MetaPrefix = RootPrefix + "meta/"
	// BrokersPrefix holds one lease-bound key per live data-plane node.
	BrokersPrefix = MetaPrefix + "brokers/"
	// TopicsPrefix holds one key per topic.
	TopicsPrefix = MetaPrefix + "topics/"
	// PartitionsPrefix holds one key per partition: its replicas, leader and ISR.
	PartitionsPrefix = MetaPrefix + "partitions/"
	// ShutdownPrefix holds one key per data-plane node in controlled shutdown, bound to
	// the node's registration lease (ControlledShutdown).
	ShutdownPrefix = MetaPrefix + "shutdown/"
	// DecommissionPrefix holds one key per data-plane node being decommissioned or
	// decommissioned (Decommission): durable, not lease-bound, so the intent outlives
	// the node's registration and a change of controller.
	DecommissionPrefix = MetaPrefix + "decommission/"
	// SessionsPrefix holds one key per data-plane node with an open session, bound to
	// its registration lease: the nonce of the stream that opened it last.
	SessionsPrefix = RootPrefix + "sessions/"
	// HWPrefix holds one high-watermark checkpoint per partition.
	HWPrefix = RootPrefix + "hw/"
	// ProducerIDNextKey holds the first producer id not yet handed out.
	ProducerIDNextKey = RootPrefix + "producer-ids/next"
	// ControllerPrefix is the concurrency.Election prefix of the controller election.
	ControllerPrefix = RootPrefix + "controller/"
	// GroupsPrefix holds one key per consumer group: its generation, members and
	// assignments (GroupsPrefix + url.PathEscape(group)).
	GroupsPrefix = RootPrefix + "groups/"
	// OffsetsPrefix holds one key per committed offset:
	// OffsetsPrefix + url.PathEscape(group) + "/" + topic + "/" + partition.
	OffsetsPrefix = RootPrefix + "offsets/"
)

// Limits shared by the client and the server; the server configures etcd with them.
const (
	// PartitionsPerTopicMax bounds the partitions of one topic: a topic is created in one
	// etcd transaction holding one put per partition.
	PartitionsPerTopicMax = 4096
	// TxnOpsMax is the most operations the server accepts in one transaction (etcd's
	// --max-txn-ops). It must exceed PartitionsPerTopicMax plus the topic's own keys.
	TxnOpsMax = 8192
	// RequestBytesMax is the largest request the server accepts (etcd's
	// --max-request-bytes); a topic of PartitionsPerTopicMax partitions fits in it.
	RequestBytesMax = 4 << 20
	// ReplicationFactorMax bounds the replicas of one partition.
	ReplicationFactorMax = 16
	// TopicNameLenMax is Kafka's limit on topic names.
	TopicNameLenMax = 249
)

// NoLeader is the leader id of an offline partition (Kafka's -1).
const NoLeader int32 = -1

// Broker is a registered data-plane node: the value of BrokersPrefix/<id>.
type Broker struct {
	// ID is the node id, unique among live nodes.
	ID int32 `json:"id"`
	// Host and Port are what clients connect to (the advertised listener).
	Host string `json:"host"`
	Port int32  `json:"port"`
	// Rack is optional; replica assignment spreads replicas over racks when set.
	Rack string `json:"rack,omitempty"`
	// Incarnation identifies the node's storage (Kafka's incarnation id): a process that
	// presents the incarnation of the live registration of its id is a later process of
	// the same node, and Register lets it take that registration over at once instead of
	// waiting for the old lease to expire. Empty: no takeover, for this registration or
	// from it.
	Incarnation string `json:"incarnation,omitempty"`
	// Epoch is the etcd mod revision of the registration key, Kafka's broker epoch: a
	// registration writes the key, creating it or taking it over, and nothing else does,
	// so the epoch changes, and only grows, every time the node registers. Not stored in
	// the value.
	Epoch int64 `json:"-"`
}

// Topic is the value of TopicsPrefix/<name>.
type Topic struct {
	Name string `json:"name"`
	// ID is a random UUID, new each time a topic of this name is created (Kafka's topic id).
	ID string `json:"id"`
	// Partitions is the number of partitions, numbered 0..Partitions-1.
	Partitions int32 `json:"partitions"`
	// ReplicationFactor is the number of replicas each partition was created with.
	ReplicationFactor int16 `json:"replicationFactor"`
	// Configs are the topic's explicitly set configs (see ValidateConfigs).
	Configs map[string]string `json:"configs,omitempty"`
}

// UncleanLeaderElection reports whether the topic allows electing a replica outside the
// ISR when no ISR member is alive (unclean.leader.election.enable, default false).
func (t Topic) UncleanLeaderElection() bool {
	return t.Configs[ConfigUncleanLeaderElection] == "true"
}

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// String returns "topic-partition", Kafka's usual spelling.
func (tp TopicPartition) String() string { return tp.Topic + "-" + strconv.Itoa(int(tp.Partition)) }

// PartitionState is the value of PartitionsPrefix/<topic>/<p>.
//
// Invariants: Leader is NoLeader or a member of ISR; ISR ⊆ Replicas; every write bumps
// PartitionEpoch by one and is a compare-and-swap on the previous value; every leader
// change bumps LeaderEpoch by one. During a reassignment (KIP-455) AddingReplicas and
// RemovingReplicas are disjoint subsets of Replicas, at least one of them not empty;
// otherwise both are empty.
type PartitionState struct {
	Topic     string `json:"-"`
	Partition int32  `json:"-"`
	// Replicas is the assignment; Replicas[0] is the preferred leader. During a
	// reassignment it is the target followed by the original replicas not in the target
	// (Kafka's order): every replica that holds or is getting the data, so that each of
	// them follows the leader and any of them in the ISR can be elected.
	Replicas []int32 `json:"replicas"`
	// AddingReplicas are the replicas a reassignment adds (in the target, not in the
	// original assignment): they follow and catch up, and the reassignment completes
	// once all of them are in the ISR. Empty when no reassignment is in progress.
	AddingReplicas []int32 `json:"addingReplicas,omitempty"`
	// RemovingReplicas are the original replicas a reassignment removes (not in the
	// target): they stay replicas, and in the ISR, until it completes.
	RemovingReplicas []int32 `json:"removingReplicas,omitempty"`
	// Leader is the leading node, or NoLeader while the partition is offline.
	Leader int32 `json:"leader"`
	// LeaderEpoch counts leader changes; followers and fetchers are fenced by it.
	LeaderEpoch int32 `json:"leaderEpoch"`
	// ISR is the in-sync replica set.
	ISR []int32 `json:"isr"`
	// PartitionEpoch counts every change of this value (Kafka's partition epoch).
	PartitionEpoch int32 `json:"partitionEpoch"`
	// ModRevision is the etcd revision of the last write; not stored in the value.
	ModRevision int64 `json:"-"`
}

// TopicPartition returns the partition's name.
func (s PartitionState) TopicPartition() TopicPartition {
	return TopicPartition{Topic: s.Topic, Partition: s.Partition}
}

// Clone returns a deep copy, so that a modified copy never aliases a snapshot's slices.
func (s PartitionState) Clone() PartitionState {
	s.Replicas = append([]int32(nil), s.Replicas...)
	s.ISR = append([]int32(nil), s.ISR...)
	if s.AddingReplicas != nil {
		s.AddingReplicas = append([]int32(nil), s.AddingReplicas...)
	}
	if s.RemovingReplicas != nil {
		s.RemovingReplicas = append([]int32(nil), s.RemovingReplicas...)
	}
	return s
}

// Reassigning reports whether a reassignment of the partition is in progress.
func (s PartitionState) Reassigning() bool {
	return len(s.AddingReplicas) > 0 || len(s.RemovingReplicas) > 0
}

// TargetReplicas is the assignment the partition is moving to: Replicas without
// RemovingReplicas, in order (Replicas itself when no reassignment is in progress).
func (s PartitionState) TargetReplicas() []int32 { return without(s.Replicas, s.RemovingReplicas) }

// OriginalReplicas is the assignment before the reassignment in progress: Replicas
// without AddingReplicas, in order (Replicas itself when none is in progress).
func (s PartitionState) OriginalReplicas() []int32 { return without(s.Replicas, s.AddingReplicas) }

// without returns the members of ids not in drop, in order, in a new slice.
func without(ids, drop []int32) []int32 {
	out := make([]int32, 0, len(ids))
	for _, id := range ids {
		found := false
		for _, d := range drop {
			if d == id {
				found = true
				break
			}
		}
		if !found {
			out = append(out, id)
		}
	}
	return out
}

// HWCheckpoint is the value of HWPrefix/<topic>/<p>: the last high watermark a leader
// reported. It is a recovery hint (a new leader computes its own high watermark from
// the ISR), tagged with the topic id and leader epoch so a reader can discard a
// checkpoint from an earlier incarnation of the topic or an older leader.
type HWCheckpoint struct {
	TopicID       string `json:"topicId"`
	LeaderEpoch   int32  `json:"leaderEpoch"`
	HighWatermark int64  `json:"hw"`
}

// ControlledShutdown is the value of ShutdownPrefix/<id>: the node asks the controller
// to move its leaderships away and to elect it nowhere, before it stops (Kafka's
// controlled shutdown). The key lives under the node's registration lease, so it goes
// with the registration; Epoch is the broker epoch of the registration that wrote it,
// and a value of another epoch (an earlier process of the node) means nothing.
//
// It is a key of its own, not a field of the registration value: the registration
// key's mod revision is the broker epoch, which every write of the node compares, and
// rewriting that key would change the epoch.
type ControlledShutdown struct {
	Epoch int64 `json:"epoch"`
}

// Decommission states (Decommission.State).
const (
	// DecommissionDraining: the controller moves every replica off the node.
	DecommissionDraining = "draining"
	// DecommissionDone: the node holds no replica any more.
	DecommissionDone = "decommissioned"
)

// Decommission is the value of DecommissionPrefix/<id>: an operator asked that node id
// be emptied (its replicas moved to other nodes by reassignments) and never be given a
// replica again until it is recommissioned (the key deleted). Topic creation and
// partition creation leave the node out from the moment the key exists.
type Decommission struct {
	// State is DecommissionDraining until the controller sees the node hold no replica,
	// then DecommissionDone.
	State string `json:"state"`
	// RequestedMs is when the decommission was asked for (Unix milliseconds), and
	// CompletedMs when the node was seen empty (0 while draining).
	RequestedMs int64 `json:"requestedMs"`
	CompletedMs int64 `json:"completedMs,omitempty"`
	// ModRevision is the etcd revision of the last write; not stored in the value.
	ModRevision int64 `json:"-"`
}

// DecommissionKey returns the decommission key of node id.
func DecommissionKey(id int32) string { return DecommissionPrefix + strconv.Itoa(int(id)) }

// DecodeDecommission decodes a decommission key and value: the node id and the value,
// with modRev as its ModRevision.
func DecodeDecommission(key string, value []byte, modRev int64) (int32, Decommission, error) {
	var v Decommission
	id, err := ParseDecommissionKey(key)
	if err != nil {
		return 0, v, err
	}
	if err := json.Unmarshal(value, &v); err != nil {
		return 0, v, fmt.Errorf("decode decommission %s: %w", key, err)
	}
	v.ModRevision = modRev
	return id, v, nil
}

// ParseDecommissionKey returns the node id in a DecommissionPrefix key.
func ParseDecommissionKey(key string) (int32, error) {
	id, err := strconv.ParseInt(strings.TrimPrefix(key, DecommissionPrefix), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("decommission key %q: %w", key, err)
	}
	return int32(id), nil
}

// BrokerKey returns the registration key of node id.
func BrokerKey(id int32) string { return BrokersPrefix + strconv.Itoa(int(id)) }

// SessionKey returns the session key of node id.
func SessionKey(id int32) string { return SessionsPrefix + strconv.Itoa(int(id)) }

// TopicKey returns the key of topic name.
func TopicKey(name string) string { return TopicsPrefix + name }

// TopicPartitionsPrefix returns the prefix of all partition keys of topic name.
func TopicPartitionsPrefix(name string) string { return PartitionsPrefix + name + "/" }

// PartitionKey returns the key of one partition's state.
func PartitionKey(topic string, p int32) string {
	return TopicPartitionsPrefix(topic) + strconv.Itoa(int(p))
}

// TopicHWPrefix returns the prefix of all HW checkpoints of topic name.
func TopicHWPrefix(name string) string { return HWPrefix + name + "/" }

// HWKey returns the HW checkpoint key of one partition.
func HWKey(topic string, p int32) string { return TopicHWPrefix(topic) + strconv.Itoa(int(p)) }

// ShutdownKey returns the controlled-shutdown key of node id.
func ShutdownKey(id int32) string { return ShutdownPrefix + strconv.Itoa(int(id)) }

// ParseBrokerKey returns the node id in a BrokersPrefix key.
func ParseBrokerKey(key string) (int32, error) {
	id, err := strconv.ParseInt(strings.TrimPrefix(key, BrokersPrefix), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("broker key %q: %w", key, err)
	}
	return int32(id), nil
}

// ParseShutdownKey returns the node id in a ShutdownPrefix key.
func ParseShutdownKey(key string) (int32, error) {
	id, err := strconv.ParseInt(strings.TrimPrefix(key, ShutdownPrefix), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("shutdown key %q: %w", key, err)
	}
	return int32(id), nil
}

// DecodeControlledShutdown decodes a controlled-shutdown key and value: the node id
// and the value.
func DecodeControlledShutdown(key string, value []byte) (int32, ControlledShutdown, error) {
	var v ControlledShutdown
	id, err := ParseShutdownKey(key)
	if err != nil {
		return 0, v, err
	}
	if err := json.Unmarshal(value, &v); err != nil {
		return 0, v, fmt.Errorf("decode shutdown %s: %w", key, err)
	}
	return id, v, nil
}

// ParsePartitionKey returns the topic and partition in a PartitionsPrefix key.
func ParsePartitionKey(key string) (TopicPartition, error) {
	rest := strings.TrimPrefix(key, PartitionsPrefix)
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 {
		return TopicPartition{}, fmt.Errorf("partition key %q: no partition", key)
	}
	p, err := strconv.ParseInt(rest[i+1:], 10, 32)
	if err != nil {
		return TopicPartition{}, fmt.Errorf("partition key %q: %w", key, err)
	}
	return TopicPartition{Topic: rest[:i], Partition: int32(p)}, nil
}

// DecodeBroker decodes a registration; modRev is the key's mod revision, the epoch.
func DecodeBroker(key string, value []byte, modRev int64) (Broker, error) {
	var b Broker
	if err := json.Unmarshal(value, &b); err != nil {
		return b, fmt.Errorf("decode broker %s: %w", key, err)
	}
	id, err := ParseBrokerKey(key)
	if err != nil {
		return b, err
	}
	if id != b.ID {
		return b, fmt.Errorf("decode broker %s: value has id %d", key, b.ID)
	}
	b.Epoch = modRev
	return b, nil
}

// DecodeTopic decodes a topic; the key must name the topic the value names.
func DecodeTopic(key string, value []byte) (Topic, error) {
	var t Topic
	if err := json.Unmarshal(value, &t); err != nil {
		return t, fmt.Errorf("decode topic %s: %w", key, err)
	}
	if name := strings.TrimPrefix(key, TopicsPrefix); name != t.Name {
		return t, fmt.Errorf("decode topic %s: value has name %q", key, t.Name)
	}
	return t, nil
}

// DecodePartition decodes a partition state; the key gives its topic and partition and
// modRev its ModRevision.
func DecodePartition(key string, value []byte, modRev int64) (PartitionState, error) {
	var s PartitionState
	tp, err := ParsePartitionKey(key)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(value, &s); err != nil {
		return s, fmt.Errorf("decode partition %s: %w", key, err)
	}
	s.Topic, s.Partition, s.ModRevision = tp.Topic, tp.Partition, modRev
	return s, nil
}

// MustJSON encodes a value of this schema (or any other value that cannot fail to
// encode: no channels, functions or cyclic pointers); a failure is a programmer error and
// panics.
func MustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("cluster: encode %T: %v", v, err))
	}
	return string(b)
}
