package drivers

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/internal/reserve"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/perf"
)

// fixedRate is a short end-to-end run: 2 partitions, 3,000 msg/s for a second.
const fixedRate = `
name: driver-e2e
topics: 1
partitionsPerTopic: 2
messageSize: 512
producersPerTopic: 1
consumerPerSubscription: 1
producerRate: 3000
keyDistributor: RANDOM_NANO
batchSizeBytes: 65536
lingerMs: 1
warmupDurationSeconds: 0.2
testDurationSeconds: 1
`

// catchUp builds and drains a 4 MiB backlog.
const catchUp = `
name: driver-catch-up
topics: 1
partitionsPerTopic: 2
messageSize: 1024
producersPerTopic: 1
consumerPerSubscription: 1
consumerBacklogSizeGB: 0.00390625
batchSizeBytes: 262144
lingerMs: 1
`

func needBinary(t *testing.T, bin string) {
	t.Helper()
	_, err := exec.LookPath(bin)
	testutil.NeedDep(t, err, "scripts/install-peers.sh installs it")
}

// runBoth runs the fixed-rate and catch-up workloads on a driver and checks that
// messages went through, latencies were measured and nothing failed.
func runBoth(t *testing.T, d perf.Driver, wantCPU bool) {
	t.Helper()
	for _, y := range []string{fixedRate, catchUp} {
		w, err := perf.ParseWorkload([]byte(y))
		if err != nil {
			t.Fatal(err)
		}
		t.Run(w.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := perf.Run(ctx, perf.RunConfig{Workload: w, Driver: d, CatchUpTimeout: 15 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if res.PublishErrors > 0 {
				t.Fatalf("%d publish errors, first: %s", res.PublishErrors, res.FirstError)
			}
			if res.PublishedMessages == 0 || res.ConsumedMessages == 0 || res.PublishLatency.Count == 0 {
				t.Fatalf("nothing measured: %+v", res)
			}
			if w.IsCatchUp() {
				if want := w.BacklogBytes() / int64(w.MessageSize); res.ConsumedMessages < want {
					t.Errorf("consumed %d of a %d-message backlog", res.ConsumedMessages, want)
				}
			} else {
				if res.EndToEndLatency.Count == 0 {
					t.Error("no end-to-end latency")
				}
				// The driver must follow the workload's rate, not run flat out (tens of
				// thousands of messages a second here). Within a one-second window on a
				// loaded machine a stalled publisher catches up in a burst (the rate is kept
				// in intended send times), so the bound is loose; it is not a timing test.
				if r := res.PublishRateMsgs; r < 3000*0.5 || r > 3000*1.5 {
					t.Errorf("publish rate %.0f msg/s, want about 3000 (0.5× to 1.5×)", r)
				}
			}
			if wantCPU && !w.IsCatchUp() && res.ServerCPUSeconds <= 0 { // a drain may be shorter than a clock tick
				t.Errorf("server CPU not measured (pids %v)", d.ServerPIDs())
			}
			t.Logf("%s: pub %.0f msg/s, cons %.0f msg/s, pub p99 %s, e2e p99 %s, server CPU %.2fs", d.System(),
				res.PublishRateMsgs, res.ConsumeRateMsgs, perf.FormatMicros(res.PublishLatency.P99Us),
				perf.FormatMicros(res.EndToEndLatency.P99Us), res.ServerCPUSeconds)
		})
	}
}

func TestJetStreamDriver(t *testing.T) {
	needBinary(t, "nats-server")
	d, err := New("jetstream", Options{WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !strings.HasPrefix(d.System(), "NATS JetStream 2.") {
		t.Errorf("system %q", d.System())
	}
	runBoth(t, d, true)
}

func TestRedisDriver(t *testing.T) {
	needBinary(t, "redis-server")
	d, err := New("redis", Options{WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !strings.HasPrefix(d.System(), "Redis Streams ") {
		t.Errorf("system %q", d.System())
	}
	runBoth(t, d, true)
}

// kafkaCluster is a real single-node Gregor cluster in the test process (embedded etcd
// control plane and a data-plane node). Its CPU is the test's own, so it is found as the
// listening process (this one).
func kafkaCluster(t *testing.T) string {
	t.Helper()
	return testcluster.New(t, testcluster.Options{}).Brokers()[0]
}

func TestKafkaDrivers(t *testing.T) {
	for _, name := range []string{"kafka", "kafka-raw"} {
		t.Run(name, func(t *testing.T) {
			addr := kafkaCluster(t)
			d, err := New(name, Options{Bootstrap: addr})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			runBoth(t, d, false)
		})
	}
}

// TestKafkaNoBroker: pointed at nothing, the Kafka drivers fail at once, saying where
// they looked.
func TestKafkaNoBroker(t *testing.T) {
	// A reserved port: bound by no listener, and no other test's either.
	res, err := reserve.TCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	addr := res.Addr()
	for _, name := range []string{"kafka", "kafka-raw"} {
		start := time.Now()
		_, err := New(name, Options{Bootstrap: addr})
		if err == nil || !strings.Contains(err.Error(), "no Kafka-compatible broker at "+addr) {
			t.Errorf("%s: err = %v", name, err)
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("%s: took %v to fail", name, time.Since(start))
		}
	}
}

func TestUnknownDriver(t *testing.T) {
	if _, err := New("kafka-streams", Options{}); err == nil || !strings.Contains(err.Error(), "unknown driver") {
		t.Errorf("err = %v", err)
	}
}

func TestPIDListening(t *testing.T) {
	addr := kafkaCluster(t)
	pid, err := PIDListening(portOf(addr))
	if err != nil {
		t.Skipf("cannot read /proc here: %v", err)
	}
	if pid <= 0 {
		t.Errorf("pid %d", pid)
	}
}
