package dataplane

// AlterConfigs, key 33, versions 0-2 (v2: flexible), the older admin clients' way of
// changing configs: each resource's configs replace its whole set, as in Kafka (a
// config left out goes back to its default).
//
//   - TOPIC (2): the new set is validated as CreateTopics validates configs
//     (INVALID_CONFIG with a message) and written by a compare-and-swap through the
//     control plane; validate_only checks without writing; unknown topic:
//     UNKNOWN_TOPIC_OR_PARTITION. The replicas take it as 44_incrementalalterconfigs.go
//     says.
//   - BROKER (4): refused with INVALID_CONFIG naming the node's flag (its settings are
//     static); with no configs nothing changes. Another node's id: INVALID_REQUEST.
//   - Anything else, a null value, a config named twice, a resource named twice:
//     INVALID_REQUEST.

import (
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const alterConfigsKey = int16(kmsg.AlterConfigs)

func handleAlterConfigs(s *Server, r *request) error {
	req := kmsg.NewPtrAlterConfigsRequest()
	req.SetVersion(r.hdr.APIVersion)
	if req.IsFlexible() {
		if err := proto.CheckShape(r.body, proto.AlterConfigsRequestV2); err != nil {
			return err
		}
	}
	if err := req.ReadFrom(r.body); err != nil {
		return err
	}
	changes := make([]configChange, len(req.Resources))
	for i := range req.Resources {
		changes[i] = replacingChange(&req.Resources[i])
	}
	resp := req.ResponseKind().(*kmsg.AlterConfigsResponse)
	resp.SetVersion(r.hdr.APIVersion)
	resp.Resources = make([]kmsg.AlterConfigsResponseResource, len(changes))
	s.alterConfigs(r, changes, req.ValidateOnly, resp, func(i int, res kmsg.AlterConfigsResponseResource) {
		resp.Resources[i] = res
	})
	return nil
}

// replacingChange decodes one resource of an AlterConfigs request: its configs are the
// resource's new set.
func replacingChange(res *kmsg.AlterConfigsRequestResource) configChange {
	c := configChange{typ: res.ResourceType, name: res.ResourceName}
	set := make(map[string]string, len(res.Configs))
	for _, e := range res.Configs {
		if _, dup := set[e.Name]; dup {
			c.err = &client.Error{Code: kerr.InvalidRequest, Message: "config " + e.Name + " named more than once"}
			return c
		}
		if e.Value == nil {
			c.err = &client.Error{Code: kerr.InvalidRequest, Message: "null value not supported for " + e.Name}
			return c
		}
		set[e.Name] = *e.Value
		c.names = append(c.names, e.Name)
	}
	c.alter = func(map[string]string) (map[string]string, error) { return set, nil }
	return c
}
