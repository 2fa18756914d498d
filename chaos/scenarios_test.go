package chaos

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/chaos/history"
	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// The scenarios: short runs of one fault each (TestChaos mixes them for longer). Each
// ends with run.finish: everything healed and restarted, consumers drained, replicas
// read and the history judged.

// TestR1NoFault: the workload on a healthy cluster, acks=1 beside acks=all, for
// CHAOS_R1_TIME (a Go duration; make chaos-scenarios sets 60s) or, in make test, until
// 1,500 acks=all and 500 acks=1 writes are acknowledged.
func TestR1NoFault(t *testing.T) {
	var d time.Duration
	if s := os.Getenv("CHAOS_R1_TIME"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			t.Fatalf("CHAOS_R1_TIME=%q: %v", s, err)
		}
	}
	r := newRun(t, "R1", runOptions{acks1: true, maxTime: d + 2*time.Minute})
	start := time.Now()
	r.waitProgress(mainTopic, -1, 1500)
	r.waitProgress(acks1Topic, -1, 500)
	time.Sleep(time.Until(start.Add(d)))
	r.finish()
}

// TestR2LeaderKills: the leaders of two partitions are SIGKILLed in turn under load; a
// follower from the ISR takes over, the killed node is restarted and rejoins.
func TestR2LeaderKills(t *testing.T) {
	r := newRun(t, "R2", runOptions{})
	r.waitProgress(mainTopic, -1, 300)
	for _, p := range []int32{0, 1} {
		old := r.leaderOf(mainTopic, p)
		r.kill(old, fmt.Sprintf("leader of %s-%d", mainTopic, p))
		r.waitNewLeader(mainTopic, p, old)
		r.waitProgress(mainTopic, p, 50)
		r.restart(old)
		r.waitHealthy(60 * time.Second)
	}
	r.finish()
}

// TestR3FollowerKills: a follower of a partition is SIGKILLed, the load goes on with two
// replicas (min.insync.replicas 2), the follower comes back; then another.
func TestR3FollowerKills(t *testing.T) {
	r := newRun(t, "R3", runOptions{})
	r.waitProgress(mainTopic, -1, 300)
	for i := range 2 {
		p := int32(i)
		leader := r.leaderOf(mainTopic, p)
		fs := r.others(leader)
		f := fs[r.rng.Intn(len(fs))]
		r.kill(f, fmt.Sprintf("follower of %s-%d", mainTopic, p))
		r.waitISR(mainTopic, p, leader.ID, fs[0].ID+fs[1].ID-f.ID)
		r.waitProgress(mainTopic, p, 50)
		r.restart(f)
		r.waitHealthy(60 * time.Second)
	}
	r.finish()
}

// TestR4AllKilled: every data-plane node SIGKILLed at once under acks=all load, then
// restarted: the page cache survives a process kill, so nothing acknowledged may be
// lost (the default flush mode does not fsync before acknowledging).
func TestR4AllKilled(t *testing.T) {
	r := newRun(t, "R4", runOptions{})
	r.waitProgress(mainTopic, -1, 600)
	var all []testcluster.Node
	for _, d := range r.c.DPs {
		all = append(all, d)
	}
	r.fault("kill", "dp1,dp2,dp3", "every data-plane node at once")
	for _, d := range r.c.DPs {
		r.c.Kill(d)
	}
	r.restart(all...)
	r.waitHealthy(90 * time.Second)
	r.waitProgress(mainTopic, -1, 300)
	r.finish()
}

// TestR5LeaderPaused: a leader SIGSTOPped past its lease: the controller elects another;
// the old one, continued, must not acknowledge anything of its old epoch that the new
// leader's log does not hold (the checker's lost-write and consistency checks).
func TestR5LeaderPaused(t *testing.T) {
	r := newRun(t, "R5", runOptions{})
	r.waitProgress(mainTopic, -1, 300)
	old := r.leaderOf(mainTopic, 0)
	r.pause(old, "leader of t-0, past its lease")
	r.waitNewLeader(mainTopic, 0, old)
	r.waitProgress(mainTopic, 0, 50)
	r.resume(old)
	r.waitProgress(mainTopic, -1, 100)
	r.finish()
}

