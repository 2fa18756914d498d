package perf

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Key distributors, as OMB names them.
const (
	// KeyNone sends messages without a key; partitions are used round-robin.
	KeyNone = "NO_KEY"
	// KeyRoundRobin cycles through a fixed set of keys, one per partition.
	KeyRoundRobin = "KEY_ROUND_ROBIN"
	// KeyRandomNano uses a random key per message, so partitions are picked by hash.
	KeyRandomNano = "RANDOM_NANO"
)

// Limits on what a workload may ask for: a typo must not fill the disk or run all night.
const (
	topicsMax             = 64
	partitionsPerTopicMax = 1024
	producersPerTopicMax  = 64
	consumersPerTopicMax  = 64
	// MessageSizeMin is the smallest message: its first 8 bytes carry the intended send
	// time, so anything smaller could not measure end-to-end latency.
	MessageSizeMin  = 16
	messageSizeMax  = 1 << 20
	producerRateMax = 10_000_000
	durationMax     = 2 * time.Hour
	backlogBytesMax = 64 << 30
	batchBytesMax   = 16 << 20
	lingerMax       = time.Second
)

// Workload is one benchmark scenario, with the field names of the OpenMessaging Benchmark
// so its workload files read the same. Durations may be given in minutes (OMB) or seconds
// (ours; they win when both are set). Acks and batching are driver settings in OMB; here
// they are part of the workload so that every system is run with the same ones.
type Workload struct {
	Name                    string  `yaml:"name" json:"name"`
	Topics                  int     `yaml:"topics" json:"topics"`
	PartitionsPerTopic      int     `yaml:"partitionsPerTopic" json:"partitionsPerTopic"`
	MessageSize             int     `yaml:"messageSize" json:"messageSize"`
	KeyDistributor          string  `yaml:"keyDistributor" json:"keyDistributor"`
	SubscriptionsPerTopic   int     `yaml:"subscriptionsPerTopic" json:"subscriptionsPerTopic"`
	ConsumerPerSubscription int     `yaml:"consumerPerSubscription" json:"consumerPerSubscription"`
	ConsumersPerTopic       int     `yaml:"consumersPerTopic" json:"-"` // alias of ConsumerPerSubscription
	ProducersPerTopic       int     `yaml:"producersPerTopic" json:"producersPerTopic"`
	ProducerRate            int     `yaml:"producerRate" json:"producerRate"` // msg/s over all producers; 0 = as fast as possible
	ConsumerBacklogSizeGB   float64 `yaml:"consumerBacklogSizeGB" json:"consumerBacklogSizeGB"`
	WarmupDurationMinutes   float64 `yaml:"warmupDurationMinutes" json:"-"`
	TestDurationMinutes     float64 `yaml:"testDurationMinutes" json:"-"`
	WarmupDurationSeconds   float64 `yaml:"warmupDurationSeconds" json:"-"`
	TestDurationSeconds     float64 `yaml:"testDurationSeconds" json:"-"`
	// Acks is "1" (leader has the message) or "all" (every in-sync replica has it).
	Acks string `yaml:"acks" json:"acks"`
	// BatchSizeBytes is the most a producer puts in one request/batch per partition.
	BatchSizeBytes int `yaml:"batchSizeBytes" json:"batchSizeBytes"`
	// LingerMs is how long a producer waits for a batch to fill before sending it anyway.
	LingerMs float64 `yaml:"lingerMs" json:"lingerMs"`
	// Description says what the workload is for; it heads the workload's table.
	Description string `yaml:"description" json:"description"`

	// Warmup and Test are the resolved durations.
	Warmup time.Duration `yaml:"-" json:"warmupNs"`
	Test   time.Duration `yaml:"-" json:"testNs"`
	// Scaled records how the quick suite shrank this workload ("" when it did not).
	Scaled string `yaml:"-" json:"scaled,omitempty"`
}

