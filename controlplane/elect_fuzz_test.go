package controlplane

import (
	"bytes"
	"testing"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// electLeadersFrame encodes req with its request header (v2, with its tag buffer, for
// the flexible v2), as a data-plane node forwards it.
func electLeadersFrame(req *kmsg.ElectLeadersRequest) []byte {
	b := kbin.AppendInt16(nil, req.Key())
	b = kbin.AppendInt16(b, req.GetVersion())
	b = kbin.AppendInt32(b, 7)
	id := "fuzz"
	b = kbin.AppendNullableString(b, &id)
	if req.IsFlexible() {
		b = append(b, 0)
	}
	return req.AppendTo(b)
}

// FuzzElectLeadersRequest: any bytes forwarded as an ElectLeaders request either decode
// or are refused, without a panic; what decodes encodes back to the same request, and
// a refusal of it encodes. Seeds are requests of every version served, with topics and
// with null topics.
func FuzzElectLeadersRequest(f *testing.F) {
	for v := int16(0); v <= electLeadersVersionMax; v++ {
		req := kmsg.NewPtrElectLeadersRequest()
		req.Version, req.ElectionType, req.TimeoutMillis = v, 1, 1000
		f.Add(electLeadersFrame(req)) // null topics: every partition
		req.Topics = []kmsg.ElectLeadersRequestTopic{{Topic: "t", Partitions: []int32{0, 2}}}
		f.Add(electLeadersFrame(req))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req := kmsg.NewPtrElectLeadersRequest()
		if err := parseForwarded(b, req, electLeadersVersionMax, proto.ElectLeadersRequestV2); err != nil {
			return
		}
		again := kmsg.NewPtrElectLeadersRequest()
		if err := parseForwarded(electLeadersFrame(req), again, electLeadersVersionMax, proto.ElectLeadersRequestV2); err != nil {
			t.Fatalf("re-encoded request does not decode: %v", err)
		}
		if !bytes.Equal(again.AppendTo(nil), req.AppendTo(nil)) {
			t.Fatal("decode(encode(x)) != x")
		}
		_ = refuseElectLeaders(req, kerr.RequestTimedOut, "fuzz").AppendTo(nil)
	})
}
