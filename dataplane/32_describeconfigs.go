package dataplane

// DescribeConfigs, key 32, versions 0-2: a topic's configs (those set on it, then the
// defaults of the rest, marked as such) and this broker's few settings that clients and
// CLI tools ask for. Synonyms (v1+) list the topic value and the default.

import (
	"sort"
	"strconv"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const describeConfigsKey = int16(kmsg.DescribeConfigs)

// topicConfigDefaults are the values a topic has when it sets nothing.
var topicConfigDefaults = map[string]string{
	cluster.ConfigRetentionMs:           strconv.FormatInt(segment.DefaultRetentionAge.Milliseconds(), 10),
	cluster.ConfigRetentionBytes:        "-1",
	cluster.ConfigSegmentBytes:          strconv.Itoa(segment.DefaultSegmentBytes),
	cluster.ConfigSegmentMs:             strconv.FormatInt(segment.DefaultSegmentAge.Milliseconds(), 10),
	cluster.ConfigMinInsyncReplicas:     "1",
	cluster.ConfigMessageTimestampType:  "CreateTime",
	cluster.ConfigUncleanLeaderElection: "false",
	cluster.ConfigMaxMessageBytes:       strconv.Itoa(segment.DefaultMaxBatchBytes),
	cluster.ConfigCleanupPolicy:         "delete",
	cluster.ConfigCompressionType:       "producer",
	cluster.ConfigFlushMessages:         flushNever,
	cluster.ConfigFlushMs:               flushNever,
}

// flushNever is Kafka's default of flush.messages and flush.ms, Long.MAX_VALUE: the log
// is not forced to disk (replication is the durability).
const flushNever = "9223372036854775807"

func handleDescribeConfigs(s *Server, r *request) error {
	req := kmsg.NewPtrDescribeConfigsRequest()
	req.SetVersion(r.hdr.APIVersion)
	if err := req.ReadFrom(r.body); err != nil {
		return err
	}
	resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
	resp.SetVersion(r.hdr.APIVersion)
	snap := s.snapshot()
	for _, res := range req.Resources {
		rr := kmsg.NewDescribeConfigsResponseResource()
		rr.ResourceType, rr.ResourceName = res.ResourceType, res.ResourceName
		var set, defaults map[string]string
		switch res.ResourceType {
		case kmsg.ConfigResourceTypeTopic:
			t, ok := snap.Topics[res.ResourceName]
			if !ok {
				rr.ErrorCode = kerr.UnknownTopicOrPartition.Code
				resp.Resources = append(resp.Resources, rr)
				continue
			}
			set, defaults = effectiveConfigs(t.Configs), topicConfigDefaults
		case kmsg.ConfigResourceTypeBroker:
			if res.ResourceName != "" && res.ResourceName != strconv.Itoa(int(s.cfg.NodeID)) {
				rr.ErrorCode = kerr.InvalidRequest.Code
				resp.Resources = append(resp.Resources, rr)
				continue
			}
			defaults = map[string]string{
				"broker.id":                  strconv.Itoa(int(s.cfg.NodeID)),
				"auto.create.topics.enable":  "false",
				"num.partitions":             strconv.Itoa(client.DefaultPartitions),
				"default.replication.factor": strconv.Itoa(client.DefaultReplicationFactor),
				"message.max.bytes":          strconv.Itoa(segment.DefaultMaxBatchBytes),
				"socket.request.max.bytes":   strconv.Itoa(s.cfg.MaxFrameBytes),
				// The brokers' defaults of flush.messages and flush.ms: never.
				"log.flush.interval.messages": flushNever,
				"log.flush.interval.ms":       flushNever,
			}
		default:
			rr.ErrorCode = kerr.InvalidRequest.Code
			resp.Resources = append(resp.Resources, rr)
			continue
		}
		rr.Configs = describe(set, defaults, res.ConfigNames, req.IncludeSynonyms, resp.Version, res.ResourceType)
		resp.Resources = append(resp.Resources, rr)
	}
	writeResponse(r, resp)
	return nil
}

// effectiveConfigs are the configs of a topic that take effect: a value stored by an
// earlier version that the control plane now refuses (compression.type=gzip, say) is
// ignored by the node, so the topic is described with the default instead.
func effectiveConfigs(configs map[string]string) map[string]string {
	out := make(map[string]string, len(configs))
	for k, v := range configs {
		if client.ValidateConfigs(map[string]string{k: v}) == nil {
			out[k] = v
		}
	}
	return out
}

// describe lists configs: every name known (or only the names asked for), each with its
// set value or its default.
func describe(set, defaults map[string]string, names []string, synonyms bool, version int16, typ kmsg.ConfigResourceType) []kmsg.DescribeConfigsResponseResourceConfig {
	if names == nil {
		for k := range defaults {
			names = append(names, k)
		}
		for k := range set {
			if _, ok := defaults[k]; !ok {
				names = append(names, k)
			}
		}
		sort.Strings(names)
	}
	var out []kmsg.DescribeConfigsResponseResourceConfig
	for _, name := range names {
		v, isSet := set[name]
		def, hasDefault := defaults[name]
		if !isSet && !hasDefault {
			continue
		}
		c := kmsg.NewDescribeConfigsResponseResourceConfig()
		c.Name = name
		c.ReadOnly = typ == kmsg.ConfigResourceTypeBroker
		c.Source = kmsg.ConfigSourceDefaultConfig
		value := def
		if isSet {
			value = v
			c.Source = kmsg.ConfigSourceDynamicTopicConfig
		}
		c.Value = kmsg.StringPtr(value)
		c.IsDefault = !isSet
		if synonyms && version >= 1 {
			if isSet {
				syn := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
				syn.Name, syn.Value, syn.Source = name, kmsg.StringPtr(v), kmsg.ConfigSourceDynamicTopicConfig
				c.ConfigSynonyms = append(c.ConfigSynonyms, syn)
			}
			if hasDefault {
				syn := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
				syn.Name, syn.Value, syn.Source = name, kmsg.StringPtr(def), kmsg.ConfigSourceDefaultConfig
				c.ConfigSynonyms = append(c.ConfigSynonyms, syn)
			}
		}
		out = append(out, c)
	}
	return out
}
