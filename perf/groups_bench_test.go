package perf_test

// Consumer-group benchmarks against a real in-process cluster (internal/testcluster: an
// embedded-etcd control plane whose active controller is the group coordinator, and a
// data-plane node forwarding group requests to it), driven with raw Kafka requests
// (franz-go's kmsg over kgo.Client.Request, which finds the coordinator), so that what
// is timed is the broker, not a client's heartbeat interval:
//
//   - BenchmarkGroupRebalance: a Stable group of N members rebalances. The leader
//     rejoins (as a client does when its subscription's metadata changes), a follower's
//     heartbeat sees REBALANCE_IN_PROGRESS, every follower rejoins, the leader assigns 64
//     partitions round-robin in its SyncGroup, every follower's SyncGroup returns its
//     assignment. ms/rebalance runs from the last member's JoinGroup being sent until
//     every member has its SyncGroup answer (the coordinator completes the join phase,
//     answers N joins, takes the leader's assignment, writes the group to etcd, answers N
//     syncs); ns/op is the whole round including the trigger and its detection.
//   - BenchmarkGroupJoinKgo: the client's view, for contrast — N franz-go consumers start
//     in a new group; ms/join runs until the group is balanced.
//   - BenchmarkOffsetCommit: C committers, each in its own group outside group management
//     (generation -1, as a consumer with manual assignment commits), send OffsetCommit
//     requests of P partitions back to back; commits/s and partitions/s are the sums over
//     committers, p50/p99 the latency of one commit. Every acknowledged commit is in etcd
//     (the coordinator batches concurrent commits into one transaction).
//
// Allocations are the whole process's (client, data plane, control plane, etcd) per op.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// benchPartitions is the partition count of the benchmarks' topic.
const benchPartitions = 64

// benchGroupCluster starts a cluster with the benchmarks' topic.
func benchGroupCluster(b *testing.B, topic string) *testcluster.Cluster {
	b.Helper()
	c := testcluster.New(b, testcluster.Options{DirectClients: true})
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers()[0]))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if resp, err := kadm.NewClient(cl).CreateTopics(ctx, benchPartitions, 1, nil, topic); err != nil || resp[topic].Err != nil {
		b.Fatalf("create %s: %v %+v", topic, err, resp[topic])
	}
	return c
}

// rawMember is one group member speaking the classic protocol by hand on a connection
// of its own.
type rawMember struct {
	cl       *kgo.Client
	group    string
	topic    string
	id       string
	gen      int32
	leader   string // the leader named by the last JoinGroup answer
	assigned []int32
}

func newRawMember(b *testing.B, addr, group, topic string) *rawMember {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RetryTimeout(30*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Close)
	return &rawMember{cl: cl, group: group, topic: topic}
}

// join sends JoinGroup v5 (two steps for a new member: MEMBER_ID_REQUIRED, then with
// the id) and returns the answer once the join phase completes.
func (m *rawMember) join(ctx context.Context) (*kmsg.JoinGroupResponse, error) {
	for range 2 {
		req := kmsg.NewPtrJoinGroupRequest()
		req.Version = 5
		req.Group, req.MemberID, req.ProtocolType = m.group, m.id, "consumer"
		req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = 60_000, 60_000
		meta := kmsg.NewConsumerMemberMetadata()
		meta.Topics = []string{m.topic}
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name, p.Metadata = "roundrobin", meta.AppendTo(nil)
		req.Protocols = append(req.Protocols, p)
		resp, err := req.RequestWith(ctx, m.cl)
		if err != nil {
			return nil, err
		}
		m.id = resp.MemberID
		if resp.ErrorCode == kerr.MemberIDRequired.Code {
			continue
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return nil, fmt.Errorf("join: %w", err)
		}
		m.gen, m.leader = resp.Generation, resp.LeaderID
		return resp, nil
	}
	return nil, fmt.Errorf("join: member id required twice")
}

