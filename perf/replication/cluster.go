package replication

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gregor-streaming/gregor/perf"
	"github.com/gregor-streaming/gregor/perf/drivers"
)

// sentinelTopic has one partition led by each node, RF 3, and no traffic: any leader
// change in it while a load runs means a node was fenced (or the controller moved
// leaders for another reason, which is as much a failure of the run).
const sentinelTopic = "bench-sentinel"

// registrationLostLog is what gregor-dp logs when its registration ends under it
// (controlplane/client's Registration.keepAlive).
const registrationLostLog = "registration lost"

// metadataTimeout bounds one metadata request.
const metadataTimeout = 2 * time.Second

// cluster is the running Gregor cluster with an admin client on every node.
type cluster struct {
	g   *drivers.Gregor
	cl  *kgo.Client
	adm *kadm.Client
}

func newCluster(g *drivers.Gregor) (*cluster, error) {
	var seeds []string
	for _, n := range g.Nodes {
		seeds = append(seeds, n.Addr)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ClientID("gregor-bench-replication"),
		kgo.MetadataMinAge(pollEvery), kgo.RetryBackoffFn(func(int) time.Duration { return pollEvery }))
	if err != nil {
		return nil, err
	}
	c := &cluster{g: g, cl: cl, adm: kadm.NewClient(cl)}
	ctx, cancel := context.WithTimeout(context.Background(), settleMax)
	defer cancel()
	if err := c.createTopic(ctx, sentinelTopic, DataPlanes, 3, nil); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *cluster) close() { c.cl.Close() }

// node returns the data-plane node with id.
func (c *cluster) node(id int32) *drivers.GregorNode {
	for _, n := range c.g.Nodes {
		if n.ID == id {
			return n
		}
	}
	panic(fmt.Sprintf("replication: no node %d", id))
}

