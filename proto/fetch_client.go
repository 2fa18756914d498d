package proto

import (
	"encoding/binary"
	"errors"
)

// The Fetch request and response from the fetching side (a follower's replica
// fetcher), versions 4-11 as the layouts in fetch.go: the request appended into a
// reused buffer, the response walked in place, its records viewing the bytes read.

// BeginRequestFrame appends a placeholder size prefix and a v1 request header (no
// tag buffer: non-flexible requests) to dst; EndFrame fills the size once the body
// follows.
func BeginRequestFrame(dst []byte, key, version int16, correlationID int32, clientID string) (out []byte, start int) {
	start = len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(key))
	dst = binary.BigEndian.AppendUint16(dst, uint16(version))
	dst = binary.BigEndian.AppendUint32(dst, uint32(correlationID))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(clientID)))
	return append(dst, clientID...), start
}

// AppendFetchRequestStart appends the request fields before the topics: no isolation
// (read_uncommitted), no fetch session (id 0, epoch -1).
func AppendFetchRequestStart(dst []byte, version int16, replicaID, maxWaitMs, minBytes, maxBytes int32, topics int) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(replicaID))
	dst = binary.BigEndian.AppendUint32(dst, uint32(maxWaitMs))
	dst = binary.BigEndian.AppendUint32(dst, uint32(minBytes))
	dst = binary.BigEndian.AppendUint32(dst, uint32(maxBytes))
	dst = append(dst, 0)
	if version >= 7 {
		dst = binary.BigEndian.AppendUint32(dst, 0)
		dst = binary.BigEndian.AppendUint32(dst, 0xffffffff)
	}
	return binary.BigEndian.AppendUint32(dst, uint32(topics))
}

// AppendFetchRequestPartition appends one partition of a request topic (opened with
// AppendTopicStart).
func AppendFetchRequestPartition(dst []byte, version int16, p *FetchPartitionRequest) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(p.Partition))
	if version >= 9 {
		dst = binary.BigEndian.AppendUint32(dst, uint32(p.CurrentLeaderEpoch))
	}
	dst = binary.BigEndian.AppendUint64(dst, uint64(p.FetchOffset))
	if version >= 5 {
		dst = binary.BigEndian.AppendUint64(dst, uint64(p.LogStartOffset))
	}
	return binary.BigEndian.AppendUint32(dst, uint32(p.PartitionMaxBytes))
}

// AppendFetchRequestEnd appends the fields after the topics: no forgotten topics (v7+),
// an empty rack id (v11+).
func AppendFetchRequestEnd(dst []byte, version int16) []byte {
	if version >= 7 {
		dst = binary.BigEndian.AppendUint32(dst, 0)
	}
	if version >= 11 {
		dst = binary.BigEndian.AppendUint16(dst, 0)
	}
	return dst
}

// ErrMalformedFetchResponse: a Fetch response's fields do not fit its bytes.
var ErrMalformedFetchResponse = errors.New("proto: malformed fetch response")

// FetchResponse is a Fetch response body being walked: its head, then NextTopic and
// NextPartition in order. It views the bytes it was parsed from.
type FetchResponse struct {
	ErrorCode int16
	Topics    int

	version int16
	topicCursor
}

// FetchResponsePartition is one partition of a Fetch response; Records views the
// response's bytes.
type FetchResponsePartition struct {
	FetchPartition
	Records []byte
}

// ParseFetchResponse reads the head of a Fetch response body of the given version.
func ParseFetchResponse(b []byte, version int16) (FetchResponse, error) {
	r := FetchResponse{version: version}
	head := 4
	if version >= 7 {
		head += 6
	}
	if version < FetchVersionMin || version > FetchVersionMax || len(b) < head+4 {
		return r, ErrMalformedFetchResponse
	}
	if version >= 7 {
		r.ErrorCode = int16(binary.BigEndian.Uint16(b[4:]))
	}
	n := int32(binary.BigEndian.Uint32(b[head:]))
	if n < 0 || int(n) > len(b)/6 {
		return r, ErrMalformedFetchResponse
	}
	r.Topics, r.topicsLeft, r.rest = int(n), int(n), b[head+4:]
	return r, nil
}

// NextTopic advances to the next topic.
func (r *FetchResponse) NextTopic() (name []byte, partitions int, err error) {
	name, n, ok := r.nextTopic(4)
	if !ok {
		return nil, 0, ErrMalformedFetchResponse
	}
	return name, n, nil
}

// NextPartition reads the current topic's next partition. Aborted transactions are
// skipped (the node writes none).
func (r *FetchResponse) NextPartition() (FetchResponsePartition, error) {
	var p FetchResponsePartition
	if r.partsLeft == 0 {
		return p, ErrMalformedFetchResponse
	}
	head, used, _, err := parseFetchPartitionHead(r.rest, r.version)
	if err != nil || used == 0 {
		return p, ErrMalformedFetchResponse
	}
	p.FetchPartition = head
	b := r.rest[used:]
	n := head.RecordsBytes
	p.RecordsBytes = 0
	if n > 0 {
		if int(n) > len(b) {
			return p, ErrMalformedFetchResponse
		}
		p.Records, b = b[:n:n], b[n:]
		p.RecordsBytes = n
	}
	r.rest = b
	r.partsLeft--
	return p, nil
}
