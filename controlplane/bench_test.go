package controlplane_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// reportPercentiles reports the p50 and p99 of lat (milliseconds) under prefix.
func reportPercentiles(b *testing.B, prefix string, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	at := func(q float64) float64 {
		i := int(q * float64(len(lat)-1))
		return float64(lat[i].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), prefix+"p50-ms")
	b.ReportMetric(at(0.99), prefix+"p99-ms")
}

// BenchmarkCreateTopic measures CreateTopic (3 partitions, replication factor 3, three
// live nodes) end to end: read live nodes, one transaction.
func BenchmarkCreateTopic(b *testing.B) {
	for _, members := range []int{1, 3} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			c := newControlPlane(b, members)
			for id := int32(1); id <= 3; id++ {
				c.FakeDP(b, id, 0)
			}
			admin := c.ControlPlaneClient(b)
			ctx := testCtx(b)
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if _, _, err := admin.CreateTopic(ctx, client.TopicSpec{Name: fmt.Sprintf("bench-%d", i), Partitions: 3, ReplicationFactor: 3}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			reportPercentiles(b, "", lat)
		})
	}
}

// BenchmarkWatchPropagation measures how long a partition-state change (an ISR
// shrink/expand by the leader) takes to reach another client's metadata view: from the
// call to the view's change callback ("" metrics), and from the write's acknowledgement
// to the callback ("after-ack-" metrics).
func BenchmarkWatchPropagation(b *testing.B) {
	for _, members := range []int{1, 3} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			c := newControlPlane(b, members)
			dps := map[int32]*testcluster.FakeDP{1: c.FakeDP(b, 1, 0), 2: c.FakeDP(b, 2, 0)}
			watcher := c.NewControlPlaneClient(b, client.Config{})
			ctx := testCtx(b)
			seen := make(chan int32, 1024)
			tp := cluster.TopicPartition{Topic: "watched"}
			view, err := watcher.WatchMetadata(ctx, func(ch client.Change) {
				if ch.Kind == client.PartitionPut && ch.TopicPartition == tp {
					seen <- ch.State.PartitionEpoch
				}
			})
			if err != nil {
				b.Fatal(err)
			}
			defer view.Close()
			if _, _, err := dps[1].Client.CreateTopic(ctx, client.TopicSpec{Name: tp.Topic, Partitions: 1, ReplicationFactor: 2}); err != nil {
				b.Fatal(err)
			}
			<-seen
			st, err := dps[1].Client.GetPartition(ctx, tp)
			if err != nil {
				b.Fatal(err)
			}
			leader, follower := st.Leader, st.Replicas[1]
			reg := dps[leader].Registration
			total := make([]time.Duration, 0, b.N)
			afterAck := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				isr := []int32{leader}
				if i%2 == 1 {
					isr = []int32{leader, follower}
				}
				start := time.Now()
				st, err = reg.AlterISR(ctx, client.AlterISRRequest{TopicPartition: tp, LeaderEpoch: st.LeaderEpoch, PartitionEpoch: st.PartitionEpoch, NewISR: isr})
				if err != nil {
					b.Fatal(err)
				}
				acked := time.Now()
				for epoch := int32(-1); epoch != st.PartitionEpoch; {
					select {
					case epoch = <-seen:
					case <-time.After(5 * time.Second):
						b.Fatalf("change %d not seen within 5s", st.PartitionEpoch)
					}
				}
				now := time.Now()
				total = append(total, now.Sub(start))
				afterAck = append(afterAck, now.Sub(acked))
			}
			b.StopTimer()
			reportPercentiles(b, "", total)
			reportPercentiles(b, "after-ack-", afterAck)
		})
	}
}
