package proto

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kbin"
)

// FirstRecordAtOrAfter finds the first record of a validated batch whose timestamp is ≥
// ts, decompressing the records if needed (at most maxDecompressedBytes). It returns the
// record's offset delta and timestamp; found is false if no record reaches ts. For a
// LogAppendTime batch every record has the batch's maxTimestamp. Record layout (each
// record): length varint, attributes int8, timestampDelta varlong, offsetDelta varint,
// then key, value and headers, which are skipped by length.
func FirstRecordAtOrAfter(batch []byte, ts int64, maxDecompressedBytes int) (offsetDelta int32, timestamp int64, found bool, err error) {
	h, err := ParseRecordBatchHeader(batch)
	if err != nil {
		return 0, 0, false, err
	}
	if h.Size() > len(batch) {
		return 0, 0, false, ErrBatchTruncated
	}
	if h.IsLogAppendTime() {
		return 0, h.MaxTimestamp, h.MaxTimestamp >= ts, nil
	}
	records, err := DecompressRecords(h.Codec(), batch[RecordBatchHeaderSize:h.Size()], maxDecompressedBytes)
	if err != nil {
		return 0, 0, false, err
	}
	r := kbin.Reader{Src: records}
	for i := int32(0); i < h.RecordCount; i++ {
		length := r.Varint()
		if length < 0 || int(length) > len(r.Src) || !r.Ok() {
			return 0, 0, false, fmt.Errorf("%w: record %d length %d", ErrMalformedRecords, i, length)
		}
		rec := kbin.Reader{Src: r.Src[:length]}
		r.Src = r.Src[length:]
		rec.Int8() // attributes
		tsDelta := rec.Varlong()
		delta := rec.Varint()
		if !rec.Ok() {
			return 0, 0, false, fmt.Errorf("%w: record %d", ErrMalformedRecords, i)
		}
		if h.BaseTimestamp+tsDelta >= ts {
			return delta, h.BaseTimestamp + tsDelta, true, nil
		}
	}
	return 0, 0, false, nil
}
