package chaos

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/chaos/history"
	"github.com/gregor-streaming/gregor/chaos/workload"
	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// chaosFlag runs TestChaos without CHAOS_TIME (for its default duration).
var chaosFlag = flag.Bool("chaos", false, "run TestChaos (also run when CHAOS_TIME is set)")

// defaultChaosTime is TestChaos's run without CHAOS_TIME.
const defaultChaosTime = 10 * time.Minute

// TestChaos: a random mix of the nemesis's faults for CHAOS_TIME (a Go duration, 10m by
// default), seeded by CHAOS_SEED or the time; `make chaos` runs it. It prints a
// progress line every 10 seconds. Two transactional producers run through it beside the
// others; after every fault each must commit again. Skipped unless CHAOS_TIME is set or
// -chaos given.
func TestChaos(t *testing.T) {
	d := defaultChaosTime
	if s := os.Getenv("CHAOS_TIME"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			t.Fatalf("CHAOS_TIME=%q: %v", s, err)
		}
	} else if !*chaosFlag {
		t.Skip("set CHAOS_TIME (or -chaos) to run the fault mix (make chaos)")
	}
	// Control-plane members die here: the data-plane nodes keep gregor-dp's 6s lease
	// (testcluster's advice: shorter ones are lost while the etcd client leaves a dead
	// endpoint).
	r := newRun(t, "chaos", runOptions{ttl: 6 * time.Second, acks1: true, maxTime: d + time.Minute, rate: 200,
		fsyncJournal: true})
	fmt.Printf("chaos: seed %d, %v\n", r.seed, d)
	// Two transactional producers write topic t beside the others through every fault.
	x := newTxnRun(r)
	txns := []*chaosTxnProducer{{id: "tx-a"}, {id: "tx-b"}}
	for _, p := range txns {
		p.start(x)
	}
	start := time.Now()
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-tick.C:
				ok, fail, info := r.rec.Counts()
				committed := 0
				for _, tx := range r.rec.Txns() {
					if tx.Outcome == history.TxnCommitted {
						committed++
					}
				}
				fmt.Printf("chaos: %v elapsed, %d faults, sends ok %d fail %d info %d, transactions committed %d\n",
					time.Since(start).Round(time.Second), len(r.rec.Faults()), ok, fail, info, committed)
			}
		}
	}()
	defer func() {
		close(stopProgress)
		<-progressDone
	}()
	faults := []struct {
		name string
		do   func(r *run)
	}{
		{"kill-leader", nemKillLeader},
		{"kill-follower", nemKillFollower},
		{"kill-all-dps", nemKillAll},
		{"pause-leader", nemPauseLeader},
		{"isolate-leader", nemIsolateLeader},
		{"delay", nemDelay},
		{"one-way-cut", nemOneWayCut},
		{"power-loss-one", nemPowerLossOne},
		{"kill-etcd-leader", nemKillEtcdLeader},
		{"pause-etcd-leader", nemPauseEtcdLeader},
		{"kill-leader+pause-follower", nemKillLeaderPauseFollower},
		{"kill-leader+kill-etcd-leader", nemKillLeaderAndEtcdLeader},
		{"pause-leader+cut-follower-from-cps", nemPauseLeaderCutFollower},
	}
	for time.Since(start) < d {
		f := faults[r.rng.Intn(len(faults))]
		fmt.Printf("chaos: %v %s\n", time.Since(start).Round(time.Second), f.name)
		f.do(r)
		// Back to health before the next fault: every node up, every ISR whole.
		r.restoreAll()
		r.waitHealthy(2 * time.Minute)
		r.waitProgress(mainTopic, -1, 50)
		for _, p := range txns {
			p.waitCommit(x)
		}
	}
	for _, p := range txns {
		if err := p.p.Stop(60 * time.Second); err != nil {
			t.Errorf("%s: %v", p.p.Name(), err)
		}
	}
	x.waitStable(60 * time.Second)
	r.drained = x.readBack
	r.finish()
}

