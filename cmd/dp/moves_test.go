package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// Planned leadership moves on real processes (one gregor-cp, three gregor-dp, RF 3,
// min.insync.replicas 2): controlled shutdown, preferred-leader election, ElectLeaders.

// startMoves starts the cluster with extra control-plane flags and creates topic with
// partitions partitions, RF 3, min.insync.replicas 2.
func startMoves(t *testing.T, topic string, partitions int32, cpFlags ...string) *testcluster.Cluster {
	t.Helper()
	return startReplicatedWith(t, testcluster.Options{CPFlags: cpFlags}, topic, partitions)
}

// leaderWatch follows the metadata change by change, in etcd order, and records for
// each node whose registration went away which partitions still named it leader at
// that moment.
type leaderWatch struct {
	mu      sync.Mutex
	leaders map[cluster.TopicPartition]int32
	// ledAtExit[id] lists the partitions node id led when its registration went.
	ledAtExit map[int32][]cluster.TopicPartition
	exited    map[int32]bool
}

func watchLeaders(t *testing.T, c *testcluster.Cluster) *leaderWatch {
	t.Helper()
	w := &leaderWatch{leaders: map[cluster.TopicPartition]int32{}, ledAtExit: map[int32][]cluster.TopicPartition{},
		exited: map[int32]bool{}}
	cl := c.NewControlPlaneClient(t, client.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w.mu.Lock() // the first changes wait for the initial leaders
	md, err := cl.WatchMetadata(ctx, func(ch client.Change) {
		w.mu.Lock()
		defer w.mu.Unlock()
		switch ch.Kind {
		case client.PartitionPut:
			w.leaders[ch.TopicPartition] = ch.State.Leader
		case client.BrokerDeleted:
			w.exited[ch.BrokerID] = true
			for tp, l := range w.leaders {
				if l == ch.BrokerID {
					w.ledAtExit[ch.BrokerID] = append(w.ledAtExit[ch.BrokerID], tp)
				}
			}
		}
	})
	if err != nil {
		w.mu.Unlock()
		t.Fatal(err)
	}
	for tp, st := range md.Snapshot().Partitions {
		w.leaders[tp] = st.Leader
	}
	w.mu.Unlock()
	t.Cleanup(md.Close)
	return w
}

// atExit returns what node id led when its registration went, once it has.
func (w *leaderWatch) atExit(id int32) ([]cluster.TopicPartition, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ledAtExit[id], w.exited[id]
}

// ledBy lists the partitions of topic that node id leads in snap.
func ledBy(snap *client.Snapshot, topic string, id int32) []int32 {
	var ps []int32
	for tp, st := range snap.Partitions {
		if tp.Topic == topic && st.Leader == id {
			ps = append(ps, tp.Partition)
		}
	}
	return ps
}

// preferredLeaders reports, as an error, the partitions of topic not led by their
// preferred replica.
func preferredLeaders(snap *client.Snapshot, topic string) error {
	var off []string
	for tp, st := range snap.Partitions {
		if tp.Topic == topic && st.Leader != st.Replicas[0] {
			off = append(off, fmt.Sprintf("%s led by %d, preferred %d (ISR %v)", tp, st.Leader, st.Replicas[0], st.ISR))
		}
	}
	if len(off) > 0 {
		return errors.New(strings.Join(off, "; "))
	}
	return nil
}

// TestControlledShutdown: SIGTERM to a partition leader under an idempotent acks=all
// load moves its leaderships to the other in-sync replicas before the process exits
// (the metadata shows none led by it when its registration goes); no produce fails,
// every acknowledged record is read back exactly once; restarted, the node catches up
// and gets its preferred leaderships back.
func TestControlledShutdown(t *testing.T) {
	start := time.Now()
	c := startMoves(t, "cs", 6, "--leader-rebalance-delay", "2s")
	c.CheckFor(t, 60*time.Second, func() error { return preferredLeaders(c.Metadata(t), "cs") })
	w := watchLeaders(t, c)
	// The client retries a connection closed before its first answer (AlwaysRetryEOF):
	// the harness's client link of a stopped node still accepts connections and closes
	// them at once, where the node's own port would refuse them, and franz-go fails the
	// records of a connection closed that way (it takes it for a TLS mismatch) but
	// retries a refused one.
	l := startLoad(t, c, "cs", kgo.AlwaysRetryEOF())
	l.waitAcked(t, 2000)
	old := c.Leader(t, "cs", 0)
	if led := ledBy(c.Metadata(t), "cs", old.ID); len(led) == 0 {
		t.Fatalf("%s leads nothing", old.Name())
	}
	if err := c.Stop(old); err != nil {
		t.Fatalf("%s did not stop cleanly: %v", old.Name(), err)
	}
	c.CheckFor(t, 10*time.Second, func() error {
		led, gone := w.atExit(old.ID)
		if !gone {
			return errors.New("registration still there")
		}
		if len(led) > 0 {
			return fmt.Errorf("%s still led %v when its registration went", old.Name(), led)
		}
		return nil
	})
	if !strings.Contains(old.Log(), "controlled shutdown complete") {
		t.Fatalf("%s's log does not show its controlled shutdown complete", old.Name())
	}
	l.mu.Lock()
	before := len(l.acked)
	l.mu.Unlock()
	l.waitAcked(t, before+2000)
	c.Restart(old)
	c.CheckFor(t, 60*time.Second, func() error { return preferredLeaders(c.Metadata(t), "cs") })
	l.mu.Lock()
	before = len(l.acked)
	l.mu.Unlock()
	l.waitAcked(t, before+1000) // the load goes on after the moves back
	acked := l.finish()
	if l.errs > 0 {
		t.Fatalf("%d produce requests failed: %v", l.errs, l.failures)
	}
	readAll(t, c, "cs", acked)
	t.Logf("%d records acknowledged and read back once each; %s", len(acked), time.Since(start).Round(time.Second))
}

// TestElectLeaders: franz-go's kadm and sarama (ElectLeaders v0, v1 and v2) ask for
// preferred and unclean elections; answers carry Kafka's per-partition codes, and the
// elected leaders show in the metadata.
func TestElectLeaders(t *testing.T) {
	c := startMoves(t, "el", 6, "--auto-leader-rebalance=false")
	adm := c.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	all := kadm.TopicsSet{"el": {0: {}, 1: {}, 2: {}, 3: {}, 4: {}, 5: {}}}
	expect := func(how kadm.ElectLeadersHow, s kadm.TopicsSet, want func(p int32) error) {
		t.Helper()
		// A client error (its cached controller was just stopped: the harness's proxy
		// closes the connection, and franz-go keeps the controller it knew) is retried on
		// a new client; the answers are what is checked.
		var rs kadm.ElectLeadersResults
		c.CheckFor(t, 20*time.Second, func() (err error) {
			if rs, err = adm.ElectLeaders(ctx, how, s); err != nil {
				adm = c.Admin(t)
			}
			return err
		})
		for topic, ps := range s {
			for p := range ps {
				r, ok := rs[topic][p]
				if !ok {
					t.Fatalf("no result for %s-%d: %+v", topic, p, rs)
				}
				if w := want(p); !errors.Is(r.Err, w) && !(w == nil && r.Err == nil) {
					t.Fatalf("%s-%d: %v (%s), want %v", topic, p, r.Err, r.ErrMessage, w)
				}
			}
		}
	}
	// Everything is led by its preferred replica already.
	c.CheckFor(t, 60*time.Second, func() error { return preferredLeaders(c.Metadata(t), "el") })
	expect(kadm.ElectPreferredReplica, all, func(int32) error { return kerr.ElectionNotNeeded })
	expect(kadm.ElectLiveReplica, all, func(int32) error { return kerr.ElectionNotNeeded })
	expect(kadm.ElectPreferredReplica, kadm.TopicsSet{"nope": {0: {}}, "el": {9: {}}}, func(int32) error { return kerr.UnknownTopicOrPartition })
	if rs, err := adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, nil); err != nil || len(rs) != 0 {
		t.Fatalf("preferred election of every partition, none needed: %v %+v", err, rs)
	}
	// Stopped, a node's leaderships go elsewhere; while it is down, its partitions'
	// preferred replica cannot lead.
	moved := c.DPs[0]
	snap := c.Metadata(t)
	preferred := map[int32]bool{}
	for p := range int32(6) {
		preferred[p] = snap.Partitions[cluster.TopicPartition{Topic: "el", Partition: p}].Replicas[0] == moved.ID
	}
	if err := c.Stop(moved); err != nil {
		t.Fatal(err)
	}
	expect(kadm.ElectPreferredReplica, all, func(p int32) error {
		if preferred[p] {
			return kerr.PreferredLeaderNotAvailable
		}
		return kerr.ElectionNotNeeded
	})
	// Back and in sync, it does not lead again on its own (auto rebalance is off)...
	c.Restart(moved)
	c.CheckFor(t, 60*time.Second, func() error {
		for tp, st := range c.Metadata(t).Partitions {
			if !contains(st.ISR, moved.ID) {
				return fmt.Errorf("%s: ISR %v", tp, st.ISR)
			}
		}
		return nil
	})
	if led := ledBy(c.Metadata(t), "el", moved.ID); len(led) > 0 {
		t.Fatalf("%s leads %v again without an election", moved.Name(), led)
	}
	// ...until asked: kadm for two of its partitions, sarama (v0, v1, v2) for the rest.
	var mine []int32
	for p := range int32(6) {
		if preferred[p] {
			mine = append(mine, p)
		}
	}
	if len(mine) < 2 {
		t.Fatalf("%s is the preferred replica of %v only", moved.Name(), mine)
	}
	first := kadm.TopicsSet{"el": {mine[0]: {}}}
	expect(kadm.ElectPreferredReplica, first, func(int32) error { return nil })
	waitPreferredLeaderOf(t, c, adm, "el", mine[0])
	for i, version := range []sarama.KafkaVersion{sarama.V0_10_2_0, sarama.V2_1_0_0, sarama.V2_4_0_0} {
		p := mine[1]
		if i < len(mine)-1 {
			p = mine[1+i]
		}
		cfg := sarama.NewConfig()
		cfg.Version = version
		sa, err := sarama.NewClusterAdmin(c.Brokers(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := sa.ElectLeaders(sarama.PreferredElection, map[string][]int32{"el": {p}})
		_ = sa.Close()
		if err != nil {
			t.Fatalf("sarama %s: %v", version, err)
		}
		r := rs["el"][p]
		if r == nil {
			t.Fatalf("sarama %s: no result for el-%d: %+v", version, p, rs)
		}
		want := sarama.ErrNoError
		if i >= len(mine)-1 {
			want = sarama.ErrElectionNotNeeded // the partition was elected by an earlier version
		}
		if r.ErrorCode != want {
			t.Fatalf("sarama %s: el-%d: %v, want %v", version, p, r.ErrorCode, want)
		}
		waitPreferredLeaderOf(t, c, adm, "el", p)
	}
	c.CheckFor(t, 30*time.Second, func() error { return preferredLeaders(c.Metadata(t), "el") })
}

// waitPreferredLeaderOf waits until a client's metadata (kadm, from any node) shows
// topic-p led by its preferred replica.
func waitPreferredLeaderOf(t *testing.T, c *testcluster.Cluster, adm *kadm.Client, topic string, p int32) {
	t.Helper()
	preferred := c.Metadata(t).Partitions[cluster.TopicPartition{Topic: topic, Partition: p}].Replicas[0]
	c.CheckFor(t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		md, err := adm.Metadata(ctx, topic)
		if err != nil {
			return err
		}
		if pd, ok := md.Topics[topic].Partitions[p]; !ok || pd.Leader != preferred {
			return fmt.Errorf("%s-%d led by %+v, want %d", topic, p, pd.Leader, preferred)
		}
		return nil
	})
}

func contains(ids []int32, id int32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
