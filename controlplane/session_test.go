package controlplane_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// sessionTTL is the registrations' lease in the session tests: far longer than any wait
// below, so that a registration gone within them was revoked, not expired.
const sessionTTL = 30 * time.Second

// sumMetric is metric name summed over the running control-plane members.
func sumMetric(t testing.TB, c *testcluster.Cluster, name string) float64 {
	t.Helper()
	var sum float64
	for _, m := range c.RunningCPs() {
		v, _ := c.Metric(t, m, name)
		sum += v
	}
	return sum
}

// registered reports whether node id is registered, and at which epoch.
func registered(ctx context.Context, t testing.TB, c *testcluster.Cluster, id int32) (int64, bool) {
	t.Helper()
	resp, err := c.ControlPlaneClient(t).Etcd().Get(ctx, cluster.BrokerKey(id))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return 0, false
	}
	return resp.Kvs[0].ModRevision, true
}

// TestSessionCrashRevokesRegistration: a node whose process dies (here its client
// closes, dropping its connections as a killed process's kernel does) loses its
// registration within the session grace, not after its lease: the member holding its
// session revokes the lease.
func TestSessionCrashRevokesRegistration(t *testing.T) {
	c := newControlPlane(t, 3)
	c.WaitController(t)
	ctx := testCtx(t)
	fake := c.FakeDP(t, 1, sessionTTL)
	c.CheckFor(t, 10*time.Second, func() error {
		if n := sumMetric(t, c, "gregor_cp_sessions_open"); n != 1 {
			return fmt.Errorf("%v sessions open, want 1", n)
		}
		return nil
	})
	start := time.Now()
	fake.Crash()
	c.CheckFor(t, sessionTTL/3, func() error {
		if _, ok := registered(ctx, t, c, 1); ok {
			return fmt.Errorf("node 1 still registered %v after its crash", time.Since(start))
		}
		return nil
	})
	t.Logf("registration revoked %v after the crash (lease %v)", time.Since(start).Round(time.Millisecond), sessionTTL)
	// The member counts the revocation once etcd has answered it, which may be after the
	// key is seen gone here.
	c.CheckFor(t, 10*time.Second, func() error {
		if n := sumMetric(t, c, "gregor_cp_session_revocations_total"); n != 1 {
			return fmt.Errorf("session revocations: %v, want 1", n)
		}
		return nil
	})
}

// TestSessionMemberStopKeepsRegistration: a member stopping ends the sessions it holds
// without revoking them, and the node opens one on another member; a graceful Close
// then revokes the registration itself.
func TestSessionMemberStopKeepsRegistration(t *testing.T) {
	c := newControlPlane(t, 3)
	c.WaitController(t)
	ctx := testCtx(t)
	fake := c.FakeDP(t, 1, sessionTTL)
	epoch := fake.Registration.Broker().Epoch
	var holder *testcluster.CP
	c.CheckFor(t, 10*time.Second, func() error {
		for _, m := range c.CPs {
			if v, _ := c.Metric(t, m, "gregor_cp_sessions_open"); v == 1 {
				holder = m
				return nil
			}
		}
		return fmt.Errorf("no member holds the session")
	})
	if err := c.Stop(holder); err != nil {
		t.Fatal(err)
	}
	c.CheckFor(t, 10*time.Second, func() error {
		if n := sumMetric(t, c, "gregor_cp_sessions_open"); n != 1 {
			return fmt.Errorf("%v sessions open on the other members, want 1", n)
		}
		return nil
	})
	if got, ok := registered(ctx, t, c, 1); !ok || got != epoch {
		t.Fatalf("registration after its session's member stopped: epoch %d (registered %v), want %d", got, ok, epoch)
	}
	if n := sumMetric(t, c, "gregor_cp_session_revocations_total"); n != 0 {
		t.Errorf("session revocations: %v, want 0", n)
	}
	if err := fake.Registration.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := registered(ctx, t, c, 1); ok {
		t.Fatal("still registered after Close")
	}
}

// TestSessionResetKeepsRegistration: a session whose connection is reset while the node
// lives (a cut healed: the harness resets the connections that crossed it) is opened
// again within the grace, and the member that saw it break keeps the registration.
func TestSessionResetKeepsRegistration(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{ControlPlanes: 1, DataPlanes: 1, RegistrationTTL: sessionTTL,
		ControlPlane: func(cfg *controlplane.Config) { cfg.SessionGrace = 3 * time.Second }})
	ctx := testCtx(t)
	dp, cp := c.DP(1), c.CPs[0]
	c.CheckFor(t, 10*time.Second, func() error {
		if n := sumMetric(t, c, "gregor_cp_sessions_open"); n != 1 {
			return fmt.Errorf("%v sessions open, want 1", n)
		}
		return nil
	})
	epoch := dp.Node().Epoch()
	link := c.ControlPlaneLink(dp, cp)
	link.Cut()
	link.Heal()
	c.CheckFor(t, 20*time.Second, func() error {
		kept := sumMetric(t, c, "gregor_cp_sessions_kept_total")
		revoked := sumMetric(t, c, "gregor_cp_session_revocations_total")
		if kept+revoked == 0 {
			return fmt.Errorf("the broken session is not judged yet")
		}
		return nil
	})
	if n := sumMetric(t, c, "gregor_cp_session_revocations_total"); n != 0 {
		t.Fatalf("session revocations: %v, want 0", n)
	}
	if got, ok := registered(ctx, t, c, 1); !ok || got != epoch {
		t.Fatalf("registration after a reset: epoch %d (registered %v), want %d", got, ok, epoch)
	}
	if !dp.Running() {
		t.Fatal("node stopped")
	}
}
