package proto

import (
	"encoding/binary"
	"errors"
)

// Produce requests and responses are hand-written because every produced byte passes
// through them and kmsg's structs cost allocations per request. Versions 3-8
// (non-flexible), checked byte for byte against kmsg:
//
//	request    transactionalId nullable string · acks int16 · timeoutMs int32 ·
//	           [topic: name string · [partition: index int32 · records nullable bytes]]
//	response   [topic: name string · [partition: index int32 · errorCode int16 ·
//	           baseOffset int64 · logAppendTimeMs int64 · logStartOffset int64 (v5+) ·
//	           recordErrors [] (v8+) · errorMessage nullable string (v8+)]] ·
//	           throttleTimeMs int32

// ProduceVersionMin and ProduceVersionMax bound the versions handled here.
const (
	ProduceVersionMin = 3
	ProduceVersionMax = 8
)

// ErrMalformedProduce: the request's fields do not fit its bytes.
var ErrMalformedProduce = errors.New("proto: malformed produce request")

// ProduceRequest is a decoded produce request's head; Next walks its partitions. It views
// the request's bytes.
type ProduceRequest struct {
	TransactionalID []byte // nil when null
	Acks            int16
	TimeoutMs       int32
	// Topics is the number of topics.
	Topics int

	// topic is the current topic's name.
	topic []byte
	topicCursor
}

// ParseProduceRequest decodes the head of a produce request body. Counts are checked
// against the bytes left before anything relies on them.
func ParseProduceRequest(b []byte) (ProduceRequest, error) {
	var r ProduceRequest
	var ok bool
	if r.TransactionalID, b, ok = readNullableString(b); !ok || len(b) < 10 {
		return r, ErrMalformedProduce
	}
	r.Acks = int16(binary.BigEndian.Uint16(b))
	r.TimeoutMs = int32(binary.BigEndian.Uint32(b[2:]))
	n := int32(binary.BigEndian.Uint32(b[6:]))
	b = b[10:]
	if n < 0 || int(n) > len(b)/6 { // a topic takes at least 6 bytes
		return r, ErrMalformedProduce
	}
	r.Topics, r.topicsLeft, r.rest = int(n), int(n), b
	return r, nil
}

// NextTopic advances to the next topic and returns its name and partition count.
func (r *ProduceRequest) NextTopic() (name []byte, partitions int, err error) {
	name, n, ok := r.nextTopic(8) // a partition takes at least 8 bytes
	if !ok {
		return nil, 0, ErrMalformedProduce
	}
	r.topic = name
	return name, n, nil
}

// topicCursor walks the topics of a request or response: each a name (a non-flexible
// string) and a partition count, then the partitions.
type topicCursor struct {
	rest                  []byte
	topicsLeft, partsLeft int
}

// nextTopic reads the next topic's name and partition count, each partition taking at
// least partBytes of what follows; false if the bytes do not fit.
func (c *topicCursor) nextTopic(partBytes int) (name []byte, partitions int, ok bool) {
	if c.topicsLeft == 0 || c.partsLeft != 0 {
		return nil, 0, false
	}
	b := c.rest
	if name, b, ok = readString(b); !ok || len(b) < 4 {
		return nil, 0, false
	}
	n := int32(binary.BigEndian.Uint32(b))
	if n < 0 || int(n) > len(b[4:])/partBytes {
		return nil, 0, false
	}
	c.rest = b[4:]
	c.topicsLeft--
	c.partsLeft = int(n)
	return name, int(n), true
}

// NextPartition returns the current topic's next partition and its records (nil when
// null).
func (r *ProduceRequest) NextPartition() (partition int32, records []byte, err error) {
	if r.partsLeft == 0 || len(r.rest) < 8 {
		return 0, nil, ErrMalformedProduce
	}
	partition = int32(binary.BigEndian.Uint32(r.rest))
	n := int32(binary.BigEndian.Uint32(r.rest[4:]))
	r.rest = r.rest[8:]
	switch {
	case n == -1:
	case n < -1 || int(n) > len(r.rest):
		return 0, nil, ErrMalformedProduce
	default:
		records, r.rest = r.rest[:n:n], r.rest[n:]
	}
	r.partsLeft--
	return partition, records, nil
}

// Done reports whether every topic and partition was read and nothing trails them.
func (r *ProduceRequest) Done() bool {
	return r.topicsLeft == 0 && r.partsLeft == 0 && len(r.rest) == 0
}

func readString(b []byte) (s, rest []byte, ok bool) {
	if len(b) < 2 {
		return nil, b, false
	}
	n := int16(binary.BigEndian.Uint16(b))
	if n < 0 || int(n) > len(b)-2 {
		return nil, b, false
	}
	return b[2 : 2+n : 2+n], b[2+n:], true
}

func readNullableString(b []byte) (s, rest []byte, ok bool) {
	if len(b) >= 2 && int16(binary.BigEndian.Uint16(b)) == -1 {
		return nil, b[2:], true
	}
	return readString(b)
}

// ProducePartitionResult is one partition's answer.
type ProducePartitionResult struct {
	Partition       int32
	ErrorCode       int16
	BaseOffset      int64
	LogAppendTimeMs int64
	LogStartOffset  int64
}

// ProduceErrorCodeOffset is where a partition answer's error code lies from the
// answer's start, so a delayed answer can be patched in place.
const ProduceErrorCodeOffset = 4

// AppendProducePartition appends one partition's answer.
func AppendProducePartition(dst []byte, version int16, p *ProducePartitionResult) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(p.Partition))
	dst = binary.BigEndian.AppendUint16(dst, uint16(p.ErrorCode))
	dst = binary.BigEndian.AppendUint64(dst, uint64(p.BaseOffset))
	dst = binary.BigEndian.AppendUint64(dst, uint64(p.LogAppendTimeMs))
	if version >= 5 {
		dst = binary.BigEndian.AppendUint64(dst, uint64(p.LogStartOffset))
	}
	if version >= 8 {
		dst = binary.BigEndian.AppendUint32(dst, 0)      // no record errors
		dst = binary.BigEndian.AppendUint16(dst, 0xffff) // no error message
	}
	return dst
}

// PatchProduceErrorCode rewrites the error code of the partition answer starting at pos.
func PatchProduceErrorCode(b []byte, pos int, code int16) {
	binary.BigEndian.PutUint16(b[pos+ProduceErrorCodeOffset:], uint16(code))
}

// PatchProducePartition rewrites, in place, the answer of the partition that
// AppendProducePartition wrote at pos: a staged append's result is known only once the
// pass's appends are done.
func PatchProducePartition(b []byte, pos int, version int16, p *ProducePartitionResult) {
	binary.BigEndian.PutUint16(b[pos+4:], uint16(p.ErrorCode))
	binary.BigEndian.PutUint64(b[pos+6:], uint64(p.BaseOffset))
	binary.BigEndian.PutUint64(b[pos+14:], uint64(p.LogAppendTimeMs))
	if version >= 5 {
		binary.BigEndian.PutUint64(b[pos+22:], uint64(p.LogStartOffset))
	}
}