// TestR6LeaderIsolated: a leader cut off from its followers and the control plane but
// not from clients: its acks=all produces cannot be acknowledged (no follower fetches);
// they get NOT_ENOUGH_REPLICAS or time out while a new leader takes over. Any OK send to
// it missing from the final log is a lost write (sanity and checker).
func TestR6LeaderIsolated(t *testing.T) {
	r := newRun(t, "R6", runOptions{})
	r.waitProgress(mainTopic, -1, 300)
	old := r.leaderOf(mainTopic, 0)
	links := r.isolationLinks(old)
	cutAt := time.Now()
	for _, l := range links {
		r.cut(l, "isolate "+old.Name()+", leader of t-0")
	}
	now := r.waitNewLeader(mainTopic, 0, old)
	r.waitProgress(mainTopic, 0, 50)
	for _, l := range links {
		r.heal(l)
	}
	h := r.finish()
	// The sends to t-0 made between the cut and the new leader's election (the first
	// state of t-0 led by it): only the old leader could answer them, and it could not
	// replicate. Any of them acknowledged must be in the final log (sanity, checker).
	var elected time.Time
	for _, st := range h.States {
		if st.Topic == mainTopic && st.Partition == 0 && st.Leader == now.ID && st.Time.After(cutAt) {
			elected = st.Time
			break
		}
	}
	outcomes := map[history.Outcome]int{}
	for _, s := range h.Sends {
		if s.Partition == 0 && s.Start.After(cutAt) && s.End.Before(elected) {
			outcomes[s.Outcome]++
		}
	}
	t.Logf("sends to t-0 between the cut and %s's election (%v later): %v", now.Name(), elected.Sub(cutAt).Round(time.Millisecond), outcomes)
}

// TestR7NoUncleanElection: both followers of a partition cut off from its leader until
// the ISR is the leader alone, then the leader killed and one follower's link healed:
// the partition must stay offline (no unclean election on a topic without
// unclean.leader.election.enable) until the old leader returns and leads again.
func TestR7NoUncleanElection(t *testing.T) {
	r := newRun(t, "R7", runOptions{})
	r.waitProgress(mainTopic, -1, 300)
	leader := r.leaderOf(mainTopic, 0)
	fs := r.others(leader)
	for _, f := range fs {
		r.cut(r.c.ReplicaLink(f, leader), "follower of t-0 from its leader")
	}
	r.waitISR(mainTopic, 0, leader.ID)
	killedAt := time.Now()
	r.kill(leader, "sole ISR member of t-0")
	r.heal(r.c.ReplicaLink(fs[0], leader))
	// Offline: the control plane has seen the leader's lease end and left the partition
	// without a leader, since no ISR member is alive.
	r.c.CheckFor(t, 60*time.Second, func() error {
		snap := r.c.Metadata(t)
		if _, live := snap.Brokers[leader.ID]; live {
			return fmt.Errorf("%s still registered", leader.Name())
		}
		if st := r.partitionState(mainTopic, 0); st.Leader != -1 {
			return fmt.Errorf("t-0 led by %d with %s gone", st.Leader, leader.Name())
		}
		return nil
	})
	r.fault("observed", "t-0", "offline")
	// The other partitions, whose ISRs are whole, fail over and take writes meanwhile.
	for p := int32(1); p < r.opts.partitions; p++ {
		r.waitProgress(mainTopic, p, 20)
	}
	restartAt := time.Now()
	r.restart(leader)
	r.c.CheckFor(t, 60*time.Second, func() error {
		if st := r.partitionState(mainTopic, 0); st.Leader != leader.ID {
			return fmt.Errorf("t-0 led by %d, want %s back", st.Leader, leader.Name())
		}
		return nil
	})
	r.heal(r.c.ReplicaLink(fs[1], leader))
	r.waitProgress(mainTopic, 0, 20)
	h := r.finish()
	for _, st := range h.States {
		if st.Topic == mainTopic && st.Partition == 0 && st.Time.After(killedAt) && st.Time.Before(restartAt) &&
			st.Leader != -1 && st.Leader != leader.ID {
			t.Errorf("unclean election: t-0 led by %d (epoch %d, ISR %v) at revision %d, while its only ISR member %s was down",
				st.Leader, st.LeaderEpoch, st.ISR, st.Revision, leader.Name())
		}
	}
}

// TestR8BackToBack: elections back to back and restarts in other orders: the leader of
// t-0 killed, then its successor as soon as it leads; the first restarted before the
// second; then the leader killed and restarted at once, before its lease ends (its new
// process takes the registration over).
func TestR8BackToBack(t *testing.T) {
	r := newRun(t, "R8", runOptions{})
	r.waitProgress(mainTopic, -1, 300)
	a := r.leaderOf(mainTopic, 0)
	r.kill(a, "leader of t-0")
	b := r.waitNewLeader(mainTopic, 0, a)
	r.kill(b, "the next leader of t-0")
	// c, the last ISR member, leads if it was in the ISR; otherwise t-0 waits offline.
	r.restart(a)
	r.restart(b)
	r.waitHealthy(90 * time.Second)
	r.waitProgress(mainTopic, 0, 50)
	c := r.leaderOf(mainTopic, 0)
	r.restart(c) // killed and started again at once
	r.waitHealthy(90 * time.Second)
	others := r.others(c)
	slices.Reverse(others)
	for _, d := range others {
		r.kill(d, "follower")
	}
	r.restart(others[0], others[1])
	r.waitHealthy(90 * time.Second)
	r.waitProgress(mainTopic, -1, 100)
	r.finish()
}
