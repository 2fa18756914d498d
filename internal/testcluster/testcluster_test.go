package testcluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gregor-streaming/gregor/internal/testcluster"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

// ping asks the cluster for metadata within d.
func ping(cl *kgo.Client, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return cl.Ping(ctx)
}

// apiVersions sends a Kafka ApiVersions v0 request to addr and reads the answer's size.
func apiVersions(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	// size 10; api key 18, version 0, correlation id 1, client id null.
	req := []byte{0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff}
	if _, err := conn.Write(req); err != nil {
		return err
	}
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		return fmt.Errorf("ApiVersions through %s: %w", addr, err)
	}
	return nil
}

func produce(t *testing.T, cl *kgo.Client, topic string, values ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, v := range values {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatalf("produce %q: %v", v, err)
		}
	}
}

// consumeAll reads topic's partition 0 from the start until it has n records.
func consumeAll(t *testing.T, c *testcluster.Cluster, topic string, n int) []string {
	t.Helper()
	cl := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []string
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of %d records: %v", len(got), n, err)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	return got
}

// TestClientLinkFaults: a cut client link stops Kafka traffic and a heal restores it;
// a one-way cut stops the answers; added latency shows in a round trip.
func TestClientLinkFaults(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	c.CreateTopic(t, "t", 1, 1)
	cl := c.Client(t)
	produce(t, cl, "t", "before")
	link := c.ClientLink(c.DP(1))

	for _, cut := range []struct {
		name string
		do   func() error
	}{
		{"both ways", link.Cut},
		{"answers only", func() error { return link.CutOneWay(testcluster.Downstream) }},
		{"requests only", func() error { return link.CutOneWay(testcluster.Upstream) }},
	} {
		if err := cut.do(); err != nil {
			t.Fatal(err)
		}
		if err := ping(cl, 500*time.Millisecond); err == nil {
			t.Fatalf("cut %s: a round trip went through", cut.name)
		}
		if err := link.Heal(); err != nil {
			t.Fatal(err)
		}
		c.CheckFor(t, 10*time.Second, func() error { return ping(cl, time.Second) })
	}
	produce(t, cl, "t", "after")

	const delay = 150 * time.Millisecond
	if err := link.Delay(delay); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := ping(cl, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if rt := time.Since(start); rt < 2*delay {
		t.Errorf("round trip %v with %v each way", rt, delay)
	}
	if err := link.Heal(); err != nil {
		t.Fatal(err)
	}
}

// TestControlPlaneLinkCut: a data-plane node cut off from the control plane loses its
// registration when the lease runs out and stops; restarted after the heal, it is back.
func TestControlPlaneLinkCut(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	dp, cp := c.DP(1), c.CPs[0]
	before := c.Metadata(t).Brokers[dp.ID]
	if err := c.ControlPlaneLink(dp, cp).Cut(); err != nil {
		t.Fatal(err)
	}
	c.CheckFor(t, 20*time.Second, func() error {
		if _, ok := c.Metadata(t).Brokers[dp.ID]; ok {
			return errors.New("still registered")
		}
		return nil
	})
	select {
	case <-dp.Node().Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the node still runs without its registration")
	}
	if dp.Node().Err() == nil {
		t.Error("the node stopped without saying why")
	}
	c.HealAll()
	c.Restart(dp)
	c.CheckFor(t, 20*time.Second, func() error {
		b, ok := c.Metadata(t).Brokers[dp.ID]
		if !ok || b.Epoch <= before.Epoch {
			return fmt.Errorf("registration %+v, want one after epoch %d", b, before.Epoch)
		}
		return nil
	})
}

// TestProcessFaults: a paused process answers nothing until resumed; a killed and
// restarted node keeps its data and its id.
func TestProcessFaults(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Processes: true})
	c.CreateTopic(t, "t", 1, 1)
	cl := c.Client(t)
	produce(t, cl, "t", "a", "b", "c")
	dp := c.DP(1)

	c.Pause(dp)
	if err := ping(cl, 500*time.Millisecond); err == nil {
		t.Fatal("a paused node answered")
	}
	c.Resume(dp)
	c.CheckFor(t, 10*time.Second, func() error { return ping(cl, time.Second) })

	epoch := c.Metadata(t).Brokers[dp.ID].Epoch
	replica := c.ReplicaLink(dp, dp) // made before the restart, it must follow the node
	c.Restart(dp)
	c.CheckFor(t, 10*time.Second, func() error { return apiVersions(replica.Addr()) })
	if got := consumeAll(t, c, "t", 3); fmt.Sprint(got) != "[a b c]" {
		t.Fatalf("after restart read %v, want [a b c]", got)
	}
	if b := c.Metadata(t).Brokers[dp.ID]; b.Epoch <= epoch {
		t.Errorf("epoch %d after restart, want above %d", b.Epoch, epoch)
	}
	if v, ok := c.Metric(t, dp, `gregor_requests_total{api="Fetch"}`); !ok || v == 0 {
		t.Errorf("restarted %s counts %v fetches (found: %v), want the reads above", dp.Name(), v, ok)
	}
}

