// Package api holds the JSON documents of the control plane's HTTP API for replica
// movement, so that tools (the gregor CLI) decode exactly what gregor-cp encodes:
//
//	GET  /v1/nodes                      → NodeList
//	POST /v1/nodes/{id}/decommission    → Node (the node after the request)
//	POST /v1/nodes/{id}/recommission    → Node
//	GET  /v1/reassignments              → ReassignmentList
//
// Errors are answered with an HTTP status and an Error document: 400 for a malformed
// node id, 404 for a node the control plane does not know, 503 while the control plane
// is starting or cannot reach etcd.
//
// docs/reassignment.md describes the API with examples. The package imports nothing:
// depending on it pulls in nothing else.
package api

// Node states (Node.State).
const (
	// NodeLive: registered, not being decommissioned.
	NodeLive = "live"
	// NodeUnregistered: not registered (stopped, crashed, or not started yet) but known
	// (it holds replicas), and not being decommissioned.
	NodeUnregistered = "unregistered"
	// NodeDraining: being decommissioned: the controller moves its replicas to other
	// nodes, and places no new one on it.
	NodeDraining = "draining"
	// NodeDecommissioned: decommissioned: it holds no replica, and gets none until it is
	// recommissioned.
	NodeDecommissioned = "decommissioned"
)

// Node is one data-plane node, registered or not.
type Node struct {
	// ID is the node id (gregor-dp --id).
	ID int32 `json:"id"`
	// State is NodeLive, NodeUnregistered, NodeDraining or NodeDecommissioned.
	State string `json:"state"`
	// Registered reports whether the node is registered (its process runs and holds its
	// lease); Host, Port and Rack are its registration's (empty when not registered).
	Registered bool   `json:"registered"`
	Host       string `json:"host,omitempty"`
	Port       int32  `json:"port,omitempty"`
	Rack       string `json:"rack,omitempty"`
	// ControlledShutdown reports whether the node is stopping (controlled shutdown).
	ControlledShutdown bool `json:"controlledShutdown"`
	// Replicas is the number of partitions that name the node a replica (reassignments
	// in progress included), and Leaders the number it leads.
	Replicas int `json:"replicas"`
	Leaders  int `json:"leaders"`
	// DecommissionRequestedMs and DecommissionCompletedMs are when the decommission was
	// asked for and when the node was found empty (Unix milliseconds; 0: not so).
	DecommissionRequestedMs int64 `json:"decommissionRequestedMs,omitempty"`
	DecommissionCompletedMs int64 `json:"decommissionCompletedMs,omitempty"`
	// Blocked says, for a draining node, why some of its replicas cannot move now (too
	// few other live nodes for a partition's replication factor, a partition without a
	// leader). Empty while the decommission proceeds.
	Blocked []string `json:"blocked,omitempty"`
}

// NodeList is the answer of GET /v1/nodes: every node known, by id.
type NodeList struct {
	Nodes []Node `json:"nodes"`
}

// Reassignment is one partition being reassigned.
type Reassignment struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Replicas are all the partition's replicas while it moves: the target followed by
	// the replicas being removed (Kafka's order).
	Replicas []int32 `json:"replicas"`
	// TargetReplicas is where it moves to; AddingReplicas the target's new replicas;
	// RemovingReplicas the replicas that go when it completes.
	TargetReplicas   []int32 `json:"targetReplicas"`
	AddingReplicas   []int32 `json:"addingReplicas"`
	RemovingReplicas []int32 `json:"removingReplicas"`
	// AddingInSync are the adding replicas in the ISR already: the reassignment
	// completes once it holds every adding replica.
	AddingInSync []int32 `json:"addingInSync"`
	// Leader and ISR are the partition's current ones.
	Leader int32   `json:"leader"`
	ISR    []int32 `json:"isr"`
}

// ReassignmentList is the answer of GET /v1/reassignments: the partitions being
// reassigned, by topic and partition.
type ReassignmentList struct {
	Reassignments []Reassignment `json:"reassignments"`
	// MovesInFlightMax is the controller's bound on reassignments in progress for it to
	// start moves of its own (decommissions, the balancer); AutoBalance whether the
	// balancer runs.
	MovesInFlightMax int  `json:"movesInFlightMax"`
	AutoBalance      bool `json:"autoBalance"`
}

// Error is the body of an error answer.
type Error struct {
	Error string `json:"error"`
}
