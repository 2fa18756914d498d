package dataplane

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/replica"
)

// pair is two nodes, 1 and 2, sharing views of topic "f" (one partition, both
// replicas) that the test writes.
type pair struct {
	t     *testing.T
	nodes map[int32]*Server
	rev   int64
	// brokerEpochs are the nodes' registration epochs in the views (0 if not set).
	brokerEpochs map[int32]int64
}

func startPair(t *testing.T) *pair {
	cfg := Config{ReplicaFetchBackoff: 50 * time.Millisecond, ReplicaFetchMaxWait: 100 * time.Millisecond}
	a, b := cfg, cfg
	a.NodeID, b.NodeID = 1, 2
	return &pair{t: t, nodes: map[int32]*Server{1: startServer(t, a), 2: startServer(t, b)}}
}

// view gives node id the view where leader leads "f" at epoch with the ISR isr.
func (pr *pair) view(id, leader, epoch int32, isr ...int32) {
	pr.t.Helper()
	pr.rev++
	brokers := map[int32]cluster.Broker{}
	for nid, s := range pr.nodes {
		host, port, _ := net.SplitHostPort(s.Addr())
		p, _ := strconv.Atoi(port)
		brokers[nid] = cluster.Broker{ID: nid, Host: host, Port: int32(p), Epoch: pr.brokerEpochs[nid]}
	}
	tp := cluster.TopicPartition{Topic: "f"}
	snap := &client.Snapshot{
		Revision: pr.rev,
		Brokers:  brokers,
		Topics:   map[string]cluster.Topic{"f": {Name: "f", ID: pairTopicID, Partitions: 1, ReplicationFactor: 2}},
		Partitions: map[cluster.TopicPartition]cluster.PartitionState{tp: {Topic: "f", Replicas: []int32{1, 2},
			Leader: leader, LeaderEpoch: epoch, ISR: isr}},
	}
	if err := pr.nodes[id].Reconcile(snap); err != nil {
		pr.t.Fatal(err)
	}
}

// logBytes is a replica's whole log as stored.
func logBytes(t *testing.T, p *replica.Partition) []byte {
	t.Helper()
	regions, err := p.Log().Read(nil, p.Log().LogStartOffset(), 1<<30, p.Log().LogEndOffset(), true)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, rg := range regions {
		b := make([]byte, rg.Length)
		if _, err := syscall.Pread(rg.File.Fd(), b, rg.Position); err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	for i := range regions {
		regions[i].Release()
	}
	return out
}

// waitSameLog waits until both replicas hold the same bytes, ending at end.
func (pr *pair) waitSameLog(end int64) {
	pr.t.Helper()
	testutil.CheckFor(pr.t, 10*time.Second, func() error {
		a, b := pr.nodes[1].replicas.Partition("f", 0), pr.nodes[2].replicas.Partition("f", 0)
		if a == nil || b == nil {
			return fmt.Errorf("replicas %v %v", a, b)
		}
		la, lb := logBytes(pr.t, a), logBytes(pr.t, b)
		if a.Log().LogEndOffset() != end || !bytes.Equal(la, lb) {
			return fmt.Errorf("logs end at %d and %d (%d and %d bytes), want the same ending at %d",
				a.Log().LogEndOffset(), b.Log().LogEndOffset(), len(la), len(lb), end)
		}
		return nil
	})
}

// TestFollowerFetchesAndTruncates: a follower fetches its leader's batches byte for
// byte (Fetch v15), which completes acks=all and gives it the leader's high watermark;
// after a leader change the old leader, which appended records its follower never had,
// fetches with its last epoch, is told where that epoch ended in the new leader's log
// (DivergingEpoch) and truncates there, so both logs end the same — without an
// OffsetForLeaderEpoch round trip.
func TestFollowerFetchesAndTruncates(t *testing.T) {
	pr := startPair(t)
	pr.view(1, 1, 1, 1, 2)
	pr.view(2, 1, 1, 1, 2)
	c1, c2 := dial(t, pr.nodes[1]), dial(t, pr.nodes[2])
	for i := range 3 {
		if rp := produce(t, c1, 7, "f", 0, -1, batch(2, fmt.Sprint("a", i), -1, -1, -1)); rp.ErrorCode != 0 {
			t.Fatalf("acks=all produce %d: %+v", i, rp)
		}
	}
	pr.waitSameLog(6)
	follower := pr.nodes[2].replicas.Partition("f", 0)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if hw := follower.HighWatermark(); hw != 6 {
			return fmt.Errorf("follower high watermark %d", hw)
		}
		return nil
	})
	if n := pr.nodes[2].metrics.replicationBytesIn.Get(); n == 0 {
		t.Fatal("no replication bytes counted in")
	}

	// Node 2 is elected at epoch 2 while node 1, not told yet, takes a write at epoch 1
	// that node 2 never fetches; node 2 takes writes at epoch 2.
	pr.view(2, 2, 2, 2)
	if rp := produce(t, c1, 7, "f", 0, 1, batch(3, "lost", -1, -1, -1)); rp.ErrorCode != 0 {
		t.Fatalf("acks=1 produce to the old leader: %+v", rp)
	}
	for i := range 2 {
		if rp := produce(t, c2, 7, "f", 0, 1, batch(1, fmt.Sprint("b", i), -1, -1, -1)); rp.ErrorCode != 0 {
			t.Fatalf("produce to the new leader: %+v", rp)
		}
	}
	pr.view(1, 2, 2, 2)
	pr.waitSameLog(8)
	if epochs := pr.nodes[1].replicas.Partition("f", 0).Log().LeaderEpochs(); len(epochs) != 2 || epochs[1].Epoch != 2 || epochs[1].StartOffset != 6 {
		t.Fatalf("old leader's epochs after truncation: %+v", epochs)
	}
	for id, s := range pr.nodes {
		if n := s.metrics.requests[offsetForLeaderEpochKey].Get(); n != 0 {
			t.Fatalf("node %d answered %d OffsetForLeaderEpoch requests; divergence shows in the fetch", id, n)
		}
		if n := s.metrics.requests[fetchKey].Get(); n == 0 {
			t.Fatalf("node %d answered no fetch", id)
		}
	}
}

