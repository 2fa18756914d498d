package chaos

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/chaos/checker"
	"github.com/gregor-streaming/gregor/chaos/history"
	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// R10: control-plane faults under load. The etcd leader killed or paused: the other
// two members keep a quorum, so the data plane must go on — no node may lose its
// registration, and producing must not stall for as long as gRPC's keepalive takes to
// leave a member that answers nothing (some 12 s; the control-plane client leaves it
// within a few seconds). A data-plane node cut off from every member: it must fence
// itself before its partitions can have new leaders, which they get; healed, it
// rejoins.

// cpFaultUnavailableMax bounds the longest time any partition went without an
// acknowledged send in the R10 runs with an etcd member down: the watch's and the
// session's stall bounds (2 s each) and a member probe (1 s), with room for a loaded
// machine; well below the 12 s gRPC's keepalive alone would take.
const cpFaultUnavailableMax = 8 * time.Second

// registrations are the data-plane nodes' registration epochs by the control plane.
func (r *run) registrations() map[int32]int64 {
	eps := map[int32]int64{}
	for id, b := range r.c.Metadata(r.t).Brokers {
		eps[id] = b.Epoch
	}
	return eps
}

// expectRegistrations fails the test if a data-plane node's registration is not the one
// in before: it was lost (the node stopped, or registered again).
func (r *run) expectRegistrations(before map[int32]int64) {
	r.t.Helper()
	now := r.registrations()
	for _, d := range r.c.DPs {
		if now[d.ID] != before[d.ID] {
			r.t.Errorf("%s: registration epoch %d, was %d: it lost its registration to a control-plane fault the quorum survived",
				d.Name(), now[d.ID], before[d.ID])
		}
	}
	for _, f := range r.rec.Faults() {
		if f.Kind == "restart" && f.Detail == "it had stopped" {
			r.t.Errorf("%s stopped during the run", f.Target)
		}
	}
}

// checkLeaderInISR fails the test if a recorded partition state has a leader outside
// its ISR (the checker judges epochs and unclean elections).
func checkLeaderInISR(t *testing.T, h *history.History) {
	t.Helper()
	for _, st := range h.States {
		if st.Leader >= 0 && !slices.Contains(st.ISR, st.Leader) {
			t.Errorf("%s-%d at revision %d: leader %d not in its ISR %v", st.Topic, st.Partition, st.Revision, st.Leader, st.ISR)
		}
	}
}

// checkAvailability fails the test if a partition went without an acknowledged send
// for longer than max while sends were attempted.
func checkAvailability(t *testing.T, h *history.History, max time.Duration) {
	t.Helper()
	rep := checker.Check(h)
	t.Logf("longest unavailability %v (%s)", rep.Stats.MaxUnavailable.Round(time.Millisecond), rep.Stats.MaxUnavailableAt)
	for _, a := range rep.Stats.Availability {
		if a.Longest > max {
			t.Errorf("%s-%d: no send acknowledged for %v from %s (bound %v)", a.Topic, a.Partition,
				a.Longest.Round(time.Millisecond), a.From.Format(time.StampMilli), max)
		}
	}
}

// TestR10aEtcdLeaderKilled: the member leading etcd SIGKILLed under load, restarted
// once the load went on without it.
func TestR10aEtcdLeaderKilled(t *testing.T) {
	r := newRun(t, "R10a", runOptions{ttl: 6 * time.Second})
	r.waitProgress(mainTopic, -1, 300)
	before := r.registrations()
	m := r.etcdLeader()
	killed := time.Now()
	r.kill(m, "etcd leader")
	next := r.etcdLeader()
	r.fault("observed", next.Name(), "leads etcd")
	r.waitProgress(mainTopic, -1, 200)
	t.Logf("200 sends acknowledged %v after the kill", time.Since(killed).Round(time.Millisecond))
	r.restart(m)
	r.waitHealthy(60 * time.Second)
	r.waitProgress(mainTopic, -1, 100)
	r.expectRegistrations(before)
	h := r.finish()
	checkLeaderInISR(t, h)
	checkAvailability(t, h, cpFaultUnavailableMax)
}

// pausedFor is how long R10b holds the etcd leader paused, and leaderPausedTTL the
// nodes' lease then.
const (
	pausedFor       = 4 * time.Second
	leaderPausedTTL = 10 * time.Second
)

