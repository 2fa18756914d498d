package dataplane

// DescribeConfigs, key 32, versions 0-4 (v1: config sources and synonyms; v3: config
// types and documentation, KIP-226 and KIP-519; v4: flexible).
//
//   - TOPIC (2): every topic config Gregor understands (or those named), each with the
//     value the topic sets (DYNAMIC_TOPIC_CONFIG) or the default (DEFAULT_CONFIG); the
//     synonyms (v1+, when asked) are the topic's value and the broker config whose value
//     is the default (log.retention.ms for retention.ms), as Kafka lists them. Unknown
//     topic: UNKNOWN_TOPIC_OR_PARTITION.
//   - BROKER (4), named by this node's id or empty (this node): the node's settings
//     (configs.go), read-only: STATIC_BROKER_CONFIG for those its flags set,
//     DEFAULT_CONFIG for those built in. Another node's id: INVALID_REQUEST, as a Kafka
//     broker answers a request meant for another (clients send it to that node).
//   - Anything else: INVALID_REQUEST.
//
// Names asked for that do not exist are left out, as Kafka leaves them out. No config
// is sensitive: the node has no passwords.

import (
	"strconv"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const describeConfigsKey = int16(kmsg.DescribeConfigs)

func handleDescribeConfigs(s *Server, r *request) error {
	req := kmsg.NewPtrDescribeConfigsRequest()
	req.SetVersion(r.hdr.APIVersion)
	if req.IsFlexible() {
		if err := proto.CheckShape(r.body, proto.DescribeConfigsRequestV4); err != nil {
			return err
		}
	}
	if err := req.ReadFrom(r.body); err != nil {
		return err
	}
	resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
	resp.SetVersion(r.hdr.APIVersion)
	snap := s.snapshot()
	opts := describeOptions{synonyms: req.IncludeSynonyms && resp.Version >= 1, docs: req.IncludeDocumentation && resp.Version >= 3}
	for _, res := range req.Resources {
		rr := kmsg.NewDescribeConfigsResponseResource()
		rr.ResourceType, rr.ResourceName = res.ResourceType, res.ResourceName
		switch res.ResourceType {
		case kmsg.ConfigResourceTypeTopic:
			t, ok := snap.Topics[res.ResourceName]
			if !ok {
				rr.ErrorCode = kerr.UnknownTopicOrPartition.Code
				rr.ErrorMessage = kmsg.StringPtr("topic " + strconv.Quote(res.ResourceName) + " does not exist")
				break
			}
			rr.Configs = describeTopic(effectiveConfigs(t.Configs), res.ConfigNames, opts)
		case kmsg.ConfigResourceTypeBroker:
			if msg, ok := s.isThisNode(res.ResourceName); !ok {
				rr.ErrorCode, rr.ErrorMessage = kerr.InvalidRequest.Code, &msg
				break
			}
			rr.Configs = describeNode(s.nodeConfigs(), res.ConfigNames, opts)
		default:
			rr.ErrorCode = kerr.InvalidRequest.Code
			rr.ErrorMessage = kmsg.StringPtr("unsupported resource type " + res.ResourceType.String())
		}
		resp.Resources = append(resp.Resources, rr)
	}
	writeResponse(r, resp)
	return nil
}

// isThisNode reports whether a BROKER resource's name means this node: its id, or
// empty. If not, msg is Kafka's message for a request meant for another broker.
func (s *Server) isThisNode(name string) (msg string, ok bool) {
	id := strconv.Itoa(int(s.cfg.NodeID))
	if name == "" || name == id {
		return "", true
	}
	return "unexpected broker id, expected " + id + " or empty string, but received " + strconv.Quote(name), false
}

// effectiveConfigs are the configs of a topic that take effect: a value stored by an
// earlier version that the control plane now refuses (compression.type=gzip, say) is
// ignored by the node, so the topic is described with the default instead.
func effectiveConfigs(configs map[string]string) map[string]string {
	out := make(map[string]string, len(configs))
	for k, v := range configs {
		if lookupTopicConfig(k) != nil && validTopicConfig(k, v) {
			out[k] = v
		}
	}
	return out
}

// describeOptions are what a request asks to include beyond names and values.
type describeOptions struct {
	synonyms, docs bool
}

// wanted reports whether name is among names (nil: every config).
func wanted(names []string, name string) bool {
	if names == nil {
		return true
	}
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// describeTopic lists a topic's configs: each known one (or each of names), with its
// set value or its default.
func describeTopic(set map[string]string, names []string, opts describeOptions) []kmsg.DescribeConfigsResponseResourceConfig {
	var out []kmsg.DescribeConfigsResponseResourceConfig
	for _, d := range topicConfigDefs {
		if !wanted(names, d.name) {
			continue
		}
		v, isSet := set[d.name]
		c := kmsg.NewDescribeConfigsResponseResourceConfig()
		c.Name, c.ConfigType = d.name, d.typ
		c.Source, c.Value, c.IsDefault = kmsg.ConfigSourceDefaultConfig, kmsg.StringPtr(d.def), true
		if isSet {
			c.Source, c.Value, c.IsDefault = kmsg.ConfigSourceDynamicTopicConfig, kmsg.StringPtr(v), false
		}
		if opts.docs {
			c.Documentation = kmsg.StringPtr(d.doc)
		}
		if opts.synonyms {
			if isSet {
				c.ConfigSynonyms = append(c.ConfigSynonyms, synonym(d.name, &v, kmsg.ConfigSourceDynamicTopicConfig))
			}
			c.ConfigSynonyms = append(c.ConfigSynonyms, synonym(d.brokerName, kmsg.StringPtr(d.def), kmsg.ConfigSourceDefaultConfig))
		}
		out = append(out, c)
	}
	return out
}

// describeNode lists the node's settings (or those of names), read-only.
func describeNode(configs []nodeConfig, names []string, opts describeOptions) []kmsg.DescribeConfigsResponseResourceConfig {
	var out []kmsg.DescribeConfigsResponseResourceConfig
	for _, n := range configs {
		if !wanted(names, n.name) {
			continue
		}
		c := kmsg.NewDescribeConfigsResponseResourceConfig()
		c.Name, c.Value, c.ConfigType, c.ReadOnly = n.name, n.value, n.typ, true
		c.Source, c.IsDefault = kmsg.ConfigSourceStaticBrokerConfig, false
		if n.flag == "" {
			c.Source, c.IsDefault = kmsg.ConfigSourceDefaultConfig, true
		}
		if opts.docs {
			doc := n.doc
			if n.flag != "" {
				doc += " Set by gregor-dp's " + n.flag + "."
			}
			c.Documentation = &doc
		}
		if opts.synonyms {
			c.ConfigSynonyms = append(c.ConfigSynonyms, synonym(n.name, n.value, c.Source))
		}
		out = append(out, c)
	}
	return out
}

func synonym(name string, value *string, source kmsg.ConfigSource) kmsg.DescribeConfigsResponseResourceConfigConfigSynonym {
	syn := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
	syn.Name, syn.Value, syn.Source = name, value, source
	return syn
}
