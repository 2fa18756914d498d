package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// RecordBatch v2 (magic 2) is the unit Gregor stores and serves: the broker validates its
// header, writes baseOffset and partitionLeaderEpoch in place, and never touches the
// records. This file is the one place that knows the header's layout; the storage engine
// (segment) and the data plane both use it.
//
// Layout (big-endian), 61 bytes then the records:
//
//	offset  size  field
//	0       8     baseOffset            written by the broker (outside the CRC)
//	8       4     batchLength           bytes after this field (so size = batchLength+12)
//	12      4     partitionLeaderEpoch  written by the broker (outside the CRC)
//	16      1     magic                 must be 2
//	17      4     crc                   CRC-32C (Castagnoli) of bytes 21..end
//	21      2     attributes            bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control
//	23      4     lastOffsetDelta
//	27      8     baseTimestamp
//	35      8     maxTimestamp
//	43      8     producerId
//	51      2     producerEpoch
//	53      4     baseSequence
//	57      4     recordCount
//	61      …     records (possibly compressed)
const (
	// RecordBatchHeaderSize is the size of a RecordBatch v2 header.
	RecordBatchHeaderSize = 61
	// RecordBatchLogOverhead is the size of baseOffset and batchLength, the part of the
	// header that batchLength does not count.
	RecordBatchLogOverhead = 12
	// RecordBatchMagic is the only batch format Gregor accepts.
	RecordBatchMagic = 2

	// Field positions in the header.
	batchBaseOffsetPos      = 0
	batchLengthPos          = 8
	batchLeaderEpochPos     = 12
	batchMagicPos           = 16
	batchCRCPos             = 17
	batchAttributesPos      = 21
	batchLastOffsetDeltaPos = 23
	batchBaseTimestampPos   = 27
	batchMaxTimestampPos    = 35
	batchProducerIDPos      = 43
	batchProducerEpochPos   = 51
	batchBaseSequencePos    = 53
	batchRecordCountPos     = 57

	// minBatchLength is the smallest legal batchLength: a header with no records.
	minBatchLength = RecordBatchHeaderSize - RecordBatchLogOverhead
)

// Batch attribute bits.
const (
	// AttrCompressionMask selects the codec bits of the attributes.
	AttrCompressionMask = 0x07
	// AttrLogAppendTime marks a batch whose maxTimestamp the broker set on append.
	AttrLogAppendTime = 0x08
	// AttrTransactional marks a batch written inside a transaction.
	AttrTransactional = 0x10
	// AttrControl marks a control batch (transaction markers).
	AttrControl = 0x20
)

// Compression codecs, as stored in the attributes' low three bits.
const (
	CodecNone   = 0
	CodecGzip   = 1
	CodecSnappy = 2
	CodecLZ4    = 3
	CodecZstd   = 4
)

// Errors returned for malformed record batches. They are sentinels so that callers can
// map them to Kafka error codes with errors.Is; validation wraps them in *BatchError.
var (
	// ErrBatchTruncated: fewer bytes than the header or than batchLength claims.
	ErrBatchTruncated = errors.New("record batch truncated")
	// ErrBatchLength: batchLength smaller than a header, or not matching the bytes given.
	ErrBatchLength = errors.New("record batch length mismatch")
	// ErrBatchMagic: magic is not 2.
	ErrBatchMagic = errors.New("record batch magic is not 2")
	// ErrBatchCRC: the CRC-32C does not match the bytes.
	ErrBatchCRC = errors.New("record batch CRC mismatch")
	// ErrBatchRecordCount: recordCount < 1 or recordCount != lastOffsetDelta+1.
	ErrBatchRecordCount = errors.New("record batch record count does not match lastOffsetDelta")
	// ErrBatchCodec: the compression codec is not one Kafka defines.
	ErrBatchCodec = errors.New("record batch has an unknown compression codec")
	// ErrBatchTooLarge: the batch is larger than the configured maximum.
	ErrBatchTooLarge = errors.New("record batch larger than the maximum")
)

// BatchError says which batch of a sequence was bad and why. Err is one of the ErrBatch…
// sentinels.
type BatchError struct {
	// Position is the byte position of the bad batch in the buffer that was validated.
	Position int
	// Err is the reason, one of the ErrBatch… sentinels.
	Err error
	// Detail adds numbers for a human reader (may be empty).
	Detail string
}

// Error implements error.
func (e *BatchError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("batch at byte %d: %v", e.Position, e.Err)
	}
	return fmt.Sprintf("batch at byte %d: %v (%s)", e.Position, e.Err, e.Detail)
}

