package proto

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestFetchResponseMatchesKmsg writes responses with the appenders, records inline, and
// compares them with kmsg's encoding for every version served.
func TestFetchResponseMatchesKmsg(t *testing.T) {
	records := append(sampleBatch(), sampleBatch()...)
	for v := int16(FetchVersionMin); v <= FetchVersionMax; v++ {
		resp := kmsg.NewPtrFetchResponse()
		resp.SetVersion(v)
		resp.ThrottleMillis = 3
		resp.ErrorCode = 0
		resp.SessionID = 0
		parts := []FetchPartition{
			{Partition: 0, HighWatermark: 10, LastStableOffset: 10, LogStartOffset: 2, RecordsBytes: int32(len(records))},
			{Partition: 4, ErrorCode: 1, HighWatermark: -1, LastStableOffset: -1, LogStartOffset: -1},
		}
		var mine []byte
		mine = AppendFetchResponseStart(mine, v, 3, 0, 0, 2)
		for _, topic := range []string{"orders", "t2"} {
			kt := kmsg.NewFetchResponseTopic()
			kt.Topic = topic
			mine = AppendTopicStart(mine, []byte(topic), len(parts))
			for i := range parts {
				p := &parts[i]
				kp := kmsg.NewFetchResponseTopicPartition()
				kp.Partition, kp.ErrorCode, kp.HighWatermark = p.Partition, p.ErrorCode, p.HighWatermark
				kp.LastStableOffset, kp.LogStartOffset = p.LastStableOffset, p.LogStartOffset
				kp.PreferredReadReplica = -1
				kp.RecordBatches = []byte{}
				mine = AppendFetchPartition(mine, v, p)
				if p.RecordsBytes > 0 {
					kp.RecordBatches = records
					mine = append(mine, records...)
				}
				kt.Partitions = append(kt.Partitions, kp)
			}
			resp.Topics = append(resp.Topics, kt)
		}
		if want := resp.AppendTo(nil); !bytes.Equal(mine, want) {
			t.Fatalf("v%d: encoding differs from kmsg\nours %x\nkmsg %x", v, mine, want)
		}
		back := kmsg.NewPtrFetchResponse()
		back.SetVersion(v)
		if err := back.ReadFrom(mine); err != nil {
			t.Fatalf("v%d: kmsg cannot read ours: %v", v, err)
		}
	}
}