// TestR10bEtcdLeaderPaused: the member leading etcd SIGSTOPped past its election
// timeout (the others elect a leader and the load goes on), then continued. A paused
// member holds its connections open and answers nothing, which only the control-plane
// client's own bounds notice.
//
// The pause stays well below the nodes' lease TTL. A leader paused longer may, as it
// wakes and before it learns of the new term, find every lease it holds expired by its
// clock and revoke them (etcd's lessor skips its leadership check when the member ticked
// recently, which a resumed member has): in one run paused for 5.8 s with 6 s leases,
// every node lost its registration on the resume and stopped. The lessor counts a
// lease's expiry from the last renewal it saw, up to a keepalive interval (a third of
// the TTL, more under load) before the pause: with 6 s leases even the 4 s pause had
// every lease revoked once, in a make test under load. 10 s leases leave the resumed
// member about 2.5 s to learn of the new term.
func TestR10bEtcdLeaderPaused(t *testing.T) {
	r := newRun(t, "R10b", runOptions{ttl: leaderPausedTTL})
	r.waitProgress(mainTopic, -1, 300)
	before := r.registrations()
	m := r.etcdLeader()
	paused := time.Now()
	r.pause(m, "etcd leader")
	// A metadata change made through the others at once, while the nodes' watches may
	// still be on the paused member: every node's view must follow it.
	r.createTopic2("r10b")
	next := r.etcdLeader()
	r.fault("observed", next.Name(), "leads etcd")
	r.waitProgress(mainTopic, -1, 100)
	t.Logf("100 sends acknowledged %v after the pause", time.Since(paused).Round(time.Millisecond))
	// The pause is held for pausedFor — past the watch's and the session's stall bounds
	// (2 s), so that clients on the member must have left it — under load, then
	// continued well within the nodes' lease: an etcd leader resumed after a pause near
	// it may revoke leases as it wakes (TestR10bEtcdLeaderPaused's doc).
	time.Sleep(time.Until(paused.Add(pausedFor)))
	r.waitProgress(mainTopic, -1, 100)
	r.resume(m)
	r.waitHealthy(60 * time.Second)
	r.waitProgress(mainTopic, -1, 100)
	r.expectRegistrations(before)
	h := r.finish()
	checkLeaderInISR(t, h)
	checkAvailability(t, h, cpFaultUnavailableMax)
}

// createTopic2 creates a one-partition topic through the control plane and waits until
// every running data-plane node's metadata has it, failing the test if one takes
// longer than the control-plane client's bound on a stalled member's notice.
func (r *run) createTopic2(topic string) {
	r.t.Helper()
	start := time.Now()
	// Through a control-plane client of the running members alone: the change is made
	// at once, while the nodes' clients may still be on the paused member.
	var eps []string
	for _, m := range r.c.RunningCPs() {
		eps = append(eps, m.ClientAddr())
	}
	cl, err := client.New(client.Config{Endpoints: eps, Logger: testutil.Quiet()})
	if err != nil {
		r.t.Fatal(err)
	}
	defer cl.Close()
	r.c.CheckFor(r.t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _, err := cl.CreateTopic(ctx, client.TopicSpec{Name: topic, Partitions: 1, ReplicationFactor: 3})
		if code, ok := client.KafkaCode(err); ok && code == kerr.TopicAlreadyExists.Code {
			return nil // an attempt that timed out had created it
		}
		return err
	})
	created := time.Now()
	r.fault("observed", topic, fmt.Sprintf("created, with a leader, in %v", created.Sub(start).Round(time.Millisecond)))
	kc := r.c.Client(r.t)
	for _, d := range r.c.DPs {
		if !d.Running() {
			continue
		}
		r.c.CheckFor(r.t, 30*time.Second, func() error {
			req := kmsg.NewPtrMetadataRequest()
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(topic)
			req.Topics = append(req.Topics, rt)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			resp, err := kc.Broker(int(d.ID)).Request(ctx, req)
			if err != nil {
				return fmt.Errorf("%s: %w", d.Name(), err)
			}
			mr := resp.(*kmsg.MetadataResponse)
			if len(mr.Topics) != 1 || mr.Topics[0].ErrorCode != 0 {
				return fmt.Errorf("%s has no topic %s yet", d.Name(), topic)
			}
			return nil
		})
	}
	took := time.Since(created)
	r.fault("observed", "dps", fmt.Sprintf("every node has topic %s, %v after its creation", topic, took.Round(time.Millisecond)))
	if took > nodeViewBound {
		r.t.Errorf("the nodes' views had topic %s only %v after its creation (bound %v)", topic, took.Round(time.Millisecond), nodeViewBound)
	}
}

// nodeViewBound is how soon every node's metadata view must show a change made while
// a member is paused.
const nodeViewBound = 6 * time.Second