// pairTopicID is topic "f"'s id in the pair's views.
const pairTopicID = "5b2c8a0e-4f0e-4a51-9d8e-0c6f1f0a7e11"

// TestStaleFollowerIncarnationFenced: a follower whose fetches carry a broker epoch
// (Fetch v15's ReplicaState) below the one the leader's view registers for it — an
// earlier incarnation of the node — replicates nothing and moves neither its progress
// nor the high watermark; once the leader's view has its epoch, it catches up.
func TestStaleFollowerIncarnationFenced(t *testing.T) {
	cfg := Config{ReplicaFetchBackoff: 50 * time.Millisecond, ReplicaFetchMaxWait: 100 * time.Millisecond}
	a, b := cfg, cfg
	a.NodeID, b.NodeID, b.BrokerEpoch = 1, 2, 5
	pr := &pair{t: t, nodes: map[int32]*Server{1: startServer(t, a), 2: startServer(t, b)},
		brokerEpochs: map[int32]int64{2: 5}}
	pr.view(2, 1, 1, 1, 2)
	pr.brokerEpochs[2] = 9 // the leader sees a later registration of node 2
	pr.view(1, 1, 1, 1, 2)
	c1 := dial(t, pr.nodes[1])
	if rp := produce(t, c1, 7, "f", 0, 1, batch(2, "a", -1, -1, -1)); rp.ErrorCode != 0 {
		t.Fatalf("produce: %+v", rp)
	}
	leader := pr.nodes[1].replicas.Partition("f", 0)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if n := pr.nodes[1].metrics.requests[fetchKey].Get(); n < 3 {
			return fmt.Errorf("%d fetches from the follower", n)
		}
		return nil
	})
	follower := pr.nodes[2].replicas.Partition("f", 0)
	if leo, hw := follower.Log().LogEndOffset(), leader.HighWatermark(); leo != 0 || hw != 0 || leader.Follower(2).LogEndOffset() > 0 {
		t.Fatalf("a stale incarnation replicated: its log ends at %d, the high watermark is %d, its progress %d",
			leo, hw, leader.Follower(2).LogEndOffset())
	}
	pr.brokerEpochs[2] = 5
	pr.view(1, 1, 1, 1, 2)
	pr.waitSameLog(2)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if hw := leader.HighWatermark(); hw != 2 {
			return fmt.Errorf("high watermark %d", hw)
		}
		return nil
	})
}