func sampleFetchRequest(v int16) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.SetVersion(v)
	req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes, req.IsolationLevel = -1, 500, 1, 50<<20, 1
	req.SessionID, req.SessionEpoch = 0, -1
	for ti, name := range []string{"orders", "x"} {
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = name
		for p := range 3 {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.CurrentLeaderEpoch, rp.FetchOffset, rp.LogStartOffset, rp.PartitionMaxBytes = int32(p), int32(ti+4), int64(1000*p+7), -1, 1<<20
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	if v >= 7 {
		ft := kmsg.NewFetchRequestForgottenTopic()
		ft.Topic, ft.Partitions = "gone", []int32{1, 2}
		req.ForgottenTopics = append(req.ForgottenTopics, ft)
	}
	if v >= 11 {
		req.Rack = "r1"
	}
	return req
}

// TestFetchRequestMatchesKmsg walks kmsg-encoded Fetch requests of every version served.
func TestFetchRequestMatchesKmsg(t *testing.T) {
	for v := int16(FetchVersionMin); v <= FetchVersionMax; v++ {
		want := sampleFetchRequest(v)
		b := want.AppendTo(nil)
		r, err := ParseFetchRequest(b, v)
		if err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
		if r.ReplicaID != want.ReplicaID || r.MaxWaitMs != want.MaxWaitMillis || r.MinBytes != want.MinBytes ||
			r.MaxBytes != want.MaxBytes || r.IsolationLevel != want.IsolationLevel || r.Topics != len(want.Topics) {
			t.Fatalf("v%d head %+v", v, r)
		}
		w := r.Walk()
		for _, wt := range want.Topics {
			name, n, err := w.NextTopic()
			if err != nil || string(name) != wt.Topic || n != len(wt.Partitions) {
				t.Fatalf("v%d topic %q %d %v", v, name, n, err)
			}
			for _, wp := range wt.Partitions {
				p, err := w.NextPartition()
				epoch, lso := wp.CurrentLeaderEpoch, wp.LogStartOffset
				if v < 9 {
					epoch = -1
				}
				if v < 5 {
					lso = -1
				}
				if err != nil || p.Partition != wp.Partition || p.FetchOffset != wp.FetchOffset || p.PartitionMaxBytes != wp.PartitionMaxBytes ||
					p.CurrentLeaderEpoch != epoch || p.LogStartOffset != lso {
					t.Fatalf("v%d partition %+v vs %+v (%v)", v, p, wp, err)
				}
			}
		}
		if _, err := ParseFetchRequest(append(b, 0), v); err == nil {
			t.Fatalf("v%d: trailing byte accepted", v)
		}
		if _, err := ParseFetchRequest(b[:len(b)-1], v); err == nil {
			t.Fatalf("v%d: truncated request accepted", v)
		}
	}
}

// FuzzParseFetchRequest checks arbitrary Fetch bodies. Invariants: no panic; a body we
// accept, kmsg decodes to the same topics and partitions; walking an accepted body never
// fails.
func FuzzParseFetchRequest(f *testing.F) {
	for v := int16(FetchVersionMin); v <= FetchVersionMax; v++ {
		f.Add(sampleFetchRequest(v).AppendTo(nil), uint8(v))
	}
	f.Fuzz(func(t *testing.T, b []byte, v uint8) {
		version := int16(FetchVersionMin + int(v)%(FetchVersionMax-FetchVersionMin+1))
		r, err := ParseFetchRequest(b, version)
		if err != nil {
			return
		}
		k := kmsg.NewPtrFetchRequest()
		k.SetVersion(version)
		if err := k.ReadFrom(b); err != nil {
			t.Fatalf("kmsg rejects what we accept: %v", err)
		}
		w := r.Walk()
		if len(k.Topics) != r.Topics {
			t.Fatalf("topics %d vs %d", r.Topics, len(k.Topics))
		}
		for _, kt := range k.Topics {
			name, n, err := w.NextTopic()
			if err != nil || string(name) != kt.Topic || n != len(kt.Partitions) {
				t.Fatalf("topic differs: %v", err)
			}
			for _, kp := range kt.Partitions {
				p, err := w.NextPartition()
				if err != nil || p.Partition != kp.Partition || p.FetchOffset != kp.FetchOffset {
					t.Fatalf("partition differs: %v", err)
				}
			}
		}
	})
}

// TestFetchClientCodecMatchesKmsg: the follower's request encoder and response walker
// agree with kmsg at every version.
func TestFetchClientCodecMatchesKmsg(t *testing.T) {
	for v := int16(FetchVersionMin); v <= FetchVersionMax; v++ {
		want := kmsg.NewPtrFetchRequest()
		want.SetVersion(v)
		want.ReplicaID, want.MaxWaitMillis, want.MinBytes, want.MaxBytes, want.SessionEpoch = 3, 500, 1, 10<<20, -1
		var body []byte
		body = AppendFetchRequestStart(body, v, 3, 500, 1, 10<<20, 2)
		for ti, name := range []string{"a", "bb"} {
			rt := kmsg.NewFetchRequestTopic()
			rt.Topic = name
			body = AppendTopicStart(body, []byte(name), 2)
			for pi := range int32(2) {
				rp := kmsg.NewFetchRequestTopicPartition()
				rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = pi, int64(10*ti)+int64(pi), 1<<20
				if v >= 9 {
					rp.CurrentLeaderEpoch = 7
				}
				if v >= 5 {
					rp.LogStartOffset = 4
				}
				rt.Partitions = append(rt.Partitions, rp)
				body = AppendFetchRequestPartition(body, v, &FetchPartitionRequest{Partition: pi, CurrentLeaderEpoch: 7,
					FetchOffset: int64(10*ti) + int64(pi), LogStartOffset: 4, PartitionMaxBytes: 1 << 20})
			}
			want.Topics = append(want.Topics, rt)
		}
		body = AppendFetchRequestEnd(body, v)
		if exp := want.AppendTo(nil); !bytes.Equal(body, exp) {
			t.Fatalf("v%d request:\n got %x\nwant %x", v, body, exp)
		}

		resp := kmsg.NewPtrFetchResponse()
		resp.SetVersion(v)
		resp.ErrorCode = 0
		for ti, name := range []string{"a", "bb"} {
			rt := kmsg.NewFetchResponseTopic()
			rt.Topic = name
			for pi := range int32(2) {
				rp := kmsg.NewFetchResponseTopicPartition()
				rp.Partition, rp.ErrorCode, rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = pi, int16(ti), 9, 9, 2
				if pi == 1 {
					rp.RecordBatches = []byte("batches")
					rp.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: 1, FirstOffset: 2}}
				}
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		r, err := ParseFetchResponse(resp.AppendTo(nil), v)
		if err != nil || r.Topics != 2 {
			t.Fatalf("v%d: %v, %d topics", v, err, r.Topics)
		}
		for ti := range 2 {
			name, parts, err := r.NextTopic()
			if err != nil || string(name) != resp.Topics[ti].Topic || parts != 2 {
				t.Fatalf("v%d topic %d: %q %d %v", v, ti, name, parts, err)
			}
			for pi := range 2 {
				p, err := r.NextPartition()
				w := resp.Topics[ti].Partitions[pi]
				lso := int64(2)
				if v < 5 {
					lso = -1
				}
				if err != nil || p.Partition != w.Partition || p.ErrorCode != w.ErrorCode || p.HighWatermark != 9 ||
					p.LogStartOffset != lso || !bytes.Equal(p.Records, w.RecordBatches) {
					t.Fatalf("v%d partition %d/%d: %+v %v", v, ti, pi, p, err)
				}
			}
		}
		if len(r.rest) != 0 {
			t.Fatalf("v%d: %d bytes left", v, len(r.rest))
		}
	}
}

// FuzzParseFetchResponse: a Fetch response a follower reads from a leader, of any bytes
// and any version 4–11, is walked without a panic or a read outside its bytes; every
// partition's records lie within the input. When kmsg decodes the same bytes, the walk
// agrees with it on the topics, partitions, high watermarks and record sizes.
func FuzzParseFetchResponse(f *testing.F) {
	for v := int16(FetchVersionMin); v <= FetchVersionMax; v++ {
		resp := kmsg.NewPtrFetchResponse()
		resp.Version = v
		t := kmsg.NewFetchResponseTopic()
		t.Topic = "t"
		for i := range int32(3) {
			p := kmsg.NewFetchResponseTopicPartition()
			p.Partition, p.HighWatermark, p.LastStableOffset, p.LogStartOffset = i, 100+int64(i), 100, 0
			p.RecordBatches = make([]byte, 10*int(i))
			if i == 2 {
				p.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: 1, FirstOffset: 5}}
			}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
		f.Add(resp.AppendTo(nil), int8(v))
	}
	f.Fuzz(func(t *testing.T, b []byte, v int8) {
		const span = FetchVersionMax - FetchVersionMin + 1
		version := int16(FetchVersionMin + ((int(v)-FetchVersionMin)%span+span)%span)
		type part struct {
			name      string
			partition int32
			hw        int64
			records   int
		}
		var walked []part
		r, err := ParseFetchResponse(b, version)
		ok := err == nil
		for ti := 0; ok && ti < r.Topics; ti++ {
			name, n, err := r.NextTopic()
			if err != nil {
				ok = false
				break
			}
			for range n {
				p, err := r.NextPartition()
				if err != nil {
					ok = false
					break
				}
				if len(p.Records) > len(b) {
					t.Fatalf("records of %d bytes from %d bytes of input", len(p.Records), len(b))
				}
				walked = append(walked, part{string(name), p.Partition, p.HighWatermark, len(p.Records)})
			}
		}
		ref := kmsg.NewPtrFetchResponse()
		ref.Version = version
		if ref.ReadFrom(b) != nil || !ok {
			return
		}
		var want []part
		for _, rt := range ref.Topics {
			for _, rp := range rt.Partitions {
				want = append(want, part{rt.Topic, rp.Partition, rp.HighWatermark, len(rp.RecordBatches)})
			}
		}
		if len(want) != len(walked) {
			t.Fatalf("walked %d partitions, kmsg read %d", len(walked), len(want))
		}
		for i := range want {
			if want[i] != walked[i] {
				t.Fatalf("partition %d: walked %+v, kmsg read %+v", i, walked[i], want[i])
			}
		}
	})
}
