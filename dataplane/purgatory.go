package dataplane

import (
	"sync"
	"sync/atomic"
	"time"
)

// Delayed requests (Kafka's purgatories): a fetch waiting for min_bytes, a produce
// waiting for the high watermark (acks=all). A waiter is parked on the partitions it
// reads or writes; an append or a high-watermark move wakes them, and a timer ends the
// wait. Every decision runs on the waiter's connection's event loop: wakes and timers
// only post to the connection's mailbox.

// maxWaitersPerPartition bounds a partition's waiter list (a flood of long polls).
const maxWaitersPerPartition = 10_000

// waiter is one delayed request.
type waiter struct {
	cs *connState
	// try runs on the loop: it answers the request and returns true if it can now.
	try func() bool
	// expire runs on the loop at the deadline: it answers with what there is.
	expire func()
	// parts are the partitions to wait on.
	parts []*Partition
	timer *time.Timer
	// done is set, on the loop, once the request is answered.
	done bool
	// size is the purgatory's size gauge: one while the request waits.
	size *atomic.Int64
	// left is set once the waiter has left the purgatory (answered, or its connection
	// closed), so the size gauge is decremented exactly once.
	left atomic.Bool
}

// leave takes the waiter out of its purgatory's size.
func (w *waiter) leave() {
	if w.size != nil && !w.left.Swap(true) {
		w.size.Add(-1)
	}
}

// park registers w on its partitions and arms its deadline.
func (w *waiter) park(wait time.Duration, size *atomic.Int64) {
	w.size = size
	size.Add(1)
	for _, p := range w.parts {
		p.addWaiter(w)
	}
	w.timer = time.AfterFunc(wait, func() {
		posted := w.cs.post(func() {
			if !w.done {
				w.done = true
				w.leave()
				w.expire()
			}
		})
		if !posted {
			w.leave() // the connection closed: the request is gone
		}
	})
}

// wake runs on the loop after a partition changed.
func (w *waiter) wake() {
	if w.done {
		return
	}
	if w.try() {
		w.done = true
		w.leave()
		w.timer.Stop()
		return
	}
	for _, p := range w.parts { // still waiting: listen again
		p.addWaiter(w)
	}
}

// waiters is a partition's list of parked requests.
type waiters struct {
	mu   sync.Mutex
	list []*waiter
}

func (p *Partition) addWaiter(w *waiter) {
	p.waiters.mu.Lock()
	if len(p.waiters.list) < maxWaitersPerPartition {
		p.waiters.list = append(p.waiters.list, w)
	}
	p.waiters.mu.Unlock()
}

// wakeWaiters hands every parked request on p to its connection's loop.
func (p *Partition) wakeWaiters() {
	p.waiters.mu.Lock()
	list := p.waiters.list
	p.waiters.list = nil
	p.waiters.mu.Unlock()
	for _, w := range list {
		w.cs.post(w.wake)
	}
}

// post queues fn to run on the connection's event loop and wakes the loop. It reports
// false, running nothing, once the connection has closed.
func (cs *connState) post(fn func()) bool {
	cs.mailMu.Lock()
	if cs.mailClosed {
		cs.mailMu.Unlock()
		return false
	}
	cs.mailbox = append(cs.mailbox, fn)
	cs.mailMu.Unlock()
	_ = cs.c.Wake(nil)
	return true
}

// runMailbox runs what was posted, on the loop.
func (cs *connState) runMailbox() {
	cs.mailMu.Lock()
	fns := cs.mailbox
	cs.mailbox = nil
	cs.mailMu.Unlock()
	for _, fn := range fns {
		fn()
	}
}
