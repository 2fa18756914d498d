package dataplane

// IncrementalAlterConfigs, key 44, versions 0-1 (v1: flexible; KIP-339).
//
//   - TOPIC (2): each config's operation — SET, DELETE (back to the default), APPEND
//     and SUBTRACT (list configs only: cleanup.policy; applied to the topic's value, or
//     the default if it sets none, as Kafka does) — is applied to the topic's stored
//     configs, the result validated as CreateTopics validates configs (INVALID_CONFIG
//     with a message: an unknown config, a bad value) and written by a compare-and-swap
//     through the control plane (controlplane/client's AlterTopicConfigs), so that
//     concurrent alters keep each other's changes. validate_only checks without
//     writing. Unknown topic: UNKNOWN_TOPIC_OR_PARTITION. Every replica takes the new
//     settings from the metadata watch (Reconcile updates each open log), with no
//     restart; the answer waits until this node's own view has them.
//   - BROKER (4): the node's settings are its flags, fixed while it runs: a change is
//     refused with INVALID_CONFIG naming the flag, as Kafka refuses a config that cannot
//     be updated dynamically. Another node's id: INVALID_REQUEST.
//   - Anything else, an unknown operation, a config named twice in one resource, a
//     resource named twice in one request, SET without a value: INVALID_REQUEST.

import (
	"slices"
	"strings"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const incrementalAlterConfigsKey = int16(kmsg.IncrementalAlterConfigs)

func handleIncrementalAlterConfigs(s *Server, r *request) error {
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	req.SetVersion(r.hdr.APIVersion)
	if req.IsFlexible() {
		if err := proto.CheckShape(r.body, proto.IncrementalAlterConfigsRequestV1); err != nil {
			return err
		}
	}
	if err := req.ReadFrom(r.body); err != nil {
		return err
	}
	changes := make([]configChange, len(req.Resources))
	for i := range req.Resources {
		changes[i] = incrementalChange(&req.Resources[i])
	}
	resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
	resp.SetVersion(r.hdr.APIVersion)
	resp.Resources = make([]kmsg.IncrementalAlterConfigsResponseResource, len(changes))
	s.alterConfigs(r, changes, req.ValidateOnly, resp, func(i int, res kmsg.AlterConfigsResponseResource) {
		resp.Resources[i] = kmsg.IncrementalAlterConfigsResponseResource(res) // the same fields
	})
	return nil
}

// incrementalChange decodes one resource of an IncrementalAlterConfigs request.
func incrementalChange(res *kmsg.IncrementalAlterConfigsRequestResource) configChange {
	c := configChange{typ: res.ResourceType, name: res.ResourceName}
	seen := map[string]bool{}
	for _, e := range res.Configs {
		if seen[e.Name] {
			c.err = &client.Error{Code: kerr.InvalidRequest, Message: "config " + e.Name + " named more than once"}
			return c
		}
		seen[e.Name] = true
		c.names = append(c.names, e.Name)
		switch e.Op {
		case kmsg.IncrementalAlterConfigOpSet, kmsg.IncrementalAlterConfigOpAppend, kmsg.IncrementalAlterConfigOpSubtract:
			if e.Value == nil {
				c.err = &client.Error{Code: kerr.InvalidRequest, Message: "null value not supported for " + e.Name}
				return c
			}
		case kmsg.IncrementalAlterConfigOpDelete:
		default:
			c.err = &client.Error{Code: kerr.InvalidRequest, Message: "unknown alter configs operation " + e.Op.String() + " for " + e.Name}
			return c
		}
	}
	ops := res.Configs
	c.alter = func(configs map[string]string) (map[string]string, error) {
		if configs == nil {
			configs = map[string]string{}
		}
		for _, e := range ops {
			switch e.Op {
			case kmsg.IncrementalAlterConfigOpSet:
				configs[e.Name] = *e.Value
			case kmsg.IncrementalAlterConfigOpDelete:
				delete(configs, e.Name)
			default: // APPEND, SUBTRACT
				if !listConfig(e.Name) {
					return nil, &client.Error{Code: kerr.InvalidConfig,
						Message: "config value " + strings.ToLower(e.Op.String()) + " is not allowed for config " + e.Name + ": it is not a list"}
				}
				old, ok := configs[e.Name]
				if !ok {
					old = topicConfigDefaults[e.Name]
				}
				configs[e.Name] = alterList(old, *e.Value, e.Op == kmsg.IncrementalAlterConfigOpAppend)
			}
		}
		return configs, nil
	}
	return c
}

// alterList appends to a comma-separated list the items of values it lacks, or
// removes every occurrence of them from it (Kafka's APPEND and SUBTRACT).
func alterList(list, values string, appendValues bool) string {
	split := func(s string) []string {
		var out []string
		for _, v := range strings.Split(s, ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
		return out
	}
	items := split(list)
	for _, v := range split(values) {
		switch {
		case appendValues && !slices.Contains(items, v):
			items = append(items, v)
		case !appendValues:
			items = slices.DeleteFunc(items, func(x string) bool { return x == v })
		}
	}
	return strings.Join(items, ",")
}
