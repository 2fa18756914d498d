package dataplane_test

// Group requests on a node of the cluster harness: FindCoordinator's answers as nodes
// come and go, forwarding to the control plane's coordinator (or the refusals when it
// has none), and the order and concurrency of forwarded requests.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/dataplane"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/node"
)

// createGroupTopic creates topic with partitions (replication factor 1) and waits
// until the group coordinator knows it: its metadata view follows etcd by watch, so for
// a moment after CreateTopics answers it still refuses commits to the topic
// (UNKNOWN_TOPIC_OR_PARTITION), as Kafka's coordinator does while its metadata cache
// lags. A commit to a probe group, deleted after, tells.
func createGroupTopic(t testing.TB, c *testcluster.Cluster, topic string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.CreateTopic(t, topic, partitions, 1)
	adm := c.Admin(t)
	probe := kadm.Offsets{}
	probe.Add(kadm.Offset{Topic: topic, Partition: partitions - 1, At: 0, LeaderEpoch: -1})
	testutil.CheckFor(t, 10*time.Second, func() error {
		resp, err := adm.CommitOffsets(ctx, "createTopic-probe", probe)
		if err != nil {
			return err
		}
		return resp.Error()
	})
	// The probe's group must not show in the tests' group listings.
	if resp, err := adm.DeleteGroups(ctx, "createTopic-probe"); err != nil || resp.Error() != nil {
		t.Fatalf("delete the probe group: %v %v", err, resp.Error())
	}
}

// liveNodes are the live data-plane nodes in the view of the node at addr (its
// Metadata answer).
func liveNodes(t testing.TB, addr string) map[int32]cluster.Broker {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{} // none: only the brokers
	resp := dataplane.RoundTrip(t, dial(t, addr), req, 1, 1).(*kmsg.MetadataResponse)
	out := map[int32]cluster.Broker{}
	for _, b := range resp.Brokers {
		out[b.NodeID] = cluster.Broker{ID: b.NodeID, Host: b.Host, Port: b.Port}
	}
	return out
}

// waitLiveNodes waits until the view of the node at addr has n live data-plane nodes,
// and returns them.
func waitLiveNodes(t testing.TB, addr string, n int) map[int32]cluster.Broker {
	t.Helper()
	var live map[int32]cluster.Broker
	testutil.CheckFor(t, 10*time.Second, func() error {
		if live = liveNodes(t, addr); len(live) != n {
			return fmt.Errorf("%d live nodes in the view, want %d", len(live), n)
		}
		return nil
	})
	return live
}

// The node's group forwarding metrics.
const (
	forwardedMetric        = "gregor_group_requests_forwarded_total"
	forwardFailuresMetric  = "gregor_group_forward_failures_total"
	forwardsInFlightMetric = "gregor_group_forwards_in_flight"
)

