package chaos

import (
	"fmt"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/chaos/workload"
)

// R13: consumer groups under coordinator and member faults. The group coordinator is
// the active controller: it is SIGKILLed under consume-and-commit load (restarted once
// another took over), then the next one SIGSTOPped past its controller lease and
// continued; then a group member crashes (its connections dropped, no LeaveGroup) and a
// new member joins. After each fault the group must commit again. The checker judges
// the commits: a group's committed offset never goes down
// (committed-offset-regression), and no commit sent after a later generation's commit
// was acknowledged is acknowledged (stale-generation-commit); and the polls: a new
// owner of a partition starts at the committed offset (poll-skip otherwise).

// groupProgressTimeout bounds the wait for a group to commit again after a fault: a
// coordinator's failover, the members' sessions (6 s) and a rebalance.
const groupProgressTimeout = 60 * time.Second

// waitCommits waits until group has n more acknowledged commits (one per partition
// committed) than now, and returns how long it took.
func (r *run) waitCommits(group string, n int) time.Duration {
	r.t.Helper()
	count := func() int {
		k := 0
		for _, c := range r.rec.Commits() {
			if c.Group == group && !c.Fetched {
				k++
			}
		}
		return k
	}
	since, from := time.Now(), count()
	r.c.CheckFor(r.t, groupProgressTimeout, func() error {
		if got := count() - from; got < n {
			return fmt.Errorf("group %s: %d of %d commits since %v", group, got, n, since.Format(time.StampMilli))
		}
		return nil
	})
	took := time.Since(since)
	r.fault("observed", group, fmt.Sprintf("%d commits in %v", n, took.Round(time.Millisecond)))
	return took
}

// TestR13GroupFaults: the coordinator killed, the next paused, a member crashed and
// replaced, under consume-and-commit load.
func TestR13GroupFaults(t *testing.T) {
	r := newRun(t, "R13", runOptions{ttl: 6 * time.Second})
	const group = "g"
	r.waitProgress(mainTopic, -1, 200)
	r.waitCommits(group, 20)

	ctl := r.c.WaitController(t)
	r.kill(ctl, "active controller, the group coordinator")
	next := r.c.WaitController(t)
	r.fault("observed", next.Name(), "active controller")
	r.waitCommits(group, 20)
	r.restart(ctl)
	r.waitHealthy(60 * time.Second)

	ctl = r.c.WaitController(t)
	r.pause(ctl, "active controller, the group coordinator, past its lease")
	next = r.c.WaitController(t) // among the running members
	r.fault("observed", next.Name(), "active controller")
	r.waitCommits(group, 20)
	r.resume(ctl)
	r.waitCommits(group, 20)

	victim := r.groups[group][0]
	r.fault("abort", "consumer group-1", "dropped its connections: no LeaveGroup, no last commit")
	victim.Abort()
	r.startConsumer(workload.ConsumerConfig{Name: "group-3", Brokers: r.c.Brokers(), Topic: mainTopic,
		Partitions: r.opts.partitions, Group: group})
	r.waitCommits(group, 20)
	newcomer := r.groups[group][len(r.groups[group])-1]
	r.c.CheckFor(t, groupProgressTimeout, func() error {
		if newcomer.Commits() == 0 {
			return fmt.Errorf("group-3 has committed nothing")
		}
		return nil
	})
	r.waitProgress(mainTopic, -1, 100)
	h := r.finish()
	checkLeaderInISR(t, h)
	gens := map[int32]int{}
	for _, c := range h.Commits {
		if c.Group == group {
			gens[c.Generation]++
		}
	}
	t.Logf("commits of group %s by generation: %v", group, gens)
}
