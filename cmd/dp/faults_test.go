package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/proto"
)

// Faults on a replicated cluster of processes (one gregor-cp, three gregor-dp; RF 3,
// min.insync.replicas 2; acks=all from idempotent producers): leaders SIGKILLed and
// restarted in turn, two nodes of three lost, a follower paused past the replica lag
// time, and a follower restarted after a leader change before that leader dies. Each
// checks that every acknowledged record is read back exactly once and that every
// replica holds the same bytes below the high watermark.

// faultOptions are the cluster's options for the tests that kill nodes: the default
// lease (6 s; a killed leader is replaced a session grace after its death, and the
// lease covers only pauses — shorter leases were lost to a starved machine's slow
// keepalives, and a node that loses its registration stops), and a short replica lag
// time: a leader reconsiders its ISR every half of it, so a
// restarted node that has caught up rejoins within 2 s rather than 15 s at the default
// 30 s.
func faultOptions() testcluster.Options {
	return testcluster.Options{DPFlags: []string{"--replica-lag-time-max", "4s"}}
}

// killLeadersInTurn SIGKILLs the leader of each partition of topic in turn while l
// produces: a live ISR member takes over, the load goes on, and the killed node is
// restarted and back in every ISR before the next partition's leader dies.
func killLeadersInTurn(t *testing.T, c *testcluster.Cluster, topic string, partitions int32, l *produceLoad) {
	t.Helper()
	for p := range partitions {
		old := c.Leader(t, topic, p)
		c.Kill(old)
		if now := c.WaitLeader(t, topic, p); now == old {
			t.Fatalf("%s-%d still led by the killed %s", topic, p, old.Name())
		}
		l.waitMore(t, 300)
		c.Restart(old)
		waitFullISR(t, c, topic, partitions)
		l.waitMore(t, 300)
	}
}

// leadersKilledInTurn SIGKILLs and restarts each partition's leader of a
// three-partition topic in turn, under the load start makes (killLeadersInTurn), and
// checks the outcome.
func leadersKilledInTurn(t *testing.T, topic string, start func(*testing.T, *testcluster.Cluster, string) *produceLoad) {
	c := startReplicatedWith(t, faultOptions(), topic, 3)
	l := start(t, c, topic)
	l.waitAcked(t, 1000)
	killLeadersInTurn(t, c, topic, 3, l)
	acked := l.finish()
	readAll(t, c, topic, acked)
	checkReplicasAgree(t, c, topic, 3, true)
}

// TestLeadersKilledInTurn: each partition's leader is SIGKILLed under a franz-go
// acks=all load, then restarted.
func TestLeadersKilledInTurn(t *testing.T) {
	leadersKilledInTurn(t, "turns", func(t *testing.T, c *testcluster.Cluster, topic string) *produceLoad {
		return startLoad(t, c, topic)
	})
}

// librdkafkaLoadScript produces "<prefix>-<n>" values to a topic with confluent-kafka
// (librdkafka), idempotent and acks=all, until its standard input closes, then waits for
// every delivery report. Each report is a line: "ACK\t<value>" or "ERR\t<value>\t<error>";
// errors of the client itself (a fatal idempotence error, say) are "CLIENT\t<error>"; the
// last line is "DONE\t<undelivered count>".
const librdkafkaLoadScript = `
import sys, threading
from confluent_kafka import Producer
addr, topic, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
stop = threading.Event()
def watch():
    sys.stdin.read()
    stop.set()
threading.Thread(target=watch, daemon=True).start()
def report(err, msg):
    if err is None:
        print("ACK\t" + msg.value().decode())
    else:
        print("ERR\t%s\t%s" % (msg.value().decode(), err))
def client_error(err):
    print("CLIENT\t%s" % err)
p = Producer({"bootstrap.servers": addr, "acks": "all", "enable.idempotence": True,
              "message.timeout.ms": 90000, "linger.ms": 5, "error_cb": client_error})
i = 0
while not stop.is_set():
    v = "%s-%06d" % (prefix, i)
    try:
        p.produce(topic, key=v[-2:].encode(), value=v.encode(), on_delivery=report)
    except BufferError:
        p.poll(0.1)
        continue
    i += 1
    p.poll(0)
    if i % 100 == 0:
        p.flush(90)  # a steady load, not an unbounded queue
        sys.stdout.flush()
left = p.flush(90)
print("DONE\t%d" % left)
sys.stdout.flush()
`