// TestFindCoordinator: groups are answered with the live node the hash picks, over the
// wire at every version and through franz-go's admin client, and so are transactional
// ids; unknown key types are refused; when a second node registers, groups split between the two,
// and when it dies its groups come back and no other group moves.
func TestFindCoordinator(t *testing.T) {
	cl, dp := startNode(t, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	host, port := splitHostPort(t, dp.Addr())
	waitLiveNodes(t, dp.Addr(), 1)
	c := dial(t, dp.Addr())
	corr := int32(0)
	find := func(version int16, typ int8, key string) *kmsg.FindCoordinatorResponse {
		t.Helper()
		req := kmsg.NewPtrFindCoordinatorRequest()
		req.CoordinatorType, req.CoordinatorKey = typ, key
		corr++
		return dataplane.RoundTrip(t, c, req, version, corr).(*kmsg.FindCoordinatorResponse)
	}
	for v := int16(0); v <= 2; v++ {
		resp := find(v, dataplane.CoordinatorTypeGroup, "orders")
		if resp.ErrorCode != 0 || resp.NodeID != 1 || resp.Host != host || resp.Port != port {
			t.Fatalf("v%d: %+v", v, resp)
		}
	}
	for v := int16(1); v <= 2; v++ {
		if resp := find(v, dataplane.CoordinatorTypeTransaction, "tx"); resp.ErrorCode != 0 || resp.NodeID != 1 || resp.Host != host || resp.Port != port {
			t.Fatalf("v%d transactions: %+v", v, resp)
		}
		if resp := find(v, 7, "tx"); resp.ErrorCode != kerr.InvalidRequest.Code || resp.ErrorMessage == nil || resp.NodeID != -1 {
			t.Fatalf("v%d type 7: %+v", v, resp)
		}
	}

	for g, r := range cl.Admin(t).FindGroupCoordinators(ctx, "a", "b", "c") {
		if r.Err != nil || r.NodeID != 1 || r.Host != host || r.Port != port {
			t.Fatalf("franz-go: group %s: %+v", g, r)
		}
	}

	// Node 2 registers (nothing listens at its address: FindCoordinator only names it).
	node2 := cl.FakeDP(t, 2, 2*time.Second)
	live := waitLiveNodes(t, dp.Addr(), 2)
	const groups = 40
	before := map[string]int32{}
	for i := range groups {
		g := fmt.Sprintf("g%d", i)
		resp := find(2, dataplane.CoordinatorTypeGroup, g)
		want, _ := dataplane.GroupCoordinator(live, g)
		if resp.ErrorCode != 0 || resp.NodeID != want.ID || resp.Port != want.Port {
			t.Fatalf("%s with two nodes: %+v, want node %d", g, resp, want.ID)
		}
		before[g] = resp.NodeID
	}
	if on2 := countValue(before, 2); on2 == 0 || on2 == groups {
		t.Fatalf("node 2 coordinates %d of %d groups", on2, groups)
	}
	if err := node2.Registration.Close(); err != nil {
		t.Fatal(err)
	}
	waitLiveNodes(t, dp.Addr(), 1)
	for g := range before {
		if resp := find(2, dataplane.CoordinatorTypeGroup, g); resp.ErrorCode != 0 || resp.NodeID != 1 {
			t.Fatalf("%s after node 2 died: %+v", g, resp)
		}
	}
}

func countValue(m map[string]int32, v int32) int {
	n := 0
	for _, x := range m {
		if x == v {
			n++
		}
	}
	return n
}

// errorCodes collects every ErrorCode field of a decoded response, at any depth.
func errorCodes(v reflect.Value, out []int16) []int16 {
	switch v.Kind() {
	case reflect.Pointer:
		return errorCodes(v.Elem(), out)
	case reflect.Slice:
		for i := range v.Len() {
			out = errorCodes(v.Index(i), out)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).Name == "ErrorCode" {
				out = append(out, int16(v.Field(i).Int()))
			} else {
				out = errorCodes(v.Field(i), out)
			}
		}
	}
	return out
}

