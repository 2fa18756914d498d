package proto

import (
	"encoding/binary"
	"errors"
)

// The Fetch response is hand-written because its records are not bytes in memory: they
// are file regions sent with sendfile after the bytes that precede them. These appenders
// write everything but the records; each partition's header ends with the records'
// length, the caller sends that many bytes of regions next, then the partition's end
// (its tag buffer, v12+). Versions 4-15; checked byte for byte against
// kmsg.FetchResponse.
//
//	response   throttleMs int32 · errorCode int16 (v7+) · sessionId int32 (v7+) · [topic] ·
//	           tags (v12+)
//	topic      name string (v≤12) | topicId uuid (v13+) · [partition] · tags (v12+)
//	partition  partition int32 · errorCode int16 · highWatermark int64 ·
//	           lastStableOffset int64 · logStartOffset int64 (v5+) ·
//	           abortedTransactions nullable array [producerId int64 · firstOffset int64 ·
//	           tags (v12+)] (null for read_uncommitted) · preferredReadReplica
//	           int32 (v11+) · records nullable bytes · tags (v12+: 0 divergingEpoch
//	           {epoch int32 · endOffset int64 · tags}, 1 currentLeader, 2 snapshotId)
//
// From v12 on (flexible, KIP-482) strings, arrays and bytes are compact: an unsigned
// varint of length+1 (0 for null) instead of an int16 or int32 length. The records'
// length prefix is then a varint of RecordsBytes+1, and the partition's tag buffer
// follows the records on the wire.

// FetchVersionMin and FetchVersionMax bound the versions these appenders write and the
// request parser reads.
const (
	FetchVersionMin = 4
	FetchVersionMax = 15
)

// Fetch versions that change the layout or meaning of fields.
const (
	// FetchVersionFlexible is the first flexible version, which also carries
	// LastFetchedEpoch in the request and DivergingEpoch in the response (KIP-595).
	FetchVersionFlexible = 12
	// FetchVersionTopicIDs is the first version naming topics by id (KIP-516).
	FetchVersionTopicIDs = 13
	// FetchVersionReplicaState is the first version carrying the fetching replica's id
	// and broker epoch in ReplicaState, not a top-level replica id (KIP-903).
	FetchVersionReplicaState = 15
)

func fetchFlexible(version int16) bool { return version >= FetchVersionFlexible }

// AppendFetchResponseStart appends the response fields before the topics.
func AppendFetchResponseStart(dst []byte, version int16, throttleMs int32, errorCode int16, sessionID int32, topics int) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(throttleMs))
	if version >= 7 {
		dst = binary.BigEndian.AppendUint16(dst, uint16(errorCode))
		dst = binary.BigEndian.AppendUint32(dst, uint32(sessionID))
	}
	return appendArrayLen(dst, fetchFlexible(version), topics)
}

// AppendFetchResponseEnd appends what follows the topics: an empty tag buffer (v12+).
func AppendFetchResponseEnd(dst []byte, version int16) []byte {
	if fetchFlexible(version) {
		dst = append(dst, 0)
	}
	return dst
}

// AppendTopicStart appends a response topic's name (a non-flexible string) and its
// partition count: how Produce responses (v≤8) open each topic.
func AppendTopicStart(dst []byte, topic []byte, partitions int) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(topic)))
	dst = append(dst, topic...)
	return binary.BigEndian.AppendUint32(dst, uint32(partitions))
}

// AppendFetchTopicStart opens a Fetch request or response topic: its name (v≤12) or id
// (v13+), then its partition count.
func AppendFetchTopicStart(dst []byte, version int16, name []byte, id [16]byte, partitions int) []byte {
	if version >= FetchVersionTopicIDs {
		dst = append(dst, id[:]...)
	} else {
		dst = appendString(dst, fetchFlexible(version), name)
	}
	return appendArrayLen(dst, fetchFlexible(version), partitions)
}

