package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/node"
)

// registered returns node id's registration as the control plane holds it.
func registered(t *testing.T, ctx context.Context, cl *client.Client, id int32) cluster.Broker {
	t.Helper()
	brokers, _, err := cl.LiveBrokers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range brokers {
		if b.ID == id {
			return b
		}
	}
	t.Fatalf("node %d not registered: %+v", id, brokers)
	return cluster.Broker{}
}

// produceAcked creates topic with partitions partitions and writes n records to it with
// acks=all, returning their values.
func produceAcked(t *testing.T, ctx context.Context, addr, topic string, partitions int32, n int) map[string]bool {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if resp, err := kadm.NewClient(cl).CreateTopics(ctx, partitions, 1, nil, topic); err != nil || resp[topic].Err != nil {
		t.Fatalf("create %s: %v %+v", topic, err, resp)
	}
	acked := map[string]bool{}
	var rs []*kgo.Record
	for i := range n {
		rs = append(rs, &kgo.Record{Key: []byte(strconv.Itoa(i)), Value: []byte(fmt.Sprintf("%s-%04d", topic, i))})
	}
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("produce to %s: %v", topic, err)
	}
	for _, r := range rs {
		acked[string(r.Value)] = true
	}
	return acked
}

// TestRestartTakesOverRegistration: a node SIGKILLed and restarted on its data directory
// takes its registration over at once (same incarnation), with a new broker epoch, and
// serves its partitions again — at a new leader epoch — well before the old
// registration's lease would have expired: no wait of a lease TTL after every crash.
func TestRestartTakesOverRegistration(t *testing.T) {
	// The default lease: the restart must be served well within it.
	c, dp := startNode(t, testcluster.Options{RegistrationTTL: node.DefaultRegistrationTTL})
	cl := c.ControlPlaneClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	acked := produceAcked(t, ctx, dp.Addr(), "restart", 2, 200)
	old := registered(t, ctx, cl, 1)
	before := map[int32]cluster.PartitionState{}
	for p := range int32(2) {
		st, err := cl.GetPartition(ctx, cluster.TopicPartition{Topic: "restart", Partition: p})
		if err != nil {
			t.Fatal(err)
		}
		before[p] = st
	}

	c.Kill(dp)
	killedAt := time.Now()
	c.Restart(dp)
	served, missing := readBackAcked(t, dp.Addr(), "restart", acked, killedAt, crashReadBackMax)
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged records not read back after the restart (%s)", len(missing), len(acked), served)
	}
	var servedAfter time.Duration
	for _, d := range served {
		servedAfter = max(servedAfter, d)
	}
	if servedAfter >= node.DefaultRegistrationTTL {
		t.Fatalf("served %v after the kill; the old registration's lease (TTL %v) was waited for", servedAfter, node.DefaultRegistrationTTL)
	}
	if out := dp.Log(); !strings.Contains(out, "taking over the registration") {
		t.Fatalf("the restarted node did not take its registration over; its output:\n%s", out)
	}
	now := registered(t, ctx, cl, 1)
	if now.Epoch <= old.Epoch || now.Incarnation != old.Incarnation {
		t.Fatalf("registration %+v after the restart, %+v before: want the same incarnation, a higher epoch", now, old)
	}
	for p := range int32(2) {
		st, err := cl.GetPartition(ctx, cluster.TopicPartition{Topic: "restart", Partition: p})
		if err != nil || st.Leader != 1 || st.LeaderEpoch <= before[p].LeaderEpoch {
			t.Fatalf("partition %d after the restart: %+v, %v (before %+v); want node 1 at a new leader epoch", p, st, err, before[p])
		}
	}
	// And it takes writes again.
	pr, err := kgo.NewClient(kgo.SeedBrokers(dp.Addr()), kgo.DefaultProduceTopic("restart"))
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if err := pr.ProduceSync(ctx, &kgo.Record{Value: []byte("after")}).FirstErr(); err != nil {
		t.Fatalf("produce after the restart: %v", err)
	}
	t.Logf("killed and restarted: serving its partitions %s after the kill (registration TTL %v); broker epoch %d -> %d",
		served, node.DefaultRegistrationTTL, old.Epoch, now.Epoch)
}

