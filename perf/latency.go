package perf

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latency histogram range: 1 ns to 10 minutes at 3 significant digits (0.1% error).
// Anything slower is clamped to the maximum and counted, not dropped: a run whose tail
// exceeds ten minutes is broken, and it should still show in the max.
const (
	latencyMinNs   = 1
	latencyMaxNs   = int64(10 * time.Minute)
	latencySigFigs = 3
)

// Recorder accumulates one latency distribution. It is safe for concurrent use: drivers
// call back from their own goroutines, and the progress line reads it while a run goes.
//
// Coordinated omission: at a fixed rate the harness passes the time each message was
// *meant* to be sent (its slot in the schedule) as the start, not the time it was sent. A
// system that stalls for 100 ms then delays every message scheduled in those 100 ms, and
// each of them records its full wait — instead of one slow sample and a gap, which is what
// measuring from the actual send time would show (Gil Tene's "coordinated omission").
type Recorder struct {
	mu      sync.Mutex
	h       *hdrhistogram.Histogram
	clamped int64
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder {
	return &Recorder{h: hdrhistogram.New(latencyMinNs, latencyMaxNs, latencySigFigs)}
}

// Record adds the latency from start to end, both Unix nanoseconds. A negative latency
// (clocks are one machine's, so only rounding can cause it) counts as 1 ns.
func (r *Recorder) Record(startNs, endNs int64) {
	d := endNs - startNs
	if d < latencyMinNs {
		d = latencyMinNs
	}
	r.mu.Lock()
	if d > latencyMaxNs {
		d = latencyMaxNs
		r.clamped++
	}
	_ = r.h.RecordValue(d) // in range by construction
	r.mu.Unlock()
}

// Reset empties the recorder; the harness calls it when the warmup ends.
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.h.Reset()
	r.clamped = 0
	r.mu.Unlock()
}

// Summary returns the distribution's percentiles.
func (r *Recorder) Summary() LatencySummary {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.h.TotalCount() == 0 {
		return LatencySummary{}
	}
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	return LatencySummary{
		Count:   r.h.TotalCount(),
		MeanUs:  r.h.Mean() / 1e3,
		P50Us:   us(r.h.ValueAtQuantile(50)),
		P99Us:   us(r.h.ValueAtQuantile(99)),
		P999Us:  us(r.h.ValueAtQuantile(99.9)),
		MaxUs:   us(r.h.Max()),
		Clamped: r.clamped,
	}
}

// LatencySummary is a latency distribution reduced to what the reports show, in
// microseconds.
type LatencySummary struct {
	Count   int64   `json:"count"`
	MeanUs  float64 `json:"meanUs"`
	P50Us   float64 `json:"p50Us"`
	P99Us   float64 `json:"p99Us"`
	P999Us  float64 `json:"p999Us"`
	MaxUs   float64 `json:"maxUs"`
	Clamped int64   `json:"clamped,omitempty"` // samples above the histogram's range
}
