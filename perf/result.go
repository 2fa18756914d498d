package perf

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Result is the outcome of one workload run on one driver. It is what the JSON files
// under perf/results hold and what reports are generated from.
type Result struct {
	Workload   *Workload `json:"workload"`
	Driver     string    `json:"driver"`
	System     string    `json:"system"`
	Durability string    `json:"durability"`
	StartedAt  time.Time `json:"startedAt"`
	// Command is the exact command line that reproduces this run alone.
	Command string `json:"command"`

	// MeasuredSec is the length of the measured window: the test duration, or for a
	// catch-up workload the time consumers took to drain the backlog.
	MeasuredSec float64 `json:"measuredSec"`

	PublishedMessages int64   `json:"publishedMessages"`
	PublishedBytes    int64   `json:"publishedBytes"`
	ConsumedMessages  int64   `json:"consumedMessages"`
	ConsumedBytes     int64   `json:"consumedBytes"`
	PublishRateMsgs   float64 `json:"publishRateMsgs"`
	PublishRateMBs    float64 `json:"publishRateMBs"` // MB = 10^6 bytes, of message payload
	ConsumeRateMsgs   float64 `json:"consumeRateMsgs"`
	ConsumeRateMBs    float64 `json:"consumeRateMBs"`

	// PublishLatency runs from the intended send time to the acknowledgement.
	PublishLatency LatencySummary `json:"publishLatency"`
	// PublishDelay is how late messages were sent against the schedule (fixed rate only):
	// large values mean the client or the system could not keep the rate.
	PublishDelay LatencySummary `json:"publishDelay"`
	// EndToEndLatency runs from the intended send time to the consumer's receipt.
	EndToEndLatency LatencySummary `json:"endToEndLatency"`

	PublishErrors int64  `json:"publishErrors"`
	FirstError    string `json:"firstError,omitempty"`

	// ServerCPUSeconds is the CPU the server processes used in the measured window.
	ServerCPUSeconds float64 `json:"serverCpuSeconds"`
	// ServerCPUPerGB is ServerCPUSeconds per GB (10^9 bytes) of payload moved through the
	// system in the window — published plus consumed — so a system doing both in one run
	// is charged for both.
	ServerCPUPerGB float64 `json:"serverCpuPerGB"`
	// ServerProcesses breaks ServerCPUSeconds down by process (Gregor runs two).
	ServerProcesses []ProcessCPUUse `json:"serverProcesses,omitempty"`
	// ClientCPUSeconds is the harness's own CPU in the window: client and server share
	// the machine, so a busy client lowers every figure.
	ClientCPUSeconds float64 `json:"clientCpuSeconds"`
	// ZeroCopy is set when the target is Gregor and its metrics could be read.
	ZeroCopy *ZeroCopy `json:"zeroCopy,omitempty"`

	Notes []string `json:"notes,omitempty"`
}

// Label names the result's column in reports: the system, and the driver when the
// system can be driven in more than one way.
func (r *Result) Label() string {
	if strings.HasPrefix(r.Driver, "kafka") {
		return fmt.Sprintf("%s (%s)", r.System, r.Driver)
	}
	return r.System
}

// WriteJSON writes v, indented, to path (creating its directory).
func WriteJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// Suite is one run of the suite: every result, and how and where it was made.
type Suite struct {
	Mode      string    `json:"mode"` // "quick" or "full"
	StartedAt time.Time `json:"startedAt"`
	Commit    string    `json:"commit"`
	Machine   Machine   `json:"machine"`
	Command   string    `json:"command"`
	Results   []*Result `json:"results"`
	// Skipped says which systems were not run, and why.
	Skipped []string `json:"skipped,omitempty"`
	// LoadBefore and LoadAfter are /proc/loadavg at the start and the end: on a shared
	// machine other work skews every figure, and a reader should know how much ran.
	LoadBefore string `json:"loadBefore,omitempty"`
	LoadAfter  string `json:"loadAfter,omitempty"`
}

// ReadSuite reads a suite file written by WriteJSON.
func ReadSuite(path string) (*Suite, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := &Suite{}
	if err := json.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("perf: %s: %w", path, err)
	}
	return s, nil
}