// sync sends SyncGroup for j's generation; the leader (j lists the members) assigns the
// topic's partitions round-robin over the member ids.
func (m *rawMember) sync(ctx context.Context, j *kmsg.JoinGroupResponse) error {
	req := kmsg.NewPtrSyncGroupRequest()
	req.Version = 3
	req.Group, req.Generation, req.MemberID = m.group, j.Generation, m.id
	if len(j.Members) > 0 {
		ids := make([]string, len(j.Members))
		for i, x := range j.Members {
			ids[i] = x.MemberID
		}
		sort.Strings(ids)
		parts := map[string][]int32{}
		for p := range int32(benchPartitions) {
			id := ids[int(p)%len(ids)]
			parts[id] = append(parts[id], p)
		}
		for _, id := range ids {
			a := kmsg.NewConsumerMemberAssignment()
			t := kmsg.NewConsumerMemberAssignmentTopic()
			t.Topic, t.Partitions = m.topic, parts[id]
			a.Topics = append(a.Topics, t)
			ga := kmsg.NewSyncGroupRequestGroupAssignment()
			ga.MemberID, ga.MemberAssignment = id, a.AppendTo(nil)
			req.GroupAssignment = append(req.GroupAssignment, ga)
		}
	}
	resp, err := req.RequestWith(ctx, m.cl)
	if err != nil {
		return err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	var a kmsg.ConsumerMemberAssignment
	if err := a.ReadFrom(resp.MemberAssignment); err != nil {
		return fmt.Errorf("sync: assignment: %w", err)
	}
	m.assigned = m.assigned[:0]
	for _, t := range a.Topics {
		m.assigned = append(m.assigned, t.Partitions...)
	}
	return nil
}

func (m *rawMember) heartbeat(ctx context.Context) (int16, error) {
	req := kmsg.NewPtrHeartbeatRequest()
	req.Version = 3
	req.Group, req.Generation, req.MemberID = m.group, m.gen, m.id
	resp, err := req.RequestWith(ctx, m.cl)
	if err != nil {
		return 0, err
	}
	return resp.ErrorCode, nil
}

// formGroup brings new members into one Stable generation, each as a client does: join,
// sync, rejoin at once when the sync finds a rebalance in progress, and heartbeat until
// the coordinator says Stable with every member and every partition assigned.
func formGroup(ctx context.Context, b *testing.B, addr string, ms []*rawMember) {
	b.Helper()
	done := make(chan struct{})
	errs := make(chan error, len(ms))
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() {
			for {
				j, err := m.join(ctx)
				if err == nil {
					err = m.sync(ctx, j)
				}
				if errors.Is(err, kerr.RebalanceInProgress) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				for {
					select {
					case <-done:
						return
					case <-time.After(10 * time.Millisecond):
					}
					code, err := m.heartbeat(ctx)
					if err != nil {
						errs <- err
						return
					}
					if code == kerr.RebalanceInProgress.Code {
						break
					}
					if code != 0 {
						errs <- fmt.Errorf("heartbeat: %w", kerr.ErrorForCode(code))
						return
					}
				}
			}
		})
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case err := <-errs:
			b.Fatal(err)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatal("the group did not settle within 2 minutes")
		}
		gs, err := adm.DescribeGroups(ctx, ms[0].group)
		if err == nil {
			g := gs[ms[0].group]
			if g.State == "Stable" && len(g.Members) == len(ms) && len(g.AssignedPartitions()[ms[0].topic]) == benchPartitions {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(done)
	wg.Wait()
	for _, m := range ms {
		if m.gen != ms[0].gen || m.leader != ms[0].leader {
			b.Fatalf("member %s in generation %d led by %s, member %s in %d led by %s", m.id, m.gen, m.leader, ms[0].id, ms[0].gen, ms[0].leader)
		}
	}
}

// rebalance runs one rebalance of a Stable group and returns the time from the last
// JoinGroup sent until the last SyncGroup answer.
func rebalance(ctx context.Context, ms []*rawMember) (time.Duration, error) {
	var leader *rawMember
	var followers []*rawMember
	for _, m := range ms {
		if m.id == ms[0].leader {
			leader = m
		} else {
			followers = append(followers, m)
		}
	}
	var (
		lastJoin, lastSync atomic.Int64 // unix nanos
		wg                 sync.WaitGroup
		errMu              sync.Mutex
		firstErr           error
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	run := func(m *rawMember) {
		for now := time.Now().UnixNano(); ; {
			old := lastJoin.Load()
			if old >= now || lastJoin.CompareAndSwap(old, now) {
				break
			}
		}
		j, err := m.join(ctx)
		if err == nil {
			err = m.sync(ctx, j)
		}
		if err != nil {
			fail(err)
			return
		}
		for now := time.Now().UnixNano(); ; {
			old := lastSync.Load()
			if old >= now || lastSync.CompareAndSwap(old, now) {
				break
			}
		}
	}
	if leader == nil {
		return 0, fmt.Errorf("no member is the leader %s", ms[0].leader)
	}
	wg.Go(func() { run(leader) })
	if len(followers) > 0 {
		// A follower's heartbeat shows the rebalance the leader's join started; then
		// every follower rejoins at once.
		for {
			code, err := followers[0].heartbeat(ctx)
			if err != nil {
				fail(err)
				break
			}
			if code == kerr.RebalanceInProgress.Code {
				break
			}
			if code != 0 {
				fail(kerr.ErrorForCode(code))
				break
			}
		}
		for _, m := range followers {
			wg.Go(func() { run(m) })
		}
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	owned := 0
	for _, m := range ms {
		owned += len(m.assigned)
		if m.gen != leader.gen {
			return 0, fmt.Errorf("member %s in generation %d, the leader in %d", m.id, m.gen, leader.gen)
		}
	}
	if owned != benchPartitions {
		return 0, fmt.Errorf("%d of %d partitions assigned", owned, benchPartitions)
	}
	return time.Duration(lastSync.Load() - lastJoin.Load()), nil
}

func BenchmarkGroupRebalance(b *testing.B) {
	c := benchGroupCluster(b, "rebalance")
	for _, n := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			group := fmt.Sprintf("rebalance-%d-%d", n, time.Now().UnixNano())
			ms := make([]*rawMember, n)
			for i := range ms {
				ms[i] = newRawMember(b, c.Brokers()[0], group, "rebalance")
			}
			formGroup(ctx, b, c.Brokers()[0], ms)
			b.ReportAllocs()
			b.ResetTimer()
			var total time.Duration
			for b.Loop() {
				d, err := rebalance(ctx, ms)
				if err != nil {
					b.Fatal(err)
				}
				total += d
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/rebalance")
		})
	}
}

func BenchmarkOffsetCommit(b *testing.B) {
	c := benchGroupCluster(b, "commits")
	for _, committers := range []int{1, 8} {
		for _, parts := range []int{1, 64} {
			b.Run(fmt.Sprintf("committers=%d/partitions=%d", committers, parts), func(b *testing.B) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				defer cancel()
				reqs := make([]*kmsg.OffsetCommitRequest, committers)
				cls := make([]*kgo.Client, committers)
				for i := range reqs {
					cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers()[0]))
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(cl.Close)
					cls[i] = cl
					req := kmsg.NewPtrOffsetCommitRequest()
					req.Version, req.Generation = 7, -1
					req.Group = fmt.Sprintf("commits-%d-%d-%d-%d", committers, parts, i, time.Now().UnixNano())
					t := kmsg.NewOffsetCommitRequestTopic()
					t.Topic = "commits"
					for p := range int32(parts) {
						rp := kmsg.NewOffsetCommitRequestTopicPartition()
						rp.Partition = p
						t.Partitions = append(t.Partitions, rp)
					}
					req.Topics = append(req.Topics, t)
					reqs[i] = req
					// One commit first: the coordinator is found and the group created
					// outside the timed loop.
					if _, err := req.RequestWith(ctx, cl); err != nil {
						b.Fatal(err)
					}
				}
				latencies := make([]time.Duration, 0, b.N)
				var latMu sync.Mutex
				var next atomic.Int64
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for i := range committers {
					wg.Go(func() {
						req, cl := reqs[i], cls[i]
						var own []time.Duration
						for offset := int64(1); next.Add(1) <= int64(b.N); offset++ {
							for j := range req.Topics[0].Partitions {
								req.Topics[0].Partitions[j].Offset = offset
							}
							t0 := time.Now()
							resp, err := req.RequestWith(ctx, cl)
							if err != nil {
								b.Error(err)
								return
							}
							own = append(own, time.Since(t0))
							for _, p := range resp.Topics[0].Partitions {
								if p.ErrorCode != 0 {
									b.Errorf("commit: %v", kerr.ErrorForCode(p.ErrorCode))
									return
								}
							}
						}
						latMu.Lock()
						latencies = append(latencies, own...)
						latMu.Unlock()
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				slices.Sort(latencies)
				if len(latencies) > 0 {
					b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commits/s")
					b.ReportMetric(float64(b.N*parts)/elapsed.Seconds(), "partitions/s")
					b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
					b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
				}
			})
		}
	}
}

// BenchmarkGroupJoinKgo is the same question asked of real franz-go consumers
// (cooperative-sticky, heartbeat every 100 ms): N clients start together in a new group;
// ms/join runs from the last client's start until the group is balanced, every member
// holding its share of the 64 partitions. The figure is mostly the client's own pacing — followers learn of each
// rebalance from a heartbeat, and cooperative-sticky takes two rounds once partitions
// move — which is why BenchmarkGroupRebalance times the broker with raw requests.
func BenchmarkGroupJoinKgo(b *testing.B) {
	c := benchGroupCluster(b, "joinkgo")
	for _, n := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			var total time.Duration
			iter := 0
			for b.Loop() {
				iter++
				group := fmt.Sprintf("joinkgo-%d-%d-%d", n, iter, time.Now().UnixNano())
				var mu sync.Mutex
				owner := map[int32]int{}
				allAssigned := make(chan struct{})
				var once sync.Once
				cls := make([]*kgo.Client, n)
				for i := range cls {
					cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers()[0]), kgo.ConsumerGroup(group), kgo.ConsumeTopics("joinkgo"),
						kgo.SessionTimeout(10*time.Second), kgo.HeartbeatInterval(100*time.Millisecond),
						kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
							mu.Lock()
							defer mu.Unlock()
							for _, p := range m["joinkgo"] {
								owner[p] = i
							}
							// Done once the group is balanced: every member holds its
							// share (cooperative-sticky gives each 64/n or one more).
							counts := make([]int, n)
							for _, o := range owner {
								counts[o]++
							}
							if len(owner) == benchPartitions && slices.Min(counts) >= benchPartitions/n {
								once.Do(func() { close(allAssigned) })
							}
						}),
						kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
							mu.Lock()
							defer mu.Unlock()
							for _, p := range m["joinkgo"] {
								if owner[p] == i {
									delete(owner, p)
								}
							}
						}))
					if err != nil {
						b.Fatal(err)
					}
					cls[i] = cl
				}
				started := time.Now()
				select {
				case <-allAssigned:
				case <-time.After(2 * time.Minute):
					b.Fatal("not every partition assigned within 2 minutes")
				}
				total += time.Since(started)
				b.StopTimer()
				var wg sync.WaitGroup
				for _, cl := range cls {
					wg.Go(cl.Close)
				}
				wg.Wait()
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/join")
		})
	}
}