// AppendFetchTopicEnd closes a Fetch request or response topic after its partitions:
// an empty tag buffer (v12+).
func AppendFetchTopicEnd(dst []byte, version int16) []byte {
	if fetchFlexible(version) {
		dst = append(dst, 0)
	}
	return dst
}

// EpochEndOffset is a leader epoch and the offset where it ended in a log (the log end
// offset for its latest epoch), as OffsetForLeaderEpoch answers it.
type EpochEndOffset struct {
	Epoch     int32
	EndOffset int64
}

// FetchPartition is one partition's answer, less its records.
type FetchPartition struct {
	Partition        int32
	ErrorCode        int16
	HighWatermark    int64
	LastStableOffset int64
	LogStartOffset   int64
	// Diverging (v12+) says the fetcher's log diverges from this one: its last fetched
	// epoch ended, in this log, at DivergingEpoch (the largest epoch up to it that this
	// log knows and where it ended), before the fetch offset. It is answered with no
	// records, and the fetcher truncates (KIP-595; Kafka's Partition.fetchRecords).
	Diverging      bool
	DivergingEpoch EpochEndOffset
	// ReadCommitted says the fetch is read_committed: Aborted is written as an array
	// (possibly empty), else as null, as Kafka answers each isolation level.
	ReadCommitted bool
	// Aborted are the aborted transactions overlapping the records returned
	// (read_committed only).
	Aborted []AbortedTransaction
	// RecordsBytes is the length of the records that follow on the wire.
	RecordsBytes int32
}

// AppendFetchPartition appends a partition's fields up to and including the records
// length; RecordsBytes bytes of batches must follow, then AppendFetchPartitionEnd.
func AppendFetchPartition(dst []byte, version int16, p *FetchPartition) []byte {
	flexible := fetchFlexible(version)
	dst = binary.BigEndian.AppendUint32(dst, uint32(p.Partition))
	dst = binary.BigEndian.AppendUint16(dst, uint16(p.ErrorCode))
	dst = binary.BigEndian.AppendUint64(dst, uint64(p.HighWatermark))
	dst = binary.BigEndian.AppendUint64(dst, uint64(p.LastStableOffset))
	if version >= 5 {
		dst = binary.BigEndian.AppendUint64(dst, uint64(p.LogStartOffset))
	}
	dst = appendAbortedTransactions(dst, flexible, p.ReadCommitted, p.Aborted)
	if version >= 11 {
		dst = binary.BigEndian.AppendUint32(dst, 0xffffffff) // preferred read replica: none
	}
	if flexible {
		return appendUvarint(dst, uint32(p.RecordsBytes)+1)
	}
	return binary.BigEndian.AppendUint32(dst, uint32(p.RecordsBytes))
}

// fetchDivergingEpochTag is the DivergingEpoch field's tag in a response partition.
const fetchDivergingEpochTag = 0

// AppendFetchPartitionEnd appends what follows a partition's records: its tag buffer
// (v12+), with DivergingEpoch when set.
func AppendFetchPartitionEnd(dst []byte, version int16, p *FetchPartition) []byte {
	if !fetchFlexible(version) {
		return dst
	}
	if !p.Diverging {
		return append(dst, 0)
	}
	// One field: tag, size (4+8+1 = 13), epoch, end offset, its own empty tag buffer.
	dst = append(dst, 1, fetchDivergingEpochTag, 13)
	dst = binary.BigEndian.AppendUint32(dst, uint32(p.DivergingEpoch.Epoch))
	dst = binary.BigEndian.AppendUint64(dst, uint64(p.DivergingEpoch.EndOffset))
	return append(dst, 0)
}

