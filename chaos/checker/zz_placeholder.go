// Placeholder for the workload branch; replaced by the real checker at merge.
package checker

import "github.com/gregor-streaming/gregor/chaos/history"

// Check judges a history (the placeholder finds nothing).
func Check(h *history.History) *Report { return &Report{Counts: map[string]int{}} }

// Report is what Check found.
type Report struct {
	Anomalies []Anomaly
	Counts    map[string]int
	Stats     Stats
}

// Anomaly is one violation.
type Anomaly struct {
	Kind      string
	Topic     string
	Partition int32
	Offset    int64
	Value     string
	Detail    string
}

// Stats is filled by the real checker.
type Stats struct{}

// OK reports whether no anomaly was found.
func (r *Report) OK() bool { return len(r.Anomalies) == 0 }

// String summarises the report.
func (r *Report) String() string { return "placeholder checker: no checks made" }