// TestGroupRequestsWithoutCoordinator: with no coordinator published (the control plane
// has no internal listener), every forwarded API at every version is answered, in order
// on a pipelining connection, with a well-formed response carrying NOT_COORDINATOR
// wherever a group-scoped error goes (COORDINATOR_NOT_AVAILABLE for ListGroups), so
// clients look the coordinator up again instead of hanging.
func TestGroupRequestsWithoutCoordinator(t *testing.T) {
	cl, dp := startNode(t, testcluster.Options{ControlPlane: func(cfg *controlplane.Config) { cfg.Listen = "" }})
	versions := dataplane.RoundTrip(t, dial(t, dp.Addr()), kmsg.NewPtrApiVersionsRequest(), 3, 1).(*kmsg.ApiVersionsResponse)
	sent := 0
	for _, key := range dataplane.ForwardedGroupAPIs() {
		i := slices.IndexFunc(versions.ApiKeys, func(k kmsg.ApiVersionsResponseApiKey) bool { return k.ApiKey == key })
		if i < 0 {
			t.Fatalf("%s is forwarded but not advertised", kmsg.NameForKey(key))
		}
		a := versions.ApiKeys[i]
		t.Run(kmsg.NameForKey(key), func(t *testing.T) {
			c := dial(t, dp.Addr())
			var reqs []kmsg.Request
			var wants []int
			for v := a.MinVersion; v <= a.MaxVersion; v++ {
				req, want := dataplane.SampleGroupRequest(key, v)
				if _, err := c.Write(dataplane.FrameRequest(req, v, int32(v))); err != nil {
					t.Fatal(err)
				}
				reqs, wants = append(reqs, req), append(wants, want)
				sent++
			}
			code := kerr.NotCoordinator.Code
			if key == int16(kmsg.ListGroups) || key == int16(kmsg.ListTransactions) {
				code = kerr.CoordinatorNotAvailable.Code
			}
			for i, req := range reqs {
				resp := dataplane.ReadAnswer(t, c, req, int32(req.GetVersion()))
				got, matching := errorCodes(reflect.ValueOf(resp), nil), 0
				for _, c := range got {
					switch c {
					case code:
						matching++
					case 0: // a field the version does not carry
					default:
						t.Errorf("v%d: code %d in %+v", req.GetVersion(), c, resp)
					}
				}
				if matching != wants[i] {
					t.Errorf("v%d: %d codes %d, want %d: %+v", req.GetVersion(), matching, code, wants[i], resp)
				}
			}
		})
	}
	// The gauge of forwards in flight drops once each has been answered.
	testutil.CheckFor(t, 5*time.Second, func() error {
		forwarded, failed := metric(t, cl, dp, forwardedMetric), metric(t, cl, dp, forwardFailuresMetric)
		inFlight := metric(t, cl, dp, forwardsInFlightMetric)
		if forwarded != float64(sent) || failed != float64(sent) || inFlight != 0 {
			return fmt.Errorf("metrics: %v forwarded, %v failed, %v in flight; %d sent", forwarded, failed, inFlight, sent)
		}
		return nil
	})
}

// groupMember is one kgo consumer in a group, polling on a goroutine of its own and
// recording what it owns and what it read.
type groupMember struct {
	cl   *kgo.Client
	mu   sync.Mutex
	owns map[int32]bool
	read map[int32]int64 // partition → records read (offsets are dense from 0)
	err  error
	done chan struct{}
}

func joinGroup(t *testing.T, ctx context.Context, addr, group, topic string) *groupMember {
	t.Helper()
	m := &groupMember{owns: map[int32]bool{}, read: map[int32]int64{}, done: make(chan struct{})}
	track := func(assigned bool) func(context.Context, *kgo.Client, map[string][]int32) {
		return func(_ context.Context, _ *kgo.Client, ps map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, p := range ps[topic] {
				if assigned {
					m.owns[p] = true
				} else {
					delete(m.owns, p)
				}
			}
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
		kgo.SessionTimeout(3*time.Second), kgo.HeartbeatInterval(100*time.Millisecond),
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.OnPartitionsAssigned(track(true)), kgo.OnPartitionsRevoked(track(false)), kgo.OnPartitionsLost(track(false)))
	if err != nil {
		t.Fatal(err)
	}
	m.cl = cl
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			if fs.IsClientClosed() {
				return
			}
			fs.EachError(func(_ string, _ int32, err error) {
				if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
					m.mu.Lock()
					m.err = err
					m.mu.Unlock()
				}
			})
			m.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) { m.read[r.Partition] = max(m.read[r.Partition], r.Offset+1) })
			m.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cl.Close() // leaves the group
		<-m.done
	})
	return m
}

// state is what m owns and has read of it, under its lock.
func (m *groupMember) state() (owns []int32, readAll func(perPartition int64) bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for p := range m.owns {
		owns = append(owns, p)
	}
	slices.Sort(owns)
	read := maps.Clone(m.read)
	return owns, func(n int64) bool {
		for _, p := range owns {
			if read[p] < n {
				return false
			}
		}
		return true
	}, m.err
}