// ParseWorkload decodes one workload file and validates it. Unknown fields are errors:
// a misspelt field would otherwise silently fall back to its default.
func ParseWorkload(data []byte) (*Workload, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	w := &Workload{}
	if err := dec.Decode(w); err != nil {
		return nil, fmt.Errorf("perf: workload: %w", err)
	}
	if err := w.normalize(); err != nil {
		return nil, err
	}
	return w, nil
}

// LoadWorkload reads and parses a workload file.
func LoadWorkload(path string) (*Workload, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("perf: workload: %w", err)
	}
	w, err := ParseWorkload(data)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return w, nil
}

// LoadWorkloadDir loads every *.yaml file of dir, sorted by file name so the suite runs
// (and reports) them in a stable order.
func LoadWorkloadDir(dir string) ([]*Workload, []string, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, nil, err
	}
	if len(paths) == 0 {
		return nil, nil, fmt.Errorf("perf: no workloads (*.yaml) in %s", dir)
	}
	sort.Strings(paths)
	ws := make([]*Workload, 0, len(paths))
	for _, p := range paths {
		w, err := LoadWorkload(p)
		if err != nil {
			return nil, nil, err
		}
		ws = append(ws, w)
	}
	return ws, paths, nil
}

// normalize fills defaults, resolves the durations and checks every limit.
func (w *Workload) normalize() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if w.Name == "" {
		bad("name is missing")
	}
	if w.SubscriptionsPerTopic == 0 {
		w.SubscriptionsPerTopic = 1
	}
	if w.ConsumersPerTopic != 0 {
		if w.ConsumerPerSubscription != 0 && w.ConsumerPerSubscription != w.ConsumersPerTopic {
			bad("consumersPerTopic (%d) and consumerPerSubscription (%d) disagree", w.ConsumersPerTopic, w.ConsumerPerSubscription)
		}
		w.ConsumerPerSubscription = w.ConsumersPerTopic
	}
	w.ConsumersPerTopic = w.ConsumerPerSubscription
	if w.KeyDistributor == "" {
		w.KeyDistributor = KeyNone
	}
	if w.Acks == "" {
		w.Acks = "1"
	}
	if w.Acks == "-1" {
		w.Acks = "all"
	}
	if w.BatchSizeBytes == 0 {
		w.BatchSizeBytes = 1 << 20
	}
	rng := func(name string, v, lo, hi int) {
		if v < lo || v > hi {
			bad("%s %d is outside [%d, %d]", name, v, lo, hi)
		}
	}
	rng("topics", w.Topics, 1, topicsMax)
	rng("partitionsPerTopic", w.PartitionsPerTopic, 1, partitionsPerTopicMax)
	rng("messageSize", w.MessageSize, MessageSizeMin, messageSizeMax)
	rng("producersPerTopic", w.ProducersPerTopic, 1, producersPerTopicMax)
	rng("subscriptionsPerTopic", w.SubscriptionsPerTopic, 1, 1)
	rng("consumerPerSubscription", w.ConsumerPerSubscription, 0, consumersPerTopicMax)
	rng("producerRate", w.ProducerRate, 0, producerRateMax)
	rng("batchSizeBytes", w.BatchSizeBytes, 1, batchBytesMax)
	if w.BatchSizeBytes < w.MessageSize && w.MessageSize >= MessageSizeMin {
		bad("batchSizeBytes %d is smaller than one message (%d)", w.BatchSizeBytes, w.MessageSize)
	}
	switch w.KeyDistributor {
	case KeyNone, KeyRoundRobin, KeyRandomNano:
	default:
		bad("keyDistributor %q is not one of %s, %s, %s", w.KeyDistributor, KeyNone, KeyRoundRobin, KeyRandomNano)
	}
	if w.Acks != "1" && w.Acks != "all" {
		bad("acks %q is not 1 or all", w.Acks)
	}
	if w.LingerMs < 0 || time.Duration(w.LingerMs*float64(time.Millisecond)) > lingerMax {
		bad("lingerMs %v is outside [0, %d]", w.LingerMs, lingerMax.Milliseconds())
	}
	if w.ConsumerBacklogSizeGB < 0 || w.ConsumerBacklogSizeGB*(1<<30) > backlogBytesMax {
		bad("consumerBacklogSizeGB %v is outside [0, %d]", w.ConsumerBacklogSizeGB, backlogBytesMax>>30)
	}
	if w.ConsumerBacklogSizeGB > 0 && w.ConsumerPerSubscription == 0 {
		bad("a backlog (consumerBacklogSizeGB) needs consumers to drain it")
	}
	w.Warmup = pickDuration(w.WarmupDurationSeconds, w.WarmupDurationMinutes)
	w.Test = pickDuration(w.TestDurationSeconds, w.TestDurationMinutes)
	if w.Warmup < 0 || w.Warmup > durationMax {
		bad("warmup duration %v is outside [0, %v]", w.Warmup, durationMax)
	}
	if w.ConsumerBacklogSizeGB == 0 && (w.Test <= 0 || w.Test > durationMax) {
		bad("test duration %v is outside (0, %v]", w.Test, durationMax)
	}
	if w.Test < 0 || w.Test > durationMax {
		bad("test duration %v is outside [0, %v]", w.Test, durationMax)
	}
	if len(errs) > 0 {
		return fmt.Errorf("perf: workload %q: %w", w.Name, errors.Join(errs...))
	}
	return nil
}