// TestR10cNodeCutFromControlPlane: a data-plane node that leads partitions cut off from
// every control-plane member, not from clients or the other nodes. It cannot renew its
// lease nor heartbeat its session, so it must stop acknowledging as a leader once its
// session's grace (and at the latest its lease) may have run out, before the
// controller, seeing the lease expire, gives its partitions new leaders. Healed, it
// rejoins (restarted if it stopped on losing its registration).
func TestR10cNodeCutFromControlPlane(t *testing.T) {
	ttl := 6 * time.Second
	r := newRun(t, "R10c", runOptions{ttl: ttl})
	r.waitProgress(mainTopic, -1, 300)
	d := r.leaderOf(mainTopic, 0)
	led := r.partitionsLedBy(mainTopic, d)
	epoch := r.registrations()[d.ID]
	var links []*testcluster.Link
	for _, m := range r.c.CPs {
		links = append(links, r.c.ControlPlaneLink(d, m))
	}
	cutAt := time.Now()
	for _, l := range links {
		r.cut(l, fmt.Sprintf("%s (leads %s-%v) from the control plane", d.Name(), mainTopic, led))
	}
	for _, p := range led {
		r.waitNewLeader(mainTopic, p, d)
	}
	r.c.CheckFor(t, 30*time.Second, func() error {
		if b, ok := r.c.Metadata(t).Brokers[d.ID]; ok && b.Epoch == epoch {
			return fmt.Errorf("%s still registered (epoch %d)", d.Name(), b.Epoch)
		}
		return nil
	})
	r.fault("observed", d.Name(), "registration gone")
	// It may have stopped already, on losing its registration: then no count.
	if text, err := d.MetricsText(); err == nil {
		for _, line := range strings.Split(text, "\n") {
			if v, ok := strings.CutPrefix(line, "gregor_produce_fenced_total "); ok {
				t.Logf("%s refused %s produces as fenced", d.Name(), v)
			}
		}
	}
	r.waitProgress(mainTopic, -1, 100)
	for _, l := range links {
		r.heal(l)
	}
	// It rejoins: registered again, with a new epoch.
	r.waitHealthy(90 * time.Second)
	r.c.CheckFor(t, 30*time.Second, func() error {
		if b, ok := r.c.Metadata(t).Brokers[d.ID]; !ok || b.Epoch <= epoch {
			return fmt.Errorf("%s not registered again (%+v)", d.Name(), b)
		}
		return nil
	})
	r.fault("observed", d.Name(), "registered again")
	r.waitProgress(mainTopic, -1, 100)
	h := r.finish()
	checkLeaderInISR(t, h)

	// Fencing. From the cut, d's session heartbeats go unanswered, so its SafeUntil is at
	// most the cut plus the session's grace (and at most the cut plus its lease's TTL);
	// past it d acknowledges no produce as leader — a produce it took before may still
	// be answered once its followers, which still fetch from it, have it, hence the
	// margin. Until a state of the partition names another leader, d is the only node
	// that can acknowledge a send to it (the state's recorded time is when the harness
	// saw it, a little after it was written: slack). So an acknowledged send to a
	// partition d led, ending in between, was acknowledged by d unfenced.
	const margin, slack = time.Second, 250 * time.Millisecond
	fence := cutAt.Add(min(ttl, controlplane.DefaultSessionGrace) + margin)
	for _, p := range led {
		var elected time.Time
		for _, st := range h.States {
			if st.Topic == mainTopic && st.Partition == p && st.Time.After(cutAt) && st.Leader >= 0 && st.Leader != d.ID {
				elected = st.Time
				break
			}
		}
		if elected.IsZero() {
			t.Errorf("%s-%d: no state after the cut names a leader other than %s", mainTopic, p, d.Name())
			continue
		}
		outcomes := map[history.Outcome]int{}
		for _, s := range h.Sends {
			if s.Topic != mainTopic || s.Partition != p || !s.End.After(fence) || !s.End.Before(elected.Add(-slack)) {
				continue
			}
			outcomes[s.Outcome]++
			if s.Outcome == history.OK {
				t.Errorf("%s-%d: send %q (%s) acknowledged at offset %d at %s, %v after %s was cut off, before another leader (%v after)",
					mainTopic, p, s.Value, s.Producer, s.Offset, s.End.Format(time.StampMilli), s.End.Sub(cutAt).Round(time.Millisecond),
					d.Name(), elected.Sub(cutAt).Round(time.Millisecond))
			}
		}
		t.Logf("%s-%d: new leader seen %v after the cut; sends ending between the fence (%v) and then: %v",
			mainTopic, p, elected.Sub(cutAt).Round(time.Millisecond), fence.Sub(cutAt), outcomes)
	}
}
