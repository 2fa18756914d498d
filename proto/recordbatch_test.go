package proto

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func sampleRecords() []Record {
	return []Record{
		{Key: []byte("k1"), Value: []byte("hello"), Headers: []RecordHeader{{Key: "h", Value: []byte("v")}}},
		{TimestampDelta: 5, Key: nil, Value: []byte("world")},
		{TimestampDelta: 3, Key: []byte("k3"), Value: nil, Headers: []RecordHeader{{Key: "n", Value: nil}}},
	}
}

func sampleBatch() []byte {
	return AppendRecordBatch(nil, RecordBatchHeader{
		PartitionLeaderEpoch: -1, BaseTimestamp: 1_700_000_000_000,
		ProducerID: 42, ProducerEpoch: 1, BaseSequence: 7,
	}, sampleRecords())
}

// TestRecordBatchMatchesKmsg checks the hand-written header codec and record encoder
// byte for byte against franz-go's kmsg.
func TestRecordBatchMatchesKmsg(t *testing.T) {
	b := sampleBatch()
	var kb kmsg.RecordBatch
	if err := kb.ReadFrom(b); err != nil {
		t.Fatalf("kmsg cannot read our batch: %v", err)
	}
	h, err := ValidateRecordBatch(b, len(b))
	if err != nil {
		t.Fatalf("validate: %v", err)
	}
	if h.Size() != len(b) || int(kb.Length) != len(b)-12 || h.BatchLength != kb.Length {
		t.Fatalf("length: ours %d kmsg %d size %d", h.BatchLength, kb.Length, len(b))
	}
	got := []int64{h.BaseOffset, int64(h.PartitionLeaderEpoch), int64(h.Magic), int64(int32(h.CRC)), int64(h.Attributes),
		int64(h.LastOffsetDelta), h.BaseTimestamp, h.MaxTimestamp, h.ProducerID, int64(h.ProducerEpoch), int64(h.BaseSequence), int64(h.RecordCount)}
	want := []int64{kb.FirstOffset, int64(kb.PartitionLeaderEpoch), int64(kb.Magic), int64(kb.CRC), int64(kb.Attributes),
		int64(kb.LastOffsetDelta), kb.FirstTimestamp, kb.MaxTimestamp, kb.ProducerID, int64(kb.ProducerEpoch), int64(kb.FirstSequence), int64(kb.NumRecords)}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("field %d: ours %d kmsg %d", i, got[i], want[i])
		}
	}
	if h.MaxTimestamp != h.BaseTimestamp+5 {
		t.Errorf("max timestamp %d, want base+5", h.MaxTimestamp)
	}
	// Records decode through kmsg to what we encoded.
	recs := kb.Records
	for i, want := range sampleRecords() {
		var r kmsg.Record
		if err := r.ReadFrom(recs); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if !bytes.Equal(r.Key, want.Key) || !bytes.Equal(r.Value, want.Value) || (r.Key == nil) != (want.Key == nil) ||
			(r.Value == nil) != (want.Value == nil) || r.OffsetDelta != int32(i) || r.TimestampDelta64 != want.TimestampDelta ||
			len(r.Headers) != len(want.Headers) {
			t.Fatalf("record %d: got %+v want %+v", i, r, want)
		}
		recs = recs[int(r.Length)+varintLen(r.Length):]
	}
	if len(recs) != 0 {
		t.Fatalf("%d trailing record bytes", len(recs))
	}
	// Re-encoding kmsg's view gives our bytes back.
	if again := kb.AppendTo(nil); !bytes.Equal(again, b) {
		t.Fatalf("kmsg re-encoding differs")
	}
}

func varintLen(v int32) int {
	u := uint32(v<<1) ^ uint32(v>>31)
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}

func TestSetFieldsInPlace(t *testing.T) {
	b := sampleBatch()
	crc := b[17:21]
	crcBefore := append([]byte(nil), crc...)
	SetBaseOffset(b, 1234)
	SetPartitionLeaderEpoch(b, 9)
	h, err := ValidateRecordBatch(b, len(b))
	if err != nil {
		t.Fatalf("base offset and epoch must lie outside the CRC: %v", err)
	}
	if h.BaseOffset != 1234 || h.PartitionLeaderEpoch != 9 || h.LastOffset() != 1236 || h.NextOffset() != 1237 {
		t.Fatalf("got %+v", h)
	}
	if !bytes.Equal(crc, crcBefore) {
		t.Fatal("CRC changed")
	}
	SetLogAppendTime(b, 99)
	h, err = ValidateRecordBatch(b, len(b))
	if err != nil {
		t.Fatalf("after SetLogAppendTime: %v", err)
	}
	if !h.IsLogAppendTime() || h.MaxTimestamp != 99 {
		t.Fatalf("got %+v", h)
	}
}