// TestDataDirInUseRefused: a second process on a data directory whose process is
// paused (SIGSTOP), not dead, does not start: the directory's lock refuses it, so it
// neither takes the live node's registration over nor touches its logs. The paused
// process, continued, serves on under its registration.
func TestDataDirInUseRefused(t *testing.T) {
	c, dp := startNode(t, testcluster.Options{})
	cl := c.ControlPlaneClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	acked := produceAcked(t, ctx, dp.Addr(), "inuse", 1, 10)
	reg := registered(t, ctx, cl, 1)

	c.Pause(dp)
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	_, dpBinary := testcluster.Binaries(t)
	second := exec.CommandContext(sctx, dpBinary, "--id", "1", "--data-dir", dp.Dir(), "--listen", "127.0.0.1:0",
		"--cp", c.CPs[0].ClientAddr(), "--http", "127.0.0.1:0")
	out, err := second.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || sctx.Err() != nil || !strings.Contains(string(out), "in use by another process") {
		t.Fatalf("second process on a locked data directory: %v; output:\n%s", err, out)
	}
	c.Resume(dp)

	if now := registered(t, ctx, cl, 1); now.Epoch != reg.Epoch {
		t.Fatalf("registration changed from epoch %d to %d", reg.Epoch, now.Epoch)
	}
	served, missing := readBackAcked(t, dp.Addr(), "inuse", acked, time.Now(), crashReadBackMax)
	if len(missing) > 0 {
		t.Fatalf("after SIGCONT: %d of %d records not read back (%s)", len(missing), len(acked), served)
	}
}

// TestTakeoverStopsPausedProcess: when a later process of the node takes the
// registration over while the earlier one is paused — here the test registers with the
// node's incarnation, as only a process on the same data directory could — the earlier
// process, continued, finds its renewal refused and the takeover in its metadata view,
// and stops well before its own lease would have run out.
func TestTakeoverStopsPausedProcess(t *testing.T) {
	c, dp := startNode(t, testcluster.Options{RegistrationTTL: node.DefaultRegistrationTTL})
	cl := c.ControlPlaneClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	produceAcked(t, ctx, dp.Addr(), "paused", 1, 10)
	old := registered(t, ctx, cl, 1)

	c.Pause(dp)
	start := time.Now()
	later, err := cl.Register(ctx, cluster.Broker{ID: 1, Host: "127.0.0.1", Port: 1, Incarnation: old.Incarnation}, node.DefaultRegistrationTTL)
	if err != nil {
		c.Resume(dp)
		t.Fatalf("takeover with the node's incarnation: %v", err)
	}
	defer later.Close()
	took := time.Since(start)
	if later.Broker().Epoch <= old.Epoch {
		t.Fatalf("epoch %d not above %d", later.Broker().Epoch, old.Epoch)
	}
	c.Resume(dp)
	continuedAt := time.Now()
	select {
	case <-dp.Exited():
		err := dp.ExitErr()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Fatalf("the earlier process ended with %v; want a non-zero exit", err)
		}
	case <-time.After(node.DefaultRegistrationTTL / 2):
		t.Fatalf("the earlier process still runs %v after the takeover; its output:\n%s", node.DefaultRegistrationTTL/2, dp.Log())
	}
	logs := dp.Log()
	if !strings.Contains(logs, "took the registration over") && !strings.Contains(logs, "lost the control-plane registration") {
		t.Fatalf("the earlier process did not stop for the takeover; its output:\n%s", logs)
	}
	t.Logf("takeover in %v; the paused process stopped %v after SIGCONT", took.Round(time.Millisecond), time.Since(continuedAt).Round(time.Millisecond))
}
