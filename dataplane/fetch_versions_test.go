package dataplane

import (
	"bytes"
	"testing"

	"github.com/google/uuid"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// setView gives s a metadata view with these topics (by id) and brokers (by broker
// epoch), as Reconcile would: Fetch v13+ resolves topic ids in it, and v15 checks a
// follower's broker epoch against it.
func setView(s *Server, topics map[string]uuid.UUID, brokerEpochs map[int32]int64) {
	snap := &client.Snapshot{Topics: map[string]cluster.Topic{}, Brokers: map[int32]cluster.Broker{}}
	for name, id := range topics {
		snap.Topics[name] = cluster.Topic{Name: name, ID: id.String()}
	}
	for id, epoch := range brokerEpochs {
		snap.Brokers[id] = cluster.Broker{ID: id, Epoch: epoch}
	}
	s.cluster.Store(snap)
}

// versionedFetch is a Fetch of topic's partitions at version v: by name, or by id from
// v13; replica and its broker epoch in ReplicaState from v15.
func versionedFetch(v int16, topic string, id uuid.UUID, replica int32, brokerEpoch int64, parts ...kmsg.FetchRequestTopicPartition) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID, req.MaxBytes = replica, 1<<20
	if v >= proto.FetchVersionReplicaState {
		req.ReplicaID, req.ReplicaState.ID, req.ReplicaState.Epoch = -1, replica, brokerEpoch
	}
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = topic, id
	rt.Partitions = parts
	req.Topics = append(req.Topics, rt)
	return req
}

// fetchPart is one partition of a Fetch request.
func fetchPart(partition int32, offset int64, currentEpoch, lastFetchedEpoch int32) kmsg.FetchRequestTopicPartition {
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = partition, offset, 1<<20
	rp.CurrentLeaderEpoch, rp.LastFetchedEpoch = currentEpoch, lastFetchedEpoch
	return rp
}

// TestFetchFlexibleVersions: Fetch v12-15 answers several partitions' records by
// sendfile, each followed by its tag buffer, as kmsg reads them; v13+ names topics by
// id, echoed in the answer, and an id not in the view is UNKNOWN_TOPIC_ID.
func TestFetchFlexibleVersions(t *testing.T) {
	s := startServer(t, Config{})
	id := uuid.New()
	setView(s, map[string]uuid.UUID{"flex": id}, nil)
	c := dial(t, s)
	want := map[int32][]byte{}
	for p := range int32(2) {
		if err := s.BecomeLeader("flex", p, 2, 1, 1); err != nil {
			t.Fatal(err)
		}
		b := batch(int(p)+2, "flex", -1, -1, -1)
		if rp := produce(t, c, 8, "flex", p, 1, b); rp.ErrorCode != 0 {
			t.Fatal(rp)
		}
		proto.SetBaseOffset(b, 0)
		proto.SetPartitionLeaderEpoch(b, 2)
		want[p] = b
	}
	for v := int16(proto.FetchVersionFlexible); v <= proto.FetchVersionMax; v++ {
		req := versionedFetch(v, "flex", id, -1, -1, fetchPart(0, 0, 2, -1), fetchPart(1, 0, -1, -1), fetchPart(7, 0, -1, -1))
		resp := roundTrip(t, c, req, v, int32(v)).(*kmsg.FetchResponse)
		rt := resp.Topics[0]
		if (v >= proto.FetchVersionTopicIDs && rt.TopicID != id) || (v < proto.FetchVersionTopicIDs && rt.Topic != "flex") {
			t.Fatalf("v%d: topic %q %x", v, rt.Topic, rt.TopicID)
		}
		for i, fp := range rt.Partitions[:2] {
			if fp.ErrorCode != 0 || fp.HighWatermark != int64(i)+2 || !bytes.Equal(fp.RecordBatches, want[int32(i)]) || fp.DivergingEpoch.Epoch != -1 {
				t.Fatalf("v%d partition %d: %+v", v, i, fp)
			}
		}
		if fp := rt.Partitions[2]; fp.ErrorCode != kerr.UnknownTopicOrPartition.Code || fp.HighWatermark != -1 {
			t.Fatalf("v%d unknown partition: %+v", v, fp)
		}
		if v >= proto.FetchVersionTopicIDs {
			other := uuid.New()
			resp := roundTrip(t, c, versionedFetch(v, "", other, -1, -1, fetchPart(0, 0, -1, -1)), v, 50).(*kmsg.FetchResponse)
			if rt := resp.Topics[0]; rt.TopicID != other || rt.Partitions[0].ErrorCode != kerr.UnknownTopicID.Code || rt.Partitions[0].HighWatermark != -1 {
				t.Fatalf("v%d unknown topic id: %+v", v, rt)
			}
		}
	}
	if sf := s.fetchCounters.Sendfile.Load(); sf == 0 || s.fetchCounters.Copied.Load() != 0 {
		t.Fatalf("records not sent by sendfile: sendfile %d copy %d", sf, s.fetchCounters.Copied.Load())
	}
	checkServes(t, s)
}

