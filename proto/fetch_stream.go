package proto

import "encoding/binary"

// A Fetch response as it arrives on a follower's socket, walked without reading any
// partition's records: a follower that splices each partition's records from the socket
// into its log reads only the bytes around them. The layout is fetch.go's; every
// per-version difference of the fields before and after the records is here and in
// parseFetchPartitionHead, which FetchResponse.NextPartition shares.

// FetchScanEvent is what FetchResponseScanner.Scan found.
type FetchScanEvent uint8

// The events of a scan.
const (
	// FetchScanNeedMore: the bytes given end inside a field. Scan's n is what it consumed
	// before it (whole fields, which the caller keeps); Need is how many bytes it needs
	// at least from there.
	FetchScanNeedMore FetchScanEvent = iota
	// FetchScanPartition: a partition's fields up to and including its records length
	// were consumed (Partition, Topic). Partition.RecordsBytes bytes of records follow
	// in the stream; the caller takes them, then scans on from after them.
	FetchScanPartition
	// FetchScanDone: the response's fields are all consumed.
	FetchScanDone
)

// FetchResponseScanner walks a Fetch response body (after the correlation id) from a
// stream: Scan is given the bytes read so far past what it consumed, consumes whole
// fields only, and stops before every partition's records. What it asks for is never
// more than the fields need, so a caller that reads exactly that never reads into the
// records. A count it reads is not checked against the bytes left: the caller bounds
// every read by the frame's size.
type FetchResponseScanner struct {
	version int16
	state   uint8
	// ErrorCode is the response's top-level error (v7+), once the head is consumed.
	ErrorCode int16
	// Topic is the current topic's name (v≤12; nil after); it views the bytes given
	// to Scan. TopicID is its id (v13+).
	Topic   []byte
	TopicID [16]byte
	// Partition is the last partition scanned (RecordsBytes: its records' length, ≤ 0
	// for none).
	Partition  FetchPartition
	topicsLeft int
	partsLeft  int
	need       int
	// recordsLengthBytes is the size of the last partition's records length field.
	recordsLengthBytes int
}

const (
	scanHead uint8 = iota
	scanTopic
	scanPartition
	scanDone
	// Flexible versions' tag buffers, after a partition's records, a topic's
	// partitions and the topics.
	scanPartitionTags
	scanTopicTags
	scanResponseTags
)

// fetchScanVersionMax is the last version the scanner knows the layout of. Versions
// from fetchScanFlexibleVersion on are flexible (KIP-482: compact arrays and strings,
// the records' length as a uvarint of length+1, tagged fields after each partition's
// records, topic and the response), and v13+ name topics by id:
//
//	response   throttleMs int32 · errorCode int16 · sessionId int32 · [topic] · tags
//	topic      name compact string (v12) | topicId uuid (v13+) · [partition] · tags
//	partition  partition int32 · errorCode int16 · highWatermark int64 ·
//	           lastStableOffset int64 · logStartOffset int64 ·
//	           abortedTransactions compact nullable [producerId int64 · firstOffset
//	           int64 · tags] · preferredReadReplica int32 · records compact nullable
//	           bytes · tags (DivergingEpoch, CurrentLeader, SnapshotId)
const (
	fetchScanVersionMax      = 15
	fetchScanFlexibleVersion = 12
	fetchScanTopicIDVersion  = 13
)

// FetchResponseScannable reports whether FetchResponseScanner walks responses of
// version; a follower fetching at another version must read its answers whole.
func FetchResponseScannable(version int16) bool {
	return version >= FetchVersionMin && version <= fetchScanVersionMax
}

// NewFetchResponseScanner starts a scan of a body of the given version.
func NewFetchResponseScanner(version int16) (*FetchResponseScanner, error) {
	if !FetchResponseScannable(version) {
		return nil, ErrMalformedFetchResponse
	}
	return &FetchResponseScanner{version: version}, nil
}

// fetchResponseHeadBytes is the size of a response's fields before the topics count.
func fetchResponseHeadBytes(version int16) int {
	if version >= 7 {
		return 4 + 2 + 4 // throttleMs, errorCode, sessionId
	}
	return 4
}