func pickDuration(seconds, minutes float64) time.Duration {
	if seconds != 0 {
		return time.Duration(seconds * float64(time.Second))
	}
	return time.Duration(minutes * float64(time.Minute))
}

// Linger is LingerMs as a duration.
func (w *Workload) Linger() time.Duration {
	return time.Duration(w.LingerMs * float64(time.Millisecond))
}

// BacklogBytes is the consumer backlog to build before consumers start, in bytes.
func (w *Workload) BacklogBytes() int64 { return int64(w.ConsumerBacklogSizeGB * (1 << 30)) }

// IsCatchUp reports whether the workload measures consumers draining a backlog.
func (w *Workload) IsCatchUp() bool { return w.ConsumerBacklogSizeGB > 0 }

// Quick limits: the quick suite runs every workload for every system within about five
// minutes, so it shortens durations and shrinks backlogs to these. The backlog stays at
// 1 GiB: a broker reading from the page cache at GB/s drains less in well under a
// second, too short to measure.
const (
	QuickWarmupMax  = 2 * time.Second
	QuickTestMax    = 8 * time.Second
	QuickBacklogMax = 1 << 30
)

// ScaleQuick shrinks the workload to the quick suite's limits and records what changed
// in Scaled, so reports can say that the figures come from a scaled-down run.
func (w *Workload) ScaleQuick() {
	var notes []string
	if w.Warmup > QuickWarmupMax {
		notes = append(notes, fmt.Sprintf("warmup %v→%v", w.Warmup, QuickWarmupMax))
		w.Warmup = QuickWarmupMax
	}
	if w.Test > QuickTestMax {
		notes = append(notes, fmt.Sprintf("test %v→%v", w.Test, QuickTestMax))
		w.Test = QuickTestMax
	}
	if w.BacklogBytes() > QuickBacklogMax {
		notes = append(notes, fmt.Sprintf("backlog %s→%s", formatBytes(float64(w.BacklogBytes())), formatBytes(QuickBacklogMax)))
		w.ConsumerBacklogSizeGB = float64(QuickBacklogMax) / (1 << 30)
	}
	w.Scaled = strings.Join(notes, ", ")
}

// formatBytes writes n with a binary unit (KiB, MiB, GiB).
func formatBytes(n float64) string {
	switch {
	case n >= 1<<30:
		return trimFloat(n/(1<<30)) + " GiB"
	case n >= 1<<20:
		return trimFloat(n/(1<<20)) + " MiB"
	case n >= 1<<10:
		return trimFloat(n/(1<<10)) + " KiB"
	}
	return trimFloat(n) + " B"
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
