package proto

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// scanStream walks body as a follower reading a socket does: it hands the scanner only
// the bytes it asked for (never one more), skips each partition's records, and returns
// the partitions it saw with their records. ok is false if the scanner refused the
// bytes or asked for more than there are.
func scanStream(t *testing.T, body []byte, version int16) (parts []FetchResponsePartition, ok bool) {
	s, err := NewFetchResponseScanner(version)
	if err != nil {
		t.Fatal(err)
	}
	pos, avail := 0, 0 // body[pos:avail] is what was read and not consumed
	for {
		n, ev, err := s.Scan(body[pos:avail])
		if err != nil {
			return parts, false
		}
		if n > avail-pos {
			t.Fatalf("consumed %d of %d bytes", n, avail-pos)
		}
		pos += n
		switch ev {
		case FetchScanNeedMore:
			need := s.Need()
			if need <= avail-pos {
				t.Fatalf("needs %d bytes with %d in hand", need, avail-pos)
			}
			if pos+need > len(body) {
				return parts, false
			}
			avail = pos + need
		case FetchScanPartition:
			if avail != pos {
				t.Fatalf("partition scanned with %d bytes read past it", avail-pos)
			}
			p := FetchResponsePartition{FetchPartition: s.Partition}
			if n := int(s.Partition.RecordsBytes); n > 0 {
				if pos+n > len(body) {
					return parts, false
				}
				p.Records = body[pos : pos+n]
				pos, avail = pos+n, pos+n
			} else {
				p.RecordsBytes = 0
			}
			parts = append(parts, p)
		case FetchScanDone:
			return parts, true
		}
	}
}

// walkBody walks body with FetchResponse (the copy path's walker).
func walkBody(body []byte, version int16) (parts []FetchResponsePartition, ok bool) {
	r, err := ParseFetchResponse(body, version)
	if err != nil {
		return nil, false
	}
	for range r.Topics {
		_, n, err := r.NextTopic()
		if err != nil {
			return parts, false
		}
		for range n {
			p, err := r.NextPartition()
			if err != nil {
				return parts, false
			}
			parts = append(parts, p)
		}
	}
	return parts, true
}

func sampleFetchResponse(v int16) []byte { return sampleFetchResponseKmsg(v).AppendTo(nil) }

// sampleFetchResponseKmsg is a response of two topics of three partitions: records of
// 0, 10 and 200 bytes (a two-byte varint length), aborted transactions, and at v12+ a
// diverging epoch and unknown tags after the records.
func sampleFetchResponseKmsg(v int16) *kmsg.FetchResponse {
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = v
	for ti, name := range []string{"t", "topic-2"} {
		t := kmsg.NewFetchResponseTopic()
		t.Topic = name
		t.TopicID = [16]byte{byte(ti + 1), 2, 3}
		for i := range int32(3) {
			p := kmsg.NewFetchResponseTopicPartition()
			p.Partition, p.HighWatermark, p.LastStableOffset, p.LogStartOffset = i, 100+int64(i), 100, int64(ti)
			p.RecordBatches = bytes.Repeat([]byte{byte(i)}, []int{0, 10, 200}[i])
			if i == 2 {
				p.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: 1, FirstOffset: 5}, {ProducerID: 2, FirstOffset: 6}}
			}
			if i == 1 {
				p.DivergingEpoch.Epoch, p.DivergingEpoch.EndOffset = 4, 77
				p.UnknownTags.Set(9, []byte("x"))
			}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}

// kmsgPartitions is what kmsg reads of a response: each partition's fields and records.
func kmsgPartitions(b []byte, version int16) ([]FetchResponsePartition, bool) {
	ref := kmsg.NewPtrFetchResponse()
	ref.Version = version
	if ref.ReadFrom(b) != nil {
		return nil, false
	}
	var out []FetchResponsePartition
	for _, rt := range ref.Topics {
		for _, rp := range rt.Partitions {
			p := FetchResponsePartition{FetchPartition: FetchPartition{Partition: rp.Partition, ErrorCode: rp.ErrorCode,
				HighWatermark: rp.HighWatermark, LastStableOffset: rp.LastStableOffset, LogStartOffset: rp.LogStartOffset}}
			if len(rp.RecordBatches) > 0 {
				p.Records, p.RecordsBytes = rp.RecordBatches, int32(len(rp.RecordBatches))
			}
			out = append(out, p)
		}
	}
	return out, true
}