// Scan consumes the next fields of b — the body's bytes from where the previous call
// stopped — up to the next partition's records or the end: see FetchScanEvent. n is
// the bytes consumed.
func (s *FetchResponseScanner) Scan(b []byte) (n int, ev FetchScanEvent, err error) {
	if s.version >= fetchScanFlexibleVersion {
		return s.scanFlexible(b)
	}
	for {
		switch s.state {
		case scanHead:
			head := fetchResponseHeadBytes(s.version)
			if len(b) < n+head+4 {
				return s.needMore(n, head+4)
			}
			if s.version >= 7 {
				s.ErrorCode = int16(binary.BigEndian.Uint16(b[n+4:]))
			}
			topics := int32(binary.BigEndian.Uint32(b[n+head:]))
			if topics < 0 {
				return 0, 0, ErrMalformedFetchResponse
			}
			n += head + 4
			s.topicsLeft, s.state = int(topics), scanTopic
		case scanTopic:
			if s.topicsLeft == 0 {
				s.state = scanDone
				continue
			}
			if len(b) < n+2 {
				return s.needMore(n, 2)
			}
			l := int16(binary.BigEndian.Uint16(b[n:]))
			if l < 0 {
				return 0, 0, ErrMalformedFetchResponse
			}
			if len(b) < n+2+int(l)+4 {
				return s.needMore(n, 2+int(l)+4)
			}
			s.Topic = b[n+2 : n+2+int(l) : n+2+int(l)]
			parts := int32(binary.BigEndian.Uint32(b[n+2+int(l):]))
			if parts < 0 {
				return 0, 0, ErrMalformedFetchResponse
			}
			n += 2 + int(l) + 4
			s.topicsLeft--
			s.partsLeft, s.state = int(parts), scanPartition
		case scanPartition:
			if s.partsLeft == 0 {
				s.state = scanTopic
				continue
			}
			p, used, need, err := parseFetchPartitionHead(b[n:], s.version)
			if err != nil {
				return 0, 0, err
			}
			if used == 0 {
				return s.needMore(n, need)
			}
			s.Partition = p
			s.partsLeft--
			return n + used, FetchScanPartition, nil
		case scanDone:
			return n, FetchScanDone, nil
		}
	}
}

// needMore stops a scan that consumed consumed bytes at a field that needs need bytes.
func (s *FetchResponseScanner) needMore(consumed, need int) (int, FetchScanEvent, error) {
	s.need = need
	return consumed, FetchScanNeedMore, nil
}

// Need is, after FetchScanNeedMore, how many bytes from where the scan stopped its next
// fields need at least.
func (s *FetchResponseScanner) Need() int { return s.need }

// EmptyRecords rewrites the records length that ends head — the bytes Scan consumed up
// to a FetchScanPartition — to an empty records field, and returns head as rewritten
// (shorter where the length is a varint): how a caller that took the records elsewhere
// keeps a body that parses as if they were never there.
func (s *FetchResponseScanner) EmptyRecords(head []byte) []byte {
	if s.version >= fetchScanFlexibleVersion {
		head = head[:len(head)-s.recordsLengthBytes]
		return append(head, 1) // uvarint 0+1: empty
	}
	binary.BigEndian.PutUint32(head[len(head)-4:], 0)
	return head
}

// scanFlexible is Scan for the flexible versions. Each structure is read whole or not
// at all: when b ends inside one, Need is what it needs at least — from its fields read
// so far and the least the rest takes — so that a caller reading exactly that reads no
// byte past the next records.
func (s *FetchResponseScanner) scanFlexible(b []byte) (n int, ev FetchScanEvent, err error) {
	const partitionMin = 4 + 2 + 8 + 8 + 8 + 1 + 4 + 1
	topicMin := 1 + 1 // name, partitions
	if s.version >= fetchScanTopicIDVersion {
		topicMin = 16 + 1
	}
	for {
		r := scanReader{b: b[n:]}
		var least int // the least the structure and what must follow take
		next := s.state
		switch s.state {
		case scanHead:
			least = 4 + 2 + 4 + 1
			r.skip(4)
			code := r.int16()
			r.skip(4)
			topics := r.compactLen()
			if r.done() {
				s.ErrorCode, s.topicsLeft, next = code, topics, scanTopic
			}
		case scanTopic:
			if s.topicsLeft == 0 {
				s.state = scanResponseTags
				continue
			}
			least = topicMin
			var name []byte
			var id [16]byte
			if s.version >= fetchScanTopicIDVersion {
				copy(id[:], r.bytes(16))
			} else {
				name = r.bytes(r.compactLen())
			}
			parts := r.compactLen()
			if r.done() {
				s.Topic, s.TopicID = name, id
				s.topicsLeft--
				s.partsLeft, next = parts, scanPartition
				if parts == 0 {
					next = scanTopicTags
				}
			}
		case scanPartition:
			least = partitionMin
			var p FetchPartition
			p.Partition = r.int32()
			p.ErrorCode = r.int16()
			p.HighWatermark = r.int64()
			p.LastStableOffset = r.int64()
			p.LogStartOffset = r.int64()
			if aborted := r.uvarint(); aborted > 1 { // 0: null
				for range aborted - 1 {
					if r.skip(16); !r.tags() {
						break
					}
				}
			}
			r.skip(4) // preferred read replica
			lenStart := r.pos
			records := int64(r.uvarint()) - 1 // -1: null
			if records > 1<<31-1 {
				r.bad = true
			}
			p.RecordsBytes = int32(records)
			if r.done() {
				s.Partition, s.recordsLengthBytes = p, r.pos-lenStart
				s.partsLeft--
				s.state = scanPartitionTags
				return n + r.pos, FetchScanPartition, nil
			}
		case scanPartitionTags, scanTopicTags, scanResponseTags:
			least = 1
			switch {
			case s.state == scanPartitionTags && s.partsLeft > 0:
				least += partitionMin
			case s.state == scanPartitionTags:
				least++ // the topic's tags
			case s.state == scanTopicTags && s.topicsLeft > 0:
				least += topicMin
			case s.state == scanTopicTags:
				least++ // the response's tags
			}
			r.tags()
			if r.done() {
				switch {
				case s.state == scanResponseTags:
					next = scanDone
				case s.state == scanPartitionTags && s.partsLeft > 0:
					next = scanPartition
				case s.state == scanPartitionTags:
					next = scanTopicTags
				default:
					next = scanTopic
				}
			}
		case scanDone:
			return n, FetchScanDone, nil
		}
		if r.bad {
			return 0, 0, ErrMalformedFetchResponse
		}
		if r.short {
			return s.needMore(n, max(r.want, least))
		}
		n += r.pos
		s.state = next
	}
}

