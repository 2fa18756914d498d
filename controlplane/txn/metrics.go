package txn

import (
	"fmt"
	"sync/atomic"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Metrics are the coordinator's counters. A control-plane node makes one set for its
// life and hands it to the coordinator of each term, so counts run on across terms; the
// gauges read the term's coordinator while it is active.
type Metrics struct {
	current atomic.Pointer[Coordinator]

	markersSent       *vm.Counter // partitions a marker was sent for
	markerRequests    *vm.Counter
	markerRetries     *vm.Counter
	markersInFlight   atomicGauge
	completed         *vm.Counter
	timeouts          *vm.Counter
	idsExpired        *vm.Counter
	completionLatency *vm.Histogram
	storeBatchOps     *vm.Histogram
	storeBatchTime    *vm.Histogram
	requests          [128]*vm.Counter
	// EndTxn answered before its transaction completed: at the wait's bound, or at the
	// end of the term.
	endBeforeCompleteWait    *vm.Counter
	endBeforeCompleteStopped *vm.Counter
	// InitProducerIds that waited for their id's transaction to end, by how the wait
	// ended (endResult).
	initWaits [3]*vm.Counter
}

type atomicGauge struct{ atomic.Int64 }

// NewMetrics registers the coordinator's metrics in set.
func NewMetrics(set *vm.Set) *Metrics {
	m := &Metrics{
		markersSent:       set.NewCounter("gregor_cp_txn_markers_sent_total"),
		markerRequests:    set.NewCounter("gregor_cp_txn_marker_requests_total"),
		markerRetries:     set.NewCounter("gregor_cp_txn_marker_retries_total"),
		completed:         set.NewCounter("gregor_cp_txn_completed_total"),
		timeouts:          set.NewCounter("gregor_cp_txn_timed_out_total"),
		idsExpired:        set.NewCounter("gregor_cp_txn_ids_expired_total"),
		completionLatency: set.NewHistogram("gregor_cp_txn_completion_duration_seconds"),
		storeBatchOps:     set.NewHistogram("gregor_cp_txn_store_batch_ops"),
		storeBatchTime:    set.NewHistogram("gregor_cp_txn_store_batch_duration_seconds"),
		endBeforeCompleteWait: set.NewCounter(
			`gregor_cp_txn_end_answered_before_complete_total{reason="wait_bound"}`),
		endBeforeCompleteStopped: set.NewCounter(
			`gregor_cp_txn_end_answered_before_complete_total{reason="term_ended"}`),
	}
	for r, name := range map[endResult]string{endComplete: "complete", endTimedOut: "wait_bound", endStopped: "term_ended"} {
		m.initWaits[r] = set.NewCounter(fmt.Sprintf(`gregor_cp_txn_init_waits_total{outcome=%q}`, name))
	}
	set.NewGauge("gregor_cp_txn_markers_in_flight", func() float64 { return float64(m.markersInFlight.Load()) })
	for st := range stateCount {
		if st == StateDead || st == StatePrepareEpochFence {
			continue // never held
		}
		set.NewGauge(fmt.Sprintf(`gregor_cp_txn_transactions{state=%q}`, st.String()), func() float64 {
			if co := m.current.Load(); co != nil {
				co.mu.Lock()
				defer co.mu.Unlock()
				return float64(co.counts[st])
			}
			return 0
		})
	}
	for key := range APIs {
		m.requests[key] = set.NewCounter(fmt.Sprintf(`gregor_cp_txn_requests_total{api=%q}`, kmsg.NameForKey(key)))
	}
	return m
}

func (m *Metrics) request(key int16) {
	if key >= 0 && int(key) < len(m.requests) && m.requests[key] != nil {
		m.requests[key].Inc()
	}
}

// ObserveStore records one store transaction: its ops and how long it took.
func (m *Metrics) ObserveStore(ops int, d time.Duration) {
	m.storeBatchOps.Update(float64(ops))
	m.storeBatchTime.Update(d.Seconds())
}