// Unwrap returns the sentinel.
func (e *BatchError) Unwrap() error { return e.Err }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C extends crc with p using the Castagnoli polynomial, the checksum of RecordBatch
// v2. CRC32C(0, batch[21:]) is a batch's checksum; it can be computed piecewise.
func CRC32C(crc uint32, p []byte) uint32 { return crc32.Update(crc, castagnoli, p) }

// RecordBatchHeader is a decoded RecordBatch v2 header.
type RecordBatchHeader struct {
	BaseOffset           int64
	BatchLength          int32
	PartitionLeaderEpoch int32
	Magic                int8
	CRC                  uint32
	Attributes           int16
	LastOffsetDelta      int32
	BaseTimestamp        int64
	MaxTimestamp         int64
	ProducerID           int64
	ProducerEpoch        int16
	BaseSequence         int32
	RecordCount          int32
}

// Size is the whole batch's size in bytes, header included.
func (h *RecordBatchHeader) Size() int { return int(h.BatchLength) + RecordBatchLogOverhead }

// LastOffset is the offset of the batch's last record.
func (h *RecordBatchHeader) LastOffset() int64 { return h.BaseOffset + int64(h.LastOffsetDelta) }

// NextOffset is the offset after the batch's last record.
func (h *RecordBatchHeader) NextOffset() int64 { return h.LastOffset() + 1 }

// Codec is the compression codec (CodecNone … CodecZstd).
func (h *RecordBatchHeader) Codec() int { return int(h.Attributes) & AttrCompressionMask }

// IsLogAppendTime reports whether the broker set maxTimestamp on append.
func (h *RecordBatchHeader) IsLogAppendTime() bool { return h.Attributes&AttrLogAppendTime != 0 }

// IsTransactional reports the transactional bit.
func (h *RecordBatchHeader) IsTransactional() bool { return h.Attributes&AttrTransactional != 0 }

// IsControl reports the control bit.
func (h *RecordBatchHeader) IsControl() bool { return h.Attributes&AttrControl != 0 }

// ParseRecordBatchHeader decodes the header at the start of b and checks everything that
// the header alone can show: enough bytes for a header, magic 2, a batchLength at least a
// header's, a known codec, and recordCount = lastOffsetDelta+1 ≥ 1. It does not check the
// CRC nor that b holds the whole batch (see ValidateRecordBatch).
func ParseRecordBatchHeader(b []byte) (RecordBatchHeader, error) {
	var h RecordBatchHeader
	if len(b) < RecordBatchHeaderSize {
		// Decode what can be decoded so callers can report the claimed size.
		if len(b) >= RecordBatchLogOverhead {
			h.BaseOffset = int64(binary.BigEndian.Uint64(b[batchBaseOffsetPos:]))
			h.BatchLength = int32(binary.BigEndian.Uint32(b[batchLengthPos:]))
		}
		return h, ErrBatchTruncated
	}
	h.BaseOffset = int64(binary.BigEndian.Uint64(b[batchBaseOffsetPos:]))
	h.BatchLength = int32(binary.BigEndian.Uint32(b[batchLengthPos:]))
	h.PartitionLeaderEpoch = int32(binary.BigEndian.Uint32(b[batchLeaderEpochPos:]))
	h.Magic = int8(b[batchMagicPos])
	h.CRC = binary.BigEndian.Uint32(b[batchCRCPos:])
	h.Attributes = int16(binary.BigEndian.Uint16(b[batchAttributesPos:]))
	h.LastOffsetDelta = int32(binary.BigEndian.Uint32(b[batchLastOffsetDeltaPos:]))
	h.BaseTimestamp = int64(binary.BigEndian.Uint64(b[batchBaseTimestampPos:]))
	h.MaxTimestamp = int64(binary.BigEndian.Uint64(b[batchMaxTimestampPos:]))
	h.ProducerID = int64(binary.BigEndian.Uint64(b[batchProducerIDPos:]))
	h.ProducerEpoch = int16(binary.BigEndian.Uint16(b[batchProducerEpochPos:]))
	h.BaseSequence = int32(binary.BigEndian.Uint32(b[batchBaseSequencePos:]))
	h.RecordCount = int32(binary.BigEndian.Uint32(b[batchRecordCountPos:]))
	switch {
	case h.BatchLength < minBatchLength:
		return h, ErrBatchLength
	case h.Magic != RecordBatchMagic:
		return h, ErrBatchMagic
	case h.Codec() > CodecZstd:
		return h, ErrBatchCodec
	case h.RecordCount < 1 || h.LastOffsetDelta < 0 || int64(h.RecordCount) != int64(h.LastOffsetDelta)+1:
		return h, ErrBatchRecordCount
	}
	return h, nil
}

