package main

// The group coordinator as a process (issue 5): Kafka group requests sent the way a
// data-plane node forwards them (client.ForwardGroupRequest to the active controller's
// internal listener, which it finds in etcd), against real gregor-cp processes. The
// coordinator's state machine is tested in-process in controlplane; here: the flags and
// their environment variables reach it, and committed offsets survive SIGKILLs of the
// active controller without ever going backwards (RELIABILITY R13).

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// groupCall sends one Kafka group request through the internal listener of the active
// coordinator and decodes the answer.
func groupCall[R kmsg.Response](ctx context.Context, cli *client.Client, req kmsg.Request) (R, error) {
	var zero R
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("cp-groups-test"))
	frame := f.AppendRequest(nil, req, 1)[4:] // the Kafka request without its size
	body, err := cli.ForwardGroupRequest(ctx, "127.0.0.1", frame)
	if err != nil {
		return zero, err
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	if err := resp.ReadFrom(body); err != nil {
		return zero, fmt.Errorf("decode %s v%d answer: %w", kmsg.NameForKey(req.Key()), req.GetVersion(), err)
	}
	return resp.(R), nil
}

// consumerJoin is a JoinGroup v5 of a consumer subscribed to topic.
func consumerJoin(group, memberID, topic string, session time.Duration) *kmsg.JoinGroupRequest {
	req := kmsg.NewPtrJoinGroupRequest()
	req.Version = 5
	req.Group, req.MemberID, req.ProtocolType = group, memberID, "consumer"
	req.SessionTimeoutMillis = int32(session.Milliseconds())
	req.RebalanceTimeoutMillis = 10_000
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Topics = []string{topic}
	p := kmsg.NewJoinGroupRequestProtocol()
	p.Name, p.Metadata = "range", meta.AppendTo(nil)
	req.Protocols = append(req.Protocols, p)
	return req
}

