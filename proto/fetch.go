package proto

import (
	"encoding/binary"
	"errors"
)

// The Fetch response is hand-written because its records are not bytes in memory: they
// are file regions sent with sendfile after the bytes that precede them. These appenders
// write everything but the records; each partition's header ends with the records'
// length, and the caller sends that many bytes of regions next. Versions 4-11
// (non-flexible); checked byte for byte against kmsg.FetchResponse.
//
//	response   throttleMs int32 · errorCode int16 (v7+) · sessionId int32 (v7+) · [topic]
//	topic      name string · [partition]
//	partition  partition int32 · errorCode int16 · highWatermark int64 ·
//	           lastStableOffset int64 · logStartOffset int64 (v5+) ·
//	           abortedTransactions nullable array (-1: none) · preferredReadReplica
//	           int32 (v11+) · records nullable bytes (int32 length, then the batches)

// FetchVersionMin and FetchVersionMax bound the versions these appenders write.
const (
	FetchVersionMin = 4
	FetchVersionMax = 11
)

// AppendFetchResponseStart appends the response fields before the topics.
func AppendFetchResponseStart(dst []byte, version int16, throttleMs int32, errorCode int16, sessionID int32, topics int) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(throttleMs))
	if version >= 7 {
		dst = binary.BigEndian.AppendUint16(dst, uint16(errorCode))
		dst = binary.BigEndian.AppendUint32(dst, uint32(sessionID))
	}
	return binary.BigEndian.AppendUint32(dst, uint32(topics))
}

// AppendTopicStart appends a response topic's name (a non-flexible string) and its
// partition count: how Produce and Fetch responses (v≤8, v≤11) open each topic.
func AppendTopicStart(dst []byte, topic []byte, partitions int) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(topic)))
	dst = append(dst, topic...)
	return binary.BigEndian.AppendUint32(dst, uint32(partitions))
}

// FetchPartition is one partition's answer, less its records.
type FetchPartition struct {
	Partition        int32
	ErrorCode        int16
	HighWatermark    int64
	LastStableOffset int64
	LogStartOffset   int64
	// RecordsBytes is the length of the records that follow on the wire.
	RecordsBytes int32
}

// AppendFetchPartition appends a partition's fields up to and including the records
// length; RecordsBytes bytes of batches must follow.
func AppendFetchPartition(dst []byte, version int16, p *FetchPartition) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(p.Partition))
	dst = binary.BigEndian.AppendUint16(dst, uint16(p.ErrorCode))
	dst = binary.BigEndian.AppendUint64(dst, uint64(p.HighWatermark))
	dst = binary.BigEndian.AppendUint64(dst, uint64(p.LastStableOffset))
	if version >= 5 {
		dst = binary.BigEndian.AppendUint64(dst, uint64(p.LogStartOffset))
	}
	dst = binary.BigEndian.AppendUint32(dst, 0xffffffff) // no aborted transactions
	if version >= 11 {
		dst = binary.BigEndian.AppendUint32(dst, 0xffffffff) // preferred read replica: none
	}
	return binary.BigEndian.AppendUint32(dst, uint32(p.RecordsBytes))
}

// The Fetch request (versions 4-11, non-flexible), walked without allocating:
//
//	replicaId int32 · maxWaitMs int32 · minBytes int32 · maxBytes int32 ·
//	isolationLevel int8 · sessionId int32 (v7+) · sessionEpoch int32 (v7+) ·
//	[topic: name string · [partition: index int32 · currentLeaderEpoch int32 (v9+) ·
//	  fetchOffset int64 · logStartOffset int64 (v5+) · partitionMaxBytes int32]] ·
//	forgottenTopics [name string · [index int32]] (v7+) · rackId string (v11+)

// ErrMalformedFetch: the request's fields do not fit its bytes.
var ErrMalformedFetch = errors.New("proto: malformed fetch request")

// FetchRequest is a checked Fetch request; Walk reads its topics. It views the bytes it
// was parsed from.
type FetchRequest struct {
	ReplicaID      int32
	MaxWaitMs      int32
	MinBytes       int32
	MaxBytes       int32
	IsolationLevel int8
	SessionID      int32
	SessionEpoch   int32
	Topics         int

	version int16
	topics  []byte // from the first topic on
}

// FetchPartitionRequest is one partition of a Fetch request.
type FetchPartitionRequest struct {
	Partition          int32
	CurrentLeaderEpoch int32 // -1 before v9
	FetchOffset        int64
	LogStartOffset     int64 // -1 before v5
	PartitionMaxBytes  int32
}

