package client

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// Topic defaults, used when a CreateTopics request asks for the broker default (-1).
const (
	DefaultPartitions        = 1
	DefaultReplicationFactor = 1
	// adminAttemptsMax bounds the retries of a topic admin transaction that lost a race
	// with a broker joining or leaving (not with another admin: that is a real conflict).
	adminAttemptsMax = 5
)

// TopicSpec is a topic creation request.
type TopicSpec struct {
	Name string
	// Partitions ≥ 1, or -1 for DefaultPartitions.
	Partitions int32
	// ReplicationFactor ≥ 1 and ≤ the live nodes, or -1 for DefaultReplicationFactor.
	ReplicationFactor int16
	// Configs are validated by ValidateConfigs.
	Configs map[string]string
	// ValidateOnly checks the request (including against the live nodes) without creating.
	ValidateOnly bool
}

// CreateTopic validates spec, assigns replicas over the live nodes not being
// decommissioned (assignableBrokers) and creates the
// topic and all its partition states in one transaction. It returns the topic and the
// etcd revision of the creation (WatchMetadata views reach it with WaitRevision).
//
// Refusals: INVALID_TOPIC_EXCEPTION, INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR,
// INVALID_CONFIG, TOPIC_ALREADY_EXISTS (all *Error).
func (c *Client) CreateTopic(ctx context.Context, spec TopicSpec) (cluster.Topic, int64, error) {
	if err := ValidateTopicName(spec.Name); err != nil {
		return cluster.Topic{}, 0, err
	}
	if spec.Partitions == -1 {
		spec.Partitions = DefaultPartitions
	}
	if spec.ReplicationFactor == -1 {
		spec.ReplicationFactor = DefaultReplicationFactor
	}
	if spec.Partitions < 1 || spec.Partitions > cluster.PartitionsPerTopicMax {
		return cluster.Topic{}, 0, errorf(kerr.InvalidPartitions, "%d partitions; must be 1..%d", spec.Partitions, cluster.PartitionsPerTopicMax)
	}
	if spec.ReplicationFactor < 1 || spec.ReplicationFactor > cluster.ReplicationFactorMax {
		return cluster.Topic{}, 0, errorf(kerr.InvalidReplicationFactor, "replication factor %d; must be 1..%d", spec.ReplicationFactor, cluster.ReplicationFactorMax)
	}
	if err := ValidateConfigs(spec.Configs); err != nil {
		return cluster.Topic{}, 0, err
	}
	for attempt := 0; ; attempt++ {
		brokers, notDecommissioned, err := c.assignableBrokers(ctx)
		if err != nil {
			return cluster.Topic{}, 0, fmt.Errorf("client: create topic %s: %w", spec.Name, err)
		}
		if int(spec.ReplicationFactor) > len(brokers) {
			return cluster.Topic{}, 0, errorf(kerr.InvalidReplicationFactor, "replication factor %d is larger than the %d live nodes not being decommissioned", spec.ReplicationFactor, len(brokers))
		}
		t := cluster.Topic{
			Name:              spec.Name,
			ID:                uuid.NewString(),
			Partitions:        spec.Partitions,
			ReplicationFactor: spec.ReplicationFactor,
			Configs:           spec.Configs,
		}
		assignment := AssignReplicas(brokers, int(spec.Partitions), int(spec.ReplicationFactor), 0, rand.IntN(len(brokers)))
		if spec.ValidateOnly {
			return t, 0, nil
		}
		key := cluster.TopicKey(t.Name)
		cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, brokersUnchanged(brokers, assignment)...)
		cmps = append(cmps, notDecommissioned...)
		ops := make([]clientv3.Op, 0, len(assignment)+2)
		ops = append(ops, clientv3.OpPut(key, cluster.MustJSON(t)),
			// A checkpoint left by an earlier topic of this name must not be read as ours.
			clientv3.OpDelete(cluster.TopicHWPrefix(t.Name), clientv3.WithPrefix()))
		for p, replicas := range assignment {
			ops = append(ops, clientv3.OpPut(cluster.PartitionKey(t.Name, int32(p)), cluster.MustJSON(initialState(replicas))))
		}
		resp, err := c.txn(ctx, "create_topic", cmps, ops, clientv3.OpGet(key, clientv3.WithCountOnly()))
		if err != nil {
			return cluster.Topic{}, 0, fmt.Errorf("client: create topic %s: %w", spec.Name, err)
		}
		if resp.Succeeded {
			return t, resp.Header.Revision, nil
		}
		if resp.Responses[0].GetResponseRange().Count > 0 {
			return cluster.Topic{}, 0, errorf(kerr.TopicAlreadyExists, "topic %q already exists", spec.Name)
		}
		if attempt+1 >= adminAttemptsMax {
			return cluster.Topic{}, 0, fmt.Errorf("client: create topic %s: live nodes kept changing over %d attempts", spec.Name, adminAttemptsMax)
		}
	}
}

// initialState is a new partition's state: the preferred leader leads, every replica
// is in sync (there is no data yet), epochs start at zero.
func initialState(replicas []int32) cluster.PartitionState {
	return cluster.PartitionState{
		Replicas: replicas,
		Leader:   replicas[0],
		ISR:      append([]int32(nil), replicas...),
	}
}

// brokersUnchanged compares, in a transaction, that every node used by assignment is
// still registered with the epoch it was read with: a node that left (or re-registered)
// between the read and the write makes the transaction fail, and the caller retries.
func brokersUnchanged(brokers []cluster.Broker, assignment [][]int32) []clientv3.Cmp {
	used := map[int32]bool{}
	for _, r := range assignment {
		for _, id := range r {
			used[id] = true
		}
	}
	var cmps []clientv3.Cmp
	for _, b := range brokers {
		if used[b.ID] {
			cmps = append(cmps, brokerEpochIs(b.ID, b.Epoch))
		}
	}
	return cmps
}

