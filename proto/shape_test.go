package proto

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// shapeCases pair each request shape with the kmsg request of that version.
var shapeCases = []struct {
	name  string
	shape Shape
	req   func() kmsg.Request
}{
	{"ApiVersions v3", ApiVersionsRequestV3, func() kmsg.Request {
		r := kmsg.NewPtrApiVersionsRequest()
		r.SetVersion(3)
		return r
	}},
	{"DescribeCluster v0", DescribeClusterRequestV0, func() kmsg.Request {
		r := kmsg.NewPtrDescribeClusterRequest()
		r.SetVersion(0)
		return r
	}},
	{"DescribeCluster v1", DescribeClusterRequestV1, func() kmsg.Request {
		r := kmsg.NewPtrDescribeClusterRequest()
		r.SetVersion(1)
		return r
	}},
	{"ElectLeaders v2", ElectLeadersRequestV2, func() kmsg.Request {
		r := kmsg.NewPtrElectLeadersRequest()
		r.SetVersion(2)
		return r
	}},
	{"DescribeConfigs v4", DescribeConfigsRequestV4, func() kmsg.Request {
		r := kmsg.NewPtrDescribeConfigsRequest()
		r.SetVersion(4)
		return r
	}},
	{"IncrementalAlterConfigs v1", IncrementalAlterConfigsRequestV1, func() kmsg.Request {
		r := kmsg.NewPtrIncrementalAlterConfigsRequest()
		r.SetVersion(1)
		return r
	}},
	{"AlterConfigs v2", AlterConfigsRequestV2, func() kmsg.Request {
		r := kmsg.NewPtrAlterConfigsRequest()
		r.SetVersion(2)
		return r
	}},
	{"DeleteRecords v2", DeleteRecordsRequestV2, func() kmsg.Request {
		r := kmsg.NewPtrDeleteRecordsRequest()
		r.SetVersion(2)
		return r
	}},
	{"DescribeLogDirs v2", DescribeLogDirsRequestV2, func() kmsg.Request {
		r := kmsg.NewPtrDescribeLogDirsRequest()
		r.SetVersion(2)
		return r
	}},
	{"DescribeLogDirs v4", DescribeLogDirsRequestV2, func() kmsg.Request {
		r := kmsg.NewPtrDescribeLogDirsRequest()
		r.SetVersion(4)
		return r
	}},
	{"DescribeProducers v0", DescribeProducersRequestV0, func() kmsg.Request {
		r := kmsg.NewPtrDescribeProducersRequest()
		r.SetVersion(0)
		return r
	}},
	{"WriteTxnMarkers v1", WriteTxnMarkersRequestV1, func() kmsg.Request {
		r := kmsg.NewPtrWriteTxnMarkersRequest()
		r.SetVersion(1)
		return r
	}},
}

