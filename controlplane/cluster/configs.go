package cluster

// Topic configs Gregor understands. Unknown configs are refused (INVALID_CONFIG) rather
// than stored and ignored, so a client never believes a setting took effect when it did
// not; controlplane/client validates the values (ValidateConfigs).
const (
	ConfigRetentionMs           = "retention.ms"
	ConfigRetentionBytes        = "retention.bytes"
	ConfigSegmentBytes          = "segment.bytes"
	ConfigSegmentMs             = "segment.ms"
	ConfigMinInsyncReplicas     = "min.insync.replicas"
	ConfigMessageTimestampType  = "message.timestamp.type"
	ConfigUncleanLeaderElection = "unclean.leader.election.enable"
	ConfigMaxMessageBytes       = "max.message.bytes"
	ConfigCleanupPolicy         = "cleanup.policy"
	ConfigCompressionType       = "compression.type"
	ConfigFlushMessages         = "flush.messages"
	ConfigFlushMs               = "flush.ms"
)
