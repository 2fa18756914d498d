package proto

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func sampleProduceRequest(version int16) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(version)
	req.Acks, req.TimeoutMillis = -1, 1500
	if version >= 3 {
		req.TransactionID = kmsg.StringPtr("txn")
	}
	for ti, name := range []string{"orders", "payments"} {
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = name
		for p := range 3 {
			rp := kmsg.NewProduceRequestTopicPartition()
			rp.Partition = int32(p + ti)
			if p != 1 {
				rp.Records = sampleBatch()
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	return req
}

// TestProduceRequestMatchesKmsg parses kmsg-encoded requests of every version served.
func TestProduceRequestMatchesKmsg(t *testing.T) {
	for v := int16(ProduceVersionMin); v <= ProduceVersionMax; v++ {
		want := sampleProduceRequest(v)
		r, err := ParseProduceRequest(want.AppendTo(nil))
		if err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
		if string(r.TransactionalID) != *want.TransactionID || r.Acks != want.Acks || r.TimeoutMs != want.TimeoutMillis || r.Topics != len(want.Topics) {
			t.Fatalf("v%d head: %+v", v, r)
		}
		for _, wt := range want.Topics {
			name, n, err := r.NextTopic()
			if err != nil || string(name) != wt.Topic || n != len(wt.Partitions) {
				t.Fatalf("v%d topic: %q %d %v", v, name, n, err)
			}
			for _, wp := range wt.Partitions {
				p, records, err := r.NextPartition()
				if err != nil || p != wp.Partition || !bytes.Equal(records, wp.Records) || (records == nil) != (wp.Records == nil) {
					t.Fatalf("v%d partition %d: %d %v", v, wp.Partition, p, err)
				}
			}
		}
		if !r.Done() {
			t.Fatalf("v%d: not done", v)
		}
	}
}

// TestProduceResponseMatchesKmsg encodes responses with the appenders and compares them
// with kmsg's encoding, and checks that error codes patch in place.
func TestProduceResponseMatchesKmsg(t *testing.T) {
	for v := int16(ProduceVersionMin); v <= ProduceVersionMax; v++ {
		resp := kmsg.NewPtrProduceResponse()
		resp.SetVersion(v)
		var mine []byte
		mine = append(mine, 0, 0, 0, 2)
		var patchAt int
		for ti, name := range []string{"a", "bee"} {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic = name
			mine = AppendTopicStart(mine, []byte(name), 2)
			for p := range 2 {
				res := ProducePartitionResult{Partition: int32(p), ErrorCode: int16(ti * 3), BaseOffset: int64(100 * p), LogAppendTimeMs: -1, LogStartOffset: 7}
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition, rp.ErrorCode, rp.BaseOffset, rp.LogAppendTime, rp.LogStartOffset = res.Partition, res.ErrorCode, res.BaseOffset, res.LogAppendTimeMs, res.LogStartOffset
				if ti == 1 && p == 1 {
					patchAt = len(mine)
					rp.ErrorCode = 7
				}
				mine = AppendProducePartition(mine, v, &res)
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		mine = append(mine, 0, 0, 0, 0) // throttle
		PatchProduceErrorCode(mine, patchAt, 7)
		// A full patch of the same answer to the same values changes nothing.
		before := append([]byte(nil), mine...)
		PatchProducePartition(mine, patchAt, v, &ProducePartitionResult{Partition: 1, ErrorCode: 7, BaseOffset: 100, LogAppendTimeMs: -1, LogStartOffset: 7})
		if !bytes.Equal(before, mine) {
			t.Fatalf("v%d: PatchProducePartition wrote different bytes", v)
		}
		if want := resp.AppendTo(nil); !bytes.Equal(mine, want) {
			t.Fatalf("v%d:\nours %x\nkmsg %x", v, mine, want)
		}
	}
}

// FuzzParseProduceRequest walks arbitrary produce bodies. Invariants: no panic; every
// slice returned lies within the input; a body walked to Done decodes with kmsg to the
// same topics, partitions and records.
func FuzzParseProduceRequest(f *testing.F) {
	for v := int16(ProduceVersionMin); v <= ProduceVersionMax; v++ {
		f.Add(sampleProduceRequest(v).AppendTo(nil))
	}
	f.Add([]byte{0xff, 0xff, 0, 1, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseProduceRequest(b)
		if err != nil {
			return
		}
		type part struct {
			topic   string
			p       int32
			records []byte
		}
		var parts []part
		for range r.Topics {
			name, n, err := r.NextTopic()
			if err != nil {
				return
			}
			for range n {
				p, records, err := r.NextPartition()
				if err != nil {
					return
				}
				if len(records) > len(b) {
					t.Fatalf("records longer than the input")
				}
				parts = append(parts, part{string(name), p, records})
			}
		}
		if !r.Done() {
			return
		}
		k := kmsg.NewPtrProduceRequest()
		k.SetVersion(7)
		if err := k.ReadFrom(b); err != nil {
			t.Fatalf("kmsg rejects what we accept: %v", err)
		}
		i := 0
		for _, kt := range k.Topics {
			for _, kp := range kt.Partitions {
				if i >= len(parts) || parts[i].topic != kt.Topic || parts[i].p != kp.Partition || !bytes.Equal(parts[i].records, kp.Records) {
					t.Fatalf("partition %d differs from kmsg", i)
				}
				i++
			}
		}
		if i != len(parts) {
			t.Fatalf("kmsg saw %d partitions, we saw %d", i, len(parts))
		}
	})
}