// startLibrdkafkaLoad is startLoad with confluent-kafka (librdkafka 2.0.2 under Debian's
// python3-confluent-kafka) as the producer, in a process of its own.
func startLibrdkafkaLoad(t *testing.T, c *testcluster.Cluster, topic string) *produceLoad {
	t.Helper()
	needBinary(t, "/usr/lib/python3/dist-packages/confluent_kafka/__init__.py", "python3-confluent-kafka")
	cmd := exec.Command("/usr/bin/python3", "-c", librdkafkaLoadScript, strings.Join(c.Brokers(), ","), topic, "rdk")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := newProduceLoad(t)
	var clientErrs []string
	undelivered := "none: no DONE line"
	go func() {
		select {
		case <-l.stop:
			_ = stdin.Close()
		case <-l.ctx.Done():
			_ = cmd.Process.Kill() // not 90 s of flushing into a failed cluster
		}
	}()
	go func() {
		defer close(l.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.SplitN(sc.Text(), "\t", 3)
			switch {
			case f[0] == "ACK" && len(f) == 2:
				l.record(f[1], nil)
			case f[0] == "ERR" && len(f) == 3:
				l.record(f[1], fmt.Errorf("%s", f[2]))
			case f[0] == "CLIENT":
				clientErrs = append(clientErrs, sc.Text())
			case f[0] == "DONE" && len(f) == 2:
				undelivered = f[1]
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() { // before the load's own cleanup, which stops it
		if t.Failed() {
			return
		}
		l.finish()
		if undelivered != "0" || l.errs > 0 {
			t.Errorf("confluent-kafka: %d records failed, undelivered at the end: %s; client errors: %q\n%s",
				l.errs, undelivered, clientErrs, stderr.String())
		} else if len(clientErrs) > 0 {
			t.Logf("confluent-kafka: %d client errors, recovered from (connections to killed nodes), the first %q",
				len(clientErrs), clientErrs[0])
		}
	})
	return l
}

// TestLeadersKilledInTurnLibrdkafka is TestLeadersKilledInTurn with librdkafka's
// idempotent producer, whose retries and sequence handling differ from franz-go's.
func TestLeadersKilledInTurnLibrdkafka(t *testing.T) {
	leadersKilledInTurn(t, "turns-rdk", startLibrdkafkaLoad)
}

// rawProduce sends one uncompressed, non-idempotent batch holding value to node id's
// topic-partition with acks=all, in one Produce request that the client does not retry,
// and returns the partition's error code.
func rawProduce(t *testing.T, cl *kgo.Client, id int32, topic string, partition int32, value string, timeout time.Duration) int16 {
	t.Helper()
	batch := proto.AppendRecordBatch(nil, proto.RecordBatchHeader{PartitionLeaderEpoch: -1,
		BaseTimestamp: time.Now().UnixMilli(), ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1},
		[]proto.Record{{Value: []byte(value)}})
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, int32(timeout.Milliseconds())
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition, rp.Records = partition, batch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl.Broker(int(id)))
	if err != nil {
		t.Fatalf("produce %q to node %d: %v", value, id, err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		t.Fatalf("produce %q to node %d: answer %+v", value, id, resp)
	}
	return resp.Topics[0].Partitions[0].ErrorCode
}

// holds reports whether any batch of dp's replica of topic-partition, above the high
// watermark too, holds value in the clear (an uncompressed batch of rawProduce's).
func holds(t *testing.T, dp *testcluster.DP, topic string, partition int32, value string) bool {
	t.Helper()
	all, err := committedBatches(filepath.Join(dp.Dir(), fmt.Sprintf("%s-%d", topic, partition)), math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Contains(all, []byte(value))
}

// TestTwoOfThreeLost: with both followers of an RF 3, min.insync.replicas 2 partition
// SIGKILLed, acks=all is never acknowledged: a batch sent as they die is refused with
// NOT_ENOUGH_REPLICAS_AFTER_APPEND (or times out), one sent once the ISR has shrunk to
// the leader with NOT_ENOUGH_REPLICAS — and then it is not in the log, ever — and the
// producer under load gets nothing acknowledged while the ISR is the leader alone. Once
// the followers are back, the load completes and every record acknowledged before,
// during and after is read back exactly once.
func TestTwoOfThreeLost(t *testing.T) {
	c := startReplicatedWith(t, faultOptions(), "lost2", 1)
	l := startLoad(t, c, "lost2")
	l.waitAcked(t, 500)
	leader := c.Leader(t, "lost2", 0)
	var followers []*testcluster.DP
	for _, dp := range c.DPs {
		if dp != leader {
			followers = append(followers, dp)
			c.Kill(dp)
		}
	}
	raw := c.Client(t, kgo.RequestRetries(0))
	// In flight while the ISR shrinks: appended, but never acknowledged.
	switch code := rawProduce(t, raw, leader.ID, "lost2", 0, "in-flight-when-two-died", 20*time.Second); code {
	case kerr.NotEnoughReplicasAfterAppend.Code, kerr.NotEnoughReplicas.Code, kerr.RequestTimedOut.Code:
		t.Logf("acks=all as two of three replicas died: %v", kerr.ErrorForCode(code))
	default:
		t.Fatalf("acks=all with two of three replicas dead answered %v", kerr.ErrorForCode(code))
	}
	// The leader's own view, which its partitions follow before its Metadata answers do.
	c.CheckFor(t, 30*time.Second, func() error {
		req := kmsg.NewPtrMetadataRequest()
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr("lost2")
		req.Topics = append(req.Topics, rt)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := req.RequestWith(ctx, raw.Broker(int(leader.ID)))
		if err != nil {
			return err
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return fmt.Errorf("metadata %+v", resp.Topics)
		}
		if isr := resp.Topics[0].Partitions[0].ISR; !slices.Equal(isr, []int32{leader.ID}) {
			return fmt.Errorf("%s sees ISR %v, want [%d]", leader.Name(), isr, leader.ID)
		}
		return nil
	})
	if code := rawProduce(t, raw, leader.ID, "lost2", 0, "refused-under-min-isr", 5*time.Second); code != kerr.NotEnoughReplicas.Code {
		t.Fatalf("acks=all with the ISR at the leader alone answered %v, want NOT_ENOUGH_REPLICAS", kerr.ErrorForCode(code))
	}
	// The load's retries are refused too: nothing is acknowledged while the leader leads
	// alone, however many produce requests it answers meanwhile.
	ackedAlone := l.ackedCount()
	produces := `gregor_requests_total{api="Produce"}`
	from, _ := c.Metric(t, leader, produces)
	c.CheckFor(t, 30*time.Second, func() error {
		if n, _ := c.Metric(t, leader, produces); n < from+1 {
			return fmt.Errorf("%v produce requests answered since the ISR shrank", n-from)
		}
		return nil
	})
	if n := l.ackedCount(); n != ackedAlone {
		t.Fatalf("%d records acknowledged with the ISR at the leader alone", n-ackedAlone)
	}
	c.Restart(followers[0], followers[1])
	waitFullISR(t, c, "lost2", 1)
	l.waitMore(t, 500)
	acked := l.finish()
	readAll(t, c, "lost2", acked)
	checkReplicasAgree(t, c, "lost2", 1, true)
	for _, dp := range c.DPs {
		if holds(t, dp, "lost2", 0, "refused-under-min-isr") {
			t.Errorf("%s holds the batch refused with NOT_ENOUGH_REPLICAS", dp.Name())
		}
	}
}

// TestFollowerPausedLeavesISR: a follower stopped with SIGSTOP past
// replica.lag.time.max (2 s here) while its registration lives on leaves the ISR through
// the leader, and acks=all goes on with the other two; continued, it catches up and
// rejoins.
func TestFollowerPausedLeavesISR(t *testing.T) {
	// A lease far longer than the pause: the follower must leave the ISR for its lag,
	// not because the control plane saw it die.
	c := startReplicatedWith(t, testcluster.Options{RegistrationTTL: 20 * time.Second,
		DPFlags: []string{"--replica-lag-time-max", "2s"}}, "paused", 1)
	leader := c.Leader(t, "paused", 0)
	follower := c.DPs[0]
	if follower == leader {
		follower = c.DPs[1]
	}
	l := startLoad(t, c, "paused")
	l.waitAcked(t, 500)
	c.Pause(follower)
	waitInISR(t, c, "paused", 0, follower, false)
	if _, ok := c.Metadata(t).Brokers[follower.ID]; !ok {
		t.Fatalf("%s left the ISR because its registration expired, not for its lag", follower.Name())
	}
	l.waitMore(t, 500) // acks=all with the ISR at min.insync.replicas
	c.Resume(follower)
	waitInISR(t, c, "paused", 0, follower, true)
	l.waitMore(t, 300)
	acked := l.finish()
	readAll(t, c, "paused", acked)
	checkReplicasAgree(t, c, "paused", 1, true)
	if !follower.Running() {
		t.Fatalf("%s stopped after its pause:\n%s", follower.Name(), follower.Log())
	}
}

// TestRestartedFollowerThenLeaderDies is the sequence KIP-101 fixed: the leader dies and
// another takes over (a new leader epoch), a follower restarts — recovering its log and
// truncating it by OffsetForLeaderEpoch against the new leader, not to its own high
// watermark — and once it is back in the ISR the new leader dies too. No acknowledged
// record may be lost and no replica may diverge below the high watermark.
func TestRestartedFollowerThenLeaderDies(t *testing.T) {
	c := startReplicatedWith(t, faultOptions(), "kip101", 2)
	l := startLoad(t, c, "kip101")
	l.waitAcked(t, 1000)
	first := c.Leader(t, "kip101", 0)
	c.Kill(first)
	second := c.WaitLeader(t, "kip101", 0)
	if second == first {
		t.Fatalf("partition 0 still led by the killed %s", first.Name())
	}
	l.waitMore(t, 300)
	// The follower that stayed up restarts, and the first leader comes back.
	var follower *testcluster.DP
	for _, dp := range c.DPs {
		if dp != first && dp != second {
			follower = dp
		}
	}
	c.Restart(follower, first) // SIGKILLs the follower first
	waitFullISR(t, c, "kip101", 2)
	c.Kill(second)
	if third := c.WaitLeader(t, "kip101", 0); third == second {
		t.Fatalf("partition 0 still led by the killed %s", second.Name())
	}
	l.waitMore(t, 300)
	c.Restart(second)
	waitFullISR(t, c, "kip101", 2)
	acked := l.finish()
	readAll(t, c, "kip101", acked)
	checkReplicasAgree(t, c, "kip101", 2, true)
}
