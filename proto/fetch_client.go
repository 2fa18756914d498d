package proto

import (
	"encoding/binary"
	"errors"
)

// The Fetch request and response from the fetching side (a follower's replica
// fetcher), versions 4-15 as the layouts in fetch.go: the request appended into a
// reused buffer, the response walked in place, its records viewing the bytes read.

// BeginRequestFrame appends a placeholder size prefix and the request header to dst:
// v1, or v2 (an empty tag buffer after the client id) when the request is flexible.
// EndFrame fills the size once the body follows.
func BeginRequestFrame(dst []byte, key, version int16, correlationID int32, clientID string) (out []byte, start int) {
	start = len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(key))
	dst = binary.BigEndian.AppendUint16(dst, uint16(version))
	dst = binary.BigEndian.AppendUint32(dst, uint32(correlationID))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(clientID)))
	dst = append(dst, clientID...)
	if IsFlexibleRequest(key, version) {
		dst = append(dst, 0)
	}
	return dst, start
}

// AppendFetchRequestStart appends the request fields before the topics: the replica id
// (before v15; from v15 it is in ReplicaState, AppendFetchRequestEnd), no isolation
// (read_uncommitted), no fetch session (id 0, epoch -1).
func AppendFetchRequestStart(dst []byte, version int16, replicaID, maxWaitMs, minBytes, maxBytes int32, topics int) []byte {
	if version < FetchVersionReplicaState {
		dst = binary.BigEndian.AppendUint32(dst, uint32(replicaID))
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(maxWaitMs))
	dst = binary.BigEndian.AppendUint32(dst, uint32(minBytes))
	dst = binary.BigEndian.AppendUint32(dst, uint32(maxBytes))
	dst = append(dst, 0)
	if version >= 7 {
		dst = binary.BigEndian.AppendUint32(dst, 0)
		dst = binary.BigEndian.AppendUint32(dst, 0xffffffff)
	}
	return appendArrayLen(dst, fetchFlexible(version), topics)
}

// AppendFetchRequestPartition appends one partition of a request topic (opened with
// AppendFetchTopicStart, closed with AppendFetchTopicEnd).
func AppendFetchRequestPartition(dst []byte, version int16, p *FetchPartitionRequest) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(p.Partition))
	if version >= 9 {
		dst = binary.BigEndian.AppendUint32(dst, uint32(p.CurrentLeaderEpoch))
	}
	dst = binary.BigEndian.AppendUint64(dst, uint64(p.FetchOffset))
	if fetchFlexible(version) {
		dst = binary.BigEndian.AppendUint32(dst, uint32(p.LastFetchedEpoch))
	}
	if version >= 5 {
		dst = binary.BigEndian.AppendUint64(dst, uint64(p.LogStartOffset))
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(p.PartitionMaxBytes))
	if fetchFlexible(version) {
		dst = append(dst, 0)
	}
	return dst
}

