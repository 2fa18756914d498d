package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/internal/grouptest"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// groupTester sends group requests the way a data-plane node forwards them: Kafka
// requests over the internal listener, through client.ForwardGroupRequest.
type groupTester struct {
	t   testing.TB
	c   *testcluster.Cluster
	cli *client.Client
}

func newGroupTester(t testing.TB, c *testcluster.Cluster) *groupTester {
	t.Helper()
	cli := c.ControlPlaneClient(t)
	c.WaitController(t)
	gt := &groupTester{t: t, c: c, cli: cli}
	// Wait until the coordinator is published and answering.
	testutil.CheckFor(t, 10*time.Second, func() error {
		_, err := gt.try(kmsg.NewPtrListGroupsRequest())
		return err
	})
	return gt
}

func (gt *groupTester) try(req kmsg.Request) (kmsg.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	body, err := gt.cli.ForwardGroupRequest(ctx, "127.0.0.9", grouptest.EncodeRequest(req, "test-client"))
	if err != nil {
		return nil, err
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	if err := resp.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("decode %T: %w", resp, err)
	}
	return resp, nil
}

// callE is try, retried — as clients do — while no coordinator is active: on a loaded
// machine the controller's election lease can lapse and another term begin in the
// middle of a test. It is safe from any goroutine.
func (gt *groupTester) callE(req kmsg.Request) (kmsg.Response, error) {
	var resp kmsg.Response
	var final error
	err := testutil.Eventually(30*time.Second, func() error {
		var err error
		resp, err = gt.try(req)
		if errors.Is(err, kerr.CoordinatorNotAvailable) || errors.Is(err, kerr.NotCoordinator) {
			return err
		}
		final = err
		return nil
	})
	if err == nil {
		err = final
	}
	if err != nil {
		return nil, fmt.Errorf("%T: %w", req, err)
	}
	return resp, nil
}

// call is callE that fails the test on an error; only for the test's own goroutine
// (from another, use async with callE).
func (gt *groupTester) call(req kmsg.Request) kmsg.Response {
	gt.t.Helper()
	resp, err := gt.callE(req)
	if err != nil {
		gt.t.Fatal(err)
	}
	return resp
}

// asyncWait bounds waiting for work a test runs on another goroutine: past callE's own
// bound (retries for 30 s, each try up to 20 s), it is never coming.
const asyncWait = 2 * time.Minute

type asyncResult[T any] struct {
	v   T
	err error
}

// async runs f on a goroutine of its own (a request that waits for others, such as a
// JoinGroup). The function it returns, called once on the test's goroutine, waits for
// f's result and fails the test if f failed or did not return within asyncWait.
func async[T any](t testing.TB, f func() (T, error)) func() T {
	ch := make(chan asyncResult[T], 1)
	go func() {
		v, err := f()
		ch <- asyncResult[T]{v, err}
	}()
	return func() T {
		t.Helper()
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatal(r.err)
			}
			return r.v
		case <-time.After(asyncWait):
			t.Fatalf("not done within %v", asyncWait)
		}
		panic("unreachable")
	}
}

// join does the two-step join and returns the answer of the second step.
func (gt *groupTester) join(group string, meta []byte) *kmsg.JoinGroupResponse {
	gt.t.Helper()
	j, err := gt.joinE(group, meta)
	if err != nil {
		gt.t.Fatal(err)
	}
	return j
}

// joinE is join for any goroutine.
func (gt *groupTester) joinE(group string, meta []byte) (*kmsg.JoinGroupResponse, error) {
	resp, err := gt.callE(grouptest.JoinRequest(group, "", meta))
	if err != nil {
		return nil, err
	}
	first := resp.(*kmsg.JoinGroupResponse)
	if first.ErrorCode != kerr.MemberIDRequired.Code || first.MemberID == "" {
		return nil, fmt.Errorf("first join: code %d member %q, want MEMBER_ID_REQUIRED and an id", first.ErrorCode, first.MemberID)
	}
	if resp, err = gt.callE(grouptest.JoinRequest(group, first.MemberID, meta)); err != nil {
		return nil, err
	}
	return resp.(*kmsg.JoinGroupResponse), nil
}

// joinAsync joins (two steps) on another goroutine.
func (gt *groupTester) joinAsync(group string, meta []byte) func() *kmsg.JoinGroupResponse {
	return async(gt.t, func() (*kmsg.JoinGroupResponse, error) { return gt.joinE(group, meta) })
}

