package dataplane

import (
	"context"
	"encoding/binary"
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

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/proto"
)

// client is a franz-go client of n, closed when the test ends.
func (n *node) client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(n.srv.Addr())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// createTopic creates topic with partitions (replication factor 1) through n, and waits
// until the group coordinator knows it: its metadata view follows etcd by watch, so for a
// moment after CreateTopics answers it still refuses commits to the topic
// (UNKNOWN_TOPIC_OR_PARTITION), as Kafka's coordinator does while its metadata cache lags.
// A commit to a probe group, deleted after, tells.
func (n *node) createTopic(t testing.TB, ctx context.Context, topic string, partitions int32) {
	t.Helper()
	adm := kadm.NewClient(n.client(t))
	if resp, err := adm.CreateTopics(ctx, partitions, 1, nil, topic); err != nil || resp[topic].Err != nil {
		t.Fatalf("create %s: %v %+v", topic, err, resp)
	}
	if !n.coordinated {
		return
	}
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

func brokersOf(ids ...int32) map[int32]cluster.Broker {
	m := map[int32]cluster.Broker{}
	for _, id := range ids {
		m[id] = cluster.Broker{ID: id, Host: "127.0.0.1", Port: 9000 + id}
	}
	return m
}

// coordinators maps each of n group ids to its coordinator among brokers.
func coordinators(t *testing.T, brokers map[int32]cluster.Broker, n int) map[string]int32 {
	t.Helper()
	out := make(map[string]int32, n)
	for i := range n {
		g := fmt.Sprintf("group-%d", i)
		b, ok := groupCoordinator(brokers, g)
		if !ok {
			t.Fatalf("no coordinator for %s among %d brokers", g, len(brokers))
		}
		out[g] = b.ID
	}
	return out
}

// TestGroupCoordinatorRendezvous: the choice is a pure function of the group and the
// live ids (pinned, since nodes of different versions must agree), spreads groups
// evenly, and a node's death or arrival moves only the groups it loses or takes.
func TestGroupCoordinatorRendezvous(t *testing.T) {
	if _, ok := groupCoordinator(nil, "g"); ok {
		t.Fatal("a coordinator among no brokers")
	}
	// Pinned: a change of the weight function reassigns every group during a rolling
	// upgrade, when old and new nodes would answer FindCoordinator differently. (The
	// values were checked against an independent implementation of FNV-1a and fmix64.)
	for _, c := range []struct {
		group string
		id    int32
		want  uint64
	}{{"", 1, 0x78abdeba62484eee}, {"orders", 1, 0x11500c99f081a575}, {"orders", 2, 0xf734d0ec6092f3b2}} {
		if got := rendezvousWeight(c.group, c.id); got != c.want {
			t.Errorf("rendezvousWeight(%q, %d) = %#x, want %#x", c.group, c.id, got, c.want)
		}
	}

	const groups = 6000
	five := coordinators(t, brokersOf(1, 2, 3, 4, 5), groups)
	if again := coordinators(t, brokersOf(5, 4, 3, 2, 1), groups); !reflect.DeepEqual(five, again) {
		t.Fatal("the choice depends on more than the group and the ids")
	}
	perNode := map[int32]int{}
	for _, id := range five {
		perNode[id]++
	}
	for id := int32(1); id <= 5; id++ { // 1200 expected; 5 standard deviations is about 150
		if n := perNode[id]; n < 1000 || n > 1400 {
			t.Errorf("node %d coordinates %d of %d groups", id, n, groups)
		}
	}

	withoutThree := coordinators(t, brokersOf(1, 2, 4, 5), groups)
	for g, id := range five {
		if id != 3 && withoutThree[g] != id {
			t.Fatalf("%s moved from live node %d to %d when node 3 died", g, id, withoutThree[g])
		}
	}
	withSix := coordinators(t, brokersOf(1, 2, 3, 4, 5, 6), groups)
	moved := 0
	for g, id := range five {
		if withSix[g] != id {
			if withSix[g] != 6 {
				t.Fatalf("%s moved from %d to %d when node 6 joined", g, id, withSix[g])
			}
			moved++
		}
	}
	if moved < groups/6-200 || moved > groups/6+200 {
		t.Errorf("node 6 took %d of %d groups", moved, groups)
	}
}

// TestFindCoordinator: groups are answered with the live node the hash picks, over the
// wire at every version and through franz-go's admin client; transactions and unknown
// key types are refused; when a second node registers, groups split between the two,
// and when it dies its groups come back and no other group moves.
func TestFindCoordinator(t *testing.T) {
	n := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	host, port := splitHostPort(t, n.srv.Addr())
	waitLiveNodes(t, n.srv, 1)
	c := dial(t, n.srv)
	corr := int32(0)
	find := func(version int16, typ int8, key string) *kmsg.FindCoordinatorResponse {
		t.Helper()
		req := kmsg.NewPtrFindCoordinatorRequest()
		req.CoordinatorType, req.CoordinatorKey = typ, key
		corr++
		return roundTrip(t, c, req, version, corr).(*kmsg.FindCoordinatorResponse)
	}
	for v := int16(0); v <= 2; v++ {
		resp := find(v, coordinatorTypeGroup, "orders")
		if resp.ErrorCode != 0 || resp.NodeID != 1 || resp.Host != host || resp.Port != port {
			t.Fatalf("v%d: %+v", v, resp)
		}
	}
	for v := int16(1); v <= 2; v++ {
		for _, typ := range []int8{coordinatorTypeTransaction, 7} {
			resp := find(v, typ, "tx")
			if resp.ErrorCode != kerr.InvalidRequest.Code || resp.ErrorMessage == nil || resp.NodeID != -1 {
				t.Fatalf("v%d type %d: %+v", v, typ, resp)
			}
		}
		if resp := find(v, coordinatorTypeTransaction, "tx"); *resp.ErrorMessage != "transactions are not served" {
			t.Fatalf("v%d transactions: message %q", v, *resp.ErrorMessage)
		}
	}

	for g, r := range kadm.NewClient(n.client(t)).FindGroupCoordinators(ctx, "a", "b", "c") {
		if r.Err != nil || r.NodeID != 1 || r.Host != host || r.Port != port {
			t.Fatalf("franz-go: group %s: %+v", g, r)
		}
	}

	// Node 2 registers (nothing listens at its address: FindCoordinator only names it).
	reg2, err := n.cp.Client.Register(ctx, cluster.Broker{ID: 2, Host: "127.0.0.1", Port: port + 1}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer reg2.Close()
	waitLiveNodes(t, n.srv, 2)
	const groups = 40
	before := map[string]int32{}
	for i := range groups {
		g := fmt.Sprintf("g%d", i)
		resp := find(2, coordinatorTypeGroup, g)
		want, _ := groupCoordinator(n.srv.snapshot().Brokers, g)
		if resp.ErrorCode != 0 || resp.NodeID != want.ID || resp.Port != want.Port {
			t.Fatalf("%s with two nodes: %+v, want node %d", g, resp, want.ID)
		}
		before[g] = resp.NodeID
	}
	if on2 := countValue(before, 2); on2 == 0 || on2 == groups {
		t.Fatalf("node 2 coordinates %d of %d groups", on2, groups)
	}
	if err := reg2.Close(); err != nil {
		t.Fatal(err)
	}
	waitLiveNodes(t, n.srv, 1)
	for g := range before {
		if resp := find(2, coordinatorTypeGroup, g); resp.ErrorCode != 0 || resp.NodeID != 1 {
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

// waitLiveNodes waits until s's metadata view has n live data-plane nodes.
func waitLiveNodes(t testing.TB, s *Server, n int) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, func() error {
		if got := len(s.snapshot().Brokers); got != n {
			return fmt.Errorf("%d live nodes in the view, want %d", got, n)
		}
		return nil
	})
}

// TestFindCoordinatorNoLiveNode: a node whose view has no live node (here: no control
// plane at all) answers COORDINATOR_NOT_AVAILABLE, which clients retry.
func TestFindCoordinatorNoLiveNode(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s)
	for v := int16(0); v <= 2; v++ {
		req := kmsg.NewPtrFindCoordinatorRequest()
		req.CoordinatorKey = "g"
		resp := roundTrip(t, c, req, v, int32(v)).(*kmsg.FindCoordinatorResponse)
		if resp.ErrorCode != kerr.CoordinatorNotAvailable.Code || resp.NodeID != -1 || (v >= 1) != (resp.ErrorMessage != nil) {
			t.Fatalf("v%d: %+v", v, resp)
		}
	}
}

// sampleGroupRequest is a request of the forwarded API key at version, and how many
// group-scoped error codes its refusal carries.
func sampleGroupRequest(key, version int16) (kmsg.Request, int) {
	switch key {
	case int16(kmsg.JoinGroup):
		req := kmsg.NewPtrJoinGroupRequest()
		req.Group, req.SessionTimeoutMillis, req.RebalanceTimeoutMillis, req.ProtocolType = "g", 6000, 6000, "consumer"
		req.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range", Metadata: []byte{0, 1}}}
		return req, 1
	case int16(kmsg.SyncGroup):
		req := kmsg.NewPtrSyncGroupRequest()
		req.Group, req.Generation, req.MemberID = "g", 1, "m"
		req.GroupAssignment = []kmsg.SyncGroupRequestGroupAssignment{{MemberID: "m", MemberAssignment: []byte{1}}}
		return req, 1
	case int16(kmsg.Heartbeat):
		req := kmsg.NewPtrHeartbeatRequest()
		req.Group, req.Generation, req.MemberID = "g", 1, "m"
		return req, 1
	case int16(kmsg.LeaveGroup):
		req := kmsg.NewPtrLeaveGroupRequest()
		req.Group, req.MemberID = "g", "m"
		req.Members = []kmsg.LeaveGroupRequestMember{{MemberID: "m"}}
		return req, 1
	case int16(kmsg.OffsetCommit):
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Group = "g"
		for _, topic := range []string{"t", "u"} {
			rt := kmsg.OffsetCommitRequestTopic{Topic: topic}
			for p := range int32(2) {
				rt.Partitions = append(rt.Partitions, kmsg.OffsetCommitRequestTopicPartition{Partition: p, Offset: 5, Metadata: kmsg.StringPtr("m")})
			}
			req.Topics = append(req.Topics, rt)
		}
		return req, 4
	case int16(kmsg.OffsetFetch):
		req := kmsg.NewPtrOffsetFetchRequest()
		req.Group = "g"
		req.Topics = []kmsg.OffsetFetchRequestTopic{{Topic: "t", Partitions: []int32{0, 1}}}
		if version >= 2 {
			return req, 3 // and the top-level code
		}
		return req, 2
	case listGroupsKey:
		return kmsg.NewPtrListGroupsRequest(), 1
	case int16(kmsg.DescribeGroups):
		req := kmsg.NewPtrDescribeGroupsRequest()
		req.Groups = []string{"g", "h"}
		return req, 2
	case int16(kmsg.DeleteGroups):
		req := kmsg.NewPtrDeleteGroupsRequest()
		req.Groups = []string{"g", "h"}
		return req, 2
	case int16(kmsg.OffsetDelete):
		req := kmsg.NewPtrOffsetDeleteRequest()
		req.Group = "g"
		req.Topics = []kmsg.OffsetDeleteRequestTopic{{Topic: "t", Partitions: []kmsg.OffsetDeleteRequestTopicPartition{{Partition: 0}}}}
		return req, 1
	}
	panic(fmt.Sprintf("no sample %s request", kmsg.NameForKey(key)))
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

// TestGroupAPIsAdvertised: the forwarded APIs are exactly those advertised with the
// forwarding handler, each with a refusal.
func TestGroupAPIsAdvertised(t *testing.T) {
	forward := reflect.ValueOf(handleGroupRequest).Pointer()
	n := 0
	for _, a := range apis {
		if reflect.ValueOf(a.handle).Pointer() == forward {
			n++
			if groupRefusals[a.key] == nil {
				t.Errorf("%s is forwarded without a refusal", kmsg.NameForKey(a.key))
			}
		}
	}
	if n != len(groupRefusals) {
		t.Errorf("%d APIs forwarded, %d refusals", n, len(groupRefusals))
	}
}

// TestGroupRequestsWithoutCoordinator: with no coordinator published (the control plane
// has no internal listener), every forwarded API at every version is answered, in order
// on a pipelining connection, with a well-formed response carrying NOT_COORDINATOR
// wherever a group-scoped error goes (COORDINATOR_NOT_AVAILABLE for ListGroups), so
// clients look the coordinator up again instead of hanging.
func TestGroupRequestsWithoutCoordinator(t *testing.T) {
	n := startClusterWithoutGroups(t)
	sent := 0
	for _, a := range apis {
		if groupRefusals[a.key] == nil {
			continue
		}
		t.Run(kmsg.NameForKey(a.key), func(t *testing.T) {
			c := dial(t, n.srv)
			var reqs []kmsg.Request
			var wants []int
			for v := a.min; v <= a.max; v++ {
				req, want := sampleGroupRequest(a.key, v)
				if _, err := c.Write(frameRequest(req, v, int32(v))); err != nil {
					t.Fatal(err)
				}
				reqs, wants = append(reqs, req), append(wants, want)
				sent++
			}
			code := kerr.NotCoordinator.Code
			if a.key == listGroupsKey {
				code = kerr.CoordinatorNotAvailable.Code
			}
			for i, req := range reqs {
				resp := readAnswer(t, c, req, int32(req.GetVersion()))
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
	m := n.srv.metrics
	if m.groupForwards.Get() != uint64(sent) || m.groupFailures.Get() != uint64(sent) || m.groupForwarding.Load() != 0 {
		t.Fatalf("metrics: %d forwarded, %d failed, %d in flight; %d sent",
			m.groupForwards.Get(), m.groupFailures.Get(), m.groupForwarding.Load(), sent)
	}
}

// TestMalformedGroupRequestCloses: a group request that does not decode closes the
// connection before anything is forwarded, at every version; the node serves on.
func TestMalformedGroupRequestCloses(t *testing.T) {
	s := startServer(t, Config{})
	for _, a := range apis {
		if groupRefusals[a.key] == nil {
			continue
		}
		for v := a.min; v <= a.max; v++ {
			req, _ := sampleGroupRequest(a.key, v)
			frame := frameRequest(req, v, 1)
			hdr, err := proto.ParseRequestHeader(frame[4:])
			if err != nil {
				t.Fatal(err)
			}
			if len(frame) == 4+hdr.Size {
				continue // an empty body (ListGroups before v4) cannot be malformed
			}
			t.Run(fmt.Sprintf("%s/v%d", kmsg.NameForKey(a.key), v), func(t *testing.T) {
				c := dial(t, s)
				frame := frame[:len(frame)-1] // the last field is cut short
				binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
				if _, err := c.Write(frame); err != nil {
					t.Fatal(err)
				}
				expectClosed(t, c)
			})
		}
	}
	checkServes(t, s)
	if got := s.metrics.groupForwards.Get(); got != 0 {
		t.Fatalf("%d malformed requests forwarded", got)
	}
}

// TestPostedCloseClosesConnection: a function posted to a connection's loop can close
// it, as a forwarded request the coordinator could not decode does
// (client.ErrGroupBadRequest).
func TestPostedCloseClosesConnection(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s)
	checkServesOn(t, c)
	s.connMu.Lock()
	if len(s.conns) != 1 {
		s.connMu.Unlock()
		t.Fatalf("%d connections", len(s.conns))
	}
	var cs *connState
	for cs = range s.conns {
	}
	s.connMu.Unlock()
	if !cs.post(func() { cs.closeRequested = true }) {
		t.Fatal("post refused on an open connection")
	}
	expectClosed(t, c)
	checkServes(t, s)
}

// checkServesOn asserts that c gets an ApiVersions answer.
func checkServesOn(t testing.TB, c net.Conn) {
	t.Helper()
	resp := roundTrip(t, c, kmsg.NewPtrApiVersionsRequest(), 3, 7).(*kmsg.ApiVersionsResponse)
	if resp.ErrorCode != 0 {
		t.Fatalf("ApiVersions: code %d", resp.ErrorCode)
	}
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
	n := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const topic, group, perPartition = "events", "workers", 10
	n.createTopic(t, ctx, topic, 4)
	admin := n.client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
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

	a := joinGroup(t, ctx, n.srv.Addr(), group, topic)
	b := joinGroup(t, ctx, n.srv.Addr(), group, topic)
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
	m := n.srv.metrics
	if m.groupForwards.Get() == 0 || m.groupFailures.Get() != 0 {
		t.Fatalf("metrics: %d forwarded, %d failed", m.groupForwards.Get(), m.groupFailures.Get())
	}
}

// TestListGroupsPerNode: each node lists only the groups it coordinates, so that the
// union over the nodes (what admin clients compute) lists each group once. Node 2 is a
// registration only: the groups are made and listed through node 1, which forwards
// every request whatever the hash says.
func TestListGroupsPerNode(t *testing.T) {
	n := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.createTopic(t, ctx, "t", 1)
	c := dial(t, n.srv)
	const groups = 20
	for i := range groups {
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Group, req.Generation = fmt.Sprintf("g%d", i), -1
		req.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: "t", Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: 0, Offset: 0}}}}
		resp := roundTrip(t, c, req, 2, int32(i)).(*kmsg.OffsetCommitResponse)
		if code := resp.Topics[0].Partitions[0].ErrorCode; code != 0 {
			t.Fatalf("commit for %s: %v", req.Group, kerr.ErrorForCode(code))
		}
	}
	list := func() map[string]bool {
		t.Helper()
		resp := roundTrip(t, c, kmsg.NewPtrListGroupsRequest(), 2, 100).(*kmsg.ListGroupsResponse)
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
	_, port := splitHostPort(t, n.srv.Addr())
	reg2, err := n.cp.Client.Register(ctx, cluster.Broker{ID: 2, Host: "127.0.0.1", Port: port + 1}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer reg2.Close()
	waitLiveNodes(t, n.srv, 2)
	got, brokers := list(), n.srv.snapshot().Brokers
	for i := range groups {
		g := fmt.Sprintf("g%d", i)
		if b, _ := groupCoordinator(brokers, g); got[g] != (b.ID == 1) {
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
	n := startClusterWith(t, Config{EventLoops: 1})
	join := func(c net.Conn, corr int32) {
		t.Helper()
		req, _ := sampleGroupRequest(int16(kmsg.JoinGroup), 0)
		j := req.(*kmsg.JoinGroupRequest)
		j.SessionTimeoutMillis = 1500 // v0: the rebalance timeout too
		j.ProtocolType = "raw"        // the sample's metadata is no consumer's
		if _, err := c.Write(frameRequest(req, 0, corr)); err != nil {
			t.Fatal(err)
		}
	}
	readJoin := func(c net.Conn, corr int32) *kmsg.JoinGroupResponse {
		t.Helper()
		req, _ := sampleGroupRequest(int16(kmsg.JoinGroup), 0)
		req.SetVersion(0)
		resp := readAnswer(t, c, req, corr).(*kmsg.JoinGroupResponse)
		if resp.ErrorCode != 0 {
			t.Fatalf("join: %v", kerr.ErrorForCode(resp.ErrorCode))
		}
		return resp
	}
	first, second, other := dial(t, n.srv), dial(t, n.srv), dial(t, n.srv)
	join(first, 1)
	firstMember := readJoin(first, 1).MemberID
	join(second, 2) // waits for the first member, which never rejoins
	checkServesOn(t, other)
	otherAnswered := time.Now()
	if m := readJoin(second, 2); m.MemberID == firstMember || m.LeaderID != m.MemberID {
		t.Fatalf("second join: %+v (first member %s)", m, firstMember)
	}
	if time.Since(otherAnswered) < 100*time.Millisecond {
		t.Fatal("the second join was not waiting for a rebalance")
	}
}
