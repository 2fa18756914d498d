package proto

import "encoding/binary"

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

// AppendFetchTopicStart appends a topic's name and partition count.
func AppendFetchTopicStart(dst []byte, topic string, partitions int) []byte {
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