// scanReader reads the fields of one structure from b. Reading past b's end sets
// short, with want the bytes the fields read so far need; a field that cannot be
// sets bad. Once either is set, reads return zeros.
type scanReader struct {
	b     []byte
	pos   int
	want  int
	short bool
	bad   bool
}

// done reports that every read so far fit.
func (r *scanReader) done() bool { return !r.short && !r.bad }

func (r *scanReader) has(n int) bool {
	if r.short || r.bad {
		return false
	}
	if n < 0 {
		r.bad = true
		return false
	}
	if r.pos+n > len(r.b) {
		r.short, r.want = true, r.pos+n
		return false
	}
	return true
}

func (r *scanReader) skip(n int) {
	if r.has(n) {
		r.pos += n
	}
}

func (r *scanReader) bytes(n int) []byte {
	if !r.has(n) {
		return nil
	}
	r.pos += n
	return r.b[r.pos-n : r.pos : r.pos]
}

func (r *scanReader) int16() int16 {
	if !r.has(2) {
		return 0
	}
	r.pos += 2
	return int16(binary.BigEndian.Uint16(r.b[r.pos-2:]))
}

func (r *scanReader) int32() int32 {
	if !r.has(4) {
		return 0
	}
	r.pos += 4
	return int32(binary.BigEndian.Uint32(r.b[r.pos-4:]))
}

func (r *scanReader) int64() int64 {
	if !r.has(8) {
		return 0
	}
	r.pos += 8
	return int64(binary.BigEndian.Uint64(r.b[r.pos-8:]))
}

// uvarint reads an unsigned varint of at most 5 bytes (Kafka's).
func (r *scanReader) uvarint() uint64 {
	var v uint64
	for i := range 5 {
		if !r.has(1) {
			return 0
		}
		c := r.b[r.pos]
		r.pos++
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v
		}
	}
	r.bad = true
	return 0
}

// compactLen reads a non-nullable compact array's or string's length.
func (r *scanReader) compactLen() int {
	n := r.uvarint()
	if n == 0 && r.done() {
		r.bad = true // null where none may be
	}
	return int(n) - 1
}

// tags skips a tag buffer; false if it did not fit.
func (r *scanReader) tags() bool {
	for range r.uvarint() {
		r.uvarint() // tag
		r.skip(int(r.uvarint()))
		if !r.done() {
			return false
		}
	}
	return r.done()
}

// parseFetchPartitionHead reads a response partition's fields up to and including its
// records length from b. used is 0 when b is too short: need is then the bytes the
// fields need at least (known fully once the aborted-transactions count is in b).
// Aborted transactions are skipped (the node writes none).
func parseFetchPartitionHead(b []byte, version int16) (p FetchPartition, used, need int, err error) {
	fixed := 4 + 2 + 8 + 8
	if version >= 5 {
		fixed += 8
	}
	tail := 4 // records length
	if version >= 11 {
		tail += 4 // preferred read replica
	}
	if len(b) < fixed+4+tail {
		return p, 0, fixed + 4 + tail, nil
	}
	aborted := int32(binary.BigEndian.Uint32(b[fixed:])) // 16 bytes each: producer id, first offset
	need = fixed + 4 + tail
	if aborted > 0 {
		if int64(aborted) > (1<<31-1-int64(need))/16 {
			return p, 0, 0, ErrMalformedFetchResponse
		}
		need += 16 * int(aborted)
	}
	if len(b) < need {
		return p, 0, need, nil
	}
	p.Partition = int32(binary.BigEndian.Uint32(b))
	p.ErrorCode = int16(binary.BigEndian.Uint16(b[4:]))
	p.HighWatermark = int64(binary.BigEndian.Uint64(b[6:]))
	p.LastStableOffset = int64(binary.BigEndian.Uint64(b[14:]))
	p.LogStartOffset = -1
	if version >= 5 {
		p.LogStartOffset = int64(binary.BigEndian.Uint64(b[22:]))
	}
	p.RecordsBytes = int32(binary.BigEndian.Uint32(b[need-4:]))
	return p, need, need, nil
}
