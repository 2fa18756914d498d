package client

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// Bounds on config values (Kafka's own minimums where it has them).
const (
	segmentBytesMin = 14 // Kafka's minimum: one record batch header
	configsMax      = 64 // configs per topic
	configValueMax  = 1024
)

type configRule func(v string) bool

func longAtLeast(min int64) configRule {
	return func(v string) bool {
		n, err := strconv.ParseInt(v, 10, 64)
		return err == nil && n >= min
	}
}

func intAtLeast(min int64) configRule {
	return func(v string) bool {
		n, err := strconv.ParseInt(v, 10, 32)
		return err == nil && n >= min
	}
}

func oneOf(values ...string) configRule {
	return func(v string) bool {
		for _, x := range values {
			if v == x {
				return true
			}
		}
		return false
	}
}

// sizeLimit is retention.bytes's rule: -1 (no limit) or positive. Kafka's 0 deletes every
// segment, the active one rolled first, but the storage engine's size retention always
// keeps the active segment, so 0 is refused rather than half done.
func sizeLimit(v string) bool {
	n, err := strconv.ParseInt(v, 10, 64)
	return err == nil && (n == -1 || n > 0)
}

// configRules validates each known config's value.
var configRules = map[string]configRule{
	cluster.ConfigRetentionMs:           longAtLeast(-1),
	cluster.ConfigRetentionBytes:        sizeLimit,
	cluster.ConfigSegmentBytes:          intAtLeast(segmentBytesMin),
	cluster.ConfigSegmentMs:             longAtLeast(1),
	cluster.ConfigMinInsyncReplicas:     intAtLeast(1),
	cluster.ConfigMessageTimestampType:  oneOf("CreateTime", "LogAppendTime"),
	cluster.ConfigUncleanLeaderElection: oneOf("true", "false"),
	cluster.ConfigMaxMessageBytes:       intAtLeast(0),
	// Compaction is not implemented, so only "delete" is accepted.
	cluster.ConfigCleanupPolicy: oneOf("delete"),
	// Any other value makes Kafka recompress each batch (even "uncompressed": it
	// decompresses); Gregor stores batches as the producer sent them.
	cluster.ConfigCompressionType: oneOf("producer"),
	// Kafka's ranges; both default to Long.MAX_VALUE, never (replication is the
	// durability).
	cluster.ConfigFlushMessages: longAtLeast(1),
	cluster.ConfigFlushMs:       longAtLeast(0),
}

// configHints explain the refusal of a value a Kafka broker would take.
var configHints = map[string]string{
	cluster.ConfigRetentionBytes:  ": -1 (no limit) or a positive size; 0 (delete every segment) is not supported",
	cluster.ConfigCleanupPolicy:   `: only "delete" is supported (no compaction)`,
	cluster.ConfigCompressionType: `: only "producer" is supported (batches are stored as the producer compressed them)`,
}

// ValidateTopicName applies Kafka's topic name rules: 1..249 characters from
// [a-zA-Z0-9._-], and not "." or "..". (INVALID_TOPIC_EXCEPTION)
func ValidateTopicName(name string) error {
	switch {
	case name == "":
		return errorf(kerr.InvalidTopicException, "topic name is empty")
	case name == "." || name == "..":
		return errorf(kerr.InvalidTopicException, "topic name cannot be %q", name)
	case len(name) > cluster.TopicNameLenMax:
		return errorf(kerr.InvalidTopicException, "topic name is %d characters, more than %d", len(name), cluster.TopicNameLenMax)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return errorf(kerr.InvalidTopicException, "topic name %q has character %q outside [a-zA-Z0-9._-]", name, c)
		}
	}
	return nil
}

// ValidateConfigs checks every config name and value (INVALID_CONFIG).
func ValidateConfigs(configs map[string]string) error {
	if len(configs) > configsMax {
		return errorf(kerr.InvalidConfig, "%d configs, more than %d", len(configs), configsMax)
	}
	for k, v := range configs {
		rule, ok := configRules[k]
		if !ok {
			return errorf(kerr.InvalidConfig, "unknown or unsupported topic config %q", k)
		}
		if len(v) > configValueMax || !rule(v) {
			return errorf(kerr.InvalidConfig, "invalid value %q for topic config %q%s", v, k, configHints[k])
		}
	}
	return nil
}
