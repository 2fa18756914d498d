package dataplane

// DescribeCluster, key 60, versions 0-1 (KIP-700; v1 adds the endpoint type, KIP-919),
// answered by this node alone from its metadata view, as Metadata's broker part is:
//
//   - cluster id and controller id: Metadata's (clusterID, adminControllerID). The
//     controller id is the lowest live data-plane node, not a control-plane member: Kafka
//     clients send their admin requests (CreateTopics, DeleteTopics, CreatePartitions) to
//     the controller id they learn, and only data-plane nodes speak Kafka. A view with no
//     live node answers -1, Kafka's "no controller known".
//   - brokers: every live data-plane node (registered, its lease alive), in id order,
//     with its advertised host and port and its rack.
//   - cluster authorized operations: Kafka's "not asked" value (math.MinInt32) unless the
//     request asks; asked, what a Kafka broker without an authorizer answers: every
//     operation Kafka knows on the cluster resource, since this node authorizes nothing.
//   - endpoint type (v1): data-plane nodes are brokers (1). A request for controllers (2)
//     gets MISMATCHED_ENDPOINT_TYPE, as from a Kafka broker; any other type
//     UNSUPPORTED_ENDPOINT_TYPE. v0 has no endpoint type: it asks for brokers.
//
// v2 (fenced brokers, KIP-1073) is not served: it is a later client's.

import (
	"math"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const describeClusterKey = int16(kmsg.DescribeCluster)

// Endpoint types of DescribeCluster v1+.
const (
	endpointTypeBroker     int8 = 1
	endpointTypeController int8 = 2
)

// clusterAuthorizedOperationsAll is the bit field of every operation Kafka defines on the
// cluster resource (its AclEntry.supportedOperations(CLUSTER)), which a Kafka broker
// without an authorizer reports to whoever asks.
const clusterAuthorizedOperationsAll = int32(1<<kmsg.ACLOperationCreate | 1<<kmsg.ACLOperationClusterAction |
	1<<kmsg.ACLOperationDescribeConfigs | 1<<kmsg.ACLOperationAlterConfigs | 1<<kmsg.ACLOperationIdempotentWrite |
	1<<kmsg.ACLOperationAlter | 1<<kmsg.ACLOperationDescribe)

func handleDescribeCluster(s *Server, r *request) error {
	req := kmsg.NewPtrDescribeClusterRequest()
	req.SetVersion(r.hdr.APIVersion)
	shape := proto.DescribeClusterRequestV0
	if r.hdr.APIVersion >= 1 {
		shape = proto.DescribeClusterRequestV1
	}
	if err := proto.CheckShape(r.body, shape); err != nil { // every version is flexible
		return err
	}
	if err := req.ReadFrom(r.body); err != nil {
		return err
	}
	resp := req.ResponseKind().(*kmsg.DescribeClusterResponse)
	resp.EndpointType = endpointTypeBroker
	switch req.EndpointType {
	case endpointTypeBroker:
	case endpointTypeController:
		resp.ErrorCode = kerr.MismatchedEndpointType.Code
		resp.ErrorMessage = kmsg.StringPtr("data-plane nodes are brokers; the control plane does not speak Kafka")
		writeResponse(r, resp)
		return nil
	default:
		resp.ErrorCode = kerr.UnsupportedEndpointType.Code
		resp.ErrorMessage = kmsg.StringPtr("unknown endpoint type")
		writeResponse(r, resp)
		return nil
	}
	brokers := liveBrokers(s.snapshot())
	resp.ClusterID = clusterID
	resp.ControllerID = adminControllerID(brokers)
	for _, b := range brokers {
		rb := kmsg.NewDescribeClusterResponseBroker()
		rb.NodeID, rb.Host, rb.Port = b.ID, b.Host, b.Port
		if b.Rack != "" {
			rb.Rack = kmsg.StringPtr(b.Rack)
		}
		resp.Brokers = append(resp.Brokers, rb)
	}
	resp.ClusterAuthorizedOperations = math.MinInt32
	if req.IncludeClusterAuthorizedOperations {
		resp.ClusterAuthorizedOperations = clusterAuthorizedOperationsAll
	}
	writeResponse(r, resp)
	return nil
}