func TestValidateRecordBatchErrors(t *testing.T) {
	good := sampleBatch()
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		name string
		b    []byte
		max  int
		want error
	}{
		{"empty", nil, 1 << 20, ErrBatchTruncated},
		{"short header", good[:40], 1 << 20, ErrBatchTruncated},
		{"truncated records", good[:len(good)-1], 1 << 20, ErrBatchTruncated},
		{"length below header", mutate(func(b []byte) []byte { b[8], b[9], b[10], b[11] = 0, 0, 0, 10; return b }), 1 << 20, ErrBatchLength},
		{"negative length", mutate(func(b []byte) []byte { b[8] = 0xff; return b }), 1 << 20, ErrBatchLength},
		{"magic 1", mutate(func(b []byte) []byte { b[16] = 1; return b }), 1 << 20, ErrBatchMagic},
		{"bad crc", mutate(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), 1 << 20, ErrBatchCRC},
		{"unknown codec", mutate(func(b []byte) []byte { b[22] |= 7; SealRecordBatch(b); return b }), 1 << 20, ErrBatchCodec},
		{"count mismatch", mutate(func(b []byte) []byte { b[60] = 9; SealRecordBatch(b); return b }), 1 << 20, ErrBatchRecordCount},
		{"zero records", mutate(func(b []byte) []byte {
			b[60] = 0
			b[26] = 0xff
			b[25], b[24], b[23] = 0xff, 0xff, 0xff
			SealRecordBatch(b)
			return b
		}), 1 << 20, ErrBatchRecordCount},
		{"too large", good, len(good) - 1, ErrBatchTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ValidateRecordBatch(tc.b, tc.max); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := ValidateRecordBatch(good, len(good)); err != nil {
		t.Fatalf("good batch: %v", err)
	}
}

func TestRecordBatchSize(t *testing.T) {
	b := sampleBatch()
	if n, err := RecordBatchSize(b); err != nil || n != len(b) {
		t.Fatalf("got %d %v", n, err)
	}
	if _, err := RecordBatchSize(b[:11]); !errors.Is(err, ErrBatchTruncated) {
		t.Fatalf("got %v", err)
	}
}

// FuzzValidateRecordBatch feeds arbitrary bytes to the header codec.
// Invariants: no panic; a batch that validates reports a size within the input and at
// most the maximum; it still validates after its base offset and leader epoch are
// rewritten in place (they lie outside the CRC), and after SetLogAppendTime; kmsg reads
// it with the same header fields.
func FuzzValidateRecordBatch(f *testing.F) {
	f.Add(sampleBatch())
	f.Add(AppendRecordBatch(nil, RecordBatchHeader{}, []Record{{Value: []byte("x")}}))
	f.Add([]byte{})
	f.Add(make([]byte, 61))
	f.Fuzz(func(t *testing.T, b []byte) {
		const maxBytes = 1 << 20
		if n, err := RecordBatchSize(b); err == nil && n < RecordBatchHeaderSize {
			t.Fatalf("size %d below a header", n)
		}
		h, err := ValidateRecordBatch(b, maxBytes)
		if err != nil {
			return
		}
		size := h.Size()
		if size > len(b) || size > maxBytes || size < RecordBatchHeaderSize {
			t.Fatalf("validated size %d out of bounds (len %d)", size, len(b))
		}
		var kb kmsg.RecordBatch
		if err := kb.ReadFrom(b[:size]); err != nil {
			t.Fatalf("kmsg rejects a batch we accept: %v", err)
		}
		if kb.NumRecords != h.RecordCount || kb.LastOffsetDelta != h.LastOffsetDelta || uint32(kb.CRC) != h.CRC {
			t.Fatalf("kmsg disagrees: %+v vs %+v", kb, h)
		}
		batch := append([]byte(nil), b[:size]...)
		SetBaseOffset(batch, 77)
		SetPartitionLeaderEpoch(batch, 3)
		if h2, err := ValidateRecordBatch(batch, maxBytes); err != nil || h2.BaseOffset != 77 || h2.PartitionLeaderEpoch != 3 {
			t.Fatalf("in-place rewrite broke the batch: %v", err)
		}
		SetLogAppendTime(batch, 5)
		if h3, err := ValidateRecordBatch(batch, maxBytes); err != nil || h3.MaxTimestamp != 5 || !h3.IsLogAppendTime() {
			t.Fatalf("SetLogAppendTime broke the batch: %v", err)
		}
	})
}

// BenchmarkValidateRecordBatch measures the broker's per-batch work on produce: header
// checks and one CRC-32C over the batch.
func BenchmarkValidateRecordBatch(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			v := make([]byte, size-100)
			batch := AppendRecordBatch(nil, RecordBatchHeader{}, []Record{{Value: v}})
			b.SetBytes(int64(len(batch)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ValidateRecordBatch(batch, 2<<20); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
