package dataplane

import (
	"github.com/gregor-streaming/gregor/proto"
)

// apiVersion is one advertised API and the versions this node serves completely.
type apiVersion struct {
	key      int16
	min, max int16
	handle   func(s *Server, r *request) error
}

// apis lists what the node advertises in ApiVersions. Only complete implementations go
// here: clients change their behaviour when they see an API (see KAFKA-COMPAT.md).
// Requests for anything else close the connection, as Kafka does for unknown keys.
// apiTable indexes it by key. Both are set in init: handlers refer to them.
var (
	apis     []apiVersion
	apiTable []*apiVersion
)

func init() {
	apis = []apiVersion{
		{key: apiVersionsKey, min: 0, max: 3, handle: handleApiVersions},
	}
	apiTable = make([]*apiVersion, 128)
	for i := range apis {
		apiTable[apis[i].key] = &apis[i]
	}
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
	// body views the connection's inbound buffer: valid only during the handler call.
	body []byte
	conn *connState
	// resp is the request's slot in the connection's response queue.
	resp *response
}
