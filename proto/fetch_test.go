package proto

import (
	"bytes"
	"fmt"
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
		if v >= FetchVersionFlexible {
			parts = append(parts, FetchPartition{Partition: 5, HighWatermark: 9, LastStableOffset: 9, LogStartOffset: 0,
				Diverging: true, DivergingEpoch: EpochEndOffset{Epoch: 3, EndOffset: 7}})
		}
		// read_committed: aborted transactions, and an empty (not null) list.
		parts = append(parts,
			FetchPartition{Partition: 6, HighWatermark: 10, LastStableOffset: 8, LogStartOffset: 0, ReadCommitted: true,
				Aborted: []AbortedTransaction{{ProducerID: 1, FirstOffset: 2}, {ProducerID: 3, FirstOffset: 4}}, RecordsBytes: int32(len(records))},
			FetchPartition{Partition: 7, HighWatermark: 10, LastStableOffset: 8, LogStartOffset: 0, ReadCommitted: true})
		var mine []byte
		mine = AppendFetchResponseStart(mine, v, 3, 0, 0, 2)
		for ti, topic := range []string{"orders", "t2"} {
			kt := kmsg.NewFetchResponseTopic()
			kt.Topic = topic
			if v >= FetchVersionTopicIDs {
				kt.Topic = ""
				kt.TopicID = [16]byte{byte(ti + 1), 2, 3}
			}
			mine = AppendFetchTopicStart(mine, v, []byte(topic), kt.TopicID, len(parts))
			for i := range parts {
				p := &parts[i]
				kp := kmsg.NewFetchResponseTopicPartition()
				kp.Partition, kp.ErrorCode, kp.HighWatermark = p.Partition, p.ErrorCode, p.HighWatermark
				kp.LastStableOffset, kp.LogStartOffset = p.LastStableOffset, p.LogStartOffset
				kp.PreferredReadReplica = -1
				kp.RecordBatches = []byte{}
				if p.Diverging {
					kp.DivergingEpoch.Epoch, kp.DivergingEpoch.EndOffset = p.DivergingEpoch.Epoch, p.DivergingEpoch.EndOffset
				}
				if p.ReadCommitted {
					kp.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{}
					for _, a := range p.Aborted {
						ka := kmsg.NewFetchResponseTopicPartitionAbortedTransaction()
						ka.ProducerID, ka.FirstOffset = a.ProducerID, a.FirstOffset
						kp.AbortedTransactions = append(kp.AbortedTransactions, ka)
					}
				}
				mine = AppendFetchPartition(mine, v, p)
				if p.RecordsBytes > 0 {
					kp.RecordBatches = records
					mine = append(mine, records...)
				}
				mine = AppendFetchPartitionEnd(mine, v, p)
				kt.Partitions = append(kt.Partitions, kp)
			}
			mine = AppendFetchTopicEnd(mine, v)
			resp.Topics = append(resp.Topics, kt)
		}
		mine = AppendFetchResponseEnd(mine, v)
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
	for ti, name := range []string{"orders", "x", "empty"} {
		rt := kmsg.NewFetchRequestTopic()
		if v >= FetchVersionTopicIDs {
			rt.TopicID = [16]byte{15: byte(ti + 1), 0: 0xab}
		} else {
			rt.Topic = name
		}
		for p := range 3 - ti {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.CurrentLeaderEpoch, rp.FetchOffset, rp.LogStartOffset, rp.PartitionMaxBytes = int32(p), int32(ti+4), int64(1000*p+7), -1, 1<<20
			rp.LastFetchedEpoch = int32(p + 2)
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	if v >= 7 {
		ft := kmsg.NewFetchRequestForgottenTopic()
		ft.Topic, ft.Partitions = "gone", []int32{1, 2}
		if v >= FetchVersionTopicIDs {
			ft.Topic, ft.TopicID = "", [16]byte{9}
		}
		req.ForgottenTopics = append(req.ForgottenTopics, ft)
	}
	if v >= 11 {
		req.Rack = "r1"
	}
	if v >= FetchVersionFlexible {
		cluster := "c1"
		req.ClusterID = &cluster
	}
	if v >= FetchVersionReplicaState {
		req.ReplicaID, req.ReplicaState.ID, req.ReplicaState.Epoch = -1, 2, 77
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
		replicaID, replicaEpoch := want.ReplicaID, int64(-1)
		if v >= FetchVersionReplicaState {
			replicaID, replicaEpoch = want.ReplicaState.ID, want.ReplicaState.Epoch
		}
		if r.ReplicaID != replicaID || r.ReplicaEpoch != replicaEpoch || r.MaxWaitMs != want.MaxWaitMillis || r.MinBytes != want.MinBytes ||
			r.MaxBytes != want.MaxBytes || r.IsolationLevel != want.IsolationLevel || r.Topics != len(want.Topics) {
			t.Fatalf("v%d head %+v", v, r)
		}
		w := r.Walk()
		for _, wt := range want.Topics {
			name, n, err := w.NextTopic()
			if err != nil || string(name) != wt.Topic || n != len(wt.Partitions) || (v >= FetchVersionTopicIDs && w.TopicID != wt.TopicID) {
				t.Fatalf("v%d topic %q %x %d %v", v, name, w.TopicID, n, err)
			}
			for _, wp := range wt.Partitions {
				p, err := w.NextPartition()
				epoch, lso, last := wp.CurrentLeaderEpoch, wp.LogStartOffset, wp.LastFetchedEpoch
				if v < 9 {
					epoch = -1
				}
				if v < 5 {
					lso = -1
				}
				if v < FetchVersionFlexible {
					last = -1
				}
				if err != nil || p.Partition != wp.Partition || p.FetchOffset != wp.FetchOffset || p.PartitionMaxBytes != wp.PartitionMaxBytes ||
					p.CurrentLeaderEpoch != epoch || p.LogStartOffset != lso || p.LastFetchedEpoch != last {
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
		replicaID, replicaEpoch := k.ReplicaID, int64(-1)
		if version >= FetchVersionReplicaState {
			replicaID, replicaEpoch = k.ReplicaState.ID, k.ReplicaState.Epoch
		}
		if r.ReplicaID != replicaID || r.ReplicaEpoch != replicaEpoch || r.MaxBytes != k.MaxBytes || r.SessionID != k.SessionID {
			t.Fatalf("head %+v vs kmsg %+v", r, k)
		}
		for _, kt := range k.Topics {
			name, n, err := w.NextTopic()
			if err != nil || string(name) != kt.Topic || n != len(kt.Partitions) || w.TopicID != kt.TopicID {
				t.Fatalf("topic differs: %v", err)
			}
			for _, kp := range kt.Partitions {
				p, err := w.NextPartition()
				last := kp.LastFetchedEpoch
				if version < FetchVersionFlexible {
					last = -1
				}
				if err != nil || p.Partition != kp.Partition || p.FetchOffset != kp.FetchOffset || p.LastFetchedEpoch != last ||
					p.PartitionMaxBytes != kp.PartitionMaxBytes {
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
		if v >= FetchVersionReplicaState {
			want.ReplicaID, want.ReplicaState.ID, want.ReplicaState.Epoch = -1, 3, 1234
		}
		var body []byte
		body = AppendFetchRequestStart(body, v, 3, 500, 1, 10<<20, 2)
		for ti, name := range []string{"a", "bb"} {
			rt := kmsg.NewFetchRequestTopic()
			id := [16]byte{1, byte(ti)}
			if v >= FetchVersionTopicIDs {
				rt.TopicID = id
			} else {
				rt.Topic = name
			}
			body = AppendFetchTopicStart(body, v, []byte(name), id, 2)
			for pi := range int32(2) {
				rp := kmsg.NewFetchRequestTopicPartition()
				rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = pi, int64(10*ti)+int64(pi), 1<<20
				if v >= 9 {
					rp.CurrentLeaderEpoch = 7
				}
				if v >= 5 {
					rp.LogStartOffset = 4
				}
				if v >= FetchVersionFlexible {
					rp.LastFetchedEpoch = 6
				}
				rt.Partitions = append(rt.Partitions, rp)
				body = AppendFetchRequestPartition(body, v, &FetchPartitionRequest{Partition: pi, CurrentLeaderEpoch: 7,
					FetchOffset: int64(10*ti) + int64(pi), LastFetchedEpoch: 6, LogStartOffset: 4, PartitionMaxBytes: 1 << 20})
			}
			body = AppendFetchTopicEnd(body, v)
			want.Topics = append(want.Topics, rt)
		}
		body = AppendFetchRequestEnd(body, v, 3, 1234)
		if exp := want.AppendTo(nil); !bytes.Equal(body, exp) {
			t.Fatalf("v%d request:\n got %x\nwant %x", v, body, exp)
		}

		resp := kmsg.NewPtrFetchResponse()
		resp.SetVersion(v)
		resp.ErrorCode = 0
		for ti, name := range []string{"a", "bb"} {
			rt := kmsg.NewFetchResponseTopic()
			if v >= FetchVersionTopicIDs {
				rt.TopicID = [16]byte{1, byte(ti)}
			} else {
				rt.Topic = name
			}
			for pi := range int32(2) {
				rp := kmsg.NewFetchResponseTopicPartition()
				rp.Partition, rp.ErrorCode, rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = pi, int16(ti), 9, 9, 2
				if pi == 1 {
					rp.RecordBatches = []byte("batches")
					rp.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: 1, FirstOffset: 2}}
				} else {
					rp.DivergingEpoch.Epoch, rp.DivergingEpoch.EndOffset = 4, 8
					rp.CurrentLeader.LeaderID, rp.CurrentLeader.LeaderEpoch = 1, 5
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
			if err != nil || string(name) != resp.Topics[ti].Topic || parts != 2 || (v >= FetchVersionTopicIDs && r.TopicID != resp.Topics[ti].TopicID) {
				t.Fatalf("v%d topic %d: %q %d %v", v, ti, name, parts, err)
			}
			for pi := range 2 {
				p, err := r.NextPartition()
				w := resp.Topics[ti].Partitions[pi]
				lso := int64(2)
				if v < 5 {
					lso = -1
				}
				diverging := v >= FetchVersionFlexible && pi == 0
				if err != nil || p.Partition != w.Partition || p.ErrorCode != w.ErrorCode || p.HighWatermark != 9 ||
					p.LogStartOffset != lso || !bytes.Equal(p.Records, w.RecordBatches) || p.Diverging != diverging ||
					(diverging && p.DivergingEpoch != EpochEndOffset{Epoch: 4, EndOffset: 8}) {
					t.Fatalf("v%d partition %d/%d: %+v %v", v, ti, pi, p, err)
				}
			}
		}
		if err := r.End(); err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
	}
}

// FuzzParseFetchResponse: a Fetch response a follower reads from a leader, of any bytes
// and any version 4–15, is walked without a panic or a read outside its bytes; every
// partition's records lie within the input. When the walk reads it whole and kmsg
// decodes the same bytes, the walk agrees with it on the topics (names or ids),
// partitions, high watermarks, record sizes and diverging epochs.
func FuzzParseFetchResponse(f *testing.F) {
	for v := int16(FetchVersionMin); v <= FetchVersionMax; v++ {
		resp := kmsg.NewPtrFetchResponse()
		resp.Version = v
		t := kmsg.NewFetchResponseTopic()
		t.Topic = "t"
		if v >= FetchVersionTopicIDs {
			t.Topic, t.TopicID = "", [16]byte{7, 15: 1}
		}
		for i := range int32(3) {
			p := kmsg.NewFetchResponseTopicPartition()
			p.Partition, p.HighWatermark, p.LastStableOffset, p.LogStartOffset = i, 100+int64(i), 100, 0
			p.RecordBatches = make([]byte, 10*int(i))
			if i == 2 {
				p.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: 1, FirstOffset: 5}}
			}
			if i == 1 {
				p.DivergingEpoch.Epoch, p.DivergingEpoch.EndOffset = 3, 90
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
			id        [16]byte
			partition int32
			hw        int64
			records   int
			diverging EpochEndOffset
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
				diverging := EpochEndOffset{Epoch: -1, EndOffset: -1}
				if p.Diverging {
					diverging = p.DivergingEpoch
				}
				walked = append(walked, part{string(name), r.TopicID, p.Partition, p.HighWatermark, len(p.Records), diverging})
			}
		}
		// kmsg reads only what the walk accepted whole: it can spend seconds on a tag
		// count of billions that the walk refuses at once.
		if !ok || r.End() != nil {
			return
		}
		ref := kmsg.NewPtrFetchResponse()
		ref.Version = version
		if err := ref.ReadFrom(b); err != nil {
			return
		}
		var want []part
		for _, rt := range ref.Topics {
			for _, rp := range rt.Partitions {
				want = append(want, part{rt.Topic, rt.TopicID, rp.Partition, rp.HighWatermark, len(rp.RecordBatches),
					EpochEndOffset{rp.DivergingEpoch.Epoch, rp.DivergingEpoch.EndOffset}})
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

// BenchmarkParseFetchRequest parses and walks a consumer's Fetch of 2 topics × 8
// partitions, at the last classic version and the last served one (flexible, topic ids,
// ReplicaState).
func BenchmarkParseFetchRequest(b *testing.B) {
	for _, v := range []int16{11, FetchVersionMax} {
		req := kmsg.NewPtrFetchRequest()
		req.SetVersion(v)
		req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = -1, 500, 1, 50<<20
		if v >= FetchVersionReplicaState {
			req.ReplicaID, req.ReplicaState.ID, req.ReplicaState.Epoch = -1, 2, 100
		}
		for ti, name := range []string{"orders", "payments"} {
			rt := kmsg.NewFetchRequestTopic()
			rt.Topic, rt.TopicID = name, [16]byte{byte(ti + 1)}
			for p := range int32(8) {
				rp := kmsg.NewFetchRequestTopicPartition()
				rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes, rp.LastFetchedEpoch = p, 1000, 1<<20, 3
				rt.Partitions = append(rt.Partitions, rp)
			}
			req.Topics = append(req.Topics, rt)
		}
		body := req.AppendTo(nil)
		b.Run(fmt.Sprintf("v%d", v), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r, err := ParseFetchRequest(body, v)
				if err != nil {
					b.Fatal(err)
				}
				w := r.Walk()
				for range r.Topics {
					_, n, _ := w.NextTopic()
					for range n {
						_, _ = w.NextPartition()
					}
				}
			}
		})
	}
}

// BenchmarkAppendFetchResponse encodes the bytes around the records of a Fetch answer
// of 2 topics × 8 partitions (the records themselves go by sendfile).
func BenchmarkAppendFetchResponse(b *testing.B) {
	for _, v := range []int16{11, FetchVersionMax} {
		b.Run(fmt.Sprintf("v%d", v), func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 4096)
			p := FetchPartition{HighWatermark: 10, LastStableOffset: 10, LogStartOffset: 0, RecordsBytes: 1 << 20}
			for b.Loop() {
				buf = AppendFetchResponseStart(buf[:0], v, 0, 0, 0, 2)
				for ti, name := range [][]byte{[]byte("orders"), []byte("payments")} {
					buf = AppendFetchTopicStart(buf, v, name, [16]byte{byte(ti)}, 8)
					for i := range int32(8) {
						p.Partition = i
						buf = AppendFetchPartition(buf, v, &p)
						buf = AppendFetchPartitionEnd(buf, v, &p)
					}
					buf = AppendFetchTopicEnd(buf, v)
				}
				buf = AppendFetchResponseEnd(buf, v)
			}
		})
	}
}