// sampleBodies are valid bodies of each case: kmsg-encoded requests with and without
// optional content, and unknown tags.
func sampleBodies(t testing.TB, i int) [][]byte {
	var out [][]byte
	for _, fill := range []bool{false, true} {
		r := shapeCases[i].req()
		if fill {
			switch r := r.(type) {
			case *kmsg.ApiVersionsRequest:
				r.ClientSoftwareName, r.ClientSoftwareVersion = "gregor-test", "1.0"
				r.UnknownTags.Set(7, []byte("x"))
			case *kmsg.DescribeClusterRequest:
				r.IncludeClusterAuthorizedOperations, r.EndpointType = true, 2
			case *kmsg.ElectLeadersRequest:
				r.ElectionType, r.TimeoutMillis = 1, 3000
				r.Topics = []kmsg.ElectLeadersRequestTopic{
					{Topic: "a", Partitions: []int32{0, 1, 2}},
					{Topic: "b-topic", Partitions: nil},
				}
				r.Topics[0].UnknownTags.Set(3, []byte("tag"))
			case *kmsg.DescribeConfigsRequest:
				r.IncludeSynonyms, r.IncludeDocumentation = true, true
				r.Resources = []kmsg.DescribeConfigsRequestResource{
					{ResourceType: 2, ResourceName: "t", ConfigNames: []string{"retention.ms", "segment.bytes"}},
					{ResourceType: 4, ResourceName: ""},
				}
			case *kmsg.IncrementalAlterConfigsRequest:
				r.ValidateOnly = true
				r.Resources = []kmsg.IncrementalAlterConfigsRequestResource{{ResourceType: 2, ResourceName: "t",
					Configs: []kmsg.IncrementalAlterConfigsRequestResourceConfig{
						{Name: "retention.ms", Op: 0, Value: kmsg.StringPtr("1")}, {Name: "segment.ms", Op: 1},
					}}}
				r.Resources[0].UnknownTags.Set(9, []byte("z"))
			case *kmsg.AlterConfigsRequest:
				r.Resources = []kmsg.AlterConfigsRequestResource{{ResourceType: 2, ResourceName: "t",
					Configs: []kmsg.AlterConfigsRequestResourceConfig{{Name: "retention.ms", Value: kmsg.StringPtr("1")}, {Name: "x"}}}}
			case *kmsg.DeleteRecordsRequest:
				r.TimeoutMillis = 100
				r.Topics = []kmsg.DeleteRecordsRequestTopic{{Topic: "t", Partitions: []kmsg.DeleteRecordsRequestTopicPartition{
					{Partition: 0, Offset: 10}, {Partition: 3, Offset: -1}}}}
			case *kmsg.DescribeLogDirsRequest:
				r.Topics = []kmsg.DescribeLogDirsRequestTopic{{Topic: "t", Partitions: []int32{0, 1}}}
			case *kmsg.DescribeProducersRequest:
				r.Topics = []kmsg.DescribeProducersRequestTopic{{Topic: "t", Partitions: []int32{0, 1}}, {Topic: "u"}}
			case *kmsg.WriteTxnMarkersRequest:
				r.Markers = []kmsg.WriteTxnMarkersRequestMarker{
					{ProducerID: 7, ProducerEpoch: 2, Committed: true, CoordinatorEpoch: 3,
						Topics: []kmsg.WriteTxnMarkersRequestMarkerTopic{{Topic: "t", Partitions: []int32{0, 1}}, {Topic: "u"}}},
					{ProducerID: 8},
				}
				r.Markers[1].UnknownTags.Set(4, []byte("m"))
			}
		}
		out = append(out, r.AppendTo(nil))
	}
	return out
}

// TestCheckShapeAcceptsKmsg: every kmsg-encoded request has its shape, and every prefix
// of one that kmsg refuses is refused.
func TestCheckShapeAcceptsKmsg(t *testing.T) {
	for i, c := range shapeCases {
		for _, body := range sampleBodies(t, i) {
			if err := CheckShape(body, c.shape); err != nil {
				t.Fatalf("%s: %x: %v", c.name, body, err)
			}
			for n := range len(body) {
				if CheckShape(body[:n], c.shape) == nil && c.req().ReadFrom(body[:n]) != nil {
					t.Fatalf("%s: prefix %x accepted, kmsg refuses it", c.name, body[:n])
				}
			}
		}
	}
}

// TestCheckShapeRefusesHugeTagCount: a body ending in a tag count of 2³²−1, which kmsg
// would loop on for a minute, is refused at once.
func TestCheckShapeRefusesHugeTagCount(t *testing.T) {
	body := []byte{1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f} // two empty strings, then the count
	start := time.Now()
	if err := CheckShape(body, ApiVersionsRequestV3); err == nil {
		t.Fatal("accepted")
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("took %v", d)
	}
}

// FuzzCheckShape: kmsg decodes at once any body CheckShape accepts (it may refuse one,
// where a field is non-nullable: CheckShape bounds the work, not the types), and what
// kmsg decodes, encoded again, has its shape.
func FuzzCheckShape(f *testing.F) {
	for i := range shapeCases {
		for _, b := range sampleBodies(f, i) {
			f.Add(uint8(i), b)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		c := shapeCases[int(which)%len(shapeCases)]
		if CheckShape(body, c.shape) != nil {
			return
		}
		r := c.req()
		start := time.Now()
		err := r.ReadFrom(body)
		if d := time.Since(start); d > time.Second {
			t.Fatalf("%s: kmsg took %v on %x", c.name, d, body)
		}
		if err != nil {
			return
		}
		if again := r.AppendTo(nil); CheckShape(again, c.shape) != nil {
			t.Fatalf("%s: kmsg's encoding %x refused", c.name, again)
		}
	})
}
