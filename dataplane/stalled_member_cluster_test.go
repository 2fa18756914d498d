package dataplane_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// stalledMemberBound is how soon a node's metadata view must follow a change after the
// member its watch used stopped answering: the watch's stall bound (2 s), a probe of
// the members (1 s), a new watch on another, with room for a loaded machine. gRPC's
// keepalive alone takes some 12 s.
const stalledMemberBound = 6 * time.Second

// TestStalledMemberLeftBehind: a node's links to two of the three control-plane members
// cut (bytes dropped, connections kept open: as a paused member looks to it), the node
// must follow a metadata change made through the third within stalledMemberBound,
// whichever member its watch was on, and keep its registration: its lease renewals and
// its session move to the member that answers. Each member is the one left in turn, so
// the watch is on a cut member at least once.
func TestStalledMemberLeftBehind(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{ControlPlanes: 3, DataPlanes: 1})
	dp := c.DP(1)
	admin := c.ControlPlaneClient(t)
	epoch := c.Metadata(t).Brokers[dp.ID].Epoch
	kc := c.Client(t)
	events := func(ev string) float64 {
		v, _ := c.Metric(t, dp, fmt.Sprintf("gregor_cp_client_events_total{event=%q}", ev))
		return v
	}
	for i, left := range c.CPs {
		var cut []*testcluster.Link
		for _, m := range c.CPs {
			if m != left {
				cut = append(cut, c.ControlPlaneLink(dp, m))
			}
		}
		for _, l := range cut {
			if err := l.Cut(); err != nil {
				t.Fatal(err)
			}
		}
		// Let the watch's and the renewals' members go quiet before the change.
		time.Sleep(500 * time.Millisecond)
		topic := fmt.Sprintf("stalled-%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if _, _, err := admin.CreateTopic(ctx, client.TopicSpec{Name: topic, Partitions: 1, ReplicationFactor: 1}); err != nil {
			t.Fatal(err)
		}
		cancel()
		created := time.Now()
		c.CheckFor(t, 30*time.Second, func() error {
			req := kmsg.NewPtrMetadataRequest()
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(topic)
			req.Topics = append(req.Topics, rt)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			resp, err := req.RequestWith(ctx, kc)
			if err != nil {
				return err
			}
			if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 {
				return fmt.Errorf("%s not in the node's metadata yet: %v", topic, kerr.ErrorForCode(resp.Topics[0].ErrorCode))
			}
			return nil
		})
		took := time.Since(created)
		t.Logf("links to all but %s cut: the node saw %s after %v", left.Name(), topic, took.Round(time.Millisecond))
		if took > stalledMemberBound {
			t.Errorf("the node saw %s %v after it was created with its links to all but %s cut; want within %v",
				topic, took.Round(time.Millisecond), left.Name(), stalledMemberBound)
		}
		for _, l := range cut {
			if err := l.Heal(); err != nil {
				t.Fatal(err)
			}
		}
		// One fault at a time: the next cut comes once the node has let every member
		// it left out back in. Cut at once, the member it moved to goes quiet right as
		// the others come back, two stalls in a row which together can outlast the lease.
		c.CheckFor(t, 30*time.Second, func() error {
			if out, back := events(client.EventEndpointExcluded), events(client.EventEndpointRestored); back < out {
				return fmt.Errorf("%v of the %v members left out are back", back, out)
			}
			return nil
		})
	}
	if b, ok := c.Metadata(t).Brokers[dp.ID]; !ok || b.Epoch != epoch {
		t.Errorf("node registration %+v (registered %v), want epoch %d kept throughout", b, ok, epoch)
	}
	select {
	case <-dp.Node().Done():
		t.Fatalf("the node stopped: %v", dp.Node().Err())
	default:
	}
	for _, ev := range []string{client.EventWatchStalled, client.EventKeepAliveTimeout, client.EventSessionStalled, client.EventEndpointExcluded} {
		t.Logf("%s: %v", ev, events(ev))
	}
	if events(client.EventEndpointExcluded) == 0 {
		t.Error("no member was taken out of the node's endpoints")
	}
}
