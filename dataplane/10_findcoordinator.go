package dataplane

// FindCoordinator, key 10, versions 0-2 (v1: coordinator type, throttle and error
// message), answered by this node alone from its metadata view:
//
//   - Groups (type 0): the coordinator is the live data-plane node that rendezvous
//     hashing picks for the group id. Every node computes the same choice from the same
//     view, and when a node dies only its own groups move. The chosen node does not hold
//     the group's state: it forwards the group's requests to the control plane
//     (11_groups.go), where the state machine runs. Picking it by hash spreads the
//     clients' group connections over the nodes and gives ListGroups (answered per node
//     in Kafka) a partition of the groups. No live node: COORDINATOR_NOT_AVAILABLE.
//   - Transactions (type 1): the same choice, by rendezvous hashing on the
//     transactional id. The chosen node forwards the transaction requests to the
//     control plane like the group requests (txn_forward.go), where the transaction
//     coordinator runs.

import (
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const findCoordinatorKey = int16(kmsg.FindCoordinator)

// Coordinator types of FindCoordinator v1+ (v0 asks for a group).
const (
	coordinatorTypeGroup       int8 = 0
	coordinatorTypeTransaction int8 = 1
)

func handleFindCoordinator(s *Server, r *request) error {
	req := kmsg.NewPtrFindCoordinatorRequest()
	req.SetVersion(r.hdr.APIVersion)
	if err := req.ReadFrom(r.body); err != nil {
		return err
	}
	resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
	resp.NodeID, resp.Port = -1, -1
	fail := func(code *kerr.Error, message string) {
		resp.ErrorCode = code.Code
		if resp.Version >= 1 {
			resp.ErrorMessage = &message
		}
	}
	switch req.CoordinatorType {
	case coordinatorTypeGroup, coordinatorTypeTransaction:
		if b, ok := groupCoordinator(s.snapshot().Brokers, req.CoordinatorKey); ok {
			resp.NodeID, resp.Host, resp.Port = b.ID, b.Host, b.Port
		} else {
			fail(kerr.CoordinatorNotAvailable, "no live data-plane node")
		}
	default:
		fail(kerr.InvalidRequest, "unknown coordinator type")
	}
	writeResponse(r, resp)
	return nil
}

// groupCoordinator is the node among brokers that coordinates group (or transactional
// id; the two share the hash, as they share the node that forwards them): the one with the
// highest rendezvous weight for it (ties, which need a 64-bit collision, go to the
// lower id). Removing a node moves only the groups it had; adding one takes about
// 1/n of the groups from the others. ok is false when brokers is empty.
func groupCoordinator(brokers map[int32]cluster.Broker, group string) (b cluster.Broker, ok bool) {
	var best uint64
	var bestID int32
	for id, cand := range brokers {
		w := rendezvousWeight(group, id)
		if !ok || w > best || (w == best && id < bestID) {
			b, best, bestID, ok = cand, w, id, true
		}
	}
	return b, ok
}

// rendezvousWeight is a 64-bit hash of (group, node id): FNV-1a over the group's bytes
// and the id's, then murmur3's finalizer, since FNV alone mixes its last bytes (the
// id) poorly into the high bits that the comparison looks at. It must never change:
// nodes of different versions in one cluster have to agree on every group's
// coordinator.
func rendezvousWeight(group string, id int32) uint64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for i := 0; i < len(group); i++ {
		h ^= uint64(group[i])
		h *= prime64
	}
	for shift := 24; shift >= 0; shift -= 8 {
		h ^= uint64(byte(uint32(id) >> shift))
		h *= prime64
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
