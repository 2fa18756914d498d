package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/proto"
)

// Replication on real processes: one gregor-cp and three gregor-dp, topics with
// replication factor 3 and min.insync.replicas 2, followers fetching from their leaders
// through the harness's replica links.

// startReplicated starts the cluster and creates topic with partitions partitions,
// RF 3, min.insync.replicas 2.
func startReplicated(t *testing.T, topic string, partitions int32, dpFlags ...string) *testcluster.Cluster {
	t.Helper()
	return startReplicatedWith(t, testcluster.Options{DPFlags: dpFlags}, topic, partitions)
}

// startReplicatedWith is startReplicated with the cluster's options (three data-plane
// processes whatever opts says).
func startReplicatedWith(t *testing.T, opts testcluster.Options, topic string, partitions int32) *testcluster.Cluster {
	t.Helper()
	opts.DataPlanes, opts.Processes = 3, true
	c := testcluster.New(t, opts)
	minISR := "2"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.Admin(t).CreateTopics(ctx, partitions, 3, map[string]*string{"min.insync.replicas": &minISR}, topic)
	if err != nil || resp[topic].Err != nil {
		t.Fatalf("create %s: %v %+v", topic, err, resp[topic])
	}
	for p := range partitions {
		c.WaitLeader(t, topic, p)
	}
	return c
}

// committedBatches reads the batches of a replica's partition directory whose records
// all lie below hw, as they are on disk, in offset order.
func committedBatches(dir string, hw int64) ([]byte, error) {
	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		return nil, err
	}
	slices.Sort(logs) // zero-padded base offsets
	var out []byte
	for _, name := range logs {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		for len(b) > 0 {
			h, err := proto.ParseRecordBatchHeader(b)
			if err != nil || h.Size() > len(b) {
				break // a preallocated or torn tail
			}
			if h.BaseOffset+int64(h.LastOffsetDelta) < hw {
				out = append(out, b[:h.Size()]...)
			}
			b = b[h.Size():]
		}
	}
	return out, nil
}

// checkReplicasAgree waits until every node's replica of each partition holds the same
// batches, byte for byte, below the leader's high watermark, and that they are not
// empty when want is set.
func checkReplicasAgree(t *testing.T, c *testcluster.Cluster, topic string, partitions int32, want bool) {
	t.Helper()
	adm := c.Admin(t)
	c.CheckFor(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return err
		}
		for p := range partitions {
			end, ok := ends.Lookup(topic, p)
			if !ok || end.Err != nil {
				return fmt.Errorf("end offset of %s-%d: %+v", topic, p, end)
			}
			var first []byte
			for i, dp := range c.DPs {
				got, err := committedBatches(filepath.Join(dp.Dir(), fmt.Sprintf("%s-%d", topic, p)), end.Offset)
				if err != nil {
					return err
				}
				if want && len(got) == 0 {
					return fmt.Errorf("%s holds no batch of %s-%d below %d", dp.Name(), topic, p, end.Offset)
				}
				if i == 0 {
					first = got
				} else if !bytes.Equal(got, first) {
					return fmt.Errorf("%s-%d below %d: %s holds %d bytes, %s %d, or others", topic, p, end.Offset,
						c.DPs[0].Name(), len(first), dp.Name(), len(got))
				}
			}
		}
		return nil
	})
}

// produceLoad is a producer writing keyed values with acks=all until stop is closed,
// and the values it got acknowledged. startLoad runs franz-go (idempotent by default);
// startLibrdkafkaLoad runs confluent-kafka.
type produceLoad struct {
	mu    sync.Mutex
	acked map[string]bool
	errs  int
	// failures counts the failed produces by error.
	failures map[string]int
	stop     chan struct{}
	done     chan struct{} // closed once the producer has stopped and every answer is in
	// ctx is cancelled when the test has failed: the producer then stops without
	// waiting for its records' answers from a cluster that may never give them.
	ctx context.Context
}

// newProduceLoad makes a load that stops at t's cleanup, at once if t has failed.
func newProduceLoad(t *testing.T) *produceLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &produceLoad{acked: map[string]bool{}, failures: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{}), ctx: ctx}
	t.Cleanup(func() {
		if t.Failed() {
			cancel()
		}
		l.finish()
		cancel()
	})
	return l
}

