package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// sessionHolder is the control-plane member holding node d's session (each node has
// one), or nil while none does.
func sessionHolder(t *testing.T, c *testcluster.Cluster) *testcluster.CP {
	t.Helper()
	for _, m := range c.RunningCPs() {
		if v, _ := c.Metric(t, m, "gregor_cp_sessions_open"); v == 1 {
			return m
		}
	}
	return nil
}

// TestSessionLeavesPausedMember: a data-plane node whose session is held by a
// control-plane member that stops answering (SIGSTOP) opens one on another member
// within its session grace, so it keeps its registration and keeps taking writes — a
// stalled member can neither revoke the session nor vouch for it.
func TestSessionLeavesPausedMember(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{ControlPlanes: 3, DataPlanes: 1, Processes: true})
	dp := c.DP(1)
	var held *testcluster.CP
	c.CheckFor(t, 20*time.Second, func() error {
		if held = sessionHolder(t, c); held == nil {
			return fmt.Errorf("no member holds the session")
		}
		return nil
	})
	c.CreateTopic(t, "s", 1, 1)
	cl := c.Client(t, kgo.RecordRetries(20), kgo.DefaultProduceTopic("s"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("before")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	c.Pause(held)
	defer c.Resume(held)
	c.CheckFor(t, 20*time.Second, func() error {
		for _, m := range c.RunningCPs() {
			if m == held {
				continue
			}
			if v, _ := c.Metric(t, m, "gregor_cp_sessions_open"); v == 1 {
				return nil
			}
		}
		return fmt.Errorf("the session is still on the paused %s", held.Name())
	})
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("during")}).FirstErr(); err != nil {
		t.Fatalf("produce with the session's first member paused: %v", err)
	}
	if !dp.Running() {
		t.Fatal("the node stopped")
	}
	c.Resume(held)
	// Back, the member sees the old stream broken and keeps the registration: the
	// node opened a session elsewhere.
	c.CheckFor(t, 20*time.Second, func() error {
		kept, _ := c.Metric(t, held, "gregor_cp_sessions_kept_total")
		revoked, _ := c.Metric(t, held, "gregor_cp_session_revocations_total")
		if revoked > 0 {
			return fmt.Errorf("the resumed member revoked the registration")
		}
		if kept == 0 {
			return fmt.Errorf("the resumed member has not judged the old session yet")
		}
		return nil
	})
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("after")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if !dp.Running() {
		t.Fatal("the node stopped")
	}
}
