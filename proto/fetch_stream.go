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
	// Topic is the current topic's name; it views the bytes given to Scan.
	Topic []byte
	// Partition is the last partition scanned (RecordsBytes: its records' length, ≤ 0
	// for none).
	Partition  FetchPartition
	topicsLeft int
	partsLeft  int
	need       int
}

const (
	scanHead uint8 = iota
	scanTopic
	scanPartition
	scanDone
)

// fetchScanVersionMax is the last version the scanner knows the layout of: the
// non-flexible ones. Flexible versions (v12+: uvarint lengths, tagged fields after the
// records) need their own fields here before a splicing follower may send them.
const fetchScanVersionMax = 11

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
	binary.BigEndian.PutUint32(head[len(head)-4:], 0)
	return head
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
