package dataplane

// Tests of how group requests are forwarded: their deadlines (the order in which a
// connection's requests reach the coordinator is tested on a cluster, in
// groups_cluster_test.go).

import (
	"math"
	"testing"

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