// callAsync sends req on another goroutine.
func (gt *groupTester) callAsync(req kmsg.Request) func() kmsg.Response {
	return async(gt.t, func() (kmsg.Response, error) { return gt.callE(req) })
}

func (gt *groupTester) sync(group, member string, gen int32, assign map[string][]byte) *kmsg.SyncGroupResponse {
	gt.t.Helper()
	return gt.call(grouptest.SyncRequest(group, member, gen, assign)).(*kmsg.SyncGroupResponse)
}

// syncAsync sends a SyncGroup on another goroutine (a follower's waits for the
// leader's).
func (gt *groupTester) syncAsync(group, member string, gen int32, assign map[string][]byte) func() *kmsg.SyncGroupResponse {
	req := grouptest.SyncRequest(group, member, gen, assign)
	return async(gt.t, func() (*kmsg.SyncGroupResponse, error) {
		resp, err := gt.callE(req)
		if err != nil {
			return nil, err
		}
		return resp.(*kmsg.SyncGroupResponse), nil
	})
}

func (gt *groupTester) heartbeat(group, member string, gen int32) int16 {
	gt.t.Helper()
	return gt.call(grouptest.HeartbeatRequest(group, member, gen)).(*kmsg.HeartbeatResponse).ErrorCode
}

func (gt *groupTester) commit(group, member string, gen int32, topic string, part int32, offset int64, meta string) int16 {
	gt.t.Helper()
	r := kmsg.NewPtrOffsetCommitRequest()
	r.Version = 7
	r.Group, r.MemberID, r.Generation = group, member, gen
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewOffsetCommitRequestTopicPartition()
	rp.Partition, rp.Offset, rp.Metadata, rp.LeaderEpoch = part, offset, &meta, 3
	rt.Partitions = append(rt.Partitions, rp)
	r.Topics = append(r.Topics, rt)
	resp := gt.call(r).(*kmsg.OffsetCommitResponse)
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		gt.t.Fatalf("commit answer has %d topics", len(resp.Topics))
	}
	return resp.Topics[0].Partitions[0].ErrorCode
}

func (gt *groupTester) fetch(group, topic string, parts ...int32) map[int32]kmsg.OffsetFetchResponseTopicPartition {
	gt.t.Helper()
	r := kmsg.NewPtrOffsetFetchRequest()
	r.Version = 5
	r.Group = group
	ft := kmsg.NewOffsetFetchRequestTopic()
	ft.Topic, ft.Partitions = topic, parts
	r.Topics = append(r.Topics, ft)
	resp := gt.call(r).(*kmsg.OffsetFetchResponse)
	if resp.ErrorCode != 0 {
		gt.t.Fatalf("offset fetch: code %d", resp.ErrorCode)
	}
	out := map[int32]kmsg.OffsetFetchResponseTopicPartition{}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			out[p.Partition] = p
		}
	}
	return out
}

// createTopic creates a topic and waits until every running member's metadata view has
// it: the coordinator checks commits against its view, which follows etcd by watch, so
// for a moment after the creation it still answers UNKNOWN_TOPIC_OR_PARTITION (as Kafka's
// coordinator does while its metadata cache lags).
func (gt *groupTester) createTopic(name string, parts int32) {
	gt.t.Helper()
	if _, _, err := gt.cli.CreateTopic(testCtx(gt.t), client.TopicSpec{Name: name, Partitions: parts, ReplicationFactor: 1}); err != nil {
		gt.t.Fatal(err)
	}
	testutil.CheckFor(gt.t, 10*time.Second, func() error {
		for _, m := range gt.c.RunningCPs() {
			if snap := m.Server().Metadata().Snapshot(); snap.Topics[name].Partitions != parts {
				return fmt.Errorf("%s does not see topic %s yet", m.Name(), name)
			}
		}
		return nil
	})
}

// joinAll joins n members concurrently (second step) and returns their answers.
func (gt *groupTester) joinAll(group string, n int, meta []byte) []*kmsg.JoinGroupResponse {
	gt.t.Helper()
	waits := make([]func() *kmsg.JoinGroupResponse, n)
	for i := range n {
		waits[i] = gt.joinAsync(group, meta)
	}
	out := make([]*kmsg.JoinGroupResponse, n)
	for i, wait := range waits {
		out[i] = wait()
	}
	return out
}

