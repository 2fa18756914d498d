package groups

import (
	"fmt"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Metrics are the coordinator's counters. A control-plane node makes one set for its
// life and hands it to the coordinator of each term, so counts run on across terms.
type Metrics struct {
	rebalances       *vm.Counter
	sessionExpiries  *vm.Counter
	offsetCommits    *vm.Counter // partitions committed
	offsetsExpired   *vm.Counter
	groupsExpired    *vm.Counter
	groupBadRequests *vm.Counter
	commitLatency    *vm.Histogram
	storeBatchOps    *vm.Histogram
	storeBatchTime   *vm.Histogram
	groupRequests    [64]*vm.Counter
}

// NewMetrics registers the coordinator's metrics in set.
func NewMetrics(set *vm.Set) *Metrics {
	m := &Metrics{
		rebalances:       set.NewCounter("gregor_cp_group_rebalances_total"),
		sessionExpiries:  set.NewCounter("gregor_cp_group_session_expiries_total"),
		offsetCommits:    set.NewCounter("gregor_cp_group_offsets_committed_total"),
		offsetsExpired:   set.NewCounter("gregor_cp_group_offsets_expired_total"),
		groupsExpired:    set.NewCounter("gregor_cp_groups_expired_total"),
		groupBadRequests: set.NewCounter("gregor_cp_group_bad_requests_total"),
		commitLatency:    set.NewHistogram("gregor_cp_group_offset_commit_duration_seconds"),
		storeBatchOps:    set.NewHistogram("gregor_cp_group_store_batch_ops"),
		storeBatchTime:   set.NewHistogram("gregor_cp_group_store_batch_duration_seconds"),
	}
	for key := range m.groupRequests {
		if IsGroupAPI(int16(key)) || int16(key) == int16(kmsg.TxnOffsetCommit) {
			m.groupRequests[key] = set.NewCounter(fmt.Sprintf(`gregor_cp_group_requests_total{api=%q}`, kmsg.NameForKey(int16(key))))
		}
	}
	return m
}

// Request counts one forwarded group request of API key.
func (m *Metrics) Request(key int16) {
	if key >= 0 && int(key) < len(m.groupRequests) && m.groupRequests[key] != nil {
		m.groupRequests[key].Inc()
	}
}

// BadRequest counts one forwarded request that did not decode.
func (m *Metrics) BadRequest() { m.groupBadRequests.Inc() }

// ObserveStore records one store transaction: its ops and how long it took.
func (m *Metrics) ObserveStore(ops int, d time.Duration) {
	m.storeBatchOps.Update(float64(ops))
	m.storeBatchTime.Update(d.Seconds())
}
