package chaos

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
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
}

// appendReport appends h's summary to CHAOS_REPORT, if set.
func appendReport(h *history.History, rep *checker.Report) error {
	path := os.Getenv("CHAOS_REPORT")
	if path == "" {
		return nil
	}
	s := rep.Stats
	row := reportRow{Scenario: h.Scenario, Seed: h.Seed, Seconds: h.End.Sub(h.Start).Seconds(), Faults: map[string]int{},
		Sends: s.Sends, SendsOK: s.SendsOK, SendsFail: s.SendsFail, SendsInfo: s.SendsInfo, Polls: s.Polls, Reads: s.Reads,
		Commits: s.Commits, ControlOps: s.ControlOps, Anomalies: rep.Counts, Unavailable: map[string]float64{}}
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

// reportTable renders rows as the Markdown table docs/reliability.md holds.
func reportTable(rows []reportRow) string {
	var b strings.Builder
	b.WriteString("| scenario | seed | run | faults injected | sends (ok / fail / info) | polls (records) | commits | control ops | anomalies | longest unavailability per partition |\n")
	b.WriteString("|---|---:|---:|---|---:|---:|---:|---:|---|---|\n")
	for _, r := range rows {
		var faults []string
		for k, n := range r.Faults {
			faults = append(faults, fmt.Sprintf("%s ×%d", k, n))
		}
		sort.Strings(faults)
		anomalies := "0"
		if len(r.Anomalies) > 0 {
			var as []string
			for k, n := range r.Anomalies {
				as = append(as, fmt.Sprintf("%s ×%d", k, n))
			}
			sort.Strings(as)
			anomalies = strings.Join(as, ", ")
		}
		parts := make([]string, 0, len(r.Unavailable))
		for p := range r.Unavailable {
			parts = append(parts, p)
		}
		slices.Sort(parts)
		var unav []string
		for _, p := range parts {
			unav = append(unav, fmt.Sprintf("%s %.1f s", p, r.Unavailable[p]))
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %d (%d / %d / %d) | %d (%d) | %d | %d | %s | %s |\n",
			r.Scenario, r.Seed, (time.Duration(r.Seconds * float64(time.Second))).Round(time.Second),
			cmp.Or(strings.Join(faults, ", "), "none"), r.Sends, r.SendsOK, r.SendsFail, r.SendsInfo,
			r.Polls, r.Reads, r.Commits, r.ControlOps, anomalies, strings.Join(unav, ", "))
	}
	return b.String()
}

// TestReportTable prints CHAOS_REPORT's runs as docs/reliability.md's table (skipped
// without it): `CHAOS_REPORT=runs.jsonl go test -run TestReportTable -v ./chaos/`.
func TestReportTable(t *testing.T) {
	path := os.Getenv("CHAOS_REPORT")
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
	fmt.Print(reportTable(rows))
}
