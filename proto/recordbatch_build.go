package proto

import "github.com/twmb/franz-go/pkg/kbin"

// Record is one record for AppendRecordBatch: what a producer sends, before compression.
type Record struct {
	// TimestampDelta is the record's timestamp minus the batch's base timestamp (ms).
	TimestampDelta int64
	Key            []byte // nil is a null key
	Value          []byte // nil is a null value
	Headers        []RecordHeader
}

// RecordHeader is one record header (a key and a nullable value).
type RecordHeader struct {
	Key   string
	Value []byte
}

// AppendRecordBatch appends an uncompressed RecordBatch v2 to dst with the records given
// and returns the extended slice. Header fields are taken from h except BatchLength, CRC,
// Magic, LastOffsetDelta, RecordCount and MaxTimestamp, which are computed (MaxTimestamp is
// the base timestamp plus the largest delta). Record offset deltas are 0..len(recs)-1.
//
// It is what a client's producer does; Gregor uses it for pre-encoded batches (the bench's
// raw producer) and in tests. It panics on an empty recs, a programmer error.
func AppendRecordBatch(dst []byte, h RecordBatchHeader, recs []Record) []byte {
	if len(recs) == 0 {
		panic("proto: AppendRecordBatch with no records")
	}
	start := len(dst)
	h.Magic = RecordBatchMagic
	h.LastOffsetDelta = int32(len(recs) - 1)
	h.RecordCount = int32(len(recs))
	h.MaxTimestamp = h.BaseTimestamp
	for i := range recs {
		if ts := h.BaseTimestamp + recs[i].TimestampDelta; ts > h.MaxTimestamp {
			h.MaxTimestamp = ts
		}
	}
	dst = AppendRecordBatchHeader(dst, &h)
	for i := range recs {
		dst = appendRecord(dst, int32(i), &recs[i])
	}
	SealRecordBatch(dst[start:])
	return dst
}

// appendRecord encodes one record: length varint, then attributes int8, timestampDelta
// varlong, offsetDelta varint, key, value (varint-length bytes, -1 for null), headers.
func appendRecord(dst []byte, offsetDelta int32, r *Record) []byte {
	body := recordBodyLen(offsetDelta, r)
	dst = kbin.AppendVarint(dst, int32(body))
	dst = append(dst, 0) // attributes: unused
	dst = kbin.AppendVarlong(dst, r.TimestampDelta)
	dst = kbin.AppendVarint(dst, offsetDelta)
	dst = kbin.AppendVarintBytes(dst, r.Key)
	dst = kbin.AppendVarintBytes(dst, r.Value)
	dst = kbin.AppendVarint(dst, int32(len(r.Headers)))
	for i := range r.Headers {
		dst = kbin.AppendVarintString(dst, r.Headers[i].Key)
		dst = kbin.AppendVarintBytes(dst, r.Headers[i].Value)
	}
	return dst
}

func recordBodyLen(offsetDelta int32, r *Record) int {
	n := 1 + kbin.VarlongLen(r.TimestampDelta) + kbin.VarintLen(offsetDelta)
	n += varintBytesLen(r.Key) + varintBytesLen(r.Value)
	n += kbin.VarintLen(int32(len(r.Headers)))
	for i := range r.Headers {
		n += kbin.VarintLen(int32(len(r.Headers[i].Key))) + len(r.Headers[i].Key)
		n += varintBytesLen(r.Headers[i].Value)
	}
	return n
}

func varintBytesLen(b []byte) int {
	if b == nil {
		return kbin.VarintLen(-1)
	}
	return kbin.VarintLen(int32(len(b))) + len(b)
}