// The Fetch request (versions 4-15), walked without allocating; v12+ compact as in the
// response:
//
//	replicaId int32 (v≤14) · maxWaitMs int32 · minBytes int32 · maxBytes int32 ·
//	isolationLevel int8 · sessionId int32 (v7+) · sessionEpoch int32 (v7+) ·
//	[topic: name string (v≤12) | topicId uuid (v13+) · [partition: index int32 ·
//	  currentLeaderEpoch int32 (v9+) · fetchOffset int64 · lastFetchedEpoch int32
//	  (v12+) · logStartOffset int64 (v5+) · partitionMaxBytes int32 · tags (v12+)] ·
//	  tags (v12+)] ·
//	forgottenTopics [name string (v≤12) | topicId uuid (v13+) · [index int32] ·
//	  tags (v12+)] (v7+) · rackId string (v11+) ·
//	tags (v12+: 0 clusterId nullable string, 1 replicaState {replicaId int32 ·
//	  replicaEpoch int64 · tags} (read from v15))

// ErrMalformedFetch: the request's fields do not fit its bytes.
var ErrMalformedFetch = errors.New("proto: malformed fetch request")

// FetchRequest is a checked Fetch request; Walk reads its topics. It views the bytes it
// was parsed from.
type FetchRequest struct {
	// ReplicaID is the fetching replica's id (a follower), or -1 (a consumer): the
	// top-level field before v15, ReplicaState's from v15.
	ReplicaID int32
	// ReplicaEpoch is the follower's broker epoch (ReplicaState, v15+), -1 when not
	// given.
	ReplicaEpoch   int64
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
	LastFetchedEpoch   int32 // -1 before v12
	LogStartOffset     int64 // -1 before v5
	PartitionMaxBytes  int32
}

// fetchPartitionBytes is the size of a request partition, less a tag buffer's fields.
func fetchPartitionBytes(version int16) int {
	n := 4 + 8 + 4
	if version >= 9 {
		n += 4
	}
	if version >= 5 {
		n += 8
	}
	if fetchFlexible(version) {
		n += 4 + 1 // lastFetchedEpoch, tags
	}
	return n
}

// fetchTopicBytes is the least a topic of a request or response takes: a name (or an
// id), a partition count and, v12+, a tag buffer.
func fetchTopicBytes(version int16) int {
	switch {
	case version >= FetchVersionTopicIDs:
		return 16 + 1 + 1
	case fetchFlexible(version):
		return 1 + 1 + 1
	}
	return 2 + 4
}

// The request's top-level tagged fields.
const (
	fetchClusterIDTag    = 0
	fetchReplicaStateTag = 1
)

// ParseFetchRequest checks a whole Fetch request body of the given version — every count
// against the bytes left, no trailing bytes — and returns its head.
func ParseFetchRequest(b []byte, version int16) (FetchRequest, error) {
	fr := FetchRequest{version: version, ReplicaID: -1, ReplicaEpoch: -1, SessionEpoch: -1}
	if version < FetchVersionMin || version > FetchVersionMax {
		return fr, ErrMalformedFetch
	}
	flexible := fetchFlexible(version)
	r := reader{b: b}
	if version < FetchVersionReplicaState {
		fr.ReplicaID = r.int32()
	}
	fr.MaxWaitMs = r.int32()
	fr.MinBytes = r.int32()
	fr.MaxBytes = r.int32()
	fr.IsolationLevel = r.int8()
	if version >= 7 {
		fr.SessionID = r.int32()
		fr.SessionEpoch = r.int32()
	}
	fr.Topics = r.arrayLen(flexible, fetchTopicBytes(version))
	if r.bad {
		return fr, ErrMalformedFetch
	}
	fr.topics = r.b
	// Check the topics now, so that walking them later cannot fail.
	w := fr.Walk()
	for range fr.Topics {
		_, parts, err := w.NextTopic()
		if err != nil {
			return fr, err
		}
		for range parts {
			if _, err := w.NextPartition(); err != nil {
				return fr, err
			}
		}
	}
	r.b = w.r.b
	if version >= 7 {
		for range r.arrayLen(flexible, fetchTopicBytes(version)) {
			if version >= FetchVersionTopicIDs {
				r.uuid()
			} else {
				r.string(flexible)
			}
			r.span(4 * r.arrayLen(flexible, 4))
			if flexible {
				r.skipTags()
			}
		}
	}
	if version >= 11 {
		r.string(flexible)
	}
	if flexible {
		for range r.tagCount() {
			tag, data := r.tag()
			f := reader{b: data}
			switch tag {
			case fetchClusterIDTag: // a nullable string, unused: checked only
				if n := f.uvarint(); n > 0 {
					f.span(int(n - 1))
				}
			case fetchReplicaStateTag: // a field of v15+, checked at every version
				id, epoch := f.int32(), f.int64()
				f.skipTags()
				if version >= FetchVersionReplicaState {
					fr.ReplicaID, fr.ReplicaEpoch = id, epoch
				}
			}
			if f.bad || len(f.b) != 0 {
				r.fail()
			}
		}
	}
	if r.bad || len(r.b) != 0 {
		return fr, ErrMalformedFetch
	}
	return fr, nil
}

