package dataplane

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/replica"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// leadReplicated makes s lead topic-0 with replicas s, 2 and 3, the ISR isr and
// min.insync.replicas minISR, at leader epoch epoch.
func leadReplicated(t *testing.T, s *Server, topic string, epoch int32, minISR int, isr ...int32) {
	t.Helper()
	me := s.cfg.NodeID
	err := s.becomeLeader(cluster.Topic{Name: topic}, 0, replica.PartitionState{
		LeaderAndIsr:      replica.LeaderAndIsr{Leader: me, LeaderEpoch: epoch, ISR: append([]int32{me}, isr...)},
		Replicas:          []int32{me, 2, 3},
		MinInsyncReplicas: minISR,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// followerFetch is a follower's Fetch of topic-0 at offset, answered at once.
func followerFetch(t *testing.T, c net.Conn, id int32, topic string, offset int64, corr int32) kmsg.FetchResponseTopicPartition {
	t.Helper()
	return followerPoll(t, c, id, topic, offset, corr, 0)
}

// followerPoll is a follower's Fetch of topic-0 at offset that waits up to waitMs for
// a byte.
func followerPoll(t *testing.T, c net.Conn, id int32, topic string, offset int64, corr, waitMs int32) kmsg.FetchResponseTopicPartition {
	t.Helper()
	req := fetchReq(topic, 0, offset, 1<<20, 1, waitMs)
	req.ReplicaID = id
	resp := roundTrip(t, c, req, 11, corr).(*kmsg.FetchResponse)
	return resp.Topics[0].Partitions[0]
}

// waitParkedProduce waits until one produce waits in the purgatory.
func waitParkedProduce(t *testing.T, s *Server) {
	t.Helper()
	waitParkedProduces(t, s, 1)
}

// waitParkedProduces waits until want produces wait in the purgatory.
func waitParkedProduces(t *testing.T, s *Server, want int64) {
	t.Helper()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := s.metrics.produceWaiting.Load(); n != want {
			return fmt.Errorf("%d produces parked, want %d", n, want)
		}
		return nil
	})
}

// TestLeaderServesFollowers: followers read up to the log end, their fetch offsets move
// the high watermark to the smallest over the ISR, and that completes acks=all produces
// and lets consumers read.
func TestLeaderServesFollowers(t *testing.T) {
	s := startServer(t, Config{})
	leadReplicated(t, s, "r", 1, 2, 2, 3)
	producer, consumer, f2, f3 := dial(t, s), dial(t, s), dial(t, s), dial(t, s)
	b := batch(3, "x", -1, -1, -1)
	acksAll := produceReq("r", 0, -1, b)
	if _, err := producer.Write(frameRequest(acksAll, 7, 5)); err != nil {
		t.Fatal(err)
	}
	// The produce is appended, then parks: the consumer sees nothing, followers all.
	fp := followerPoll(t, f2, 2, "r", 0, 1, 10_000)
	if len(fp.RecordBatches) != len(b) || fp.HighWatermark != 0 {
		t.Fatalf("follower fetch: %d bytes, high watermark %d", len(fp.RecordBatches), fp.HighWatermark)
	}
	if cf := roundTrip(t, consumer, fetchReq("r", 0, 0, 1<<20, 0, 0), 11, 2).(*kmsg.FetchResponse); len(cf.Topics[0].Partitions[0].RecordBatches) != 0 {
		t.Fatal("a consumer read above the high watermark")
	}
	if fp := followerFetch(t, f3, 3, "r", 0, 1); len(fp.RecordBatches) != len(b) {
		t.Fatalf("follower 3: %d bytes", len(fp.RecordBatches))
	}
	// Follower 2 caught up: the ISR's smallest log end is still 3's 0.
	if fp := followerFetch(t, f2, 2, "r", 3, 2); fp.HighWatermark != 0 || len(fp.RecordBatches) != 0 {
		t.Fatalf("follower 2 at the end: %+v", fp)
	}
	if fp := followerFetch(t, f3, 3, "r", 3, 2); fp.HighWatermark != 3 {
		t.Fatalf("high watermark %d after both followers caught up, want 3", fp.HighWatermark)
	}
	if rp := readAnswer(t, producer, acksAll, 5).(*kmsg.ProduceResponse).Topics[0].Partitions[0]; rp.ErrorCode != 0 || rp.BaseOffset != 0 {
		t.Fatalf("acks=all answer: %+v", rp)
	}
	if cf := roundTrip(t, consumer, fetchReq("r", 0, 0, 1<<20, 0, 0), 11, 3).(*kmsg.FetchResponse); len(cf.Topics[0].Partitions[0].RecordBatches) != len(b) {
		t.Fatal("the consumer does not see the committed records")
	}
	if fp := followerFetch(t, f2, 7, "r", 0, 3); fp.ErrorCode != kerr.NotLeaderForPartition.Code {
		t.Fatalf("fetch from an unassigned replica: error %d", fp.ErrorCode)
	}
	if s.metrics.replicationBytesOut.Get() != uint64(2*len(b)) || s.metrics.consumerBytesOut.Get() != uint64(len(b)) {
		t.Fatalf("bytes out: followers %d, consumers %d", s.metrics.replicationBytesOut.Get(), s.metrics.consumerBytesOut.Get())
	}
}

// TestAcksAllISRShrinks: an acks=all produce parked while the ISR shrinks below
// min.insync.replicas is answered NOT_ENOUGH_REPLICAS_AFTER_APPEND; one parked when the
// node stops leading NOT_LEADER_OR_FOLLOWER; acks=all is refused up front while the ISR
// is too small.
func TestAcksAllISRShrinks(t *testing.T) {
	s := startServer(t, Config{})
	leadReplicated(t, s, "r", 1, 2, 2, 3)
	producer := dial(t, s)
	req := produceReq("r", 0, -1, batch(1, "x", -1, -1, -1))
	if _, err := producer.Write(frameRequest(req, 7, 5)); err != nil {
		t.Fatal(err)
	}
	waitParkedProduce(t, s)
	leadReplicated(t, s, "r", 2, 2) // the ISR is this node alone
	if rp := readAnswer(t, producer, req, 5).(*kmsg.ProduceResponse).Topics[0].Partitions[0]; rp.ErrorCode != kerr.NotEnoughReplicasAfterAppend.Code {
		t.Fatalf("answer after the ISR shrank: %+v", rp)
	}
	if rp := produce(t, producer, 7, "r", 0, -1, batch(1, "y", -1, -1, -1)); rp.ErrorCode != kerr.NotEnoughReplicas.Code {
		t.Fatalf("acks=all under min.insync.replicas: %+v", rp)
	}
	leadReplicated(t, s, "r", 3, 2, 2)
	if _, err := producer.Write(frameRequest(req, 7, 6)); err != nil {
		t.Fatal(err)
	}
	waitParkedProduce(t, s)
	s.replicas.MakeFollower("r", 0, replica.PartitionState{LeaderAndIsr: replica.LeaderAndIsr{Leader: 2, LeaderEpoch: 4, ISR: []int32{2}}, Replicas: []int32{s.cfg.NodeID, 2, 3}})
	if rp := readAnswer(t, producer, req, 6).(*kmsg.ProduceResponse).Topics[0].Partitions[0]; rp.ErrorCode != kerr.NotLeaderForPartition.Code {
		t.Fatalf("answer after losing leadership: %+v", rp)
	}
}

// TestOffsetForLeaderEpoch: the leader answers from its leader-epoch cache — the largest
// epoch up to the one asked and where it ended — at every version, fenced by the
// current leader epoch from v2.
func TestOffsetForLeaderEpoch(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s)
	leadReplicated(t, s, "e", 1, 1)
	if rp := produce(t, c, 7, "e", 0, 1, batch(3, "a", -1, -1, -1)); rp.ErrorCode != 0 {
		t.Fatal(rp)
	}
	leadReplicated(t, s, "e", 3, 1)
	if rp := produce(t, c, 7, "e", 0, 1, batch(2, "b", -1, -1, -1)); rp.ErrorCode != 0 {
		t.Fatal(rp)
	}
	ask := func(v int16, topic string, current, epoch int32) kmsg.OffsetForLeaderEpochResponseTopicPartition {
		t.Helper()
		req := kmsg.NewPtrOffsetForLeaderEpochRequest()
		req.ReplicaID = -1
		rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
		rp.CurrentLeaderEpoch, rp.LeaderEpoch = current, epoch
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		return roundTrip(t, c, req, v, 4).(*kmsg.OffsetForLeaderEpochResponse).Topics[0].Partitions[0]
	}
	for v := int16(0); v <= 3; v++ {
		for _, tc := range []struct {
			epoch, wantEpoch int32
			wantEnd          int64
		}{{0, 0, 0}, {1, 1, 3}, {2, 1, 3}, {3, 3, 5}, {9, 3, 5}} {
			// Epoch 0, older than any this log knows, ended where the first known one
			// starts (Kafka's answer), so that a replica holding records of it drops them.
			got := ask(v, "e", -1, tc.epoch)
			wantEpoch := tc.wantEpoch
			if v == 0 {
				wantEpoch = -1 // not in v0's answer
			}
			if got.ErrorCode != 0 || got.LeaderEpoch != wantEpoch || got.EndOffset != tc.wantEnd {
				t.Errorf("v%d epoch %d: %+v, want epoch %d end %d", v, tc.epoch, got, wantEpoch, tc.wantEnd)
			}
		}
	}
	if got := ask(3, "e", 2, 1); got.ErrorCode != kerr.FencedLeaderEpoch.Code {
		t.Errorf("an older current leader epoch: %+v", got)
	}
	if got := ask(3, "nope", -1, 1); got.ErrorCode != kerr.UnknownTopicOrPartition.Code {
		t.Errorf("an unknown partition: %+v", got)
	}
	s.replicas.MakeFollower("e", 0, replica.PartitionState{LeaderAndIsr: replica.LeaderAndIsr{Leader: 2, LeaderEpoch: 4}})
	if got := ask(3, "e", -1, 1); got.ErrorCode != kerr.NotLeaderForPartition.Code {
		t.Errorf("a follower answered: %+v", got)
	}
}

