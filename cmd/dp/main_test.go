package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

// startNode runs one gregor-cp and one gregor-dp process (the binaries of this package
// and cmd/cp, built by the harness) and returns the cluster and its node.
func startNode(t *testing.T, opts testcluster.Options) (*testcluster.Cluster, *testcluster.DP) {
	t.Helper()
	opts.Processes = true
	c := testcluster.New(t, opts)
	return c, c.DP(1)
}

// TestCrashUnderLoad SIGKILLs the node while franz-go produces with acks=all, restarts
// it on the same data directory, and reads back every acknowledged record (the storage
// engine recovers the logs; the page cache kept what was written).
func TestCrashUnderLoad(t *testing.T) {
	c, dp := startNode(t, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	admCl, err := kgo.NewClient(kgo.SeedBrokers(dp.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := kadm.NewClient(admCl).CreateTopics(ctx, 2, 1, nil, "crash"); err != nil || resp["crash"].Err != nil {
		t.Fatalf("create: %v %+v", err, resp)
	}
	admCl.Close()

	producer, err := kgo.NewClient(kgo.SeedBrokers(dp.Addr()), kgo.RecordRetries(0), kgo.ProduceRequestTimeout(2*time.Second),
		kgo.RequestRetries(0), kgo.DisableIdempotentWrite())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			v := fmt.Sprintf("record-%06d", i)
			producer.Produce(ctx, &kgo.Record{Topic: "crash", Key: []byte(strconv.Itoa(i % 7)), Value: []byte(v)}, func(r *kgo.Record, err error) {
				if err == nil {
					mu.Lock()
					acked[string(r.Value)] = true
					mu.Unlock()
				}
			})
			if i%200 == 199 {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	testutil.CheckFor(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 2000 {
			return fmt.Errorf("%d acked", len(acked))
		}
		return nil
	})
	c.Kill(dp)
	close(stop)
	wg.Wait()
	producer.Close()
	mu.Lock()
	nAcked := len(acked)
	mu.Unlock()
	t.Logf("%d records acknowledged before SIGKILL", nAcked)

	restartedAt := time.Now()
	c.Restart(dp) // same id, same data directory
	readyAfter := time.Since(restartedAt)
	served, missing := readBackAcked(t, dp.Addr(), "crash", acked, restartedAt, crashReadBackMax)
	if len(missing) > 0 {
		sample := missing[:min(len(missing), 5)]
		t.Fatalf("%d of %d acknowledged records not read back within %v of the restart (readyz after %v; %s); missing e.g. %v",
			len(missing), nAcked, crashReadBackMax, readyAfter.Round(time.Millisecond), served, sample)
	}
	t.Logf("restart to serving its partitions: %s; readyz after %v; all %d acknowledged records read back",
		served, readyAfter.Round(time.Millisecond), nAcked)
}

// crashReadBackMax bounds how long TestCrashUnderLoad waits, from the restart, for
// every acknowledged record to be read back: long enough for a loaded CI machine to
// restart the node, its partitions to be re-elected and a client to find them, so a
// failure means records are missing rather than that the machine was slow.
const crashReadBackMax = 60 * time.Second

// servedAfter records, per partition, how long after a restart its first record was
// fetched.
type servedAfter map[int32]time.Duration

func (s servedAfter) String() string {
	if len(s) == 0 {
		return "no partition served"
	}
	var parts []string
	var last time.Duration
	for p, d := range s {
		parts = append(parts, fmt.Sprintf("p%d %v", p, d.Round(time.Millisecond)))
		last = max(last, d)
	}
	slices.Sort(parts)
	return fmt.Sprintf("%v (%s)", last.Round(time.Millisecond), strings.Join(parts, ", "))
}

// readBackAcked consumes topic from the start until every value in acked has been read
// or wait has passed since since. It returns how long after since each partition first
// served a record, and the values never read, sorted.
func readBackAcked(t *testing.T, addr, topic string, acked map[string]bool, since time.Time, wait time.Duration) (servedAfter, []string) {
	t.Helper()
	consumer, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	ctx, cancel := context.WithDeadline(context.Background(), since.Add(wait))
	defer cancel()
	served := servedAfter{}
	seen := map[string]bool{}
	left := len(acked)
	lastErr := map[string]string{}
	for left > 0 && ctx.Err() == nil {
		fs := consumer.PollFetches(ctx)
		fs.EachError(func(topic string, p int32, err error) {
			if ctx.Err() == nil && lastErr[fmt.Sprint(topic, p)] != err.Error() {
				lastErr[fmt.Sprint(topic, p)] = err.Error()
				t.Logf("fetch %s-%d: %v (retrying)", topic, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			if _, ok := served[r.Partition]; !ok {
				served[r.Partition] = time.Since(since)
			}
			if v := string(r.Value); acked[v] && !seen[v] {
				seen[v] = true
				left--
			}
		})
	}
	var missing []string
	for v := range acked {
		if !seen[v] {
			missing = append(missing, v)
		}
	}
	slices.Sort(missing)
	return served, missing
}

// TestProcessesWithKcatAndFranzGo runs a cluster as `make run` does — one gregor-cp and one
// gregor-dp process — and drives it with kcat (librdkafka) and franz-go: create a topic,
// produce with acks=all (kcat) and acks=1 (franz-go), consume byte-exact, list offsets by
// time, delete the topic. Then the node stops
// cleanly on SIGTERM and its logs reopen without a recovery scan.
func TestProcessesWithKcatAndFranzGo(t *testing.T) {
	_, err := exec.LookPath("kcat")
	testutil.NeedDep(t, err, "Debian package kcat")
	c, dp := startNode(t, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(dp.Addr()), kgo.ConsumeTopics("procs"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if resp, err := adm.CreateTopics(ctx, 2, 1, nil, "procs"); err != nil || resp["procs"].Err != nil {
		t.Fatalf("create: %v %+v", err, resp)
	}
	start := time.Now().UnixMilli()
	var in strings.Builder
	for i := range 100 {
		fmt.Fprintf(&in, "key%d:value-%03d\n", i%5, i)
	}
	kc := exec.Command("kcat", "-b", dp.Addr(), "-P", "-t", "procs", "-K:", "-X", "acks=all")
	kc.Stdin = strings.NewReader(in.String())
	if out, err := kc.CombinedOutput(); err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	// franz-go with acks=1 (idempotence needs acks=all, so it is off here).
	leaderAcks, err := kgo.NewClient(kgo.SeedBrokers(dp.Addr()), kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	if err != nil {
		t.Fatal(err)
	}
	for i := 100; i < 150; i++ {
		r := &kgo.Record{Topic: "procs", Key: []byte(fmt.Sprintf("key%d", i%5)), Value: []byte(fmt.Sprintf("value-%03d", i)),
			Headers: []kgo.RecordHeader{{Key: "acks", Value: []byte("1")}}}
		if err := leaderAcks.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("acks=1 produce: %v", err)
		}
	}
	leaderAcks.Close()
	values := map[string]string{}
	for len(values) < 150 {
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		fs := cl.PollFetches(pctx)
		timedOut := pctx.Err() != nil
		pcancel()
		if timedOut {
			t.Fatalf("consumed %d of 150", len(values))
		}
		fs.EachRecord(func(r *kgo.Record) {
			values[string(r.Value)] = string(r.Key)
			if len(r.Headers) > 0 && string(r.Headers[0].Value) != "1" {
				t.Errorf("header %q", r.Headers[0].Value)
			}
		})
	}
	for i := range 150 {
		if k := values[fmt.Sprintf("value-%03d", i)]; k != fmt.Sprintf("key%d", i%5) {
			t.Fatalf("value-%03d has key %q", i, k)
		}
	}
	listed, err := adm.ListOffsetsAfterMilli(ctx, start-1000, "procs")
	if err != nil {
		t.Fatal(err)
	}
	listed.Each(func(o kadm.ListedOffset) {
		if o.Err != nil || o.Offset != 0 {
			t.Errorf("offset by time for %d: %+v", o.Partition, o)
		}
	})
	if resp, err := adm.DeleteTopics(ctx, "procs"); err != nil || resp["procs"].Err != nil {
		t.Fatalf("delete: %v %+v", err, resp)
	}
	if _, err := os.Stat(filepath.Join(dp.Dir(), "procs-0")); !os.IsNotExist(err) {
		t.Fatalf("deleted topic's log still on disk: %v", err)
	}
	// A clean stop: SIGTERM, exit 0.
	if err := c.Stop(dp); err != nil {
		t.Fatalf("gregor-dp did not stop cleanly: %v", err)
	}
}
