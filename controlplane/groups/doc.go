// Package groups is Gregor's consumer-group coordinator: Kafka's classic group protocol
// (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ListGroups, DescribeGroups,
// DeleteGroups) and committed offsets (OffsetCommit, OffsetFetch, OffsetDelete, and
// their expiry as KIP-211 has it), with the offsets committed in transactions
// (TxnOffsetCommit: held pending until the transaction coordinator, package txn, ends
// the transaction; txn.go).
//
// The active controller runs one Coordinator per term of controllership: data-plane
// nodes forward their clients' group requests to the node's internal listener
// (protocol in controlplane/client/groups.go), and the node hands each to Handle. The
// coordinator holds the groups in memory and writes what must survive the term through
// a Store (EtcdStore: fenced on the controller's election key); the next term's
// coordinator loads them back and carries on, members keeping their ids and generation.
//
// The rules depend on nothing but a Store and a clock (clockwork.Clock): every deadline
// — sessions, join and sync phases, pending member ids, offset retention — is read from
// the clock and every timer armed on it, so the unit tests run them on a fake clock
// against an in-memory store, without etcd, TCP or sleeps. The package imports
// controlplane/cluster (key schema) and nothing else of the control plane.
package groups
