package replication

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/gregor-streaming/gregor/perf"
)

func TestFencingUntil(t *testing.T) {
	a := fencingSnapshot{lost: 1, epochs: map[int32]int32{0: 3, 1: 5, 2: 0}, running: map[int32]bool{1: true, 2: true, 3: false}, shrinks: 2}
	clean := a.until(a)
	if !clean.Clean() || clean.ISRShrinks != 0 {
		t.Errorf("same snapshot: %+v", clean)
	}
	b := fencingSnapshot{lost: 2, epochs: map[int32]int32{0: 3, 1: 7, 2: 1}, running: map[int32]bool{1: true, 2: false, 3: true}, shrinks: -1}
	f := a.until(b)
	want := Fencing{RegistrationsLost: 1, LeaderChanges: 3, NodesExited: 1, ISRShrinks: -1, FencedProduces: -1}
	if f != want || f.Clean() {
		t.Errorf("until = %+v, want %+v", f, want)
	}
}

func TestInISR(t *testing.T) {
	td := kadm.TopicDetail{Partitions: kadm.PartitionDetails{
		0: {Partition: 0, Replicas: []int32{1, 2, 3}, ISR: []int32{1, 2, 3}},
		1: {Partition: 1, Replicas: []int32{2, 3, 1}, ISR: []int32{2, 1}},
		2: {Partition: 2, Replicas: []int32{1, 2}, ISR: []int32{1, 2}},
	}}
	if !inISR(td, 1) || !inISR(td, 2) || inISR(td, 3) {
		t.Errorf("inISR: 1 %v, 2 %v, 3 %v", inISR(td, 1), inISR(td, 2), inISR(td, 3))
	}
}

// TestSection renders a report made up for the test: every part has its table, and the
// goals are judged from the figures.
func TestSection(t *testing.T) {
	w := &perf.Workload{Name: "fixed-rate-50k-1kb-e2e", ProducerRate: 50_000, MessageSize: 1024}
	res := func(name string, p99Us float64) *perf.Result {
		wc := *w
		wc.Name += name
		return &perf.Result{Workload: &wc, PublishRateMsgs: 50_000, EndToEndLatency: perf.LatencySummary{P99Us: p99Us}}
	}
	r := &Report{Mode: "quick", RegistrationsLost: 1, StartedAt: time.Unix(0, 0), Cluster: ClusterSettings{ControlPlanes: 1, DataPlanes: 3, RegistrationTTL: time.Second, GrantedTTL: time.Second, SessionGrace: time.Second},
		Produce: []ProduceRun{
			{Setting: settings[0].name, ReplicationFactor: 1, Workload: w.Name, Result: res(settings[0].suffix, 1500)},
			{Setting: settings[1].name, ReplicationFactor: 3, Workload: w.Name, Result: res(settings[1].suffix, 2500), Fencing: Fencing{LeaderChanges: 1}},
			{Setting: settings[1].name, ReplicationFactor: 3, Workload: "max-rate", Fencing: Fencing{RegistrationsLost: 1, NodesExited: 1}},
		},
		CatchUp:  &CatchUp{Partitions: 3, FollowerID: 3, BacklogBytes: 1 << 30, ReplicatedBytes: 1 << 30, Seconds: 1, GBps: 1.07},
		Failover: &Failover{Trials: []FailoverTrial{{Killed: 1, Successor: 2, ElectedSec: 1.2, FirstAckSec: 1.5}}, FirstAckMaxSec: 1.5},
	}
	s := Section(r)
	for _, want := range []string{
		"#### fixed-rate-50k-1kb-e2e\n",
		"| RF 1, acks=1 | RF 3, acks=all, min.insync.replicas=2 | RF 3 / RF 1 |",
		"RF 1, acks=1: end-to-end p99 1.50 ms meets the goal",
		"RF 3, acks=all, min.insync.replicas=2: end-to-end p99 2.50 ms misses the goal",
		"| catch-up rate | 1.07 GB/s (1.00 s) |",
		"max 1.50 s meets the goal of ≤ 2 s at a registration TTL of 1s and a session grace of 1s",
		"**False fencing at a registration TTL of 1s and a session grace of 1s:** the nodes lost 1 registrations in this run",
		"- max-rate (RF 3, acks=all, min.insync.replicas=2) failed (see above); meanwhile: 1 registrations lost, 0 sentinel leader changes, 1 nodes exited.",
		"| 0 / 1 / 0 / 0 / 0 |",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("section has no %q:\n%s", want, s)
		}
	}
}