// newGroupCluster is a one-member control plane with the group settings g.
func newGroupCluster(t *testing.T, g controlplane.GroupConfig) *testcluster.Cluster {
	t.Helper()
	return testcluster.New(t, testcluster.Options{ControlPlaneOnly: true, Groups: g})
}

func TestGroupJoinSyncCommit(t *testing.T) {
	// The initial delay lets the two first members, joining together, form the first
	// generation together.
	c := newGroupCluster(t, controlplane.GroupConfig{InitialRebalanceDelay: 300 * time.Millisecond})
	c.FakeDP(t, 1, 2*time.Second)
	gt := newGroupTester(t, c)
	gt.createTopic("orders", 4)

	joins := gt.joinAll("g1", 2, grouptest.ConsumerMeta("orders"))
	gen := joins[0].Generation
	var leader *kmsg.JoinGroupResponse
	for _, j := range joins {
		if j.ErrorCode != 0 || j.Generation != gen || j.LeaderID != joins[0].LeaderID || *j.Protocol != "range" {
			t.Fatalf("join answers disagree: %+v", j)
		}
		if j.MemberID == j.LeaderID {
			leader = j
			if len(j.Members) != 2 {
				t.Fatalf("leader got %d members, want 2", len(j.Members))
			}
		} else if len(j.Members) != 0 {
			t.Fatalf("follower got %d members", len(j.Members))
		}
	}
	if leader == nil {
		t.Fatal("no member is the leader")
	}
	follower := joins[0]
	if follower == leader {
		follower = joins[1]
	}
	assign := map[string][]byte{
		leader.MemberID:   grouptest.ConsumerAssignment("orders", 0, 1),
		follower.MemberID: grouptest.ConsumerAssignment("orders", 2, 3),
	}
	// The follower's SyncGroup waits for the leader's.
	fsyncWait := gt.syncAsync("g1", follower.MemberID, gen, nil)
	if ls := gt.sync("g1", leader.MemberID, gen, assign); ls.ErrorCode != 0 || string(ls.MemberAssignment) != string(assign[leader.MemberID]) {
		t.Fatalf("leader sync: code %d", ls.ErrorCode)
	}
	if fsync := fsyncWait(); fsync.ErrorCode != 0 || string(fsync.MemberAssignment) != string(assign[follower.MemberID]) {
		t.Fatalf("follower sync: code %d assignment %x", fsync.ErrorCode, fsync.MemberAssignment)
	}
	if code := gt.heartbeat("g1", follower.MemberID, gen); code != 0 {
		t.Fatalf("heartbeat: %d", code)
	}
	if code := gt.commit("g1", follower.MemberID, gen, "orders", 2, 42, "m"); code != 0 {
		t.Fatalf("commit: %d", code)
	}
	got := gt.fetch("g1", "orders", 2, 3)
	if got[2].Offset != 42 || got[2].LeaderEpoch != 3 || *got[2].Metadata != "m" || got[3].Offset != -1 {
		t.Fatalf("offset fetch: %+v", got)
	}

	// Fencing: a stale generation, an unknown member, a wrong group.
	if code := gt.commit("g1", follower.MemberID, gen-1, "orders", 2, 1, ""); code != kerr.IllegalGeneration.Code {
		t.Fatalf("stale commit: code %d, want ILLEGAL_GENERATION", code)
	}
	if code := gt.commit("g1", "nobody", gen, "orders", 2, 1, ""); code != kerr.UnknownMemberID.Code {
		t.Fatalf("unknown member commit: code %d, want UNKNOWN_MEMBER_ID", code)
	}
	if got := gt.fetch("g1", "orders", 2); got[2].Offset != 42 {
		t.Fatalf("a refused commit moved the offset to %d", got[2].Offset)
	}
	if code := gt.heartbeat("g1", follower.MemberID, gen+1); code != kerr.IllegalGeneration.Code {
		t.Fatalf("heartbeat wrong generation: %d", code)
	}
	if code := gt.heartbeat("nope", "x", 1); code != kerr.UnknownMemberID.Code {
		t.Fatalf("heartbeat unknown group: %d", code)
	}

	// A third member triggers a rebalance: the others learn it from their heartbeat,
	// rejoin, and a new generation forms with three.
	third := gt.joinAsync("g1", grouptest.ConsumerMeta("orders"))
	testutil.CheckFor(t, 5*time.Second, func() error {
		if code := gt.heartbeat("g1", leader.MemberID, gen); code != kerr.RebalanceInProgress.Code {
			return fmt.Errorf("heartbeat code %d, want REBALANCE_IN_PROGRESS", code)
		}
		return nil
	})
	// While preparing, the current generation may still commit.
	if code := gt.commit("g1", leader.MemberID, gen, "orders", 0, 7, ""); code != 0 {
		t.Fatalf("commit while preparing: %d", code)
	}
	rejoin := func(m string) func() kmsg.Response {
		return gt.callAsync(grouptest.JoinRequest("g1", m, grouptest.ConsumerMeta("orders")))
	}
	w1, w2 := rejoin(leader.MemberID), rejoin(follower.MemberID)
	r1, r2 := w1().(*kmsg.JoinGroupResponse), w2().(*kmsg.JoinGroupResponse)
	r3 := third()
	for _, r := range []*kmsg.JoinGroupResponse{r1, r2, r3} {
		if r.ErrorCode != 0 || r.Generation != gen+1 {
			t.Fatalf("rejoin: code %d generation %d, want generation %d", r.ErrorCode, r.Generation, gen+1)
		}
	}
	// During CompletingRebalance a member of the new generation waits for its
	// assignment; one of the old generation is stale (Kafka checks it first).
	if code := gt.commit("g1", follower.MemberID, gen+1, "orders", 2, 1, ""); code != kerr.RebalanceInProgress.Code {
		t.Fatalf("commit during CompletingRebalance: %d, want REBALANCE_IN_PROGRESS", code)
	}
	if code := gt.commit("g1", follower.MemberID, gen, "orders", 2, 1, ""); code != kerr.IllegalGeneration.Code {
		t.Fatalf("stale commit during CompletingRebalance: %d, want ILLEGAL_GENERATION", code)
	}

	// LeaveGroup: the leaving member is gone, a rebalance starts.
	lr := kmsg.NewPtrLeaveGroupRequest()
	lr.Version = 3
	lr.Group = "g1"
	lm := kmsg.NewLeaveGroupRequestMember()
	lm.MemberID = r3.MemberID
	lr.Members = append(lr.Members, lm, kmsg.LeaveGroupRequestMember{MemberID: "ghost"})
	lresp := gt.call(lr).(*kmsg.LeaveGroupResponse)
	if lresp.ErrorCode != 0 || lresp.Members[0].ErrorCode != 0 || lresp.Members[1].ErrorCode != kerr.UnknownMemberID.Code {
		t.Fatalf("leave: %+v", lresp)
	}

	// Describe and list.
	dr := kmsg.NewPtrDescribeGroupsRequest()
	dr.Version = 4
	dr.Groups = []string{"g1", "missing"}
	dresp := gt.call(dr).(*kmsg.DescribeGroupsResponse)
	if dresp.Groups[0].State != "PreparingRebalance" || len(dresp.Groups[0].Members) != 2 || dresp.Groups[0].Members[0].ClientHost != "127.0.0.9" {
		t.Fatalf("describe: %+v", dresp.Groups[0])
	}
	if dresp.Groups[1].State != "Dead" {
		t.Fatalf("describe missing: %+v", dresp.Groups[1])
	}
	lg := gt.call(kmsg.NewPtrListGroupsRequest()).(*kmsg.ListGroupsResponse)
	if len(lg.Groups) != 1 || lg.Groups[0].Group != "g1" || lg.Groups[0].ProtocolType != "consumer" {
		t.Fatalf("list: %+v", lg.Groups)
	}

	// DeleteGroups refuses a group with members; after both leave, it goes.
	del := func(groups ...string) []int16 {
		r := kmsg.NewPtrDeleteGroupsRequest()
		r.Version = 1
		r.Groups = groups
		var codes []int16
		for _, g := range gt.call(r).(*kmsg.DeleteGroupsResponse).Groups {
			codes = append(codes, g.ErrorCode)
		}
		return codes
	}
	if codes := del("g1", "missing"); codes[0] != kerr.NonEmptyGroup.Code || codes[1] != kerr.GroupIDNotFound.Code {
		t.Fatalf("delete: %v", codes)
	}
	lr.Members = []kmsg.LeaveGroupRequestMember{{MemberID: leader.MemberID}, {MemberID: follower.MemberID}}
	if lresp := gt.call(lr).(*kmsg.LeaveGroupResponse); lresp.Members[0].ErrorCode != 0 || lresp.Members[1].ErrorCode != 0 {
		t.Fatalf("leave all: %+v", lresp)
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		dresp := gt.call(dr).(*kmsg.DescribeGroupsResponse)
		if s := dresp.Groups[0].State; s != "Empty" {
			return fmt.Errorf("state %s", s)
		}
		return nil
	})
	if got := gt.fetch("g1", "orders", 2); got[2].Offset != 42 {
		t.Fatalf("an empty group lost its offsets: %+v", got)
	}
	if codes := del("g1"); codes[0] != 0 {
		t.Fatalf("delete empty: %v", codes)
	}
	if got := gt.fetch("g1", "orders", 2); got[2].Offset != -1 {
		t.Fatalf("a deleted group kept its offsets: %+v", got)
	}
	resp, err := c.ControlPlaneClient(t).Etcd().Get(testCtx(t), cluster.OffsetsPrefix, clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("offsets left in etcd after delete: %v %d", err, len(resp.Kvs))
	}
}