// chaosTxnProducer is one transactional id of the fault mix and its current instance.
// The coordinator may abort a transaction that a fault held past its timeout, which
// fences its producer; the next instance takes the id over, as an application would
// restart it.
type chaosTxnProducer struct {
	id string
	n  int // instances started
	p  *workload.TxnProducer
}

func (c *chaosTxnProducer) start(x *txnRun) {
	c.n++
	c.p = x.start(fmt.Sprintf("%s-%d", c.id, c.n), c.id, txnTimeout)
}

// waitCommit waits, with the cluster healthy again, until the transactional id commits
// one more transaction, starting a new instance if the current one has ended.
func (c *chaosTxnProducer) waitCommit(x *txnRun) {
	r := x.r
	r.t.Helper()
	from := c.p.Committed()
	r.c.CheckFor(r.t, 90*time.Second, func() error {
		r.supervise()
		select {
		case <-c.p.Done():
			if c.p.Fenced() == "" {
				r.t.Errorf("%s ended without being fenced (its log: %s)", c.p.Name(), filepath.Join(x.logDir, c.p.Name()+".log"))
			} else {
				r.fault("observed", c.p.Name(), "fenced: "+c.p.Fenced())
			}
			c.start(x)
			from = 0
			return fmt.Errorf("%s started", c.p.Name())
		default:
		}
		if c.p.Committed() <= from {
			return fmt.Errorf("%s has committed no transaction since the fault", c.p.Name())
		}
		return nil
	})
}

// hold keeps a fault for a random 1-5 s.
func (r *run) hold() {
	time.Sleep(time.Second + time.Duration(r.rng.Int63n(int64(4*time.Second))))
}

func (r *run) randomPartition() int32 { return int32(r.rng.Intn(int(r.opts.partitions))) }

func nemKillLeader(r *run) {
	p := r.randomPartition()
	old := r.leaderOf(mainTopic, p)
	r.kill(old, fmt.Sprintf("leader of t-%d", p))
	if r.rng.Intn(2) == 0 {
		r.waitNewLeaderOrOffline(mainTopic, p, old)
	} else {
		r.hold() // restarted before its lease may end: a takeover
	}
	r.restart(old)
}

func nemKillFollower(r *run) {
	p := r.randomPartition()
	fs := r.others(r.leaderOf(mainTopic, p))
	f := fs[r.rng.Intn(len(fs))]
	r.kill(f, fmt.Sprintf("follower of t-%d", p))
	r.hold()
	r.restart(f)
}

func nemKillAll(r *run) {
	var all []testcluster.Node
	for _, d := range r.c.DPs {
		all = append(all, d)
	}
	r.fault("kill", "dp1,dp2,dp3", "every data-plane node at once")
	for _, d := range r.c.DPs {
		r.c.Kill(d)
	}
	r.restart(all...)
}

func nemPauseLeader(r *run) {
	p := r.randomPartition()
	old := r.leaderOf(mainTopic, p)
	r.pause(old, fmt.Sprintf("leader of t-%d", p))
	if r.rng.Intn(2) == 0 {
		r.waitNewLeaderOrOffline(mainTopic, p, old) // past its lease
	} else {
		r.hold()
	}
	r.resume(old)
}

func nemIsolateLeader(r *run) {
	p := r.randomPartition()
	old := r.leaderOf(mainTopic, p)
	links := r.isolationLinks(old)
	for _, l := range links {
		r.cut(l, fmt.Sprintf("isolate %s, leader of t-%d", old.Name(), p))
	}
	if r.rng.Intn(2) == 0 {
		r.waitNewLeaderOrOffline(mainTopic, p, old)
	} else {
		r.hold()
	}
	for _, l := range links {
		r.heal(l)
	}
}

func nemDelay(r *run) {
	d := r.c.DPs[r.rng.Intn(len(r.c.DPs))]
	var l *testcluster.Link
	switch r.rng.Intn(3) {
	case 0:
		l = r.c.ClientLink(d)
	case 1:
		o := r.others(d)
		l = r.c.ReplicaLink(d, o[r.rng.Intn(len(o))])
	default:
		l = r.c.ControlPlaneLink(d, r.c.CPs[r.rng.Intn(len(r.c.CPs))])
	}
	r.delay(l, time.Duration(20+r.rng.Intn(200))*time.Millisecond)
	r.hold()
	r.heal(l)
}