// record notes the answer to value's produce.
func (l *produceLoad) record(value string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		l.acked[value] = true
	} else {
		l.errs++
		l.failures[err.Error()]++
	}
}

func startLoad(t *testing.T, c *testcluster.Cluster, topic string, opts ...kgo.Opt) *produceLoad {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Brokers()...), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.DefaultProduceTopic(topic), kgo.RecordDeliveryTimeout(90 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	l := newProduceLoad(t)
	go func() {
		defer close(l.done)
		defer cl.Close()
		defer func() { _ = cl.Flush(l.ctx) }()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			v := fmt.Sprintf("record-%06d", i)
			cl.Produce(context.Background(), &kgo.Record{Key: []byte(v[len(v)-2:]), Value: []byte(v)}, func(r *kgo.Record, err error) {
				l.record(string(r.Value), err)
			})
			if i%100 == 99 {
				_ = cl.Flush(l.ctx) // a steady load, not an unbounded buffer
			}
		}
	}()
	return l
}

// ackedCount is how many values are acknowledged so far.
func (l *produceLoad) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// waitAcked waits until n records are acknowledged in all.
func (l *produceLoad) waitAcked(t *testing.T, n int) {
	t.Helper()
	testutil.CheckFor(t, 90*time.Second, func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.acked) < n {
			return fmt.Errorf("%d acknowledged (%d failed)", len(l.acked), l.errs)
		}
		return nil
	})
}

// waitMore waits until n more records than now are acknowledged: the load goes on.
func (l *produceLoad) waitMore(t *testing.T, n int) {
	t.Helper()
	l.waitAcked(t, l.ackedCount()+n)
}

// finish stops the load, waits for every record's answer and returns the acknowledged.
func (l *produceLoad) finish() map[string]bool {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked
}

// readAll consumes topic from the start until every acknowledged value is read, fails on
// any value read twice, and returns how many times each value read was.
func readAll(t *testing.T, c *testcluster.Cluster, topic string, acked map[string]bool) map[string]int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seen := map[string]int{}
	left := len(acked)
	for left > 0 && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			v := string(r.Value)
			if seen[v]++; seen[v] == 1 && acked[v] {
				left--
			}
		})
	}
	var missing, twice []string
	for v := range acked {
		if seen[v] == 0 {
			missing = append(missing, v)
		}
	}
	for v, n := range seen {
		if n > 1 {
			twice = append(twice, v)
		}
	}
	slices.Sort(missing)
	slices.Sort(twice)
	if len(missing) > 0 || len(twice) > 0 {
		t.Fatalf("of %d acknowledged records, %d not read back (e.g. %v); %d read more than once (e.g. %v)",
			len(acked), len(missing), missing[:min(5, len(missing))], len(twice), twice[:min(5, len(twice))])
	}
	return seen
}

// waitInISR waits until dp is in the ISR of topic-partition (want) or out of it (!want),
// by the control plane's metadata.
func waitInISR(t *testing.T, c *testcluster.Cluster, topic string, partition int32, dp *testcluster.DP, want bool) {
	t.Helper()
	tp := cluster.TopicPartition{Topic: topic, Partition: partition}
	c.CheckFor(t, 30*time.Second, func() error {
		st := c.Metadata(t).Partitions[tp]
		if has := slices.Contains(st.ISR, dp.ID); has != want {
			return fmt.Errorf("%s ISR %v (%s in it: %v, want %v)", tp, st.ISR, dp.Name(), has, want)
		}
		return nil
	})
}

// waitFullISR waits until every partition of topic has all three replicas in its ISR.
func waitFullISR(t *testing.T, c *testcluster.Cluster, topic string, partitions int32) {
	t.Helper()
	c.CheckFor(t, 30*time.Second, func() error {
		snap := c.Metadata(t)
		for p := range partitions {
			tp := cluster.TopicPartition{Topic: topic, Partition: p}
			if st := snap.Partitions[tp]; len(st.ISR) != len(c.DPs) {
				return fmt.Errorf("%s ISR %v", tp, st.ISR)
			}
		}
		return nil
	})
}