func TestGroupBadInput(t *testing.T) {
	c := newControlPlane(t, 1)
	c.FakeDP(t, 1, 2*time.Second)
	gt := newGroupTester(t, c)
	gt.createTopic("t", 2)

	joinCode := func(r *kmsg.JoinGroupRequest) int16 {
		return gt.call(r).(*kmsg.JoinGroupResponse).ErrorCode
	}
	r := grouptest.JoinRequest("", "", grouptest.ConsumerMeta("t"))
	if code := joinCode(r); code != kerr.InvalidGroupID.Code {
		t.Errorf("empty group id: %d", code)
	}
	r = grouptest.JoinRequest("g", "", grouptest.ConsumerMeta("t"))
	r.SessionTimeoutMillis = 10
	if code := joinCode(r); code != kerr.InvalidSessionTimeout.Code {
		t.Errorf("short session: %d", code)
	}
	r = grouptest.JoinRequest("g", "", make([]byte, 1<<20+1)) // past the 1 MiB bound of a member's metadata
	if code := joinCode(r); code != kerr.InvalidRequest.Code {
		t.Errorf("oversized metadata: %d", code)
	}
	r = grouptest.JoinRequest("g", "", []byte{0, 0, 0x7f, 0xff, 0xff, 0xff})
	if code := joinCode(r); code != kerr.InconsistentGroupProtocol.Code {
		t.Errorf("garbage consumer metadata: %d", code)
	}
	r = grouptest.JoinRequest("g", "", grouptest.ConsumerMeta("t"))
	r.ProtocolType = ""
	if code := joinCode(r); code != kerr.InconsistentGroupProtocol.Code {
		t.Errorf("empty protocol type: %d", code)
	}
	if code := joinCode(grouptest.JoinRequest("g", "made-up-member", grouptest.ConsumerMeta("t"))); code != kerr.UnknownMemberID.Code {
		t.Errorf("unknown member id: %d", code)
	}

	j := gt.join("g", grouptest.ConsumerMeta("t"))
	if j.ErrorCode != 0 {
		t.Fatalf("join: %d", j.ErrorCode)
	}
	// A member of another protocol type, or without a common protocol, is refused.
	other := grouptest.JoinRequest("g", "", []byte("x"))
	other.ProtocolType = "connect"
	if code := joinCode(other); code != kerr.InconsistentGroupProtocol.Code {
		t.Errorf("other protocol type: %d", code)
	}
	// Garbage assignment bytes from the leader.
	if s := gt.sync("g", j.MemberID, j.Generation, map[string][]byte{j.MemberID: {0, 0, 0x7f, 0xff, 0xff, 0xff}}); s.ErrorCode != kerr.InvalidRequest.Code {
		t.Errorf("garbage assignment: %d", s.ErrorCode)
	}
	if s := gt.sync("g", j.MemberID, j.Generation+5, nil); s.ErrorCode != kerr.IllegalGeneration.Code {
		t.Errorf("sync wrong generation: %d", s.ErrorCode)
	}
	if s := gt.sync("g", "who", j.Generation, nil); s.ErrorCode != kerr.UnknownMemberID.Code {
		t.Errorf("sync unknown member: %d", s.ErrorCode)
	}
	if s := gt.sync("unknown-group", "who", 1, nil); s.ErrorCode != kerr.UnknownMemberID.Code {
		t.Errorf("sync unknown group: %d", s.ErrorCode)
	}
	if s := gt.sync("g", j.MemberID, j.Generation, map[string][]byte{j.MemberID: grouptest.ConsumerAssignment("t", 0, 1)}); s.ErrorCode != 0 {
		t.Fatalf("sync: %d", s.ErrorCode)
	}
	// Commits: unknown topic and partition, oversized metadata, unknown group with a
	// generation (not a manual-assignment commit).
	if code := gt.commit("g", j.MemberID, j.Generation, "no-such-topic", 0, 1, ""); code != kerr.UnknownTopicOrPartition.Code {
		t.Errorf("commit unknown topic: %d", code)
	}
	if code := gt.commit("g", j.MemberID, j.Generation, "t", 9, 1, ""); code != kerr.UnknownTopicOrPartition.Code {
		t.Errorf("commit unknown partition: %d", code)
	}
	if code := gt.commit("g", j.MemberID, j.Generation, "t", 0, 1, string(make([]byte, controlplane.DefaultOffsetMetadataMaxBytes+1))); code != kerr.OffsetMetadataTooLarge.Code {
		t.Errorf("commit big metadata: %d", code)
	}
	if code := gt.commit("nobody-home", "m", 3, "t", 0, 1, ""); code != kerr.IllegalGeneration.Code {
		t.Errorf("commit to unknown group with a generation: %d", code)
	}
	if code := gt.commit("g", "", -1, "t", 0, 1, ""); code != kerr.UnknownMemberID.Code {
		t.Errorf("manual commit into a live group: %d", code)
	}
	// A manual-assignment commit (generation -1) to a group without members works.
	if code := gt.commit("manual", "", -1, "t", 1, 5, ""); code != 0 {
		t.Errorf("manual commit: %d", code)
	}
	if got := gt.fetch("manual", "t", 1); got[1].Offset != 5 {
		t.Errorf("manual commit not fetched: %+v", got)
	}
	// OffsetDelete refuses topics the group subscribes to.
	od := kmsg.NewPtrOffsetDeleteRequest()
	od.Group = "g"
	odt := kmsg.NewOffsetDeleteRequestTopic()
	odt.Topic = "t"
	odt.Partitions = []kmsg.OffsetDeleteRequestTopicPartition{{Partition: 0}}
	od.Topics = append(od.Topics, odt)
	if resp := gt.call(od).(*kmsg.OffsetDeleteResponse); resp.ErrorCode != 0 || resp.Topics[0].Partitions[0].ErrorCode != kerr.GroupSubscribedToTopic.Code {
		t.Errorf("offset delete of a subscribed topic: %+v", resp)
	}
	od.Group = "manual"
	od.Topics[0].Partitions[0].Partition = 1
	if resp := gt.call(od).(*kmsg.OffsetDeleteResponse); resp.ErrorCode != 0 || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Errorf("offset delete: %+v", resp)
	}
	if got := gt.fetch("manual", "t", 1); got[1].Offset != -1 {
		t.Errorf("deleted offset still there: %+v", got)
	}
	od.Group = "ghost"
	if resp := gt.call(od).(*kmsg.OffsetDeleteResponse); resp.ErrorCode != kerr.GroupIDNotFound.Code {
		t.Errorf("offset delete unknown group: %d", resp.ErrorCode)
	}
	// A body that does not decode is refused as a bad request (the data-plane node
	// closes its client's connection).
	b := grouptest.EncodeRequest(kmsg.NewPtrHeartbeatRequest(), "x")
	_, err := gt.cli.ForwardGroupRequest(testCtx(t), "h", append(b[:len(b)-4], 0xff))
	if !errors.Is(err, client.ErrGroupBadRequest) {
		t.Errorf("truncated body: %v", err)
	}
	// The member's session (1 s) ends without heartbeats: the group empties (polled
	// with DescribeGroups, which does not keep the member alive).
	dr := kmsg.NewPtrDescribeGroupsRequest()
	dr.Groups = []string{"g"}
	testutil.CheckFor(t, 10*time.Second, func() error {
		if g := gt.call(dr).(*kmsg.DescribeGroupsResponse).Groups[0]; g.State != "Empty" || len(g.Members) != 0 {
			return fmt.Errorf("state %s with %d members", g.State, len(g.Members))
		}
		return nil
	})
	if code := gt.heartbeat("g", j.MemberID, j.Generation); code != kerr.UnknownMemberID.Code {
		t.Errorf("heartbeat after expiry: %d", code)
	}
}

