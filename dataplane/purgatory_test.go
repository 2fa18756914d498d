package dataplane

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/replica"
)

// TestParkTriesOnceRegistered: a change between the caller's try and the waiter's
// registration wakes nobody, so park tries once more after registering (Kafka's
// tryCompleteElseWatch). Here the change is the try's second answer: the request is
// answered by park itself, with no wake and no deadline armed.
func TestParkTriesOnceRegistered(t *testing.T) {
	tries := 0
	var size atomic.Int64
	w := &waiter{
		parts:  []*replica.Partition{{}},
		try:    func() bool { tries++; return tries > 1 },
		expire: func() { t.Fatal("expired") },
	}
	if w.try() {
		t.Fatal("first try answered")
	}
	w.park(time.Hour, &size)
	if !w.done || w.timer != nil || size.Load() != 0 || tries != 2 {
		t.Fatalf("done %v, timer armed %v, purgatory size %d, tries %d", w.done, w.timer != nil, size.Load(), tries)
	}
	w.retry() // the wake its registration will bring: nothing more happens
	if tries != 2 {
		t.Fatalf("tried %d times after it was answered", tries)
	}
}
