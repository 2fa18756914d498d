package perf

import (
	"math"
	"time"
)

// Pacer schedules messages at a fixed rate. Message i is due at start + i/rate: the
// schedule is absolute, so a late wake-up or a slow send does not lower the rate — the
// messages that fell due meanwhile go out back to back, each keeping its own slot as its
// intended send time (the start of its latency, see Recorder).
//
// A Pacer never spins: on a machine whose cores are shared with the system under test,
// a busy-waiting client would steal the CPU it is measuring. It sleeps until the next
// message is due; Go's timers wake it somewhat late, which the absolute schedule absorbs.
type Pacer struct {
	startNs    int64
	intervalNs float64 // nanoseconds between messages
	sleep      func(time.Duration)
	now        func() int64
}

// NewPacer returns a pacer for ratePerSec messages per second starting at start. A rate
// of 0 or less means no pacing: every message is due at once, at the time it is sent.
func NewPacer(ratePerSec float64, start time.Time) *Pacer {
	p := &Pacer{startNs: start.UnixNano(), sleep: time.Sleep, now: nowNs}
	if ratePerSec > 0 {
		p.intervalNs = 1e9 / ratePerSec
	}
	return p
}

// Fixed reports whether the pacer holds a fixed rate.
func (p *Pacer) Fixed() bool { return p.intervalNs > 0 }

// Due returns the intended send time of message i (Unix ns).
func (p *Pacer) Due(i int64) int64 {
	return p.startNs + int64(math.Round(float64(i)*p.intervalNs))
}

// Wait blocks until message i is due and returns its intended send time (Unix ns). With
// no pacing it returns the current time at once.
func (p *Pacer) Wait(i int64) int64 {
	if !p.Fixed() {
		return p.now()
	}
	due := p.Due(i)
	if d := due - p.now(); d > 0 {
		p.sleep(time.Duration(d))
	}
	return due
}

func nowNs() int64 { return time.Now().UnixNano() }