// ValidateRecordBatch checks the batch at the start of b completely: the header (see
// ParseRecordBatchHeader), that b holds at least the whole batch, that the batch is no
// larger than maxBatchBytes, and its CRC-32C. It returns the header; the batch occupies
// b[:h.Size()]. One CRC per batch is all the per-byte work the broker does.
func ValidateRecordBatch(b []byte, maxBatchBytes int) (RecordBatchHeader, error) {
	h, err := ParseRecordBatchHeader(b)
	if err != nil {
		return h, err
	}
	size := h.Size()
	if size > maxBatchBytes {
		return h, ErrBatchTooLarge
	}
	if size > len(b) {
		return h, ErrBatchTruncated
	}
	if CRC32C(0, b[batchAttributesPos:size]) != h.CRC {
		return h, ErrBatchCRC
	}
	return h, nil
}

// RecordBatchSize reads the size of the batch starting at b (header included) from its
// first 12 bytes, without validating anything else. It returns ErrBatchTruncated if b is
// shorter than 12 bytes and ErrBatchLength if the length field is below a header's.
func RecordBatchSize(b []byte) (int, error) {
	if len(b) < RecordBatchLogOverhead {
		return 0, ErrBatchTruncated
	}
	n := int32(binary.BigEndian.Uint32(b[batchLengthPos:]))
	if n < minBatchLength {
		return 0, ErrBatchLength
	}
	return int(n) + RecordBatchLogOverhead, nil
}

// SetBaseOffset writes baseOffset in place. It lies outside the CRC: no recomputation.
func SetBaseOffset(batch []byte, offset int64) {
	binary.BigEndian.PutUint64(batch[batchBaseOffsetPos:], uint64(offset))
}

// SetPartitionLeaderEpoch writes partitionLeaderEpoch in place (outside the CRC).
func SetPartitionLeaderEpoch(batch []byte, epoch int32) {
	binary.BigEndian.PutUint32(batch[batchLeaderEpochPos:], uint32(epoch))
}

// SetLogAppendTime marks the batch as LogAppendTime with maxTimestamp ts and recomputes
// its CRC, as Kafka does for topics with message.timestamp.type=LogAppendTime. The batch
// must have been validated: batch[:size] is the whole batch.
func SetLogAppendTime(batch []byte, ts int64) {
	attrs := binary.BigEndian.Uint16(batch[batchAttributesPos:]) | AttrLogAppendTime
	binary.BigEndian.PutUint16(batch[batchAttributesPos:], attrs)
	binary.BigEndian.PutUint64(batch[batchMaxTimestampPos:], uint64(ts))
	size := int(int32(binary.BigEndian.Uint32(batch[batchLengthPos:]))) + RecordBatchLogOverhead
	binary.BigEndian.PutUint32(batch[batchCRCPos:], CRC32C(0, batch[batchAttributesPos:size]))
}

// AppendRecordBatchHeader appends the 61-byte encoding of h to dst with the CRC field
// set to h.CRC. Callers that build batches (tests, the bench's raw producer) use it with
// SealRecordBatch, which computes the CRC once the records follow.
func AppendRecordBatchHeader(dst []byte, h *RecordBatchHeader) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.BaseOffset))
	dst = binary.BigEndian.AppendUint32(dst, uint32(h.BatchLength))
	dst = binary.BigEndian.AppendUint32(dst, uint32(h.PartitionLeaderEpoch))
	dst = append(dst, byte(h.Magic))
	dst = binary.BigEndian.AppendUint32(dst, h.CRC)
	dst = binary.BigEndian.AppendUint16(dst, uint16(h.Attributes))
	dst = binary.BigEndian.AppendUint32(dst, uint32(h.LastOffsetDelta))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.BaseTimestamp))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.MaxTimestamp))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.ProducerID))
	dst = binary.BigEndian.AppendUint16(dst, uint16(h.ProducerEpoch))
	dst = binary.BigEndian.AppendUint32(dst, uint32(h.BaseSequence))
	dst = binary.BigEndian.AppendUint32(dst, uint32(h.RecordCount))
	return dst
}

// SealRecordBatch sets batchLength to len(batch)-12 and computes the CRC, for a batch
// whose header and records have been written.
func SealRecordBatch(batch []byte) {
	binary.BigEndian.PutUint32(batch[batchLengthPos:], uint32(len(batch)-RecordBatchLogOverhead))
	binary.BigEndian.PutUint32(batch[batchCRCPos:], CRC32C(0, batch[batchAttributesPos:]))
}
