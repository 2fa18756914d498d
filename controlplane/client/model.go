package client

import "github.com/gregor-streaming/gregor/controlplane/cluster"

// The cluster model and its key schema live in controlplane/cluster, shared with the
// control-plane node. These aliases are the same types and constants under the names
// the client's callers have always used, so that moving the model did not change them.

type (
	// Broker is cluster.Broker: a registered data-plane node.
	Broker = cluster.Broker
	// Topic is cluster.Topic.
	Topic = cluster.Topic
	// TopicPartition is cluster.TopicPartition.
	TopicPartition = cluster.TopicPartition
	// PartitionState is cluster.PartitionState.
	PartitionState = cluster.PartitionState
	// HWCheckpoint is cluster.HWCheckpoint.
	HWCheckpoint = cluster.HWCheckpoint
	// GroupCoordinator is cluster.GroupCoordinator.
	GroupCoordinator = cluster.GroupCoordinator
)

// Keys and prefixes: see cluster.
const (
	RootPrefix          = cluster.RootPrefix
	MetaPrefix          = cluster.MetaPrefix
	BrokersPrefix       = cluster.BrokersPrefix
	TopicsPrefix        = cluster.TopicsPrefix
	PartitionsPrefix    = cluster.PartitionsPrefix
	HWPrefix            = cluster.HWPrefix
	ProducerIDNextKey   = cluster.ProducerIDNextKey
	ControllerPrefix    = cluster.ControllerPrefix
	GroupsPrefix        = cluster.GroupsPrefix
	OffsetsPrefix       = cluster.OffsetsPrefix
	GroupCoordinatorKey = cluster.GroupCoordinatorKey
)

// Limits: see cluster.
const (
	PartitionsPerTopicMax = cluster.PartitionsPerTopicMax
	TxnOpsMax             = cluster.TxnOpsMax
	RequestBytesMax       = cluster.RequestBytesMax
	ReplicationFactorMax  = cluster.ReplicationFactorMax
	TopicNameLenMax       = cluster.TopicNameLenMax
)

// NoLeader is cluster.NoLeader, the leader id of an offline partition.
const NoLeader = cluster.NoLeader

// Topic configs: see cluster.
const (
	ConfigRetentionMs           = cluster.ConfigRetentionMs
	ConfigRetentionBytes        = cluster.ConfigRetentionBytes
	ConfigSegmentBytes          = cluster.ConfigSegmentBytes
	ConfigSegmentMs             = cluster.ConfigSegmentMs
	ConfigMinInsyncReplicas     = cluster.ConfigMinInsyncReplicas
	ConfigMessageTimestampType  = cluster.ConfigMessageTimestampType
	ConfigUncleanLeaderElection = cluster.ConfigUncleanLeaderElection
	ConfigMaxMessageBytes       = cluster.ConfigMaxMessageBytes
	ConfigCleanupPolicy         = cluster.ConfigCleanupPolicy
	ConfigCompressionType       = cluster.ConfigCompressionType
)

// BrokerKey is cluster.BrokerKey.
func BrokerKey(id int32) string { return cluster.BrokerKey(id) }

// TopicKey is cluster.TopicKey.
func TopicKey(name string) string { return cluster.TopicKey(name) }

// TopicPartitionsPrefix is cluster.TopicPartitionsPrefix.
func TopicPartitionsPrefix(name string) string { return cluster.TopicPartitionsPrefix(name) }

// PartitionKey is cluster.PartitionKey.
func PartitionKey(topic string, p int32) string { return cluster.PartitionKey(topic, p) }

// TopicHWPrefix is cluster.TopicHWPrefix.
func TopicHWPrefix(name string) string { return cluster.TopicHWPrefix(name) }

// HWKey is cluster.HWKey.
func HWKey(topic string, p int32) string { return cluster.HWKey(topic, p) }
