package txn

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// State is a transactional id's state, as Kafka's TransactionState:
//
//	Empty ──AddPartitions/AddOffsets──▶ Ongoing ──EndTxn──▶ PrepareCommit ──markers──▶ CompleteCommit
//	                                      │    └──EndTxn(abort), timeout, InitProducerId──▶ PrepareAbort ──markers──▶ CompleteAbort
//	CompleteCommit, CompleteAbort ──AddPartitions──▶ Ongoing;  Empty, Complete* ──InitProducerId──▶ Empty (epoch+1)
//	Empty, Complete* ──idle past the expiration──▶ Dead (removed)
//
// PrepareEpochFence is never stored: it is the in-memory state of an Ongoing
// transaction whose producer is being fenced (InitProducerId or a timeout), while the
// PrepareAbort with the bumped epoch is written.
type State int8

// The states.
const (
	StateEmpty State = iota
	StateOngoing
	StatePrepareCommit
	StatePrepareAbort
	StateCompleteCommit
	StateCompleteAbort
	StateDead
	StatePrepareEpochFence
	stateCount
)

var stateNames = [...]string{"Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit",
	"CompleteAbort", "Dead", "PrepareEpochFence"}

// String is Kafka's name of the state (DescribeTransactions, ListTransactions).
func (s State) String() string {
	if s < 0 || s >= stateCount {
		return fmt.Sprintf("State(%d)", s)
	}
	return stateNames[s]
}

// parseState reads a state name (exact, as stored).
func parseState(name string) (State, bool) {
	i := slices.Index(stateNames[:], name)
	return State(i), i >= 0
}

// stateFold reads a state name as ListTransactions' filters give it (case-insensitive).
func stateFold(name string) (State, bool) {
	for i, n := range stateNames {
		if strings.EqualFold(n, name) {
			return State(i), true
		}
	}
	return 0, false
}

// Producer ids and epochs.
const (
	noProducerID    int64 = -1
	noProducerEpoch int16 = -1
)

// epochExhausted is Kafka's rule: the epoch cannot be bumped once more and leave room
// for the bump that fences a producer.
func epochExhausted(epoch int16) bool { return epoch >= math.MaxInt16-1 }

// topicPartition names one partition.
type topicPartition = cluster.TopicPartition

// txnData is what a transactional id's record holds: the part of its state that is
// written before it is answered.
type txnData struct {
	producerID     int64
	lastProducerID int64 // the id before the last rotation (epoch exhausted), or -1
	epoch          int16
	lastEpoch      int16 // the epoch before the last bump, for a producer's retry (KIP-360)
	timeoutMs      int32
	state          State
	partitions     map[topicPartition]struct{}
	groups         map[string]struct{}
	startMs        int64 // when the transaction began (-1: none)
	updateMs       int64 // the last change
}

func (d txnData) clone() txnData {
	d.partitions = maps.Clone(d.partitions)
	d.groups = maps.Clone(d.groups)
	if d.partitions == nil {
		d.partitions = map[topicPartition]struct{}{}
	}
	if d.groups == nil {
		d.groups = map[string]struct{}{}
	}
	return d
}

// txnRecord is txnData's stored form (cluster.TransactionKey).
type txnRecord struct {
	ProducerID     int64         `json:"producerId"`
	LastProducerID int64         `json:"lastProducerId"`
	Epoch          int16         `json:"epoch"`
	LastEpoch      int16         `json:"lastEpoch"`
	TimeoutMs      int32         `json:"timeoutMs"`
	State          string        `json:"state"`
	Partitions     []topicRecord `json:"partitions,omitempty"`
	Groups         []string      `json:"groups,omitempty"`
	StartMs        int64         `json:"startMs"`
	UpdateMs       int64         `json:"updateMs"`
}

type topicRecord struct {
	Topic      string  `json:"topic"`
	Partitions []int32 `json:"partitions"`
}

// record is d's stored form, its partitions sorted.
func (d *txnData) record() txnRecord {
	rec := txnRecord{ProducerID: d.producerID, LastProducerID: d.lastProducerID, Epoch: d.epoch,
		LastEpoch: d.lastEpoch, TimeoutMs: d.timeoutMs, State: d.state.String(), StartMs: d.startMs,
		UpdateMs: d.updateMs, Groups: slices.Sorted(maps.Keys(d.groups))}
	for _, t := range sortedTopics(d.partitions) {
		rec.Partitions = append(rec.Partitions, topicRecord{Topic: t.topic, Partitions: t.partitions})
	}
	return rec
}

// data reads a stored record back.
func (rec *txnRecord) data() (txnData, error) {
	st, ok := parseState(rec.State)
	if !ok || st == StateDead || st == StatePrepareEpochFence {
		return txnData{}, fmt.Errorf("bad state %q", rec.State)
	}
	d := txnData{producerID: rec.ProducerID, lastProducerID: rec.LastProducerID, epoch: rec.Epoch,
		lastEpoch: rec.LastEpoch, timeoutMs: rec.TimeoutMs, state: st, startMs: rec.StartMs, updateMs: rec.UpdateMs,
		partitions: map[topicPartition]struct{}{}, groups: map[string]struct{}{}}
	for _, t := range rec.Partitions {
		for _, p := range t.Partitions {
			d.partitions[topicPartition{Topic: t.Topic, Partition: p}] = struct{}{}
		}
	}
	for _, g := range rec.Groups {
		d.groups[g] = struct{}{}
	}
	return d, nil
}

func (d txnData) marshal() string {
	b, err := json.Marshal(d.record())
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	return string(b)
}

// topicPartitions are one topic's partitions, sorted.
type topicPartitions struct {
	topic      string
	partitions []int32
}

// sortedTopics groups a set of partitions by topic, in order.
func sortedTopics(set map[topicPartition]struct{}) []topicPartitions {
	by := map[string][]int32{}
	for tp := range set {
		by[tp.Topic] = append(by[tp.Topic], tp.Partition)
	}
	out := make([]topicPartitions, 0, len(by))
	for _, t := range slices.Sorted(maps.Keys(by)) {
		ps := by[t]
		slices.Sort(ps)
		out = append(out, topicPartitions{topic: t, partitions: ps})
	}
	return out
}

// txnMeta is one transactional id as the coordinator holds it.
type txnMeta struct {
	id string
	txnData
	// pending is set while a transition is being written: other requests are answered
	// CONCURRENT_TRANSACTIONS until it completes (Kafka's pendingState). fencing is
	// set when that transition is a fence (PrepareEpochFence).
	pending bool
	fencing bool
	// ending holds the markers of a PrepareCommit or PrepareAbort being completed.
	ending *ending
}

// shownState is the state DescribeTransactions shows.
func (m *txnMeta) shownState() State {
	if m.fencing {
		return StatePrepareEpochFence
	}
	return m.state
}