// AppendFetchRequestEnd appends the fields after the topics: no forgotten topics (v7+),
// an empty rack id (v11+) and, v12+, the tag buffer, which from v15 holds ReplicaState
// (replicaID and its broker epoch, -1 if unknown).
func AppendFetchRequestEnd(dst []byte, version int16, replicaID int32, replicaEpoch int64) []byte {
	flexible := fetchFlexible(version)
	if version >= 7 {
		dst = appendArrayLen(dst, flexible, 0)
	}
	if version >= 11 {
		dst = appendString(dst, flexible, nil)
	}
	switch {
	case version >= FetchVersionReplicaState:
		// One field: tag, size (4+8+1 = 13), id, epoch, its own empty tag buffer.
		dst = append(dst, 1, fetchReplicaStateTag, 13)
		dst = binary.BigEndian.AppendUint32(dst, uint32(replicaID))
		dst = binary.BigEndian.AppendUint64(dst, uint64(replicaEpoch))
		dst = append(dst, 0)
	case flexible:
		dst = append(dst, 0)
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
	// TopicID is the current topic's id (v13+; NextTopic's name is then nil).
	TopicID [16]byte

	version               int16
	r                     reader
	topicsLeft, partsLeft int
}

// FetchResponsePartition is one partition of a Fetch response; Records views the
// response's bytes.
type FetchResponsePartition struct {
	FetchPartition
	Records []byte
}

// ParseFetchResponse reads the head of a Fetch response body of the given version.
func ParseFetchResponse(b []byte, version int16) (FetchResponse, error) {
	fr := FetchResponse{version: version}
	if version < FetchVersionMin || version > FetchVersionMax {
		return fr, ErrMalformedFetchResponse
	}
	fr.r.b = b
	fr.r.int32() // throttle
	if version >= 7 {
		fr.ErrorCode = fr.r.int16()
		fr.r.int32() // session id
	}
	fr.Topics = fr.r.arrayLen(fetchFlexible(version), fetchTopicBytes(version))
	if fr.r.bad {
		return fr, ErrMalformedFetchResponse
	}
	fr.topicsLeft = fr.Topics
	return fr, nil
}

// fetchResponsePartitionBytes is the least a response partition takes.
func fetchResponsePartitionBytes(version int16) int {
	n := 4 + 2 + 8 + 8 // partition, error code, high watermark, last stable offset
	if version >= 5 {
		n += 8
	}
	if version >= 11 {
		n += 4
	}
	if fetchFlexible(version) {
		return n + 1 + 1 + 1 // compact aborted transactions and records, tags
	}
	return n + 4 + 4
}

// NextTopic advances to the next topic: its name (v≤12, nil after) and partition count.
func (r *FetchResponse) NextTopic() (name []byte, partitions int, err error) {
	if r.topicsLeft == 0 || r.partsLeft != 0 {
		return nil, 0, ErrMalformedFetchResponse
	}
	name, id, n, ok := r.r.fetchTopic(r.version, fetchResponsePartitionBytes(r.version))
	if !ok {
		return nil, 0, ErrMalformedFetchResponse
	}
	if r.version >= FetchVersionTopicIDs {
		r.TopicID = id
	}
	r.topicsLeft--
	r.partsLeft = n
	return name, n, nil
}

// End reads what follows the last topic — the response's tag buffer (v12+) — and
// checks that nothing trails it. Call it once every partition was read.
func (r *FetchResponse) End() error {
	if r.topicsLeft != 0 || r.partsLeft != 0 {
		return ErrMalformedFetchResponse
	}
	if fetchFlexible(r.version) {
		for range r.r.tagCount() {
			tag, data := r.r.tag()
			f := reader{b: data}
			if tag == 0 { // NodeEndpoints (v16+): checked, unused
				for range f.arrayLen(true, 4+1+4+1+1) {
					f.int32()
					f.string(true)
					f.int32()
					if n := f.uvarint(); n > 0 { // rack, nullable
						f.span(int(n - 1))
					}
					f.skipTags()
				}
				if f.bad || len(f.b) != 0 {
					r.r.fail()
				}
			}
		}
	}
	if r.r.bad || len(r.r.b) != 0 {
		return ErrMalformedFetchResponse
	}
	return nil
}

// NextPartition reads the current topic's next partition. Aborted transactions are
// skipped (the node writes none), and so are tagged fields other than DivergingEpoch.
func (r *FetchResponse) NextPartition() (FetchResponsePartition, error) {
	var p FetchResponsePartition
	if r.partsLeft == 0 {
		return p, ErrMalformedFetchResponse
	}
	flexible := fetchFlexible(r.version)
	b := &r.r
	p.Partition = b.int32()
	p.ErrorCode = b.int16()
	p.HighWatermark = b.int64()
	p.LastStableOffset = b.int64()
	p.LogStartOffset = -1
	if r.version >= 5 {
		p.LogStartOffset = b.int64()
	}
	aborted := 16 // producer id, first offset
	if flexible {
		aborted++ // tags
	}
	for range b.nullableArrayLen(flexible, aborted) {
		b.span(16)
		if flexible {
			b.skipTags()
		}
	}
	if r.version >= 11 {
		b.int32() // preferred read replica
	}
	var n int64
	if flexible {
		n = int64(b.uvarint()) - 1
	} else {
		n = int64(b.int32())
	}
	if n > 0 {
		if n > int64(len(b.b)) {
			b.fail()
		} else {
			p.Records = b.span(int(n))
			p.RecordsBytes = int32(n)
		}
	}
	if flexible {
		// Tags: DivergingEpoch read; CurrentLeader (1) and SnapshotId (2), unused,
		// checked for their shape.
		for range b.tagCount() {
			tag, data := b.tag()
			f := reader{b: data}
			switch tag {
			case fetchDivergingEpochTag:
				p.DivergingEpoch = EpochEndOffset{Epoch: f.int32(), EndOffset: f.int64()}
				p.Diverging = p.DivergingEpoch != EpochEndOffset{Epoch: -1, EndOffset: -1}
			case 1:
				f.span(4 + 4) // leader id, leader epoch
			case 2:
				f.span(8 + 4) // end offset, epoch
			default:
				continue
			}
			f.skipTags()
			if f.bad || len(f.b) != 0 {
				b.fail()
			}
		}
		r.partsLeft--
		if r.partsLeft == 0 {
			b.skipTags() // the topic's
		}
	} else {
		r.partsLeft--
	}
	if b.bad {
		return FetchResponsePartition{}, ErrMalformedFetchResponse
	}
	return p, nil
}
