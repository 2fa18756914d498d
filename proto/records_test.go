package proto

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// compressBatch rebuilds an uncompressed batch with its records compressed by codec, as a
// producer would send it.
func compressBatch(t testing.TB, batch []byte, codec int, xerial bool) []byte {
	t.Helper()
	records := batch[RecordBatchHeaderSize:]
	var c []byte
	switch codec {
	case CodecNone:
		c = records
	case CodecGzip:
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(records)
		w.Close()
		c = buf.Bytes()
	case CodecLZ4:
		var buf bytes.Buffer
		w := lz4.NewWriter(&buf)
		w.Write(records)
		w.Close()
		c = buf.Bytes()
	case CodecSnappy:
		if !xerial {
			c = s2.EncodeSnappy(nil, records)
			break
		}
		c = append(append([]byte(nil), xerialPrefix...), 0, 0, 0, 1, 0, 0, 0, 1)
		for rest := records; len(rest) > 0; {
			n := min(len(rest), 100) // several blocks
			block := s2.EncodeSnappy(nil, rest[:n])
			c = binary.BigEndian.AppendUint32(c, uint32(len(block)))
			c = append(c, block...)
			rest = rest[n:]
		}
	case CodecZstd:
		enc, _ := zstd.NewWriter(nil)
		c = enc.EncodeAll(records, nil)
		enc.Close()
	}
	out := append([]byte(nil), batch[:RecordBatchHeaderSize]...)
	attrs := binary.BigEndian.Uint16(out[21:])&^AttrCompressionMask | uint16(codec)
	binary.BigEndian.PutUint16(out[21:], attrs)
	out = append(out, c...)
	SealRecordBatch(out)
	if _, err := ValidateRecordBatch(out, len(out)); err != nil {
		t.Fatalf("compressed batch invalid: %v", err)
	}
	return out
}

func timestampBatch() []byte {
	// Record i has timestamp 1000 + 10*i, except record 3 which goes back in time.
	var recs []Record
	for i := range 8 {
		d := int64(10 * i)
		if i == 3 {
			d = 1
		}
		recs = append(recs, Record{TimestampDelta: d, Key: []byte("k"), Value: bytes.Repeat([]byte("v"), 40)})
	}
	return AppendRecordBatch(nil, RecordBatchHeader{BaseTimestamp: 1000}, recs)
}

func TestFirstRecordAtOrAfter(t *testing.T) {
	plain := timestampBatch()
	codecs := []struct {
		name   string
		codec  int
		xerial bool
	}{{"none", CodecNone, false}, {"gzip", CodecGzip, false}, {"snappy", CodecSnappy, false},
		{"snappy-xerial", CodecSnappy, true}, {"lz4", CodecLZ4, false}, {"zstd", CodecZstd, false}}
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			b := compressBatch(t, plain, c.codec, c.xerial)
			for _, tc := range []struct {
				ts     int64
				delta  int32
				recTs  int64
				wantOk bool
			}{
				{0, 0, 1000, true},
				{1000, 0, 1000, true},
				{1011, 2, 1020, true},
				{1025, 4, 1040, true}, // record 3 (ts 1001) is skipped: it is earlier
				{1070, 7, 1070, true},
				{1071, 0, 0, false},
			} {
				delta, recTs, ok, err := FirstRecordAtOrAfter(b, tc.ts, 1<<20)
				if err != nil || ok != tc.wantOk || (ok && (delta != tc.delta || recTs != tc.recTs)) {
					t.Fatalf("ts %d: got (%d, %d, %v, %v), want (%d, %d, %v)", tc.ts, delta, recTs, ok, err, tc.delta, tc.recTs, tc.wantOk)
				}
			}
			if c.codec != CodecNone {
				if _, _, _, err := FirstRecordAtOrAfter(b, 0, 100); !errors.Is(err, ErrDecompressTooLarge) {
					t.Fatalf("bound not enforced: %v", err)
				}
			}
		})
	}
}

// FuzzFirstRecordAtOrAfter feeds arbitrary records sections, under every codec, to the
// record walker. Invariants: no panic, and decompression never returns more than the
// bound (so a hostile batch cannot make the broker allocate without limit).
func FuzzFirstRecordAtOrAfter(f *testing.F) {
	plain := timestampBatch()
	for codec := CodecNone; codec <= CodecZstd; codec++ {
		f.Add(compressBatch(f, plain, codec, false)[RecordBatchHeaderSize:], uint8(codec), int64(1011))
	}
	f.Add(compressBatch(f, plain, CodecSnappy, true)[RecordBatchHeaderSize:], uint8(CodecSnappy), int64(0))
	f.Fuzz(func(t *testing.T, records []byte, codec uint8, ts int64) {
		const maxBytes = 1 << 16
		out, err := DecompressRecords(int(codec%5), records, maxBytes)
		if err == nil && len(out) > maxBytes {
			t.Fatalf("decompressed %d bytes past the bound", len(out))
		}
		h := RecordBatchHeader{BaseTimestamp: 1000, RecordCount: 8, LastOffsetDelta: 7, Attributes: int16(codec % 5)}
		batch := AppendRecordBatchHeader(nil, &h)
		batch = append(batch, records...)
		SealRecordBatch(batch)
		batch[16] = RecordBatchMagic
		_, _, _, _ = FirstRecordAtOrAfter(batch, ts, maxBytes)
	})
}