// GetTopic reads one topic (UNKNOWN_TOPIC_OR_PARTITION if absent) and its mod revision.
func (c *Client) GetTopic(ctx context.Context, name string) (cluster.Topic, int64, error) {
	key := cluster.TopicKey(name)
	resp, err := c.get(ctx, "get_topic", key)
	if err != nil {
		return cluster.Topic{}, 0, fmt.Errorf("client: get topic %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return cluster.Topic{}, 0, errorf(kerr.UnknownTopicOrPartition, "topic %q does not exist", name)
	}
	t, err := cluster.DecodeTopic(key, resp.Kvs[0].Value)
	if err != nil {
		return cluster.Topic{}, 0, fmt.Errorf("client: get topic %s: %w", name, err)
	}
	return t, resp.Kvs[0].ModRevision, nil
}

// DeleteTopic deletes a topic, its partition states and its HW checkpoints in one
// transaction (UNKNOWN_TOPIC_OR_PARTITION if absent). Data-plane nodes see the partition
// deletions on their watch and drop the logs.
func (c *Client) DeleteTopic(ctx context.Context, name string) (int64, error) {
	if err := ValidateTopicName(name); err != nil {
		return 0, err
	}
	key := cluster.TopicKey(name)
	resp, err := c.txn(ctx, "delete_topic",
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), ">", 0)},
		[]clientv3.Op{
			clientv3.OpDelete(cluster.TopicPartitionsPrefix(name), clientv3.WithPrefix()),
			clientv3.OpDelete(cluster.TopicHWPrefix(name), clientv3.WithPrefix()),
			clientv3.OpDelete(key),
		})
	if err != nil {
		return 0, fmt.Errorf("client: delete topic %s: %w", name, err)
	}
	if !resp.Succeeded {
		return 0, errorf(kerr.UnknownTopicOrPartition, "topic %q does not exist", name)
	}
	return resp.Header.Revision, nil
}

// CreatePartitions grows a topic to total partitions (Kafka's CreatePartitions), placing
// the new ones over the live nodes not being decommissioned with the topic's
// replication factor. Refusals:
// UNKNOWN_TOPIC_OR_PARTITION, INVALID_PARTITIONS (total not above the current count or
// above the limit), INVALID_REPLICATION_FACTOR (too few live nodes), INVALID_UPDATE_VERSION
// (the topic changed concurrently).
func (c *Client) CreatePartitions(ctx context.Context, name string, total int32) (int64, error) {
	for attempt := 0; ; attempt++ {
		t, modRev, err := c.GetTopic(ctx, name)
		if err != nil {
			return 0, err
		}
		if total <= t.Partitions || total > cluster.PartitionsPerTopicMax {
			return 0, errorf(kerr.InvalidPartitions, "topic %q has %d partitions; new total %d must be above that and at most %d", name, t.Partitions, total, cluster.PartitionsPerTopicMax)
		}
		brokers, notDecommissioned, err := c.assignableBrokers(ctx)
		if err != nil {
			return 0, fmt.Errorf("client: create partitions %s: %w", name, err)
		}
		if int(t.ReplicationFactor) > len(brokers) {
			return 0, errorf(kerr.InvalidReplicationFactor, "replication factor %d is larger than the %d live nodes not being decommissioned", t.ReplicationFactor, len(brokers))
		}
		assignment := AssignReplicas(brokers, int(total-t.Partitions), int(t.ReplicationFactor), t.Partitions, rand.IntN(len(brokers)))
		key := cluster.TopicKey(name)
		old := t.Partitions
		t.Partitions = total
		cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", modRev)}, brokersUnchanged(brokers, assignment)...)
		cmps = append(cmps, notDecommissioned...)
		ops := []clientv3.Op{clientv3.OpPut(key, cluster.MustJSON(t))}
		for i, replicas := range assignment {
			ops = append(ops, clientv3.OpPut(cluster.PartitionKey(name, old+int32(i)), cluster.MustJSON(initialState(replicas))))
		}
		resp, err := c.txn(ctx, "create_partitions", cmps, ops, clientv3.OpGet(key))
		if err != nil {
			return 0, fmt.Errorf("client: create partitions %s: %w", name, err)
		}
		if resp.Succeeded {
			return resp.Header.Revision, nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return 0, errorf(kerr.UnknownTopicOrPartition, "topic %q was deleted", name)
		}
		if kvs[0].ModRevision != modRev {
			return 0, fmt.Errorf("client: create partitions %s: %w", name, ErrConcurrentUpdate)
		}
		if attempt+1 >= adminAttemptsMax {
			return 0, fmt.Errorf("client: create partitions %s: live nodes kept changing over %d attempts", name, adminAttemptsMax)
		}
	}
}

// GetPartition reads one partition's state (UNKNOWN_TOPIC_OR_PARTITION if absent).
func (c *Client) GetPartition(ctx context.Context, tp cluster.TopicPartition) (cluster.PartitionState, error) {
	key := cluster.PartitionKey(tp.Topic, tp.Partition)
	resp, err := c.get(ctx, "get_partition", key)
	if err != nil {
		return cluster.PartitionState{}, fmt.Errorf("client: get partition %s: %w", tp, err)
	}
	if len(resp.Kvs) == 0 {
		return cluster.PartitionState{}, errorf(kerr.UnknownTopicOrPartition, "partition %s does not exist", tp)
	}
	return cluster.DecodePartition(key, resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}