// FetchWalker reads a Fetch request's topics and partitions in order.
type FetchWalker struct {
	// TopicID is the current topic's id (v13+; NextTopic's name is then nil).
	TopicID [16]byte

	r                     reader
	version               int16
	topicsLeft, partsLeft int
}

// Walk starts reading the topics from the first.
func (r *FetchRequest) Walk() FetchWalker {
	return FetchWalker{r: reader{b: r.topics}, topicsLeft: r.Topics, version: r.version}
}

// fetchTopic reads a topic's head in a Fetch request or response: its name (v≤12) or
// id (v13+), its partition count (each partition at least partitionBytes), and the
// topic's tag buffer when it has no partitions (flexible versions; otherwise the tags
// follow its last partition). ok is false if the bytes do not hold it.
func (r *reader) fetchTopic(version int16, partitionBytes int) (name []byte, id [16]byte, partitions int, ok bool) {
	flexible := fetchFlexible(version)
	if version >= FetchVersionTopicIDs {
		id = r.uuid()
	} else {
		name = r.string(flexible)
	}
	partitions = r.arrayLen(flexible, partitionBytes)
	if partitions == 0 && flexible {
		r.skipTags()
	}
	return name, id, partitions, !r.bad
}

// NextTopic advances to the next topic: its name (v≤12, nil after) and partition count.
func (w *FetchWalker) NextTopic() (name []byte, partitions int, err error) {
	if w.topicsLeft == 0 || w.partsLeft != 0 {
		return nil, 0, ErrMalformedFetch
	}
	name, id, n, ok := w.r.fetchTopic(w.version, fetchPartitionBytes(w.version))
	if !ok {
		return nil, 0, ErrMalformedFetch
	}
	if w.version >= FetchVersionTopicIDs {
		w.TopicID = id
	}
	w.topicsLeft--
	w.partsLeft = n
	return name, n, nil
}

// NextPartition reads the current topic's next partition.
func (w *FetchWalker) NextPartition() (FetchPartitionRequest, error) {
	p := FetchPartitionRequest{CurrentLeaderEpoch: -1, LastFetchedEpoch: -1, LogStartOffset: -1}
	if w.partsLeft == 0 {
		return p, ErrMalformedFetch
	}
	r := &w.r
	p.Partition = r.int32()
	if w.version >= 9 {
		p.CurrentLeaderEpoch = r.int32()
	}
	p.FetchOffset = r.int64()
	if fetchFlexible(w.version) {
		p.LastFetchedEpoch = r.int32()
	}
	if w.version >= 5 {
		p.LogStartOffset = r.int64()
	}
	p.PartitionMaxBytes = r.int32()
	w.partsLeft--
	if fetchFlexible(w.version) {
		// The partition's tags: those of later versions (v17 ReplicaDirectoryId, a uuid;
		// v18 HighWatermark, an int64) are not read here, but a size that cannot hold
		// them is refused, as decoders that read them at every version (kmsg) do.
		for range r.tagCount() {
			switch tag, data := r.tag(); {
			case tag == 0 && len(data) != 16, tag == 1 && len(data) != 8:
				r.fail()
			}
		}
		if w.partsLeft == 0 {
			r.skipTags() // the topic's
		}
	}
	if r.bad {
		return p, ErrMalformedFetch
	}
	return p, nil
}
