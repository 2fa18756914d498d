package txn

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/perf"
)

func TestParseBatchesPerTxn(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		err  string
	}{
		{"1,10,100", []int{1, 10, 100}, ""},
		{" 5 , 2,", []int{5, 2}, ""},
		{"", nil, "none in"},
		{"1,ten", nil, `"ten" is not a number`},
	} {
		got, err := ParseBatchesPerTxn(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	s := DefaultSettings()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.BatchesPerTxn[0] = 2; DefaultBatchesPerTxn[0] != 1 {
		t.Error("DefaultSettings shares DefaultBatchesPerTxn")
	}
	modes := s.Modes()
	if len(modes) != 4 || modes[0] != (Mode{Name: "idempotent"}) || modes[3] != (Mode{Name: "txn-100", BatchesPerTxn: 100}) {
		t.Errorf("modes: %+v", modes)
	}
	if modes[1].Label() != "transactional, 2 batches/txn" || modes[2].Label() != "transactional, 10 batches/txn" {
		t.Errorf("labels: %q, %q", modes[1].Label(), modes[2].Label())
	}
	if m := (Mode{BatchesPerTxn: 1}); m.Label() != "transactional, 1 batch/txn" {
		t.Errorf("label: %q", m.Label())
	}
	for _, tc := range []struct {
		change func(*Settings)
		want   string
	}{
		{func(s *Settings) { s.BatchesPerTxn = []int{10, 10} }, "given twice"},
		{func(s *Settings) { s.BatchesPerTxn = []int{0} }, "batches per transaction 0 is outside"},
		{func(s *Settings) { s.BatchesPerTxn = nil }, "no transactional mode"},
		{func(s *Settings) { s.RecordSize, s.BatchRecords = 1<<20, 1 }, "would not fit one record batch"},
		{func(s *Settings) { s.Partitions, s.BatchRecords, s.RecordSize = 256, 1000, 16 }, "is over 100000"},
		{func(s *Settings) { s.Producers = 0 }, "producers 0 is outside"},
		{func(s *Settings) { s.Warmup = -time.Second }, "warmup -1s is outside"},
		{func(s *Settings) { s.Duration = 0 }, "duration 0s is outside"},
		{func(s *Settings) { s.Duration = 2 * time.Hour }, "duration 2h0m0s is outside"},
	} {
		s := DefaultSettings()
		tc.change(&s)
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", s, err, tc.want)
		}
	}
}

// TestSummarize checks a mode's result from two snapshots: rates over the window, the
// requests per batch and the CPU per GB.
func TestSummarize(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := counters{at: t0, records: 100, bytes: 100_000, batches: 10, txns: 1, batchSent: 12,
		requests: Requests{Produce: 12, AddPartitionsToTxn: 1, EndTxn: 1}, serverCPU: 5, clientCPU: 1}
	b := counters{at: t0.Add(2 * time.Second), records: 2100, bytes: 2_100_000, batches: 210, txns: 21, batchSent: 222,
		requests: Requests{Produce: 222, AddPartitionsToTxn: 21, EndTxn: 21, InitProducerID: 1}, serverCPU: 5.5, clientCPU: 2}
	commit := perf.LatencySummary{Count: 20, P50Us: 1500, P99Us: 4000}
	r := summarize(Mode{Name: "txn-10", BatchesPerTxn: 10}, a, b, commit, perf.LatencySummary{})
	want := &ModeResult{Mode: "txn-10", Label: "transactional, 10 batches/txn", BatchesPerTxn: 10, MeasuredSec: 2,
		Records: 2000, Bytes: 2_000_000, Batches: 200, Transactions: 20, BatchesSent: 210,
		RecordsPerSec: 1000, MBPerSec: 1, BatchesPerSec: 100, TransactionsPerSec: 10, CommitLatency: commit,
		Requests: Requests{Produce: 210, AddPartitionsToTxn: 20, EndTxn: 20, InitProducerID: 1}, ProduceRequestsPerBatch: 1,
		ServerCPUSeconds: 0.5, ClientCPUSeconds: 1}
	if math.Abs(r.ServerCPUPerGB-250) > 1e-9 {
		t.Errorf("server CPU per GB %v, want 250", r.ServerCPUPerGB)
	}
	r.ServerCPUPerGB = 0
	if !reflect.DeepEqual(r, want) {
		t.Errorf("summarize:\n got %+v\nwant %+v", r, want)
	}
	// An empty window divides by nothing.
	if z := summarize(Mode{Name: "idempotent"}, a, a, perf.LatencySummary{}, perf.LatencySummary{}); z.RecordsPerSec != 0 ||
		z.ProduceRequestsPerBatch != 0 || z.ServerCPUPerGB != 0 || math.IsNaN(z.MBPerSec) {
		t.Errorf("empty window: %+v", z)
	}
}

// TestSection renders a made-up report: every mode has its row, the ratio to the
// idempotent mode is computed, failures are shown.
func TestSection(t *testing.T) {
	s := DefaultSettings()
	r := &Report{StartedAt: time.Unix(0, 0), System: "Gregor", Settings: s, Machine: perf.Machine{Cores: 2},
		Modes: []*ModeResult{
			{Mode: "idempotent", Label: "idempotent", RecordsPerSec: 100_000, MBPerSec: 102.4, BatchesPerSec: 781, ProduceRequestsPerBatch: 1},
			{Mode: "txn-10", Label: "transactional, 10 batches/txn", BatchesPerTxn: 10, RecordsPerSec: 50_000, MBPerSec: 51.2,
				TransactionsPerSec: 39, CommitLatency: perf.LatencySummary{P50Us: 2500, P99Us: 12_000}, Transactions: 780, MeasuredSec: 20,
				Requests: Requests{Produce: 7810, AddPartitionsToTxn: 780, EndTxn: 780}},
		},
		Failures: []string{"transactional, 100 batches/txn: boom"}}
	sec := Section(r)
	for _, want := range []string{
		"## Transactions: transactional produce against idempotent produce (`perf/txn`)",
		"| mode | records/s | MB/s | transactions/s | commit p50 | commit p99 |",
		"| idempotent | 100,000 | 102.4 | - | - | - | 781 |",
		"| transactional, 10 batches/txn | 50,000 | 51.2 | 39.0 | 2.50 ms | 12.00 ms |",
		"| ×0.50 |",
		"**Failed:** transactional, 100 batches/txn: boom",
		"4 producers (franz-go, acks=all, idempotent)",
		"16 records of 1 KiB to each partition (128 records, 128 KiB)",
		"780 transactions committed in 20.0 s",
	} {
		if !strings.Contains(sec, want) {
			t.Errorf("section has no %q:\n%s", want, sec)
		}
	}
	var out bytes.Buffer
	WriteTable(&out, r)
	if !strings.Contains(out.String(), "transactional, 10 batches/txn") || !strings.Contains(out.String(), "failed: transactional, 100") {
		t.Errorf("table:\n%s", out.String())
	}
}
