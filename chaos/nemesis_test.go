package chaos

import (
	"fmt"
	"slices"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// The nemesis: faults on the run's cluster, each recorded in the history. Targets are
// found from the control plane's metadata (the leader of a partition) or the run's
// seeded random source.

// leaderOf is the running leader of topic-partition (the test fails if none).
func (r *run) leaderOf(topic string, p int32) *testcluster.DP {
	r.t.Helper()
	return r.c.Leader(r.t, topic, p)
}

// followersOf are the data-plane nodes other than d.
func (r *run) others(d *testcluster.DP) []*testcluster.DP {
	var out []*testcluster.DP
	for _, x := range r.c.DPs {
		if x != d {
			out = append(out, x)
		}
	}
	return out
}

func (r *run) kill(n testcluster.Node, why string) {
	r.fault("kill", n.Name(), why)
	r.c.Kill(n)
}

func (r *run) pause(n testcluster.Node, why string) {
	r.fault("pause", n.Name(), why)
	r.c.Pause(n)
}

func (r *run) resume(n testcluster.Node) {
	r.fault("resume", n.Name(), "")
	r.c.Resume(n)
}

func (r *run) cut(l *testcluster.Link, why string) {
	r.t.Helper()
	r.fault("cut", l.Name(), why)
	if err := l.Cut(); err != nil {
		r.t.Fatal(err)
	}
}

func (r *run) heal(l *testcluster.Link) {
	r.t.Helper()
	r.fault("heal", l.Name(), "")
	if err := l.Heal(); err != nil {
		r.t.Fatal(err)
	}
}

func (r *run) delay(l *testcluster.Link, d time.Duration) {
	r.t.Helper()
	r.fault("delay", l.Name(), d.String())
	if err := l.Delay(d); err != nil {
		r.t.Fatal(err)
	}
}

// isolationLinks are the links that cut d off from the other data-plane nodes (both
// directions of replication) and from every control-plane member, not from clients.
func (r *run) isolationLinks(d *testcluster.DP) []*testcluster.Link {
	var ls []*testcluster.Link
	for _, o := range r.others(d) {
		ls = append(ls, r.c.ReplicaLink(o, d), r.c.ReplicaLink(d, o))
	}
	for _, m := range r.c.CPs {
		ls = append(ls, r.c.ControlPlaneLink(d, m))
	}
	return ls
}

// waitNewLeader waits until topic-partition is led by a running node other than old,
// by the control plane (old may still run: cut off, it does not know).
func (r *run) waitNewLeader(topic string, p int32, old *testcluster.DP) *testcluster.DP {
	r.t.Helper()
	return r.awaitLeaderAfter(topic, p, old, false)
}

// waitNewLeaderOrOffline is waitNewLeader for the random mix, where faults overlap: it
// also accepts the partition going offline as Kafka leaves it with unclean election off
// — no leader, and no member of its ISR but old (or a node that is down) — which happens
// when the other replicas had just left the ISR, e.g. their registrations lost while the
// control plane had no quorum. Only old's return brings it back; nil then.
func (r *run) waitNewLeaderOrOffline(topic string, p int32, old *testcluster.DP) *testcluster.DP {
	r.t.Helper()
	return r.awaitLeaderAfter(topic, p, old, true)
}

// awaitLeaderAfter is waitNewLeader, and with offlineOK waitNewLeaderOrOffline.
func (r *run) awaitLeaderAfter(topic string, p int32, old *testcluster.DP, offlineOK bool) *testcluster.DP {
	r.t.Helper()
	var now *testcluster.DP
	var isr []int32
	r.c.CheckFor(r.t, 60*time.Second, func() error {
		st := r.partitionState(topic, p)
		if st.Leader < 1 && offlineOK && r.noLiveISRBut(st.ISR, old) {
			now, isr = nil, st.ISR
			return nil
		}
		if st.Leader < 1 || st.Leader == old.ID {
			return fmt.Errorf("%s-%d led by %d", topic, p, st.Leader)
		}
		if now = r.c.DP(st.Leader); !now.Running() {
			return fmt.Errorf("%s-%d led by %s, down", topic, p, now.Name())
		}
		return nil
	})
	if now == nil {
		r.fault("observed", old.Name(), fmt.Sprintf("%s-%d offline: no leader eligible, ISR %v", topic, p, isr))
		return nil
	}
	r.fault("observed", now.Name(), fmt.Sprintf("leads %s-%d after %s", topic, p, old.Name()))
	return now
}

// noLiveISRBut reports whether isr is not empty and holds no running node but old.
func (r *run) noLiveISRBut(isr []int32, old *testcluster.DP) bool {
	return len(isr) > 0 && !slices.ContainsFunc(isr, func(id int32) bool { return id != old.ID && r.c.DP(id).Running() })
}

// waitISR waits until the ISR of topic-partition is want (in any order).
func (r *run) waitISR(topic string, p int32, want ...int32) {
	r.t.Helper()
	slices.Sort(want)
	r.c.CheckFor(r.t, 60*time.Second, func() error {
		isr := slices.Clone(r.partitionState(topic, p).ISR)
		slices.Sort(isr)
		if !slices.Equal(isr, want) {
			return fmt.Errorf("%s-%d ISR %v, want %v", topic, p, isr, want)
		}
		return nil
	})
}

// etcdLeader is the control-plane member that leads etcd now.
func (r *run) etcdLeader() *testcluster.CP {
	r.t.Helper()
	var leader *testcluster.CP
	r.c.CheckFor(r.t, 30*time.Second, func() error {
		for _, m := range r.c.RunningCPs() {
			v, err := m.View()
			if err != nil {
				return err
			}
			if v.EtcdMember != "" && v.EtcdMember == v.EtcdLeader {
				leader = m
				return nil
			}
		}
		return fmt.Errorf("no member leads etcd")
	})
	return leader
}

// partitionLed reports the partitions of topic d leads by the metadata.
func (r *run) partitionsLedBy(topic string, d *testcluster.DP) []int32 {
	snap := r.c.Metadata(r.t)
	var ps []int32
	for p := range r.topics[topic] {
		if snap.Partitions[cluster.TopicPartition{Topic: topic, Partition: p}].Leader == d.ID {
			ps = append(ps, p)
		}
	}
	return ps
}