// TestConsumerGroupFranzGo: two franz-go consumers in one group split a 4-partition
// topic through this node's forwarding to the control plane's coordinator, read their
// halves and commit; a third client sees the group and its offsets through kadm
// (OffsetFetch, DescribeGroups, ListGroups).
func TestConsumerGroupFranzGo(t *testing.T) {
	c, dp := startNode(t, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const topic, group, perPartition = "events", "workers", 10
	createGroupTopic(t, c, topic, 4)
	admin := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	adm := kadm.NewClient(admin)
	var records []*kgo.Record
	for p := range int32(4) {
		for i := range perPartition {
			records = append(records, &kgo.Record{Topic: topic, Partition: p, Value: []byte(fmt.Sprintf("%d-%d", p, i))})
		}
	}
	if err := admin.ProduceSync(ctx, records...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}

	a := joinGroup(t, ctx, dp.Addr(), group, topic)
	b := joinGroup(t, ctx, dp.Addr(), group, topic)
	testutil.CheckFor(t, 30*time.Second, func() error {
		ownsA, readA, errA := a.state()
		ownsB, readB, errB := b.state()
		if err := errors.Join(errA, errB); err != nil {
			return err
		}
		if len(ownsA) != 2 || len(ownsB) != 2 || len(slices.Compact(slices.Sorted(slices.Values(append(ownsA, ownsB...))))) != 4 {
			return fmt.Errorf("assignment %v and %v", ownsA, ownsB)
		}
		if !readA(perPartition) || !readB(perPartition) {
			return errors.New("not everything read yet")
		}
		return nil
	})
	for _, m := range []*groupMember{a, b} {
		if err := m.cl.CommitUncommittedOffsets(ctx); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}

	offsets, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatalf("fetch offsets: %v", err)
	}
	for p := range int32(4) {
		o, ok := offsets.Lookup(topic, p)
		if !ok || o.Err != nil || o.At != perPartition {
			t.Errorf("partition %d: committed %+v (found %v)", p, o, ok)
		}
	}
	described, err := adm.DescribeGroups(ctx, group)
	if err != nil || described[group].Err != nil || len(described[group].Members) != 2 || described[group].State != "Stable" {
		t.Fatalf("describe: %v %+v", err, described)
	}
	listed, err := adm.ListGroups(ctx)
	if err != nil || len(listed) != 1 || listed[group].Group != group {
		t.Fatalf("list: %v %+v", err, listed)
	}
	if forwarded, failed := metric(t, c, dp, forwardedMetric), metric(t, c, dp, forwardFailuresMetric); forwarded == 0 || failed != 0 {
		t.Fatalf("metrics: %v forwarded, %v failed", forwarded, failed)
	}
}

// TestListGroupsPerNode: each node lists only the groups it coordinates, so that the
// union over the nodes (what admin clients compute) lists each group once. Node 2 is a
// registration only: the groups are made and listed through node 1, which forwards
// every request whatever the hash says.
func TestListGroupsPerNode(t *testing.T) {
	cl, dp := startNode(t, testcluster.Options{})
	createGroupTopic(t, cl, "t", 1)
	c := dial(t, dp.Addr())
	const groups = 20
	for i := range groups {
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Group, req.Generation = fmt.Sprintf("g%d", i), -1
		req.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: "t", Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: 0, Offset: 0}}}}
		resp := dataplane.RoundTrip(t, c, req, 2, int32(i)).(*kmsg.OffsetCommitResponse)
		if code := resp.Topics[0].Partitions[0].ErrorCode; code != 0 {
			t.Fatalf("commit for %s: %v", req.Group, kerr.ErrorForCode(code))
		}
	}
	list := func() map[string]bool {
		t.Helper()
		resp := dataplane.RoundTrip(t, c, kmsg.NewPtrListGroupsRequest(), 2, 100).(*kmsg.ListGroupsResponse)
		if resp.ErrorCode != 0 {
			t.Fatalf("list: %v", kerr.ErrorForCode(resp.ErrorCode))
		}
		got := map[string]bool{}
		for _, g := range resp.Groups {
			got[g.Group] = true
		}
		return got
	}
	if got := list(); len(got) != groups {
		t.Fatalf("one node lists %d of %d groups", len(got), groups)
	}
	cl.FakeDP(t, 2, 2*time.Second)
	brokers := waitLiveNodes(t, dp.Addr(), 2)
	got := list()
	for i := range groups {
		g := fmt.Sprintf("g%d", i)
		if b, _ := dataplane.GroupCoordinator(brokers, g); got[g] != (b.ID == 1) {
			t.Errorf("%s: listed %v, coordinator node %d", g, got[g], b.ID)
		}
	}
	if len(got) == 0 || len(got) == groups {
		t.Fatalf("node 1 lists %d of %d groups with two nodes", len(got), groups)
	}
}