// groupClient returns the harness's control-plane client of c, with a registered
// data-plane node (topics need one to be placed) and the given topic.
func groupClient(t *testing.T, c *testcluster.Cluster, topic string, partitions int32) *client.Client {
	t.Helper()
	cli := c.ControlPlaneClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.Register(ctx, cluster.Broker{ID: 1, Host: "127.0.0.1", Port: 9092}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.CreateTopic(ctx, client.TopicSpec{Name: topic, Partitions: partitions, ReplicationFactor: 1}); err != nil {
		t.Fatal(err)
	}
	return cli
}

// TestGroupFlagsAndEnv: the group flags, set through their environment variables, bound
// what members may ask for — session timeouts outside [min, max] are refused with
// INVALID_SESSION_TIMEOUT, a third member of a group of at most two with
// GROUP_MAX_SIZE_REACHED — and a new group forms at once (no initial delay).
func TestGroupFlagsAndEnv(t *testing.T) {
	out, err := exec.Command(cpBinary(t), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	for _, f := range []string{"group-initial-rebalance-delay", "group-min-session-timeout", "group-max-session-timeout", "group-max-size", "offsets-retention"} {
		if want := fmt.Sprintf("--%s [%s]", f, envName(f)); !strings.Contains(string(out), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	t.Setenv("GREGOR_CP_GROUP_INITIAL_REBALANCE_DELAY", "0s")
	t.Setenv("GREGOR_CP_GROUP_MIN_SESSION_TIMEOUT", "2s")
	t.Setenv("GREGOR_CP_GROUP_MAX_SESSION_TIMEOUT", "5s")
	t.Setenv("GREGOR_CP_GROUP_MAX_SIZE", "2")
	c := startMembers(t, 1)
	cli := groupClient(t, c, "flags", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, session := range []time.Duration{time.Second, 6 * time.Second} {
		j, err := groupCall[*kmsg.JoinGroupResponse](ctx, cli, consumerJoin("g", "", "flags", session))
		if err != nil {
			t.Fatal(err)
		}
		if j.ErrorCode != kerr.InvalidSessionTimeout.Code {
			t.Errorf("join with session timeout %v (bounds 2s..5s): error %d, want INVALID_SESSION_TIMEOUT", session, j.ErrorCode)
		}
	}
	// join runs the two-step join (MEMBER_ID_REQUIRED, then with the id) in the
	// background: the second step waits for the rebalance.
	join := func() (chan *kmsg.JoinGroupResponse, error) {
		first, err := groupCall[*kmsg.JoinGroupResponse](ctx, cli, consumerJoin("g", "", "flags", 3*time.Second))
		if err != nil {
			return nil, err
		}
		ch := make(chan *kmsg.JoinGroupResponse, 1)
		if first.ErrorCode != kerr.MemberIDRequired.Code {
			ch <- first
			return ch, nil
		}
		go func() {
			j, err := groupCall[*kmsg.JoinGroupResponse](ctx, cli, consumerJoin("g", first.MemberID, "flags", 3*time.Second))
			if err != nil {
				j = &kmsg.JoinGroupResponse{ErrorCode: kerr.UnknownServerError.Code}
				t.Errorf("join: %v", err)
			}
			ch <- j
		}()
		return ch, nil
	}
	start := time.Now()
	ch1, err := join()
	if err != nil {
		t.Fatal(err)
	}
	var a *kmsg.JoinGroupResponse
	select {
	case a = <-ch1:
	case <-time.After(10 * time.Second):
		t.Fatal("first member: no JoinGroup answer within 10s")
	}
	if a.ErrorCode != 0 || a.Generation != 1 || a.LeaderID != a.MemberID {
		t.Fatalf("first member: %+v", a)
	}
	t.Logf("a new group's first generation formed %v after the first join (initial delay 0)", time.Since(start).Round(10*time.Microsecond))
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Version, sync.Group, sync.Generation, sync.MemberID = 3, "g", a.Generation, a.MemberID
	if s, err := groupCall[*kmsg.SyncGroupResponse](ctx, cli, sync); err != nil || s.ErrorCode != 0 {
		t.Fatalf("sync: %v %+v", err, s)
	}
	// The second member's join starts a rebalance; the first rejoins on its heartbeat's
	// REBALANCE_IN_PROGRESS.
	ch2, err := join()
	if err != nil {
		t.Fatal(err)
	}
	hb := kmsg.NewPtrHeartbeatRequest()
	hb.Version, hb.Group, hb.Generation, hb.MemberID = 3, "g", a.Generation, a.MemberID
	testutil.CheckFor(t, 10*time.Second, func() error {
		h, err := groupCall[*kmsg.HeartbeatResponse](ctx, cli, hb)
		if err != nil {
			return err
		}
		if h.ErrorCode != kerr.RebalanceInProgress.Code {
			return fmt.Errorf("heartbeat: error %d, want REBALANCE_IN_PROGRESS", h.ErrorCode)
		}
		return nil
	})
	ch1b := make(chan *kmsg.JoinGroupResponse, 1)
	go func() {
		j, err := groupCall[*kmsg.JoinGroupResponse](ctx, cli, consumerJoin("g", a.MemberID, "flags", 3*time.Second))
		if err != nil {
			t.Errorf("rejoin: %v", err)
			j = &kmsg.JoinGroupResponse{ErrorCode: kerr.UnknownServerError.Code}
		}
		ch1b <- j
	}()
	for i, ch := range []chan *kmsg.JoinGroupResponse{ch1b, ch2} {
		select {
		case j := <-ch:
			if j.ErrorCode != 0 || j.Generation != 2 {
				t.Fatalf("member %d in the second generation: error %d, generation %d", i+1, j.ErrorCode, j.Generation)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("member %d: no JoinGroup answer within 10s", i+1)
		}
	}
	// A third member: the group is full (at either step of its join).
	ch3, err := join()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case j := <-ch3:
		if j.ErrorCode != kerr.GroupMaxSizeReached.Code {
			t.Fatalf("third member of a group of at most 2: error %d, want GROUP_MAX_SIZE_REACHED", j.ErrorCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("third member: no JoinGroup answer within 10s")
	}
}

// TestGroupOffsetsNeverGoBackwards (RELIABILITY R13): committers commit rising offsets
// while the active controller — the group coordinator — is SIGKILLed twice (restarted
// in between), then paused with SIGSTOP until the next one has taken over. Every commit that was acknowledged is seen by every later OffsetFetch,
// fetched offsets never decrease, and after the run each partition holds the last
// acknowledged offset or a later attempted one (a commit whose answer was lost may
// have been written).
func TestGroupOffsetsNeverGoBackwards(t *testing.T) {
	const (
		groups     = 4
		partitions = 8
		topic      = "r13"
	)
	c := startMembers(t, 3)
	cli := groupClient(t, c, topic, partitions)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	type committer struct {
		group     string
		acked     atomic.Int64 // the last offset acknowledged for every partition
		attempted atomic.Int64 // the last offset sent
		errs      sync.Map     // error → count
	}
	cs := make([]*committer, groups)
	for i := range cs {
		cs[i] = &committer{group: fmt.Sprintf("r13-%d", i)}
		cs[i].acked.Store(-1)
	}
	commit := func(c *committer, offset int64) error {
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Version, req.Group, req.Generation = 7, c.group, -1 // outside group management
		rt := kmsg.NewOffsetCommitRequestTopic()
		rt.Topic = topic
		for p := range int32(partitions) {
			rp := kmsg.NewOffsetCommitRequestTopicPartition()
			rp.Partition, rp.Offset = p, offset
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		resp, err := groupCall[*kmsg.OffsetCommitResponse](rctx, cli, req)
		if err != nil {
			return err
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 {
					return kerr.ErrorForCode(p.ErrorCode)
				}
			}
		}
		return nil
	}
	fetch := func(c *committer) (map[int32]int64, error) {
		req := kmsg.NewPtrOffsetFetchRequest()
		req.Version, req.Group = 5, c.group
		rt := kmsg.NewOffsetFetchRequestTopic()
		rt.Topic = topic
		for p := range int32(partitions) {
			rt.Partitions = append(rt.Partitions, p)
		}
		req.Topics = append(req.Topics, rt)
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		resp, err := groupCall[*kmsg.OffsetFetchResponse](rctx, cli, req)
		if err != nil {
			return nil, err
		}
		if resp.ErrorCode != 0 {
			return nil, kerr.ErrorForCode(resp.ErrorCode)
		}
		out := map[int32]int64{}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 {
					return nil, kerr.ErrorForCode(p.ErrorCode)
				}
				out[p.Partition] = p.Offset
			}
		}
		return out, nil
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() { // the committer
			for offset := int64(0); ; offset++ {
				select {
				case <-stop:
					return
				default:
				}
				c.attempted.Store(offset)
				if err := commit(c, offset); err != nil {
					v, _ := c.errs.LoadOrStore(err.Error(), new(atomic.Int64))
					v.(*atomic.Int64).Add(1)
					time.Sleep(20 * time.Millisecond)
					continue
				}
				c.acked.Store(offset)
			}
		})
		wg.Go(func() { // its reader
			last := map[int32]int64{} // -1: nothing committed yet
			for p := range int32(partitions) {
				last[p] = -1
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				floor := c.acked.Load() // acknowledged before this fetch was sent
				got, err := fetch(c)
				if err != nil {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				for p := range int32(partitions) {
					o, ok := got[p]
					switch {
					case !ok:
						t.Errorf("%s-%d: partition missing from OffsetFetch", c.group, p)
					case o < floor:
						t.Errorf("%s-%d: fetched %d after offset %d was acknowledged", c.group, p, o, floor)
					case o < last[p]:
						t.Errorf("%s-%d: fetched %d after %d: the committed offset went backwards", c.group, p, o, last[p])
					}
					last[p] = o
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	// progress waits until every committer has had more commits acknowledged.
	progress := func(what string) {
		t.Helper()
		start := time.Now()
		base := make([]int64, len(cs))
		for i, c := range cs {
			base[i] = c.acked.Load()
		}
		testutil.CheckFor(t, 30*time.Second, func() error {
			for i, c := range cs {
				if c.acked.Load() < base[i]+5 {
					return fmt.Errorf("%s: %d commits acknowledged since %s", c.group, c.acked.Load()-base[i], what)
				}
			}
			return nil
		})
		t.Logf("commits acknowledged again %v after %s", time.Since(start).Round(time.Millisecond), what)
	}
	progress("the start")
	for round, fault := range []syscall.Signal{syscall.SIGKILL, syscall.SIGKILL, syscall.SIGSTOP} {
		target := c.WaitController(t)
		what := fmt.Sprintf("%v (round %d) of the active controller (%s)", fault, round+1, target.Name())
		if fault == syscall.SIGSTOP {
			// A paused coordinator answers nothing and closes nothing: the data
			// plane must leave it for the next one all the same (it learns of the
			// next from its watch of the published coordinator, which takes 10-15 s
			// when its etcd stream was on the paused member: gRPC's keepalive, floored
			// at 10 s, is what notices a silent server).
			c.Pause(target)
			progress(what)
			c.Resume(target)
		} else {
			c.Kill(target)
			progress(what)
			c.Restart(target)
		}
		testutil.CheckFor(t, 30*time.Second, target.Ready)
		c.WaitController(t)
	}
	close(stop)
	wg.Wait()
	for _, c := range cs {
		got, err := fetch(c)
		if err != nil {
			t.Fatal(err)
		}
		acked, attempted := c.acked.Load(), c.attempted.Load()
		for p := range int32(partitions) {
			if o := got[p]; o < acked || o > attempted {
				t.Errorf("%s-%d: committed %d after the run; last acknowledged %d, last attempted %d", c.group, p, o, acked, attempted)
			}
		}
		var errs []string
		c.errs.Range(func(k, v any) bool {
			errs = append(errs, fmt.Sprintf("%s ×%d", k, v.(*atomic.Int64).Load()))
			return true
		})
		t.Logf("%s: %d commits acknowledged; refused or unanswered during failovers: %s", c.group, acked+1, strings.Join(errs, ", "))
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("the test ran out of time")
	}
}
