package dataplane

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/replica"
)

// ISR changes (Kafka's maybeShrinkIsr, maybeExpandIsr and AlterPartition): every half
// lag time the upkeep goroutine asks each partition this node leads what its ISR should
// be (replica.Partition.ProposeISR: followers not caught up within
// ReplicaLagTimeMax leave it, followers that reached the high watermark join it) and
// sends a change to the control plane, on a goroutine of its own, as a compare-and-swap
// on the epochs of the state decided from and on the broker epochs the members it adds
// fetched under (KIP-903: a follower that registered again since is not added on its
// earlier process's fetches). The new state comes back through the
// metadata watch, and Reconcile applies it: until then the partition proposes nothing
// more. Nothing on the produce or fetch path waits for it.

// DefaultReplicaLagTimeMax is Kafka's replica.lag.time.max.ms default.
const DefaultReplicaLagTimeMax = 30 * time.Second

// isrAlterTimeout bounds one AlterISR call.
const isrAlterTimeout = 10 * time.Second

// isrChanges are the ISR changes in flight or waiting for the view to show them, by
// partition: the partition epoch they were decided from.
type isrChanges struct {
	mu      sync.Mutex
	pending map[*replica.Partition]int32
}

// kickISR asks the upkeep goroutine to check ISR changes now (a follower fetch showed a
// follower that may join the ISR); it never blocks.
func (s *Server) kickISR() {
	select {
	case s.isrKick <- struct{}{}:
	default:
	}
}

// maintainISR proposes the ISR changes due now.
func (s *Server) maintainISR() {
	if s.cp == nil {
		return
	}
	now := time.Now().UnixNano()
	live := s.replicas.Partitions()
	s.isr.forgetGone(live)
	for _, p := range live {
		ch, ok := p.ProposeISR(now, s.cfg.ReplicaLagTimeMax)
		if !ok || !s.isr.begin(p, ch.From.PartitionEpoch) {
			continue
		}
		p.BeginISRExpansion(ch) // the high watermark waits for the members it adds
		go s.alterISR(p, ch)
	}
}

// begin reports whether a change decided from partitionEpoch may be sent for p: none is
// in flight, and none succeeded from that epoch (the view not showing it yet).
func (c *isrChanges) begin(p *replica.Partition, partitionEpoch int32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch, ok := c.pending[p]; ok && epoch >= partitionEpoch {
		return false
	}
	if c.pending == nil {
		c.pending = map[*replica.Partition]int32{}
	}
	c.pending[p] = partitionEpoch
	return true
}

// forgetGone drops the changes of partitions no longer on the node (a deleted topic, a
// moved replica): a succeeded change stays until the next change of its partition, so
// without this the partitions of deleted topics would be kept for good.
func (c *isrChanges) forgetGone(live []*replica.Partition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p := range c.pending {
		if !slices.Contains(live, p) {
			delete(c.pending, p)
		}
	}
}

// end forgets p's change: refused, it may be decided again at once.
func (c *isrChanges) end(p *replica.Partition) {
	c.mu.Lock()
	delete(c.pending, p)
	c.mu.Unlock()
}

// alterISR sends one ISR change, with the broker epochs the members it adds fetched
// under (KIP-903). On success the entry stays until the view shows a newer partition
// epoch (begin then lets the next change through).
func (s *Server) alterISR(p *replica.Partition, ch replica.ISRChange) {
	ctx, cancel := context.WithTimeout(context.Background(), isrAlterTimeout)
	defer cancel()
	from, isr := ch.From, ch.ISR
	_, err := s.cp.AlterISR(ctx, client.AlterISRRequest{
		TopicPartition: cluster.TopicPartition{Topic: p.Topic, Partition: p.Index},
		LeaderEpoch:    from.LeaderEpoch, PartitionEpoch: from.PartitionEpoch, NewISR: isr,
		BrokerEpochs: ch.BrokerEpochs,
	})
	if err != nil {
		p.EndISRExpansion(from.PartitionEpoch)
		s.isr.end(p)
		s.logger.Info("ISR change refused", "topic", p.Topic, "partition", p.Index, "isr", from.ISR, "proposed", isr, "err", err)
		return
	}
	if !containsAll(isr, from.ISR) {
		s.metrics.isrShrinks.Inc()
	}
	if !containsAll(from.ISR, isr) {
		s.metrics.isrExpands.Inc()
	}
	s.logger.Info("ISR changed", "topic", p.Topic, "partition", p.Index, "from", from.ISR, "to", isr)
}

// containsAll reports whether every id of sub is in set.
func containsAll(set, sub []int32) bool {
	for _, id := range sub {
		if !slices.Contains(set, id) {
			return false
		}
	}
	return true
}
