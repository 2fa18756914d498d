package dataplane

// Tests of how group requests are forwarded: their deadlines, and the order in which a
// connection's requests reach the coordinator.

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestGroupForwardTimeouts: a JoinGroup waits for its rebalance and then some; a
// SyncGroup waits as long as the coordinator may hold it (the group's rebalance timeout,
// unknown here); the rest take the default.
func TestGroupForwardTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  kmsg.Request
		want int32
	}{
		{"join v0: the session timeout", &kmsg.JoinGroupRequest{Version: 0, SessionTimeoutMillis: 1500, RebalanceTimeoutMillis: 99}, 1500 + int32(joinGroupSlack.Milliseconds())},
		{"join v5: the rebalance timeout", &kmsg.JoinGroupRequest{Version: 5, SessionTimeoutMillis: 1500, RebalanceTimeoutMillis: 60000}, 60000 + int32(joinGroupSlack.Milliseconds())},
		{"join: the largest rebalance timeout", &kmsg.JoinGroupRequest{Version: 5, RebalanceTimeoutMillis: math.MaxInt32}, math.MaxInt32},
		{"sync: as long as the coordinator may hold it", &kmsg.SyncGroupRequest{Version: 3}, math.MaxInt32},
		{"heartbeat: the default", &kmsg.HeartbeatRequest{Version: 3}, 0},
		{"commit: the default", &kmsg.OffsetCommitRequest{Version: 7}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := groupForwardTimeoutMs(tc.req); got != tc.want {
				t.Fatalf("%d ms, want %d", got, tc.want)
			}
		})
	}
}

// TestPipelinedOffsetCommitsKeepOrder: OffsetCommits a client pipelines on one
// connection are applied in their order, as Kafka does (Java's commitAsync relies on
// it), and an OffsetFetch pipelined behind them sees the last: after each burst of
// increasing offsets with a fetch at its end, the fetched offset is the burst's last.
// Before, each commit was forwarded from a goroutine of its own and an older offset
// could be written last; and a fetch was answered from memory before the commits ahead
// of it were written.
func TestPipelinedOffsetCommitsKeepOrder(t *testing.T) {
	n := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n.createTopic(t, ctx, "t", 1)
	c := dial(t, n.srv)
	const bursts, perBurst = 20, 50
	commit := func(offset int64) *kmsg.OffsetCommitRequest {
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Group, req.Generation = "ordered", -1
		req.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: "t", Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: 0, Offset: offset}}}}
		return req
	}
	corr := int32(0)
	for b := range bursts {
		var frames []byte
		var reqs []kmsg.Request
		for i := range perBurst {
			req := commit(int64(b*perBurst + i))
			frames = append(frames, frameRequest(req, 7, corr+int32(i))...)
			reqs = append(reqs, req)
		}
		fetch := kmsg.NewPtrOffsetFetchRequest()
		fetch.Group = "ordered"
		fetch.Topics = []kmsg.OffsetFetchRequestTopic{{Topic: "t", Partitions: []int32{0}}}
		frames = append(frames, frameRequest(fetch, 5, corr+perBurst)...)
		if _, err := c.Write(frames); err != nil {
			t.Fatal(err)
		}
		for i, req := range reqs {
			resp := readAnswer(t, c, req, corr+int32(i)).(*kmsg.OffsetCommitResponse)
			if code := resp.Topics[0].Partitions[0].ErrorCode; code != 0 {
				t.Fatalf("burst %d commit %d: %v", b, i, kerr.ErrorForCode(code))
			}
		}
		resp := readAnswer(t, c, fetch, corr+perBurst).(*kmsg.OffsetFetchResponse)
		corr += perBurst + 1
		if got, want := resp.Topics[0].Partitions[0].Offset, int64((b+1)*perBurst-1); got != want {
			t.Fatalf("burst %d: fetched offset %d, want the last committed, %d", b, got, want)
		}
	}
}
