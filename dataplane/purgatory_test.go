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
	if !w.done || w.timer != nil || size.Load() != 0 || tries != 2 || !w.regs[0].armed.Load() {
		t.Fatalf("done %v, timer armed %v, purgatory size %d, tries %d", w.done, w.timer != nil, size.Load(), tries)
	}
	w.retry() // the wake its registration will bring: nothing more happens
	if tries != 2 {
		t.Fatalf("tried %d times after it was answered", tries)
	}
}

// TestWaiterListensOncePerPartition: a waiter retried again and again, on a partition
// that does not change, is in that partition's list once; woken by it, it is there
// again after its retry. (Re-registering at every retry filled the lists of partitions
// that did not move with copies of the waiter, up to their bound, past which waiters
// still needing them were dropped: acks=all producers stalled.)
func TestWaiterListensOncePerPartition(t *testing.T) {
	still, moving := &replica.Partition{}, &replica.Partition{}
	cs := &connState{}
	var size atomic.Int64
	w := &waiter{cs: cs, parts: []*replica.Partition{still, moving},
		try: func() bool { return false }, expire: func() {}}
	w.park(time.Hour, &size)
	defer w.timer.Stop()
	for range 100 {
		w.retry()
	}
	for i, p := range w.parts {
		if n := p.Waiters(); n != 1 {
			t.Fatalf("partition %d lists the waiter %d times", i, n)
		}
	}
	if !still.AddWaiter(&w.regs[0]) { // a stand-in for another waiter
		t.Fatal("list full")
	}
	w.regs[1].armed.Store(false) // as moving's wake does
	w.retry()
	if still.Waiters() != 2 || moving.Waiters() != 2 {
		t.Fatalf("after a wake of one partition: %d and %d listed", still.Waiters(), moving.Waiters())
	}
}