func TestGroupsSurviveControllerFailover(t *testing.T) {
	c := newControlPlane(t, 3)
	c.FakeDP(t, 1, 5*time.Second)
	gt := newGroupTester(t, c)
	gt.createTopic("events", 3)

	first := gt.call(grouptest.JoinRequest("fg", "", grouptest.ConsumerMeta("events"))).(*kmsg.JoinGroupResponse)
	j := gt.call(func() *kmsg.JoinGroupRequest {
		r := grouptest.JoinRequest("fg", first.MemberID, grouptest.ConsumerMeta("events"))
		r.SessionTimeoutMillis = 10000
		return r
	}()).(*kmsg.JoinGroupResponse)
	if s := gt.sync("fg", j.MemberID, j.Generation, map[string][]byte{j.MemberID: grouptest.ConsumerAssignment("events", 0, 1, 2)}); s.ErrorCode != 0 {
		t.Fatalf("sync: %d", s.ErrorCode)
	}
	for p := range int32(3) {
		if code := gt.commit("fg", j.MemberID, j.Generation, "events", p, int64(100+p), "before"); code != 0 {
			t.Fatalf("commit: %d", code)
		}
	}
	old := c.WaitController(t)
	if err := c.Stop(old); err != nil {
		t.Fatal(err)
	}
	next := c.WaitController(t)
	if next == old {
		t.Fatal("controller did not move")
	}
	// The member carries on in its generation with the new coordinator; the offsets
	// are there; a stale generation is still fenced.
	testutil.CheckFor(t, 15*time.Second, func() error {
		resp, err := gt.try(&kmsg.HeartbeatRequest{Version: 3, Group: "fg", MemberID: j.MemberID, Generation: j.Generation})
		if err != nil {
			return err
		}
		if code := resp.(*kmsg.HeartbeatResponse).ErrorCode; code != 0 {
			return fmt.Errorf("heartbeat after failover: %d", code)
		}
		return nil
	})
	got := gt.fetch("fg", "events", 0, 1, 2)
	for p := range int32(3) {
		if got[p].Offset != int64(100+p) || *got[p].Metadata != "before" {
			t.Fatalf("partition %d after failover: %+v", p, got[p])
		}
	}
	if code := gt.commit("fg", j.MemberID, j.Generation-1, "events", 0, 1, ""); code != kerr.IllegalGeneration.Code {
		t.Fatalf("stale commit after failover: %d", code)
	}
	if code := gt.commit("fg", j.MemberID, j.Generation, "events", 0, 200, "after"); code != 0 {
		t.Fatalf("commit after failover: %d", code)
	}
	// The old controller comes back as a follower: offsets stay.
	c.Restart(old)
	if got := gt.fetch("fg", "events", 0); got[0].Offset != 200 {
		t.Fatalf("after restart: %+v", got[0])
	}
	// The cluster view shows the group and its offsets on every member: the
	// coordinator's live state on the controller, what is in etcd on the others.
	testutil.CheckFor(t, 5*time.Second, func() error {
		for _, m := range c.CPs {
			v, err := m.View()
			if err != nil {
				return err
			}
			want := "etcd"
			if v.IsController {
				want = "coordinator"
			}
			gs := v.Groups
			if v.GroupsSource != want || len(gs) != 1 || gs[0].Group != "fg" || len(gs[0].Offsets) != 3 || gs[0].Offsets[0].Offset != 200 {
				return fmt.Errorf("%s: groups from %q: %+v", m.Name(), v.GroupsSource, gs)
			}
		}
		return nil
	})
}

