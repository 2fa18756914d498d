// Package history is what a fault-suite run records: every send and its outcome, every
// poll, every group commit, the control plane's view of each partition over time, the
// faults injected, and at the end every replica's log read from its start. The checker
// (package chaos/checker) judges a History; the workload (package chaos/workload)
// writes one. A History is plain data and encodes to JSON, so that a failed run keeps
// it for later reading.
package history

import "time"

// Outcome is how a send ended, as the producer saw it.
type Outcome string

// The outcomes of a send. Jepsen's terms: an ok send was acknowledged; a fail send
// definitely did not happen (the broker refused it before writing: e.g.
// NOT_ENOUGH_REPLICAS, or a non-retriable error the client reports as definite); an info
// send may or may not have happened (a timeout, a connection lost after the request was
// written, NOT_ENOUGH_REPLICAS_AFTER_APPEND).
const (
	OK   Outcome = "ok"
	Fail Outcome = "fail"
	Info Outcome = "info"
)

// Send is one record a producer sent. Values are unique over a run.
type Send struct {
	// Producer names the producer instance ("franz-idem-1", "rdkafka-2").
	Producer string `json:"producer"`
	// Idempotent producers promise no duplicates.
	Idempotent bool `json:"idempotent"`
	// Acks is -1 (all) or 1.
	Acks      int16   `json:"acks"`
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Value     string  `json:"value"`
	Outcome   Outcome `json:"outcome"`
	// Offset is the acknowledged offset (OK only; -1 otherwise).
	Offset int64 `json:"offset"`
	// Err is the error of a Fail or Info send, as the client reported it.
	Err   string    `json:"err,omitempty"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Record is one record read: its offset and value and, when its batch came from an
// idempotent producer and the reader saw it (Idempotent), the producer id and epoch.
type Record struct {
	Offset        int64  `json:"offset"`
	Value         string `json:"value"`
	Idempotent    bool   `json:"idem,omitempty"`
	ProducerID    int64  `json:"pid,omitempty"`
	ProducerEpoch int16  `json:"pepoch,omitempty"`
}

// Poll is what one consumer read from one partition in one poll, in the order read.
type Poll struct {
	// Consumer names the consumer instance; a consumer that restarts gets a new name.
	Consumer string `json:"consumer"`
	// Group is the consumer group of a subscribed consumer; "" for an assigned one.
	Group string `json:"group,omitempty"`
	// Generation is the group generation the consumer was in (0 for an assigned one).
	Generation int32    `json:"generation,omitempty"`
	Topic      string   `json:"topic"`
	Partition  int32    `json:"partition"`
	Records    []Record `json:"records"`
	// Start is the offset the consumer expected to read next when it polled (the offset
	// after its previous poll of this partition, or where it was assigned or seeked to;
	// -1 if unknown). A record above Start, with Start not yet read, is a poll-skip
	// unless the offsets between hold nothing in the final log.
	Start int64     `json:"start"`
	Time  time.Time `json:"time"`
}

// Commit is a group offset commit that the coordinator acknowledged, or a committed
// offset fetched back (Fetched: OffsetFetch's answer).
type Commit struct {
	Group      string `json:"group"`
	Member     string `json:"member,omitempty"`
	Generation int32  `json:"generation"`
	Topic      string `json:"topic"`
	Partition  int32  `json:"partition"`
	Offset     int64  `json:"offset"`
	Fetched    bool   `json:"fetched,omitempty"`
	// Call is when the commit was sent (zero if not known): the coordinator handled it
	// after Call. Time is when its acknowledgement arrived (or the offset was fetched).
	Call time.Time `json:"call,omitempty"`
	Time time.Time `json:"time"`
}

// PartitionState is the control plane's record of one partition at one etcd revision,
// as a watcher of the partition keys saw it.
type PartitionState struct {
	Topic       string    `json:"topic"`
	Partition   int32     `json:"partition"`
	Leader      int32     `json:"leader"`
	LeaderEpoch int32     `json:"leader_epoch"`
	ISR         []int32   `json:"isr"`
	Replicas    []int32   `json:"replicas"`
	Revision    int64     `json:"revision"`
	Time        time.Time `json:"time"`
}

// ControlOp is one operation on a partition's control-plane state, for the
// linearizability check: a write (an election or an ISR change, by its writer) or a
// read (a watcher's or a node's observation), each with its call and return times.
type ControlOp struct {
	Client    string `json:"client"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Write is true for a write that succeeded (Ok) or may have (!Ok), false for a read.
	Write bool `json:"write"`
	Ok    bool `json:"ok"`
	// State is what was written or read.
	State PartitionState `json:"state"`
	// Expect is, for a compare-and-swap write, the leader epoch and ISR it compared
	// against (nil for a blind write).
	Expect *PartitionState `json:"expect,omitempty"`
	Call   time.Time       `json:"call"`
	Return time.Time       `json:"return"`
}