// TestThreeMembers: a three-member control plane on ports 0 forms through its peer
// links; a killed leader's partitions move; cutting every member's peer link leaves no
// member ready, and the heal brings them back.
func TestThreeMembers(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{ControlPlanes: 3, DataPlanes: 2})
	c.CreateTopic(t, "t", 2, 2)
	old := c.Leader(t, "t", 0)
	c.Kill(old)
	if now := c.WaitLeader(t, "t", 0); now == old {
		t.Fatalf("partition 0 still led by the killed %s", old.Name())
	}
	for _, m := range c.CPs {
		if err := c.PeerLink(m).Cut(); err != nil {
			t.Fatal(err)
		}
	}
	c.CheckFor(t, 20*time.Second, func() error {
		for _, m := range c.CPs {
			if m.Ready() == nil {
				return fmt.Errorf("%s still ready", m.Name())
			}
		}
		return nil
	})
	c.HealAll()
	c.CheckFor(t, 30*time.Second, func() error {
		for _, m := range c.CPs {
			if err := m.Ready(); err != nil {
				return err
			}
		}
		return nil
	})
}

// TestPeerLinkIsolatesMember: cutting the peer link of the etcd leader's member leaves
// that member unready and the others electing a leader among themselves; the heal
// brings it back.
func TestPeerLinkIsolatesMember(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{ControlPlanes: 3, ControlPlaneOnly: true})
	c.WaitController(t)
	v, err := c.CPs[0].View()
	if err != nil {
		t.Fatal(err)
	}
	var leader *testcluster.CP
	for _, m := range c.CPs {
		if mv, err := m.View(); err == nil && mv.EtcdMember == v.EtcdLeader {
			leader = m
		}
	}
	if leader == nil {
		t.Fatalf("no member is the etcd leader %s", v.EtcdLeader)
	}
	if err := c.PeerLink(leader).Cut(); err != nil {
		t.Fatal(err)
	}
	c.CheckFor(t, 20*time.Second, func() error {
		if leader.Ready() == nil {
			return fmt.Errorf("%s, cut off, is still ready", leader.Name())
		}
		for _, m := range c.CPs {
			if m == leader {
				continue
			}
			if err := m.Ready(); err != nil {
				return err
			}
			if mv, err := m.View(); err != nil || mv.EtcdLeader == v.EtcdLeader {
				return fmt.Errorf("%s: etcd leader still %s (%v)", m.Name(), v.EtcdLeader, err)
			}
		}
		return nil
	})
	c.HealAll()
	c.CheckFor(t, 30*time.Second, leader.Ready)
}

// TestFakeDPCrash: a fake data-plane node is registered like a node; crashed, it stops
// renewing its lease and leaves the registry when the lease runs out, with its
// registration lost; a fake node with an id already registered is refused.
func TestFakeDPCrash(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{ControlPlaneOnly: true})
	fake := c.FakeDP(t, 5, time.Second)
	c.CheckFor(t, 10*time.Second, func() error {
		if _, ok := c.Metadata(t).Brokers[5]; !ok {
			return errors.New("fake node 5 not registered")
		}
		return nil
	})
	if _, err := c.RegisterFakeDP(t, fake.Registration.Broker(), time.Second); err == nil {
		t.Fatal("a second registration of node 5 was accepted")
	}
	fake.Crash()
	c.CheckFor(t, 20*time.Second, func() error {
		if _, ok := c.Metadata(t).Brokers[5]; ok {
			return errors.New("fake node 5 still registered after its crash")
		}
		return nil
	})
	select {
	case <-fake.Registration.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the crashed node's registration was never lost")
	}
}
