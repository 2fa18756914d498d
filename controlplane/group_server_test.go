package controlplane_test

// Tests of the internal listener's connections (group_server.go): answers that arrive
// after their data-plane connection closed, and the order in which a connection's
// requests are applied.

import (
	"bufio"
	"fmt"
	"net"
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

// rawGroupConn speaks the internal protocol by hand to one control-plane member, the way
// a data-plane node does, so a test controls when requests go out and when the
// connection closes.
type rawGroupConn struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func dialGroupListener(t testing.TB, s *controlplane.Server) *rawGroupConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", s.ListenAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	return &rawGroupConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

// send writes req as internal request id.
func (rc *rawGroupConn) send(id int32, req kmsg.Request) {
	rc.t.Helper()
	_ = rc.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := rc.nc.Write(client.AppendGroupRequest(nil, id, "127.0.0.8", grouptest.EncodeRequest(req, "raw"))); err != nil {
		rc.t.Fatal(err)
	}
}

// read returns the next answer: its id, status and body.
func (rc *rawGroupConn) read() (int32, byte, []byte) {
	rc.t.Helper()
	_ = rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	p, err := client.ReadGroupFrame(rc.br, nil)
	if err != nil {
		rc.t.Fatalf("read answer: %v", err)
	}
	return int32(uint32(p[0])<<24 | uint32(p[1])<<16 | uint32(p[2])<<8 | uint32(p[3])), p[4], p[5:]
}

// groupConnCount is how many data-plane connections member m serves, by its metrics.
func groupConnCount(t testing.TB, c *testcluster.Cluster, m *testcluster.CP) int {
	t.Helper()
	n, ok := c.Metric(t, m, "gregor_cp_group_connections")
	if !ok {
		t.Fatal("no metric gregor_cp_group_connections")
	}
	return int(n)
}

// parkJoin makes a member of group over rc whose JoinGroup then waits for the group's
// initial rebalance delay, and returns once the coordinator holds it (DescribeGroups
// shows the group preparing its rebalance).
func parkJoin(t *testing.T, gt *groupTester, rc *rawGroupConn, group string) {
	t.Helper()
	rc.send(1, grouptest.JoinRequest(group, "", grouptest.ConsumerMeta("t")))
	id, status, body := rc.read()
	first := kmsg.NewPtrJoinGroupResponse()
	first.Version = 5
	if id != 1 || status != client.GroupStatusOK || first.ReadFrom(body) != nil || first.ErrorCode != kerr.MemberIDRequired.Code {
		t.Fatalf("first join: id %d status %d %+v", id, status, first)
	}
	rc.send(2, grouptest.JoinRequest(group, first.MemberID, grouptest.ConsumerMeta("t")))
	dr := kmsg.NewPtrDescribeGroupsRequest()
	dr.Groups = []string{group}
	testutil.CheckFor(t, 10*time.Second, func() error {
		if g := gt.call(dr).(*kmsg.DescribeGroupsResponse).Groups[0]; g.State != "PreparingRebalance" || len(g.Members) != 1 {
			return fmt.Errorf("state %s with %d members", g.State, len(g.Members))
		}
		return nil
	})
}

// TestGroupAnswerAfterConnectionClosed: a JoinGroup parked when its data-plane
// connection closes is answered later — when its rebalance completes, and when the
// controller stops — into the closed connection: the answer is dropped and the member
// serves on (before, the late answer signalled a closed channel and the panic killed
// the control-plane process).
func TestGroupAnswerAfterConnectionClosed(t *testing.T) {
	c := newGroupCluster(t, controlplane.GroupConfig{InitialRebalanceDelay: time.Second})
	gt := newGroupTester(t, c)
	ctl := c.WaitController(t)
	s := ctl.Server()
	base := groupConnCount(t, c, ctl) // the group tester's

	closeParked := func(group string) {
		t.Helper()
		rc := dialGroupListener(t, s)
		parkJoin(t, gt, rc, group)
		_ = rc.nc.Close()
		testutil.CheckFor(t, 10*time.Second, func() error {
			if n := groupConnCount(t, c, ctl); n != base {
				return fmt.Errorf("%d connections, want %d", n, base)
			}
			return nil
		})
	}

	// The rebalance completes after the connection closed.
	closeParked("completes")
	dr := kmsg.NewPtrDescribeGroupsRequest()
	dr.Groups = []string{"completes"}
	testutil.CheckFor(t, 10*time.Second, func() error {
		if g := gt.call(dr).(*kmsg.DescribeGroupsResponse).Groups[0]; g.State != "CompletingRebalance" {
			return fmt.Errorf("state %s", g.State)
		}
		return nil
	})
	if resp := gt.call(kmsg.NewPtrListGroupsRequest()).(*kmsg.ListGroupsResponse); resp.ErrorCode != 0 || len(resp.Groups) != 1 {
		t.Fatalf("list after the late answer: %+v", resp)
	}

	// The controller stops (its runtime answers every parked join "not active") after
	// the connection closed.
	closeParked("stops")
	if err := c.Stop(ctl); err != nil {
		t.Fatal(err)
	}
}

// TestGroupConnRetiredByNotActive: once a connection got a "not active" answer (here a
// parked JoinGroup, at the end of the controller's term), every later request on it is
// answered "not active" — even when this member is the controller again — so none
// overtakes the requests the data-plane node resends to the next coordinator; a new
// connection is served.
func TestGroupConnRetiredByNotActive(t *testing.T) {
	c := newGroupCluster(t, controlplane.GroupConfig{InitialRebalanceDelay: 10 * time.Second})
	gt := newGroupTester(t, c)
	s := c.WaitController(t).Server()
	rc := dialGroupListener(t, s)
	parkJoin(t, gt, rc, "retire")

	// End the term: revoke the controller's session lease.
	ec := gt.cli.Etcd()
	resp, err := ec.Get(testCtx(t), cluster.ControllerPrefix, clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("election key: %v %+v", err, resp)
	}
	if _, err := ec.Revoke(testCtx(t), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	if id, status, _ := rc.read(); id != 2 || status != client.GroupStatusNotActive {
		t.Fatalf("parked join at the end of the term: id %d status %d", id, status)
	}
	// The member is elected again and serves new connections...
	testutil.CheckFor(t, 15*time.Second, func() error {
		_, err := gt.try(kmsg.NewPtrListGroupsRequest())
		return err
	})
	fresh := dialGroupListener(t, s)
	fresh.send(1, kmsg.NewPtrListGroupsRequest())
	if id, status, _ := fresh.read(); id != 1 || status != client.GroupStatusOK {
		t.Fatalf("new connection: id %d status %d", id, status)
	}
	// ...but not the retired one.
	rc.send(3, kmsg.NewPtrListGroupsRequest())
	if id, status, _ := rc.read(); id != 3 || status != client.GroupStatusNotActive {
		t.Fatalf("retired connection: id %d status %d", id, status)
	}
}