// TestIdempotentRetryAfterNotEnoughReplicas: the answers an idempotent acks=all producer
// gets while the ISR is below min.insync.replicas and then grows back, as Kafka gives
// them: a batch refused NOT_ENOUGH_REPLICAS is not written, so the next sequence is
// OUT_OF_ORDER_SEQUENCE_NUMBER once the ISR is back (the sequence check comes after the
// ISR check); the retried batches, pipelined, are then written once each, in order. This
// is the sequence the 30-minute fault run's librdkafka 2.0.2 producer died on, with its
// own fatal "rewound sequence number" (a client bug, fixed in librdkafka 2.3.0).
func TestIdempotentRetryAfterNotEnoughReplicas(t *testing.T) {
	s := startServer(t, Config{})
	leadReplicated(t, s, "q", 1, 2, 2)
	producer, f2 := dial(t, s), dial(t, s)
	const pid = 77
	if rp := produce(t, producer, 7, "q", 0, 1, batch(1, "a", pid, 0, 0)); rp.ErrorCode != 0 || rp.BaseOffset != 0 {
		t.Fatalf("seq 0: %+v", rp)
	}
	leadReplicated(t, s, "q", 2, 2) // the ISR is this node alone
	if rp := produce(t, producer, 7, "q", 0, -1, batch(1, "b", pid, 0, 1)); rp.ErrorCode != kerr.NotEnoughReplicas.Code {
		t.Fatalf("seq 1 under min.insync.replicas: %+v", rp)
	}
	leadReplicated(t, s, "q", 3, 2, 2)
	if rp := produce(t, producer, 7, "q", 0, -1, batch(1, "c", pid, 0, 2)); rp.ErrorCode != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("seq 2 after seq 1 was refused: %+v", rp)
	}
	if leo := s.replicas.Partition("q", 0).Log().LogEndOffset(); leo != 1 {
		t.Fatalf("log end offset %d after two refused batches, want 1", leo)
	}
	var wire []byte
	for i, tag := range []string{"b", "c"} {
		wire = append(wire, frameRequest(produceReq("q", 0, -1, batch(1, tag, pid, 0, int32(1+i))), 7, int32(10+i))...)
	}
	if _, err := producer.Write(wire); err != nil {
		t.Fatal(err)
	}
	waitParkedProduces(t, s, 2)
	if fp := followerFetch(t, f2, 2, "q", 0, 1); len(fp.RecordBatches) == 0 {
		t.Fatal("the follower read nothing")
	}
	if fp := followerFetch(t, f2, 2, "q", 3, 2); fp.HighWatermark != 3 {
		t.Fatalf("high watermark %d after the follower caught up, want 3", fp.HighWatermark)
	}
	for i := range 2 {
		req := produceReq("q", 0, -1, nil)
		req.SetVersion(7)
		rp := readAnswer(t, producer, req, int32(10+i)).(*kmsg.ProduceResponse).Topics[0].Partitions[0]
		if rp.ErrorCode != 0 || rp.BaseOffset != int64(1+i) {
			t.Fatalf("retried seq %d: %+v, want offset %d", 1+i, rp, 1+i)
		}
	}
}