// TestReplicatedAcksAll: acks=all with an idempotent franz-go producer completes on an
// RF 3 topic, a consumer reads everything back, and every replica holds the same
// batches below the high watermark.
func TestReplicatedAcksAll(t *testing.T) {
	c := startReplicated(t, "rf3", 3)
	l := startLoad(t, c, "rf3")
	l.waitAcked(t, 3000)
	acked := l.finish()
	readAll(t, c, "rf3", acked)
	checkReplicasAgree(t, c, "rf3", 3, true)
}

// TestReplicatedFailover: the leader of a partition is SIGKILLed under an acks=all load;
// a new leader from the ISR takes over, the producer continues, every acknowledged
// record is read back exactly once, and once the old leader is restarted and has
// caught up, every replica holds the same batches below the high watermark.
func TestReplicatedFailover(t *testing.T) {
	c := startReplicated(t, "fo", 3)
	l := startLoad(t, c, "fo")
	l.waitAcked(t, 2000)
	old := c.Leader(t, "fo", 0)
	c.Kill(old)
	if now := c.WaitLeader(t, "fo", 0); now == old {
		t.Fatalf("partition 0 still led by the killed %s", old.Name())
	}
	l.waitMore(t, 2000)
	acked := l.finish()
	readAll(t, c, "fo", acked)
	c.Restart(old)
	checkReplicasAgree(t, c, "fo", 3, true)
}

// TestKcatAcksAllReplicated: kcat (librdkafka) producing with acks=all to an RF 3 topic
// succeeds (it used to time out: followers never fetched) and reads back.
func TestKcatAcksAllReplicated(t *testing.T) {
	needBinary(t, "/usr/bin/kcat", "kcat")
	c := startReplicated(t, "kcat3", 3)
	var in bytes.Buffer
	for i := range 200 {
		fmt.Fprintf(&in, "k%d:v%d\n", i, i)
	}
	addr := strings.Join(c.Brokers(), ",")
	cmd := exec.Command("kcat", "-b", addr, "-P", "-t", "kcat3", "-K:", "-X", "acks=all",
		"-X", "enable.idempotence=true", "-X", "message.timeout.ms=30000")
	cmd.Stdin = &in
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat produce acks=all: %v\n%s", err, out)
	}
	out, err := exec.Command("kcat", "-b", addr, "-C", "-t", "kcat3", "-o", "beginning", "-e", "-f", "%s\n").Output()
	if err != nil {
		t.Fatalf("kcat consume: %v", err)
	}
	if n := len(strings.Fields(string(out))); n != 200 {
		t.Fatalf("kcat read %d records back, want 200", n)
	}
	checkReplicasAgree(t, c, "kcat3", 3, true)
}

// TestISRShrinkAndExpand: a follower cut off from its leader (its replica link cut, its
// registration alive) leaves the ISR once replica.lag.time.max.ms passes, through the
// leader's AlterISR, and acks=all goes on with the two left; healed, it catches up and
// the leader adds it back.
func TestISRShrinkAndExpand(t *testing.T) {
	c := startReplicated(t, "isr", 1, "--replica-lag-time-max", "2s")
	leader := c.Leader(t, "isr", 0)
	var follower *testcluster.DP
	for _, dp := range c.DPs {
		if dp != leader {
			follower = dp
			break
		}
	}
	l := startLoad(t, c, "isr")
	l.waitAcked(t, 500)
	if err := c.ReplicaLink(follower, leader).Cut(); err != nil {
		t.Fatal(err)
	}
	waitInISR(t, c, "isr", 0, follower, false)
	l.waitMore(t, 500) // acks=all with the ISR at min.insync.replicas
	if err := c.ReplicaLink(follower, leader).Heal(); err != nil {
		t.Fatal(err)
	}
	waitInISR(t, c, "isr", 0, follower, true)
	acked := l.finish()
	readAll(t, c, "isr", acked)
	checkReplicasAgree(t, c, "isr", 1, true)
	for _, name := range []string{"gregor_isr_shrinks_total", "gregor_isr_expands_total"} {
		if v, ok := c.Metric(t, leader, name); !ok || v < 1 {
			t.Errorf("%s on the leader: %v (found %v)", name, v, ok)
		}
	}
}