func TestGroupStaticMembersAndInitialDelay(t *testing.T) {
	c := newGroupCluster(t, controlplane.GroupConfig{InitialRebalanceDelay: 300 * time.Millisecond})
	c.FakeDP(t, 1, 2*time.Second)
	gt := newGroupTester(t, c)
	gt.createTopic("s", 2)

	static := func(instance, memberID string) *kmsg.JoinGroupRequest {
		r := grouptest.JoinRequest("sg", memberID, grouptest.ConsumerMeta("s"))
		r.InstanceID = kmsg.StringPtr(instance)
		r.SessionTimeoutMillis = 5000
		return r
	}
	// Two static members (no MEMBER_ID_REQUIRED step for them) joining together land in
	// one first generation: the initial delay waited for the second. (How the delay
	// extends while members keep arriving is tested on a fake clock in package groups.)
	start := time.Now()
	wa := gt.callAsync(static("i-a", ""))
	b := gt.call(static("i-b", "")).(*kmsg.JoinGroupResponse)
	a := wa().(*kmsg.JoinGroupResponse)
	if a.ErrorCode != 0 || b.ErrorCode != 0 || a.Generation != 1 || b.Generation != 1 {
		t.Fatalf("joins: %d/%d generations %d/%d", a.ErrorCode, b.ErrorCode, a.Generation, b.Generation)
	}
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Fatalf("first rebalance completed after %v, before the initial delay", el)
	}
	leader, follower := a, b
	if b.MemberID == b.LeaderID {
		leader, follower = b, a
	}
	if len(leader.Members) != 2 {
		t.Fatalf("leader sees %d members", len(leader.Members))
	}
	fsync := gt.syncAsync("sg", follower.MemberID, 1, nil)
	if s := gt.sync("sg", leader.MemberID, 1, map[string][]byte{leader.MemberID: grouptest.ConsumerAssignment("s", 0), follower.MemberID: grouptest.ConsumerAssignment("s", 1)}); s.ErrorCode != 0 {
		t.Fatalf("sync: %d", s.ErrorCode)
	}
	if s := fsync(); s.ErrorCode != 0 {
		t.Fatalf("follower sync: %d", s.ErrorCode)
	}
	// The follower restarts: same instance id, no member id. It gets a new member id,
	// the same generation and its assignment, without a rebalance.
	back := gt.call(static(*kmsg.StringPtr(instanceOf(follower, a, "i-a", "i-b")), "")).(*kmsg.JoinGroupResponse)
	if back.ErrorCode != 0 || back.Generation != 1 || back.MemberID == follower.MemberID {
		t.Fatalf("static rejoin: code %d generation %d member %q", back.ErrorCode, back.Generation, back.MemberID)
	}
	if s := gt.sync("sg", back.MemberID, 1, nil); s.ErrorCode != 0 || string(s.MemberAssignment) != string(grouptest.ConsumerAssignment("s", 1)) {
		t.Fatalf("static rejoin sync: %d", s.ErrorCode)
	}
	// The old incarnation is fenced.
	hb := &kmsg.HeartbeatRequest{Version: 3, Group: "sg", MemberID: follower.MemberID, Generation: 1,
		InstanceID: kmsg.StringPtr(instanceOf(follower, a, "i-a", "i-b"))}
	if code := gt.call(hb).(*kmsg.HeartbeatResponse).ErrorCode; code != kerr.FencedInstanceID.Code {
		t.Fatalf("old incarnation heartbeat: %d, want FENCED_INSTANCE_ID", code)
	}
	if code := gt.heartbeat("sg", leader.MemberID, 1); code != 0 {
		t.Fatalf("leader heartbeat: %d (a static rejoin must not rebalance)", code)
	}
	// A static member leaves by instance id: the group rebalances without it.
	lr := &kmsg.LeaveGroupRequest{Version: 3, Group: "sg", Members: []kmsg.LeaveGroupRequestMember{{InstanceID: kmsg.StringPtr(instanceOf(follower, a, "i-a", "i-b"))}}}
	if resp := gt.call(lr).(*kmsg.LeaveGroupResponse); resp.Members[0].ErrorCode != 0 {
		t.Fatalf("static leave: %d", resp.Members[0].ErrorCode)
	}
	if code := gt.heartbeat("sg", leader.MemberID, 1); code != kerr.RebalanceInProgress.Code {
		t.Fatalf("heartbeat after a leave: %d", code)
	}
}

// instanceOf returns the instance id of the member that answered r (a joined as ia).
func instanceOf(r, a *kmsg.JoinGroupResponse, ia, ib string) string {
	if r == a {
		return ia
	}
	return ib
}