// createTopic creates a topic and waits until every partition has a leader and a full
// ISR, so a load starts on a settled topic.
func (c *cluster) createTopic(ctx context.Context, topic string, partitions int32, rf int16, configs map[string]*string) error {
	resp, err := c.adm.CreateTopic(ctx, partitions, rf, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return c.waitFor(ctx, settleMax, func() (bool, error) {
		t, err := c.topic(ctx, topic)
		if err != nil || len(t.Partitions) != int(partitions) {
			return false, nil
		}
		for _, p := range t.Partitions {
			if p.Leader < 0 || len(p.ISR) != int(rf) {
				return false, nil
			}
		}
		return true, nil
	})
}

// topic reads a topic's metadata.
func (c *cluster) topic(ctx context.Context, topic string) (kadm.TopicDetail, error) {
	mctx, cancel := context.WithTimeout(ctx, metadataTimeout)
	defer cancel()
	md, err := c.adm.Metadata(mctx, topic)
	if err != nil {
		return kadm.TopicDetail{}, err
	}
	t, ok := md.Topics[topic]
	if !ok {
		return kadm.TopicDetail{}, fmt.Errorf("topic %s not in metadata", topic)
	}
	if t.Err != nil {
		return t, t.Err
	}
	return t, nil
}

// waitFor polls cond every pollEvery until it holds, fails or timeout passes.
func (c *cluster) waitFor(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, errTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}

// inISR reports whether node id is in the ISR of every partition of t that it replicates.
func inISR(t kadm.TopicDetail, id int32) bool {
	for _, p := range t.Partitions {
		if slices.Contains(p.Replicas, id) && !slices.Contains(p.ISR, id) {
			return false
		}
	}
	return true
}

// Fencing is what happened to the nodes while a load ran: all zero is the expected
// outcome, since no node was harmed.
type Fencing struct {
	// RegistrationsLost counts the nodes' log lines saying their registration ended (a
	// lease that ran out under load).
	RegistrationsLost int `json:"registrationsLost"`
	// LeaderChanges is the sum of the leader epoch increments of the sentinel topic's
	// partitions, one led by each node.
	LeaderChanges int `json:"leaderChanges"`
	// NodesExited counts data-plane processes that were running before and not after.
	NodesExited int `json:"nodesExited"`
	// ISRShrinks is the nodes' gregor_isr_shrinks_total increase (a follower that fell
	// behind for longer than replica.lag.time.max); -1 when it could not be read.
	ISRShrinks float64 `json:"isrShrinks"`
	// FencedProduces is the nodes' gregor_produce_fenced_total increase: produce
	// requests refused because a node's lease or session could no longer vouch for it;
	// -1 when it could not be read.
	FencedProduces float64 `json:"fencedProduces"`
}

// Clean reports whether no node was fenced and no leadership moved (as far as could be
// read: a snapshot taken while nodes were down may lack the leader epochs).
func (f Fencing) Clean() bool {
	return f.RegistrationsLost == 0 && f.LeaderChanges == 0 && f.NodesExited == 0 && f.FencedProduces <= 0
}

// registrationsLost counts the registration-lost lines in all the nodes' logs.
func (c *cluster) registrationsLost() int {
	n := 0
	for _, node := range c.g.Nodes {
		n += countInFile(node.LogPath(), registrationLostLog)
	}
	return n
}

// repair restarts the nodes that exited (fenced, or crashed) and waits until every node
// is registered again, so that one failure does not fail every part after it. It
// returns the nodes it restarted, each with its last warnings.
func (c *cluster) repair(ctx context.Context) (restarted []string, err error) {
	err = c.waitFor(ctx, waitMax, func() (bool, error) {
		all := true
		for _, n := range c.g.Nodes {
			if n.Running() {
				continue
			}
			all = false
			restarted = append(restarted, fmt.Sprintf("node %d had exited: %s", n.ID, lastLogLines(n.LogPath(), exitLogLines)))
			if err := n.Restart(); err != nil {
				return false, fmt.Errorf("restart node %d: %w", n.ID, err)
			}
		}
		if !all {
			return false, nil
		}
		// Registered and in sync: every partition of the sentinel topic led, with all
		// nodes in its ISR (a node fenced and still stopping is missing from it, and
		// exits soon).
		t, err := c.topic(ctx, sentinelTopic)
		if err != nil {
			return false, nil
		}
		for _, p := range t.Partitions {
			if p.Leader < 0 || len(p.ISR) != len(c.g.Nodes) {
				return false, nil
			}
		}
		return true, nil
	})
	return restarted, err
}

type fencingSnapshot struct {
	lost    int
	epochs  map[int32]int32
	running map[int32]bool
	shrinks float64
	fenced  float64
}

func (c *cluster) fencingSnapshot(ctx context.Context) (fencingSnapshot, error) {
	s := fencingSnapshot{epochs: map[int32]int32{}, running: map[int32]bool{}}
	s.lost = c.registrationsLost()
	for _, n := range c.g.Nodes {
		s.running[n.ID] = n.Running()
		if m, err := perf.ScrapeMetrics(ctx, n.MetricsURL); err == nil && s.shrinks >= 0 {
			v, _ := m.Sum("gregor_isr_shrinks_total")
			s.shrinks += v
			v, _ = m.Sum("gregor_produce_fenced_total")
			s.fenced += v
		} else {
			s.shrinks, s.fenced = -1, -1
		}
	}
	t, err := c.topic(ctx, sentinelTopic)
	if err != nil {
		return s, fmt.Errorf("sentinel topic: %w", err)
	}
	for _, p := range t.Partitions {
		s.epochs[p.Partition] = p.LeaderEpoch
	}
	return s, nil
}

func (a fencingSnapshot) until(b fencingSnapshot) Fencing {
	f := Fencing{RegistrationsLost: b.lost - a.lost, ISRShrinks: -1, FencedProduces: -1}
	for p, e := range b.epochs {
		if was, ok := a.epochs[p]; ok && e > was {
			f.LeaderChanges += int(e - was)
		}
	}
	for id, r := range a.running {
		if r && !b.running[id] {
			f.NodesExited++
		}
	}
	if a.shrinks >= 0 && b.shrinks >= 0 {
		f.ISRShrinks = b.shrinks - a.shrinks
		f.FencedProduces = b.fenced - a.fenced
	}
	return f
}
