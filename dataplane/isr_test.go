package dataplane

import (
	"slices"
	"testing"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/replica"
)

// TestISRChangesForgetGone: a change that succeeded is remembered (the view has not shown
// it yet, so the same change is not sent twice), and forgotten once its partition is no
// longer on the node, so deleted topics' partitions are not kept.
func TestISRChangesForgetGone(t *testing.T) {
	var c isrChanges
	kept, gone := &replica.Partition{}, &replica.Partition{}
	for _, p := range []*replica.Partition{kept, gone} {
		if !c.begin(p, 3) {
			t.Fatal("first change refused")
		}
	}
	if c.begin(kept, 3) {
		t.Fatal("a second change from the same partition epoch was allowed")
	}
	c.forgetGone([]*replica.Partition{kept})
	if _, ok := c.pending[gone]; ok || len(c.pending) != 1 {
		t.Fatalf("pending after forgetGone: %v", c.pending)
	}
	if c.begin(kept, 3) || !c.begin(kept, 4) {
		t.Fatal("the live partition's change was forgotten, or a later epoch refused")
	}
}

// TestBrokerEpochsLeaveOutStoppingNodes: a replica not registered, or registered but in
// controlled shutdown under its current registration, is one the leader may not add to
// the ISR; a shutdown key of an earlier registration changes nothing.
func TestBrokerEpochsLeaveOutStoppingNodes(t *testing.T) {
	snap := &client.Snapshot{
		Brokers: map[int32]cluster.Broker{
			1: {ID: 1, Epoch: 10}, 2: {ID: 2, Epoch: 20}, 3: {ID: 3, Epoch: 30},
		},
		ShuttingDown: map[int32]int64{2: 20, 3: 25},
	}
	got := brokerEpochs(snap, []int32{1, 2, 3, 4})
	want := []int64{10, replica.BrokerNotRegistered, 30, replica.BrokerNotRegistered}
	if !slices.Equal(got, want) {
		t.Fatalf("brokerEpochs = %v, want %v", got, want)
	}
}
