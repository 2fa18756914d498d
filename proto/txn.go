package proto

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kbin"
)

// Transaction markers (KIP-98). A transaction ends on each of its partitions with a
// control batch written by the partition's leader: attributes transactional|control, the
// producer's id and epoch, base sequence -1, and one record whose key and value are
//
//	key    version int16 (0) · type int16 (0 abort, 1 commit)
//	value  version int16 (0) · coordinatorEpoch int32
//
// as Kafka's EndTransactionMarker writes them. The batch is never compressed.

// Control record types (Kafka's ControlRecordType) of transaction markers.
const (
	ControlTypeAbort  int16 = 0
	ControlTypeCommit int16 = 1
)

// TxnMarker is the content of a transaction marker's record.
type TxnMarker struct {
	// Commit is true for a commit marker, false for an abort.
	Commit bool
	// CoordinatorEpoch is the epoch of the transaction coordinator that wrote it.
	CoordinatorEpoch int32
}

// ErrMalformedMarker: a control batch whose record is not a transaction marker.
var ErrMalformedMarker = errors.New("proto: malformed transaction marker")

// maxMarkerRecordsBytes bounds what a control batch's records may decompress to: a
// marker's record is a few dozen bytes.
const maxMarkerRecordsBytes = 4096

// AppendTxnMarkerBatch appends a transaction marker's control batch for producerID and
// producerEpoch, timestamped ts (ms), with base offset 0 and leader epoch -1 (the
// leader's append assigns both).
func AppendTxnMarkerBatch(dst []byte, producerID int64, producerEpoch int16, m TxnMarker, ts int64) []byte {
	typ := ControlTypeAbort
	if m.Commit {
		typ = ControlTypeCommit
	}
	var key [4]byte
	binary.BigEndian.PutUint16(key[2:], uint16(typ))
	var value [6]byte
	binary.BigEndian.PutUint32(value[2:], uint32(m.CoordinatorEpoch))
	h := RecordBatchHeader{
		PartitionLeaderEpoch: -1,
		Attributes:           AttrTransactional | AttrControl,
		BaseTimestamp:        ts,
		ProducerID:           producerID,
		ProducerEpoch:        producerEpoch,
		BaseSequence:         -1,
	}
	recs := [1]Record{{Key: key[:], Value: value[:]}}
	return AppendRecordBatch(dst, h, recs[:])
}

// ParseTxnMarker reads the marker of a control batch. batch must hold the whole batch
// (its length checked, as after ValidateRecordBatch); nothing past its first record is
// read. A batch that is not a control batch, whose first record's key is not a
// transaction marker's (version ≥ 0, type abort or commit) or whose value is shorter
// than a version and an epoch is ErrMalformedMarker.
func ParseTxnMarker(batch []byte) (TxnMarker, error) {
	h, err := ParseRecordBatchHeader(batch)
	if err != nil {
		return TxnMarker{}, err
	}
	if h.Size() > len(batch) {
		return TxnMarker{}, ErrBatchTruncated
	}
	if !h.IsControl() {
		return TxnMarker{}, fmt.Errorf("%w: not a control batch", ErrMalformedMarker)
	}
	records, err := DecompressRecords(h.Codec(), batch[RecordBatchHeaderSize:h.Size()], maxMarkerRecordsBytes)
	if err != nil {
		return TxnMarker{}, fmt.Errorf("%w: %v", ErrMalformedMarker, err)
	}
	r := kbin.Reader{Src: records}
	length := r.Varint()
	if !r.Ok() || length < 0 || int(length) > len(r.Src) {
		return TxnMarker{}, fmt.Errorf("%w: record length", ErrMalformedMarker)
	}
	rec := kbin.Reader{Src: r.Src[:length]}
	rec.Int8()    // attributes
	rec.Varlong() // timestamp delta
	rec.Varint()  // offset delta
	key := rec.VarintBytes()
	value := rec.VarintBytes()
	if !rec.Ok() || len(key) < 4 || len(value) < 6 {
		return TxnMarker{}, fmt.Errorf("%w: key of %d bytes, value of %d", ErrMalformedMarker, len(key), len(value))
	}
	version := int16(binary.BigEndian.Uint16(key))
	typ := int16(binary.BigEndian.Uint16(key[2:]))
	if version < 0 || (typ != ControlTypeAbort && typ != ControlTypeCommit) {
		return TxnMarker{}, fmt.Errorf("%w: key version %d type %d", ErrMalformedMarker, version, typ)
	}
	if v := int16(binary.BigEndian.Uint16(value)); v < 0 {
		return TxnMarker{}, fmt.Errorf("%w: value version %d", ErrMalformedMarker, v)
	}
	return TxnMarker{Commit: typ == ControlTypeCommit, CoordinatorEpoch: int32(binary.BigEndian.Uint32(value[2:]))}, nil
}

// AbortedTransaction is one entry of a Fetch response partition's aborted transactions:
// a producer whose transaction, starting at FirstOffset, was aborted.
type AbortedTransaction struct {
	ProducerID  int64
	FirstOffset int64
}

// appendAbortedTransactions appends a Fetch response partition's aborted transactions:
// a null array when !present (read_uncommitted), else the entries.
func appendAbortedTransactions(dst []byte, flexible, present bool, aborted []AbortedTransaction) []byte {
	if !present {
		if flexible {
			return append(dst, 0)
		}
		return binary.BigEndian.AppendUint32(dst, 0xffffffff)
	}
	dst = appendArrayLen(dst, flexible, len(aborted))
	for _, a := range aborted {
		dst = binary.BigEndian.AppendUint64(dst, uint64(a.ProducerID))
		dst = binary.BigEndian.AppendUint64(dst, uint64(a.FirstOffset))
		if flexible {
			dst = append(dst, 0)
		}
	}
	return dst
}
