package controlplane

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/client"
)

// txnFrame encodes req with its request header (v2, with its tag buffer, for a flexible
// version), as a data-plane node forwards it.
func txnFrame(req kmsg.Request) []byte {
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

// txnSeeds are requests of every transaction API and version served, with fields set.
func txnSeeds() []kmsg.Request {
	var out []kmsg.Request
	for key, maxVersion := range client.TxnAPIs {
		for v := int16(0); v <= maxVersion; v++ {
			req := kmsg.RequestForKey(key)
			req.SetVersion(v)
			switch r := req.(type) {
			case *kmsg.InitProducerIDRequest:
				r.TransactionalID, r.TransactionTimeoutMillis, r.ProducerID, r.ProducerEpoch = kmsg.StringPtr("tid"), 1000, 5, 1
			case *kmsg.AddPartitionsToTxnRequest:
				r.TransactionalID, r.ProducerID, r.ProducerEpoch = "tid", 5, 1
				r.Topics = []kmsg.AddPartitionsToTxnRequestTopic{{Topic: "t", Partitions: []int32{0, 1}}}
				r.Transactions = []kmsg.AddPartitionsToTxnRequestTransaction{{TransactionalID: "tid", ProducerID: 5,
					VerifyOnly: true, Topics: []kmsg.AddPartitionsToTxnRequestTransactionTopic{{Topic: "t", Partitions: []int32{2}}}}}
			case *kmsg.AddOffsetsToTxnRequest:
				r.TransactionalID, r.ProducerID, r.Group = "tid", 5, "g"
			case *kmsg.EndTxnRequest:
				r.TransactionalID, r.ProducerID, r.Commit = "tid", 5, true
			case *kmsg.TxnOffsetCommitRequest:
				r.TransactionalID, r.Group, r.ProducerID, r.Generation, r.MemberID = "tid", "g", 5, 3, "m"
				r.InstanceID = kmsg.StringPtr("i")
				r.Topics = []kmsg.TxnOffsetCommitRequestTopic{{Topic: "t", Partitions: []kmsg.TxnOffsetCommitRequestTopicPartition{
					{Partition: 0, Offset: 9, LeaderEpoch: 2, Metadata: kmsg.StringPtr("m")}}}}
			case *kmsg.DescribeTransactionsRequest:
				r.TransactionalIDs = []string{"a", "b"}
			case *kmsg.ListTransactionsRequest:
				r.StateFilters, r.ProducerIDFilters = []string{"Ongoing"}, []int64{5}
			}
			out = append(out, req)
		}
	}
	return out
}

// FuzzTxnRequest: any bytes forwarded as a transaction request either decode or are
// refused, without a panic or a hang (a flexible body is checked against its shape
// first); what decodes encodes back to the same request.
func FuzzTxnRequest(f *testing.F) {
	for _, req := range txnSeeds() {
		f.Add(txnFrame(req))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, req, err := parseTxnRequest(b)
		if err != nil {
			return
		}
		_, again, err := parseTxnRequest(txnFrame(req))
		if err != nil {
			t.Fatalf("re-encoded request does not decode: %v", err)
		}
		if !bytes.Equal(again.AppendTo(nil), req.AppendTo(nil)) {
			t.Fatal("decode(encode(x)) != x")
		}
	})
}

// TestTxnSeedsDecode: every seed decodes (else the fuzz test starts from nothing).
func TestTxnSeedsDecode(t *testing.T) {
	for _, req := range txnSeeds() {
		if _, _, err := parseTxnRequest(txnFrame(req)); err != nil {
			t.Errorf("%s v%d: %v", kmsg.NameForKey(req.Key()), req.GetVersion(), err)
		}
	}
}

// FuzzMarkersResponse: any bytes read as a WriteTxnMarkers answer decode or are
// refused, without a panic or a hang.
func FuzzMarkersResponse(f *testing.F) {
	resp := kmsg.NewPtrWriteTxnMarkersResponse()
	resp.SetVersion(1)
	resp.Markers = []kmsg.WriteTxnMarkersResponseMarker{{ProducerID: 5, Topics: []kmsg.WriteTxnMarkersResponseMarkerTopic{
		{Topic: "t", Partitions: []kmsg.WriteTxnMarkersResponseMarkerTopicPartition{{Partition: 0}, {Partition: 1, ErrorCode: 6}}}}}}
	f.Add(append(kbin.AppendInt32(nil, 3), append([]byte{0}, resp.AppendTo(nil)...)...))
	f.Add(append(kbin.AppendInt32(nil, 3), 0, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeMarkersResponse(b, 3, 1)
		if err == nil && got == nil {
			t.Fatal("no answer and no error")
		}
	})
}
