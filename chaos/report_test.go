package chaos

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/chaos/checker"
	"github.com/gregor-streaming/gregor/chaos/history"
)

// A run's summary, for docs/reliability.md's tables: with CHAOS_REPORT set to a file,
// every run appends one JSON line to it (reportRow), and TestReportTable renders the
// lines as Markdown.

// reportRow is one run's line.
type reportRow struct {
	Scenario    string             `json:"scenario"`
	Seed        int64              `json:"seed"`
	Seconds     float64            `json:"seconds"`
	Faults      map[string]int     `json:"faults"`
	Sends       int                `json:"sends"`
	SendsOK     int                `json:"sendsOk"`
	SendsFail   int                `json:"sendsFail"`
	SendsInfo   int                `json:"sendsInfo"`
	Polls       int                `json:"polls"`
	Reads       int                `json:"reads"`
	Commits     int                `json:"commits"`
	ControlOps  int                `json:"controlOps"`
	Anomalies   map[string]int     `json:"anomalies"`
	Unavailable map[string]float64 `json:"unavailableSec"`
	// LossAllowed marks a run that may lose acknowledged writes by design (every replica
	// powered off under the default flush mode): its data anomalies are counted, not
	// failed.
	LossAllowed bool `json:"lossAllowed,omitempty"`
}

// notFaults are the history's fault kinds that inject nothing: heals, restarts, resumes,
// what the nemesis observed, and the final stop for the replica reads.
var notFaults = map[string]bool{"heal": true, "restart": true, "resume": true, "observed": true, "stop": true}

// reportPath is CHAOS_REPORT's file ("" when unset), a relative path taken from the
// repository's root (as make runs it), not from the package's directory, where go test
// runs.
func reportPath() string {
	path := os.Getenv("CHAOS_REPORT")
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join("..", path)
}

// checkReportPath fails the test at once when CHAOS_REPORT is set to a file a run could
// not append to, rather than after a run of half an hour.
func checkReportPath(t *testing.T) {
	t.Helper()
	path := reportPath()
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatalf("CHAOS_REPORT: %v", err)
	}
	_ = f.Close()
}

// appendReport appends h's summary to CHAOS_REPORT, if set.
func appendReport(h *history.History, rep *checker.Report, lossAllowed bool) error {
	path := reportPath()
	if path == "" {
		return nil
	}
	s := rep.Stats
	row := reportRow{Scenario: h.Scenario, Seed: h.Seed, Seconds: h.End.Sub(h.Start).Seconds(), Faults: map[string]int{},
		Sends: s.Sends, SendsOK: s.SendsOK, SendsFail: s.SendsFail, SendsInfo: s.SendsInfo, Polls: s.Polls, Reads: s.Reads,
		Commits: s.Commits, ControlOps: s.ControlOps, Anomalies: rep.Counts, Unavailable: map[string]float64{},
		LossAllowed: lossAllowed}
	for _, f := range h.Faults {
		row.Faults[f.Kind]++
	}
	for _, a := range s.Availability {
		row.Unavailable[fmt.Sprintf("%s-%d", a.Topic, a.Partition)] = a.Longest.Seconds()
	}
	b, err := json.Marshal(row)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write(append(b, '\n'))
	return err
}

// injected lists a run's injected faults by kind ("none" without any).
func (r reportRow) injected() string {
	var faults []string
	for k, n := range r.Faults {
		if !notFaults[k] {
			faults = append(faults, fmt.Sprintf("%s ×%d", k, n))
		}
	}
	sort.Strings(faults)
	return cmp.Or(strings.Join(faults, ", "), "none")
}

// anomalies lists a run's anomalies by kind ("0" without any).
func (r reportRow) anomalies() string {
	if len(r.Anomalies) == 0 {
		return "0"
	}
	var as []string
	for k, n := range r.Anomalies {
		as = append(as, fmt.Sprintf("%s ×%d", k, n))
	}
	sort.Strings(as)
	out := strings.Join(as, ", ")
	if r.LossAllowed {
		out += " (acknowledged writes lost by design in this mode: counted, not failed)"
	}
	return out
}

// unavailability lists each partition's longest time without an acknowledged send.
func (r reportRow) unavailability() string {
	parts := make([]string, 0, len(r.Unavailable))
	for p := range r.Unavailable {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	var unav []string
	for _, p := range parts {
		unav = append(unav, fmt.Sprintf("%s %.1f s", p, r.Unavailable[p]))
	}
	return cmp.Or(strings.Join(unav, ", "), "not measured")
}

// scenarioTables renders each row as a table of its own, as docs/reliability.md holds
// them: faults injected, operations, acknowledged writes, anomalies, and the longest
// unavailability per partition.
func scenarioTables(rows []reportRow) string {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "#### %s (seed %d, %s)\n\n", r.Scenario, r.Seed, (time.Duration(r.Seconds * float64(time.Second))).Round(time.Second))
		b.WriteString("| | |\n|---|---|\n")
		fmt.Fprintf(&b, "| faults injected | %s |\n", r.injected())
		fmt.Fprintf(&b, "| operations | %d sends, %d polls (%d records), %d offset commits, %d control-plane operations |\n",
			r.Sends, r.Polls, r.Reads, r.Commits, r.ControlOps)
		fmt.Fprintf(&b, "| acknowledged writes | %d (%d failed, %d unknown) |\n", r.SendsOK, r.SendsFail, r.SendsInfo)
		fmt.Fprintf(&b, "| anomalies | %s |\n", r.anomalies())
		fmt.Fprintf(&b, "| longest unavailability | %s |\n\n", r.unavailability())
	}
	return b.String()
}

// reportTable renders rows as one Markdown table, a row per run.
func reportTable(rows []reportRow) string {
	var b strings.Builder
	b.WriteString("| scenario | seed | run | faults injected | sends (ok / fail / info) | polls (records) | commits | control ops | anomalies | longest unavailability per partition |\n")
	b.WriteString("|---|---:|---:|---|---:|---:|---:|---:|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %d (%d / %d / %d) | %d (%d) | %d | %d | %s | %s |\n",
			r.Scenario, r.Seed, (time.Duration(r.Seconds * float64(time.Second))).Round(time.Second),
			r.injected(), r.Sends, r.SendsOK, r.SendsFail, r.SendsInfo,
			r.Polls, r.Reads, r.Commits, r.ControlOps, r.anomalies(), r.unavailability())
	}
	return b.String()
}

// TestReportTable prints CHAOS_REPORT's runs as docs/reliability.md's table (skipped
// without it): `CHAOS_REPORT=runs.jsonl go test -run TestReportTable -v ./chaos/`.
func TestReportTable(t *testing.T) {
	path := reportPath()
	if path == "" {
		t.Skip("CHAOS_REPORT names no file of runs")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Skip(err)
	}
	var rows []reportRow
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		var r reportRow
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		rows = append(rows, r)
	}
	slices.SortStableFunc(rows, func(a, b reportRow) int { return cmp.Compare(scenarioOrder(a.Scenario), scenarioOrder(b.Scenario)) })
	fmt.Print(reportTable(rows))
	fmt.Println()
	fmt.Print(scenarioTables(rows))
}

// scenarioOrder sorts scenarios by number (R1, R2, …, R10a, …), the random mix last.
func scenarioOrder(name string) int {
	var n int
	if _, err := fmt.Sscanf(name, "R%d", &n); err != nil {
		return 1 << 20
	}
	return n
}