// TestFetchDivergingEpoch: from v12 a fetch's last fetched epoch is checked against the
// leader's log as Kafka's Partition.readRecords does: where the fetcher's log diverges
// the answer is DivergingEpoch (where that epoch ended here), no records, and no
// progress recorded for a follower; an epoch the log cannot place is
// OFFSET_OUT_OF_RANGE; the current leader epoch is checked first.
func TestFetchDivergingEpoch(t *testing.T) {
	s := startServer(t, Config{})
	id := uuid.New()
	setView(s, map[string]uuid.UUID{"d": id}, map[int32]int64{2: 5})
	c := dial(t, s)
	leadReplicated(t, s, "d", 1, 1)
	if rp := produce(t, c, 7, "d", 0, 1, batch(3, "a", -1, -1, -1)); rp.ErrorCode != 0 {
		t.Fatal(rp)
	}
	leadReplicated(t, s, "d", 3, 1)
	if rp := produce(t, c, 7, "d", 0, 1, batch(2, "b", -1, -1, -1)); rp.ErrorCode != 0 {
		t.Fatal(rp)
	}
	p := s.replicas.Partition("d", 0)
	for v := int16(proto.FetchVersionFlexible); v <= proto.FetchVersionMax; v++ {
		for _, replica := range []int32{2, -1} {
			for _, tc := range []struct {
				offset        int64
				current, last int32
				code          int16
				diverging     kmsg.FetchResponseTopicPartitionDivergingEpoch
				divergeAtZero bool // diverging is {0, 0}, not "none"
				records       bool
			}{
				{offset: 5, current: 3, last: 2, diverging: kmsg.FetchResponseTopicPartitionDivergingEpoch{Epoch: 1, EndOffset: 3}},
				{offset: 4, current: -1, last: 1, diverging: kmsg.FetchResponseTopicPartitionDivergingEpoch{Epoch: 1, EndOffset: 3}},
				{offset: 2, current: 3, last: 1, records: true},
				{offset: 5, current: 3, last: 3},
				{offset: 3, current: 3, last: -1, records: true},
				// Epoch 0 is older than any this log knows: it ended where the first
				// known one starts, 0 (Kafka's answer), and the fetcher's offset 1 is
				// past that.
				{offset: 1, current: 3, last: 0, divergeAtZero: true},
				{offset: 5, current: 2, last: 3, code: kerr.FencedLeaderEpoch.Code},
				{offset: 5, current: 4, last: 3, code: kerr.UnknownLeaderEpoch.Code},
			} {
				before := p.Follower(2).LogEndOffset()
				req := versionedFetch(v, "d", id, replica, 5, fetchPart(0, tc.offset, tc.current, tc.last))
				fp := roundTrip(t, c, req, v, 9).(*kmsg.FetchResponse).Topics[0].Partitions[0]
				want := tc.diverging
				if want.Epoch == 0 && want.EndOffset == 0 && !tc.divergeAtZero {
					want = kmsg.FetchResponseTopicPartitionDivergingEpoch{Epoch: -1, EndOffset: -1}
				}
				if fp.ErrorCode != tc.code || fp.DivergingEpoch.Epoch != want.Epoch || fp.DivergingEpoch.EndOffset != want.EndOffset ||
					(len(fp.RecordBatches) > 0) != tc.records {
					t.Fatalf("v%d replica %d %+v: error %d, diverging %+v, %d bytes", v, replica, tc, fp.ErrorCode, fp.DivergingEpoch, len(fp.RecordBatches))
				}
				if replica < 0 {
					continue
				}
				after := p.Follower(2).LogEndOffset()
				progressed := tc.code == 0 && tc.diverging.Epoch == 0 && tc.diverging.EndOffset == 0 && !tc.divergeAtZero
				if (progressed && after != tc.offset) || (!progressed && after != before) {
					t.Fatalf("v%d %+v: follower's log end %d, was %d", v, tc, after, before)
				}
			}
		}
	}
}

// TestFetchStaleBrokerEpoch: a v15 fetch from an earlier incarnation of a follower (a
// broker epoch below the one in the view) is answered NOT_LEADER_OR_FOLLOWER and moves
// neither the follower's progress nor the high watermark, as Kafka's
// Replica.updateFetchStateOrThrow fences it; the registered epoch, a later one or none
// (-1) are served. A replica id not assigned is NOT_LEADER_OR_FOLLOWER at every version.
func TestFetchStaleBrokerEpoch(t *testing.T) {
	s := startServer(t, Config{})
	id := uuid.New()
	setView(s, map[string]uuid.UUID{"st": id}, map[int32]int64{2: 10})
	c := dial(t, s)
	leadReplicated(t, s, "st", 1, 1, 2)
	if rp := produce(t, c, 7, "st", 0, 1, batch(3, "a", -1, -1, -1)); rp.ErrorCode != 0 {
		t.Fatal(rp)
	}
	p := s.replicas.Partition("st", 0)
	v := int16(proto.FetchVersionReplicaState)
	fetch := func(replica int32, epoch int64, offset int64) kmsg.FetchResponseTopicPartition {
		t.Helper()
		return roundTrip(t, c, versionedFetch(v, "st", id, replica, epoch, fetchPart(0, offset, 1, -1)), v, 3).(*kmsg.FetchResponse).Topics[0].Partitions[0]
	}
	if fp := fetch(2, 9, 3); fp.ErrorCode != kerr.NotLeaderForPartition.Code || len(fp.RecordBatches) != 0 {
		t.Fatalf("stale incarnation: %+v", fp)
	}
	if hw, leo := p.HighWatermark(), p.Follower(2).LogEndOffset(); hw != 0 || leo == 3 {
		t.Fatalf("a stale fetch moved the high watermark to %d, the follower's log end to %d", hw, leo)
	}
	for _, epoch := range []int64{10, 11, -1} {
		if fp := fetch(2, epoch, 3); fp.ErrorCode != 0 || fp.HighWatermark != 3 {
			t.Fatalf("broker epoch %d: %+v", epoch, fp)
		}
	}
	if fp := fetch(7, 10, 0); fp.ErrorCode != kerr.NotLeaderForPartition.Code {
		t.Fatalf("an unassigned replica: %+v", fp)
	}
}