func nemKillEtcdLeader(r *run) {
	m := r.etcdLeader()
	r.kill(m, "etcd leader")
	r.hold()
	r.restart(m)
}

func nemPauseEtcdLeader(r *run) {
	m := r.etcdLeader()
	r.pause(m, "etcd leader")
	r.hold()
	r.resume(m)
}

// nemOneWayCut cuts one direction of a link: between two data-plane nodes (a follower's
// fetches reach its leader, the answers do not, or the other way) or between a node and
// a control-plane member.
func nemOneWayCut(r *run) {
	d := r.c.DPs[r.rng.Intn(len(r.c.DPs))]
	var l *testcluster.Link
	if r.rng.Intn(2) == 0 {
		o := r.others(d)
		l = r.c.ReplicaLink(d, o[r.rng.Intn(len(o))])
	} else {
		l = r.c.ControlPlaneLink(d, r.c.CPs[r.rng.Intn(len(r.c.CPs))])
	}
	dir := testcluster.Upstream
	if r.rng.Intn(2) == 0 {
		dir = testcluster.Downstream
	}
	r.fault("cut-one-way", l.Name(), string(dir))
	if err := l.CutOneWay(dir); err != nil {
		r.t.Fatal(err)
	}
	r.hold()
	r.heal(l)
}

// nemPowerLossOne kills one data-plane node, drops every write it never fsynced (a
// power loss of its host) and restarts it: the other replicas hold what was
// acknowledged, and it must recover, truncate by epoch and catch up.
func nemPowerLossOne(r *run) {
	d := r.c.DPs[r.rng.Intn(len(r.c.DPs))]
	r.kill(d, "its host loses power")
	r.powerLoss(d)
	if r.rng.Intn(2) == 0 {
		r.hold()
	}
	r.restart(d)
}

// Fixed combinations: two faults at once, each healed after a random hold.

// nemKillLeaderPauseFollower kills a partition's leader while one of its followers is
// paused: the other follower, or the paused one once resumed, must take over without
// losing what the ISR acknowledged.
func nemKillLeaderPauseFollower(r *run) {
	p := r.randomPartition()
	old := r.leaderOf(mainTopic, p)
	fs := r.others(old)
	f := fs[r.rng.Intn(len(fs))]
	r.pause(f, fmt.Sprintf("follower of t-%d, before its leader is killed", p))
	r.kill(old, fmt.Sprintf("leader of t-%d, a follower paused", p))
	r.hold()
	r.resume(f)
	r.restart(old)
}

// nemKillLeaderAndEtcdLeader kills a partition's leader and the etcd leader together:
// the election waits for etcd's own.
func nemKillLeaderAndEtcdLeader(r *run) {
	p := r.randomPartition()
	old := r.leaderOf(mainTopic, p)
	m := r.etcdLeader()
	r.kill(m, fmt.Sprintf("etcd leader, with the leader of t-%d", p))
	r.kill(old, fmt.Sprintf("leader of t-%d, with the etcd leader", p))
	r.hold()
	r.restart(old, m)
}

// nemPauseLeaderCutFollower pauses a partition's leader while one of its followers is
// cut off from every control-plane member: that follower loses its registration, so the
// other one (if in the ISR) is the only one that may lead.
func nemPauseLeaderCutFollower(r *run) {
	p := r.randomPartition()
	old := r.leaderOf(mainTopic, p)
	fs := r.others(old)
	f := fs[r.rng.Intn(len(fs))]
	var links []*testcluster.Link
	for _, m := range r.c.CPs {
		links = append(links, r.c.ControlPlaneLink(f, m))
	}
	for _, l := range links {
		r.cut(l, fmt.Sprintf("cut %s, follower of t-%d, from the control plane", f.Name(), p))
	}
	r.pause(old, fmt.Sprintf("leader of t-%d, a follower cut from the control plane", p))
	r.hold()
	r.hold()
	r.resume(old)
	for _, l := range links {
		r.heal(l)
	}
}
