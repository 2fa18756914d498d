package dataplane

import (
	"strings"
	"testing"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// FuzzIncrementalAlterConfigs decodes arbitrary IncrementalAlterConfigs bodies (v0 and
// v1, the shape checked first as the handler does) and applies each resource's change
// to a topic's configs. Invariants: nothing panics; a resource refused at decoding has
// no change to apply; APPEND then SUBTRACT of the same values leaves a list without
// them, and APPEND twice equals APPEND once.
func FuzzIncrementalAlterConfigs(f *testing.F) {
	for _, v := range []int16{0, 1} {
		r := kmsg.NewPtrIncrementalAlterConfigsRequest()
		r.SetVersion(v)
		r.Resources = []kmsg.IncrementalAlterConfigsRequestResource{{ResourceType: 2, ResourceName: "t",
			Configs: []kmsg.IncrementalAlterConfigsRequestResourceConfig{
				{Name: "cleanup.policy", Op: 2, Value: kmsg.StringPtr("delete,compact")},
				{Name: "retention.ms", Op: 0, Value: kmsg.StringPtr("1")},
				{Name: "segment.ms", Op: 1},
			}}}
		f.Add(v == 1, r.AppendTo(nil), "a,b", "b,c")
	}
	f.Fuzz(func(t *testing.T, flexible bool, body []byte, list, values string) {
		got := alterList(alterList(list, values, true), values, true)
		if once := alterList(list, values, true); got != once {
			t.Fatalf("APPEND twice %q, once %q", got, once)
		}
		gone := map[string]bool{}
		for _, v := range strings.Split(values, ",") {
			gone[strings.TrimSpace(v)] = true
		}
		for _, v := range strings.Split(alterList(alterList(list, values, true), values, false), ",") {
			if v != "" && gone[v] {
				t.Fatalf("SUBTRACT left %q", v)
			}
		}
		req := kmsg.NewPtrIncrementalAlterConfigsRequest()
		if flexible {
			req.SetVersion(1)
			if proto.CheckShape(body, proto.IncrementalAlterConfigsRequestV1) != nil {
				return
			}
		}
		if req.ReadFrom(body) != nil {
			return
		}
		for i := range req.Resources {
			c := incrementalChange(&req.Resources[i])
			if c.err != nil {
				continue
			}
			_, _ = c.alter(map[string]string{"cleanup.policy": "delete"})
		}
	})
}
