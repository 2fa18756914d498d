package dataplane

import (
	"testing"

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