func fetchPartitionBytes(version int16) int {
	n := 4 + 8 + 4
	if version >= 9 {
		n += 4
	}
	if version >= 5 {
		n += 8
	}
	return n
}

// ParseFetchRequest checks a whole Fetch request body of the given version — every count
// against the bytes left, no trailing bytes — and returns its head.
func ParseFetchRequest(b []byte, version int16) (FetchRequest, error) {
	r := FetchRequest{version: version, SessionEpoch: -1}
	head := 17
	if version >= 7 {
		head += 8
	}
	if version < FetchVersionMin || version > FetchVersionMax || len(b) < head+4 {
		return r, ErrMalformedFetch
	}
	r.ReplicaID = int32(binary.BigEndian.Uint32(b))
	r.MaxWaitMs = int32(binary.BigEndian.Uint32(b[4:]))
	r.MinBytes = int32(binary.BigEndian.Uint32(b[8:]))
	r.MaxBytes = int32(binary.BigEndian.Uint32(b[12:]))
	r.IsolationLevel = int8(b[16])
	if version >= 7 {
		r.SessionID = int32(binary.BigEndian.Uint32(b[17:]))
		r.SessionEpoch = int32(binary.BigEndian.Uint32(b[21:]))
	}
	b = b[head:]
	n := int32(binary.BigEndian.Uint32(b))
	b = b[4:]
	if n < 0 || int(n) > len(b)/6 {
		return r, ErrMalformedFetch
	}
	r.Topics, r.topics = int(n), b
	// Check the topics now, so that walking them later cannot fail.
	w := r.Walk()
	for range r.Topics {
		_, parts, err := w.NextTopic()
		if err != nil {
			return r, err
		}
		for range parts {
			if _, err := w.NextPartition(); err != nil {
				return r, err
			}
		}
	}
	rest := w.rest
	if version >= 7 {
		if len(rest) < 4 {
			return r, ErrMalformedFetch
		}
		forgotten := int32(binary.BigEndian.Uint32(rest))
		rest = rest[4:]
		if forgotten < 0 || int(forgotten) > len(rest)/6 {
			return r, ErrMalformedFetch
		}
		for range forgotten {
			var ok bool
			if _, rest, ok = readString(rest); !ok || len(rest) < 4 {
				return r, ErrMalformedFetch
			}
			parts := int32(binary.BigEndian.Uint32(rest))
			rest = rest[4:]
			if parts < 0 || int(parts) > len(rest)/4 {
				return r, ErrMalformedFetch
			}
			rest = rest[4*int(parts):]
		}
	}
	if version >= 11 {
		var ok bool
		if _, rest, ok = readString(rest); !ok {
			return r, ErrMalformedFetch
		}
	}
	if len(rest) != 0 {
		return r, ErrMalformedFetch
	}
	return r, nil
}

// FetchWalker reads a Fetch request's topics and partitions in order.
type FetchWalker struct {
	topicCursor
	version int16
}

// Walk starts reading the topics from the first.
func (r *FetchRequest) Walk() FetchWalker {
	return FetchWalker{topicCursor: topicCursor{rest: r.topics, topicsLeft: r.Topics}, version: r.version}
}

// NextTopic advances to the next topic.
func (w *FetchWalker) NextTopic() (name []byte, partitions int, err error) {
	name, n, ok := w.nextTopic(fetchPartitionBytes(w.version))
	if !ok {
		return nil, 0, ErrMalformedFetch
	}
	return name, n, nil
}

// NextPartition reads the current topic's next partition.
func (w *FetchWalker) NextPartition() (FetchPartitionRequest, error) {
	p := FetchPartitionRequest{CurrentLeaderEpoch: -1, LogStartOffset: -1}
	if w.partsLeft == 0 || len(w.rest) < fetchPartitionBytes(w.version) {
		return p, ErrMalformedFetch
	}
	b := w.rest
	p.Partition = int32(binary.BigEndian.Uint32(b))
	b = b[4:]
	if w.version >= 9 {
		p.CurrentLeaderEpoch = int32(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	p.FetchOffset = int64(binary.BigEndian.Uint64(b))
	b = b[8:]
	if w.version >= 5 {
		p.LogStartOffset = int64(binary.BigEndian.Uint64(b))
		b = b[8:]
	}
	p.PartitionMaxBytes = int32(binary.BigEndian.Uint32(b))
	w.rest = b[4:]
	w.partsLeft--
	return p, nil
}