// TestFetchResponseScannerFlexible: at v12-15 scanning a response as a stream finds
// the partitions, fields and records kmsg reads, with the topic's name (v12) or id
// (v13+); EmptyRecords leaves a body kmsg reads with those records empty and every tag
// after them kept.
func TestFetchResponseScannerFlexible(t *testing.T) {
	for v := int16(fetchScanFlexibleVersion); v <= fetchScanVersionMax; v++ {
		resp := sampleFetchResponseKmsg(v)
		body := resp.AppendTo(nil)
		got, ok := scanStream(t, body, v)
		want, wok := kmsgPartitions(body, v)
		if !ok || !wok || len(got) != len(want) || len(got) != 6 {
			t.Fatalf("v%d: scanned %d partitions (%v), kmsg read %d (%v)", v, len(got), ok, len(want), wok)
		}
		for i := range want {
			if !reflect.DeepEqual(got[i].FetchPartition, want[i].FetchPartition) || !bytes.Equal(got[i].Records, want[i].Records) {
				t.Fatalf("v%d partition %d: scanned %+v, kmsg read %+v", v, i, got[i], want[i])
			}
		}

		s, _ := NewFetchResponseScanner(v)
		var kept []byte
		topics := 0
		for rest := body; ; {
			n, ev, err := s.Scan(rest)
			if err != nil {
				t.Fatal(err)
			}
			head := append([]byte(nil), rest[:n]...)
			rest = rest[n:]
			if ev == FetchScanNeedMore {
				t.Fatalf("v%d: needs more of a whole body", v)
			}
			if ev == FetchScanDone {
				kept = append(kept, head...)
				break
			}
			if s.Partition.Partition == 0 {
				topics++
				if v >= fetchScanTopicIDVersion && s.TopicID != resp.Topics[topics-1].TopicID ||
					v < fetchScanTopicIDVersion && string(s.Topic) != resp.Topics[topics-1].Topic {
					t.Fatalf("v%d: topic %q %x", v, s.Topic, s.TopicID)
				}
			}
			if s.Partition.RecordsBytes > 0 {
				kept = append(kept, s.EmptyRecords(head)...)
				rest = rest[s.Partition.RecordsBytes:]
				continue
			}
			kept = append(kept, head...)
		}
		ref := kmsg.NewPtrFetchResponse()
		ref.Version = v
		if err := ref.ReadFrom(kept); err != nil {
			t.Fatalf("v%d: body without records: %v", v, err)
		}
		for ti, rt := range ref.Topics {
			for pi, rp := range rt.Partitions {
				w := resp.Topics[ti].Partitions[pi]
				if len(rp.RecordBatches) != 0 || rp.HighWatermark != w.HighWatermark || rp.DivergingEpoch.Epoch != w.DivergingEpoch.Epoch || rp.DivergingEpoch.EndOffset != w.DivergingEpoch.EndOffset {
					t.Fatalf("v%d partition %d/%d without records: %+v", v, ti, pi, rp)
				}
			}
		}
	}
}

// TestFetchResponseScannerMatchesWalker: at every version, scanning a response as a
// stream finds the partitions, fields and records the in-memory walker finds, reading
// no byte of records as fields; EmptyRecords leaves a body the walker reads with those
// records empty.
func TestFetchResponseScannerMatchesWalker(t *testing.T) {
	for v := int16(FetchVersionMin); v < fetchScanFlexibleVersion; v++ {
		body := sampleFetchResponse(v)
		got, ok := scanStream(t, body, v)
		want, wok := walkBody(body, v)
		if !ok || !wok || len(got) != len(want) || len(got) != 6 {
			t.Fatalf("v%d: scanned %d partitions (%v), walked %d (%v)", v, len(got), ok, len(want), wok)
		}
		for i := range want {
			if !reflect.DeepEqual(got[i].FetchPartition, want[i].FetchPartition) || !bytes.Equal(got[i].Records, want[i].Records) {
				t.Fatalf("v%d partition %d: scanned %+v, walked %+v", v, i, got[i], want[i])
			}
		}

		// The body without its records, as a splicing follower keeps it.
		s, _ := NewFetchResponseScanner(v)
		var kept []byte
		for rest := body; ; {
			n, ev, err := s.Scan(rest)
			if err != nil {
				t.Fatal(err)
			}
			head := rest[:n:n]
			rest = rest[n:]
			if ev == FetchScanDone {
				kept = append(kept, head...)
				break
			}
			if ev == FetchScanPartition && s.Partition.RecordsBytes > 0 {
				kept = append(kept, s.EmptyRecords(append([]byte(nil), head...))...)
				rest = rest[s.Partition.RecordsBytes:]
				continue
			}
			kept = append(kept, head...)
		}
		empty, ok := walkBody(kept, v)
		if !ok || len(empty) != len(want) {
			t.Fatalf("v%d: body without records walked %d partitions (%v)", v, len(empty), ok)
		}
		for i := range empty {
			if len(empty[i].Records) != 0 || empty[i].HighWatermark != want[i].HighWatermark {
				t.Fatalf("v%d partition %d without records: %+v", v, i, empty[i])
			}
		}
	}
}

// FuzzFetchResponseScanner: any bytes, any version 4–15, scanned as a stream that
// hands the scanner only what it asks for. Invariants: no panic; it never consumes
// more than it was given nor asks for bytes it already has; it never reads a records
// byte as a field (each partition event comes with nothing read past it); and when the
// in-memory walker (v4-11) or kmsg (v12+) reads the bytes whole, the scan finds the
// same partitions, fields and records.
func FuzzFetchResponseScanner(f *testing.F) {
	for v := int16(FetchVersionMin); v <= fetchScanVersionMax; v++ {
		f.Add(sampleFetchResponse(v), int8(v))
	}
	f.Fuzz(func(t *testing.T, b []byte, v int8) {
		const span = fetchScanVersionMax - FetchVersionMin + 1
		version := int16(FetchVersionMin + ((int(v)-FetchVersionMin)%span+span)%span)
		got, ok := scanStream(t, b, version)
		if !ok {
			return // refused or cut short: kmsg's reading of such bytes can take long
		}
		var want []FetchResponsePartition
		var wok bool
		if version < fetchScanFlexibleVersion {
			want, wok = walkBody(b, version)
		} else {
			want, wok = kmsgPartitions(b, version)
		}
		if !wok {
			return
		}
		if len(got) != len(want) {
			t.Fatalf("scanned %d partitions, walked %d", len(got), len(want))
		}
		for i := range want {
			if !reflect.DeepEqual(got[i].FetchPartition, want[i].FetchPartition) || !bytes.Equal(got[i].Records, want[i].Records) {
				t.Fatalf("partition %d: scanned %+v, walked %+v", i, got[i], want[i])
			}
		}
	})
}