// ReplicaLog is one replica's log of one partition, read at the end of a run from its
// log start.
type ReplicaLog struct {
	Node      int32  `json:"node"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// HighWatermark is the replica's high watermark when read (-1 if unknown). Replicas
	// must agree below the smallest high watermark of those in the final ISR.
	HighWatermark int64    `json:"high_watermark"`
	Records       []Record `json:"records"`
}

// Fault is a fault injected or healed.
type Fault struct {
	Time time.Time `json:"time"`
	// Kind names the fault ("kill", "restart", "pause", "resume", "cut", "heal", ...).
	Kind string `json:"kind"`
	// Target names what it hit ("dp2", "cp1", "dp1->dp3").
	Target string `json:"target"`
	Detail string `json:"detail,omitempty"`
}

// TxnOutcome is how a transaction ended, as its producer saw it.
type TxnOutcome string

// The outcomes of a transaction. A committed one's EndTxn(commit) was acknowledged: all
// its records must be visible to read_committed consumers. An aborted one never asked
// to commit (its producer aborted it, failed before the commit, or died first): none of
// its records may be visible. An unknown one asked to commit and got no answer, or an
// error: all or none of its records may be visible.
const (
	TxnCommitted TxnOutcome = "committed"
	TxnAborted   TxnOutcome = "aborted"
	TxnUnknown   TxnOutcome = "unknown"
)

// TxnRecord is one record a transaction wrote.
type TxnRecord struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Value     string `json:"value"`
	// Offset is the offset its produce was acknowledged at (-1 if not acknowledged).
	Offset int64 `json:"offset"`
}

// Txn is one transaction of a transactional producer. Its records' values are unique
// over a run.
type Txn struct {
	// Producer names the producer instance (a process); TransactionalID is its
	// transactional.id, which a later instance may share.
	Producer        string      `json:"producer"`
	TransactionalID string      `json:"transactional_id"`
	Seq             int         `json:"seq"`
	Records         []TxnRecord `json:"records"`
	Outcome         TxnOutcome  `json:"outcome"`
	// Err is the error that ended an aborted or unknown transaction, or how its
	// producer ended.
	Err   string    `json:"err,omitempty"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// The isolation levels of a TxnRead.
const (
	ReadCommitted   = "read_committed"
	ReadUncommitted = "read_uncommitted"
)

// TxnRead is one partition read from its start at the end of a run, once no
// transaction was open, at one isolation level: to the last stable offset at
// read_committed, to the high watermark at read_uncommitted. Records are the data
// records returned (control records left out), in the order read.
type TxnRead struct {
	Isolation string   `json:"isolation"`
	Topic     string   `json:"topic"`
	Partition int32    `json:"partition"`
	End       int64    `json:"end"`
	Records   []Record `json:"records"`
}

// History is one run.
type History struct {
	Seed     int64    `json:"seed"`
	Scenario string   `json:"scenario"`
	Topics   []string `json:"topics"`
	// UncleanAllowed lists the topics with unclean.leader.election.enable.
	UncleanAllowed []string         `json:"unclean_allowed,omitempty"`
	Sends          []Send           `json:"sends"`
	Polls          []Poll           `json:"polls"`
	Commits        []Commit         `json:"commits"`
	States         []PartitionState `json:"states"`
	Control        []ControlOp      `json:"control"`
	Finals         []ReplicaLog     `json:"finals"`
	Faults         []Fault          `json:"faults"`
	// Txns are the transactions of the transactional producers, and TxnReads the
	// partitions they wrote read back at both isolation levels at the end. A
	// transaction's records are in Sends too: ok when it committed, info otherwise.
	Txns     []Txn     `json:"txns,omitempty"`
	TxnReads []TxnRead `json:"txn_reads,omitempty"`
	// ConsumersDrained is true when the consumers were meant to read every partition to
	// its end before the run stopped: an acknowledged value in the final logs that no
	// poll read is then an anomaly (unseen), not only a count.
	ConsumersDrained bool      `json:"consumers_drained,omitempty"`
	Start            time.Time `json:"start"`
	End              time.Time `json:"end"`
}