// TestJoinGroupLongPollDoesNotBlockTheLoop: a JoinGroup waiting for a rebalance (the
// first member never rejoins, so it lasts that member's timeout) holds up only its own
// connection; another connection on the same, single event loop is answered meanwhile.
func TestJoinGroupLongPollDoesNotBlockTheLoop(t *testing.T) {
	_, dp := startNode(t, testcluster.Options{DataPlane: func(cfg *node.Config) { cfg.Server.EventLoops = 1 }})
	join := func(c net.Conn, corr int32) {
		t.Helper()
		req, _ := dataplane.SampleGroupRequest(int16(kmsg.JoinGroup), 0)
		j := req.(*kmsg.JoinGroupRequest)
		j.SessionTimeoutMillis = 1500 // v0: the rebalance timeout too
		j.ProtocolType = "raw"        // the sample's metadata is no consumer's
		if _, err := c.Write(dataplane.FrameRequest(req, 0, corr)); err != nil {
			t.Fatal(err)
		}
	}
	readJoin := func(c net.Conn, corr int32) *kmsg.JoinGroupResponse {
		t.Helper()
		req, _ := dataplane.SampleGroupRequest(int16(kmsg.JoinGroup), 0)
		req.SetVersion(0)
		resp := dataplane.ReadAnswer(t, c, req, corr).(*kmsg.JoinGroupResponse)
		if resp.ErrorCode != 0 {
			t.Fatalf("join: %v", kerr.ErrorForCode(resp.ErrorCode))
		}
		return resp
	}
	first, second, other := dial(t, dp.Addr()), dial(t, dp.Addr()), dial(t, dp.Addr())
	join(first, 1)
	firstMember := readJoin(first, 1).MemberID
	join(second, 2) // waits for the first member, which never rejoins
	dataplane.CheckServesOn(t, other)
	otherAnswered := time.Now()
	if m := readJoin(second, 2); m.MemberID == firstMember || m.LeaderID != m.MemberID {
		t.Fatalf("second join: %+v (first member %s)", m, firstMember)
	}
	if time.Since(otherAnswered) < 100*time.Millisecond {
		t.Fatal("the second join was not waiting for a rebalance")
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
	cl, dp := startNode(t, testcluster.Options{})
	createGroupTopic(t, cl, "t", 1)
	c := dial(t, dp.Addr())
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
			frames = append(frames, dataplane.FrameRequest(req, 7, corr+int32(i))...)
			reqs = append(reqs, req)
		}
		fetch := kmsg.NewPtrOffsetFetchRequest()
		fetch.Group = "ordered"
		fetch.Topics = []kmsg.OffsetFetchRequestTopic{{Topic: "t", Partitions: []int32{0}}}
		frames = append(frames, dataplane.FrameRequest(fetch, 5, corr+perBurst)...)
		if _, err := c.Write(frames); err != nil {
			t.Fatal(err)
		}
		for i, req := range reqs {
			resp := dataplane.ReadAnswer(t, c, req, corr+int32(i)).(*kmsg.OffsetCommitResponse)
			if code := resp.Topics[0].Partitions[0].ErrorCode; code != 0 {
				t.Fatalf("burst %d commit %d: %v", b, i, kerr.ErrorForCode(code))
			}
		}
		resp := dataplane.ReadAnswer(t, c, fetch, corr+perBurst).(*kmsg.OffsetFetchResponse)
		corr += perBurst + 1
		if got, want := resp.Topics[0].Partitions[0].Offset, int64((b+1)*perBurst-1); got != want {
			t.Fatalf("burst %d: fetched offset %d, want the last committed, %d", b, got, want)
		}
	}
}
