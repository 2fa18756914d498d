package dataplane

import (
	"sync/atomic"
	"time"

	"github.com/gregor-streaming/gregor/replica"
)

// Delayed requests (Kafka's purgatories): a fetch waiting for min_bytes, a produce
// waiting for the high watermark (acks=all). A waiter is parked on the partitions it
// reads or writes (each replica.Partition keeps the list of its waiters); an append, a
// high-watermark move or a role change wakes them, and a timer ends the wait. Every
// decision runs on the waiter's connection's event loop: wakes and timers only post to
// the connection's mailbox.

// waiter is one delayed request.
type waiter struct {
	cs *connState
	// try runs on the loop: it answers the request and returns true if it can now.
	try func() bool
	// expire runs on the loop at the deadline: it answers with what there is.
	expire func()
	// parts are the partitions to wait on; regs[i] is the waiter's registration on
	// parts[i].
	parts []*replica.Partition
	regs  []registration
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

// park registers w on its partitions and arms its deadline. The caller tried the
// request before; it is tried again once registered (Kafka's tryCompleteElseWatch): a
// change between the caller's try and the registration woke nobody, and the request
// would otherwise wait for the next change, or its deadline.
func (w *waiter) park(wait time.Duration, size *atomic.Int64) {
	w.size = size
	size.Add(1)
	w.regs = make([]registration, len(w.parts))
	for i := range w.regs {
		w.regs[i].w = w
	}
	w.listen()
	if w.try() {
		w.done = true
		w.leave()
		return
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

// registration is a waiter's place in one partition's waiter list (replica.Waiter):
// armed while it is in the list. A waiter is in each list at most once, however often
// it retries: re-registering on every partition at every retry filled the lists of
// partitions that did not move with copies of it, up to their bound, past which a
// waiter still needing such a partition was dropped and never woken (acks=all producers
// stalled until their timeout).
type registration struct {
	w     *waiter
	armed atomic.Bool
}

// Wake implements replica.Waiter: the partition changed and dropped its list, so the
// waiter is handed to its connection's loop to try again.
func (r *registration) Wake() {
	r.armed.Store(false)
	r.w.cs.post(r.w.retry)
}

// listen puts the waiter in the list of each of its partitions it is not in yet.
func (w *waiter) listen() {
	for i := range w.regs {
		r := &w.regs[i]
		if r.armed.CompareAndSwap(false, true) && !w.parts[i].AddWaiter(r) {
			r.armed.Store(false) // the list is full: the deadline answers, or a later retry
		}
	}
}

// retry runs on the loop after a partition changed: it answers the request if it can
// now, else leaves it parked. It listens on its partitions again before it tries, so
// a change during the try wakes it once more; if the try answers, the later wake finds
// it done.
func (w *waiter) retry() {
	if w.done {
		return
	}
	w.listen()
	if w.try() {
		w.done = true
		w.leave()
		w.timer.Stop()
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
