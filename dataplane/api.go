package dataplane

import (
	"sync"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// apiVersion is one advertised API and the versions this node serves completely.
type apiVersion struct {
	key      int16
	min, max int16
	handle   func(s *Server, r *request) error
}

// apis lists what the node advertises in ApiVersions, with the versions it serves (listed
// from advertisedMin up to advertisedMax). Only complete implementations go here: clients change their
// behaviour when they see an API (docs/kafka-compat.md, which gives each bound's reason).
// Requests for anything else close the connection, as Kafka does for unknown keys.
// apiTable indexes it by key. Both are set in init: handlers refer to them.
var (
	apis     []apiVersion
	apiTable []*apiVersion
)

func init() {
	apis = []apiVersion{
		{key: produceKey, min: proto.ProduceVersionMin, max: proto.ProduceVersionMax, handle: handleProduce},
		{key: fetchKey, min: proto.FetchVersionMin, max: proto.FetchVersionMax, handle: handleFetch},
		{key: listOffsetsKey, min: 1, max: 5, handle: handleListOffsets},
		{key: metadataKey, min: 0, max: 8, handle: handleMetadata},
		{key: createTopicsKey, min: 0, max: 4, handle: handleCreateTopics},
		{key: deleteTopicsKey, min: 0, max: 3, handle: handleDeleteTopics},
		{key: createPartitionsKey, min: 0, max: 1, handle: handleCreatePartitions},
		{key: initProducerIDKey, min: 0, max: 4, handle: handleInitProducerID},
		{key: offsetForLeaderEpochKey, min: 0, max: 3, handle: handleOffsetForLeaderEpoch},
		{key: describeConfigsKey, min: 0, max: 4, handle: handleDescribeConfigs},
		{key: alterConfigsKey, min: 0, max: 2, handle: handleAlterConfigs},
		{key: incrementalAlterConfigsKey, min: 0, max: 1, handle: handleIncrementalAlterConfigs},
		{key: describeClusterKey, min: 0, max: 1, handle: handleDescribeCluster},
		{key: findCoordinatorKey, min: 0, max: 2, handle: handleFindCoordinator},
		// Forwarded to the group coordinator (11_groups.go, whose groupRefusals lists them).
		{key: int16(kmsg.JoinGroup), min: 0, max: 5, handle: handleGroupRequest},
		{key: int16(kmsg.SyncGroup), min: 0, max: 3, handle: handleGroupRequest},
		{key: int16(kmsg.Heartbeat), min: 0, max: 3, handle: handleGroupRequest},
		{key: int16(kmsg.LeaveGroup), min: 0, max: 3, handle: handleGroupRequest},
		{key: int16(kmsg.OffsetCommit), min: 2, max: 7, handle: handleGroupRequest},
		{key: int16(kmsg.OffsetFetch), min: 1, max: 7, handle: handleGroupRequest},
		{key: listGroupsKey, min: 0, max: 2, handle: handleGroupRequest},
		{key: int16(kmsg.DescribeGroups), min: 0, max: 4, handle: handleGroupRequest},
		{key: int16(kmsg.DeleteGroups), min: 0, max: 1, handle: handleGroupRequest},
		{key: int16(kmsg.OffsetDelete), min: 0, max: 0, handle: handleGroupRequest},
		// Forwarded to the transaction coordinator (txn_forward.go); TxnOffsetCommit to
		// the group coordinator.
		{key: int16(kmsg.AddPartitionsToTxn), min: 0, max: 3, handle: handleGroupRequest},
		{key: int16(kmsg.AddOffsetsToTxn), min: 0, max: 3, handle: handleGroupRequest},
		{key: int16(kmsg.EndTxn), min: 0, max: 3, handle: handleGroupRequest},
		{key: int16(kmsg.TxnOffsetCommit), min: 0, max: 3, handle: handleGroupRequest},
		{key: int16(kmsg.DescribeTransactions), min: 0, max: 0, handle: handleGroupRequest},
		{key: listTransactionsKey, min: 0, max: 0, handle: handleGroupRequest},
		{key: electLeadersKey, min: 0, max: 2, handle: handleElectLeaders},
		{key: alterPartitionReassignmentsKey, min: 0, max: 0, handle: handleAlterPartitionReassignments},
		{key: listPartitionReassignmentsKey, min: 0, max: 0, handle: handleListPartitionReassignments},
		{key: deleteRecordsKey, min: 0, max: 2, handle: handleDeleteRecords},
		{key: describeLogDirsKey, min: 0, max: 4, handle: handleDescribeLogDirs},
		{key: describeProducersKey, min: 0, max: 0, handle: handleDescribeProducers},
		{key: writeTxnMarkersKey, min: 0, max: 1, handle: handleWriteTxnMarkers},
		{key: apiVersionsKey, min: 0, max: 3, handle: handleApiVersions},
	}
	apiTable = make([]*apiVersion, 128)
	for i := range apis {
		apiTable[apis[i].key] = &apis[i]
	}
}

// advertisedMin is the lowest version ApiVersions lists for the API: its min, except
// for Produce (produceAdvertisedMin).
func (a *apiVersion) advertisedMin() int16 {
	if a.key == produceKey {
		return produceAdvertisedMin
	}
	return a.min
}

// advertisedMax is the highest version ApiVersions lists for the API: its max, except
// for Fetch (fetchAdvertisedMax).
func (a *apiVersion) advertisedMax() int16 {
	if a.key == fetchKey {
		return fetchAdvertisedMax
	}
	return a.max
}

func lookupAPI(key int16) *apiVersion {
	if key < 0 || int(key) >= len(apiTable) {
		return nil
	}
	return apiTable[key]
}

// request is one decoded request on its way through a handler.
type request struct {
	hdr proto.RequestHeader
	// frame is the whole request (header and body, without the size prefix) and body
	// the part after the header. Both view the connection's inbound buffer: valid only
	// during the handler call (copy them to keep them).
	frame, body []byte
	conn        *connState
	// resp is the request's slot in the connection's response queue.
	resp *response
	// retained is set by a handler that keeps the request past its return (a purgatory
	// or a control-plane call answers it later); others go back to requestPool.
	retained bool
}

var requestPool = sync.Pool{New: func() any { return new(request) }}

// noResponse drops the request's slot: acks=0 produce requests get no answer at all. The
// slot is the queue's last (it was added for this request, handled synchronously).
func (r *request) noResponse() {
	q := &r.conn.queue
	if q.len() == 0 || q.back() != r.resp {
		panic("dataplane: noResponse on a request that is not the newest")
	}
	q.popBack()
	r.resp.free()
	r.resp = nil
}
