package dataplane

import (
	"fmt"
	"slices"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/replica"
)

// Background upkeep of the replicas, off the event loops: high-watermark checkpoints to
// the control plane (batched by the recorder, never per produce), retention, recovery-
// point checkpoints, and per-partition gauges.

// Intervals of the upkeep; each is a Config field too.
const (
	// DefaultHWReportInterval is how often led partitions' high watermarks are recorded.
	DefaultHWReportInterval = time.Second
	// DefaultRetentionCheckInterval is log.retention.check.interval.ms (Kafka: 5 min).
	DefaultRetentionCheckInterval = 5 * time.Minute
	// DefaultCheckpointInterval is how often recovery points are written
	// (log.flush.offset.checkpoint.interval.ms, Kafka: 60 s).
	DefaultCheckpointInterval = time.Minute
	// hwCheckpointFileInterval is how often the replicas' high watermarks are written to
	// the data directory's checkpoint file when they moved
	// (replica.high.watermark.checkpoint.interval.ms, Kafka: 5 s); it is written at a
	// clean stop too.
	hwCheckpointFileInterval = 5 * time.Second
	// isrKickInterval bounds how often follower fetches make the node check ISR
	// expansions between the periodic checks.
	isrKickInterval = 20 * time.Millisecond
)

// HWRecorder takes high-watermark checkpoints (controlplane/client's HWCheckpointer).
type HWRecorder interface {
	Record(tp cluster.TopicPartition, cp cluster.HWCheckpoint)
}

// upkeep runs until stop closes.
func (s *Server) upkeep(stop <-chan struct{}) {
	hw := time.NewTicker(s.cfg.HWReportInterval)
	retention := time.NewTicker(s.cfg.RetentionCheckInterval)
	checkpoint := time.NewTicker(s.cfg.CheckpointInterval)
	// ISR changes are checked at half the lag time, as Kafka's isr-expiration task.
	isr := time.NewTicker(max(s.cfg.ReplicaLagTimeMax/2, time.Millisecond))
	hwFile := time.NewTicker(hwCheckpointFileInterval)
	defer hwFile.Stop()
	defer hw.Stop()
	defer retention.Stop()
	defer checkpoint.Stop()
	defer isr.Stop()
	var lastKick time.Time
	for {
		select {
		case <-stop:
			return
		case <-isr.C:
			s.maintainISR()
		case <-s.isrKick:
			// A follower caught up: expand now, not at the next tick. Its fetches ask
			// again until the view shows it in the ISR: at most one check per
			// isrKickInterval.
			if now := time.Now(); now.Sub(lastKick) >= isrKickInterval {
				lastKick = now
				s.maintainISR()
			}
		case <-hw.C:
			s.reportHighWatermarks()
		case <-retention.C:
			s.applyRetention()
		case <-checkpoint.C:
			s.checkpointRecoveryPoints()
		case <-hwFile.C:
			if err := s.replicas.CheckpointHighWatermarks(); err != nil {
				s.logger.Error("high-watermark checkpoint", "err", err)
			}
		}
	}
}

// reportHighWatermarks records the high watermark of every led partition that moved,
// and keeps the per-partition gauges current.
func (s *Server) reportHighWatermarks() {
	snap := s.snapshot()
	all := s.replicas.Partitions()
	s.partitionGauges(all)
	for _, p := range all {
		if s.cfg.HWRecorder == nil || !p.IsLeader() {
			continue
		}
		hw, moved := p.CheckpointHighWatermark()
		if !moved {
			continue
		}
		s.cfg.HWRecorder.Record(cluster.TopicPartition{Topic: p.Topic, Partition: p.Index},
			cluster.HWCheckpoint{TopicID: snap.Topics[p.Topic].ID, LeaderEpoch: p.LeaderEpoch(), HighWatermark: hw})
	}
}

// RestoreHighWatermarks hands the replicas this node opens from now on the high
// watermarks their leaders checkpointed in the control plane (cps, by topic and
// partition), for those that have no checkpoint of this node's own: a leader restarted
// with followers in its ISR then shows consumers what was committed before, instead of
// nothing until the followers fetch. A checkpoint of another incarnation of the topic
// (its topic id not the one in snap) is discarded; the rest are used as
// replica.Manager.SetHighWatermarkHints says. Call it before the first Reconcile.
func (s *Server) RestoreHighWatermarks(snap *client.Snapshot, cps map[string]map[int32]cluster.HWCheckpoint) {
	hints := map[string]map[int32]replica.HighWatermarkHint{}
	for topic, parts := range cps {
		t, ok := snap.Topics[topic]
		if !ok {
			continue
		}
		for part, cp := range parts {
			if cp.TopicID != t.ID {
				continue
			}
			if hints[topic] == nil {
				hints[topic] = map[int32]replica.HighWatermarkHint{}
			}
			hints[topic][part] = replica.HighWatermarkHint{LeaderEpoch: cp.LeaderEpoch, HighWatermark: cp.HighWatermark}
		}
	}
	s.replicas.SetHighWatermarkHints(hints)
}

// followerLagSeriesMax bounds the followers whose lag a leader exports (two series
// each): a node leading thousands of partitions would otherwise export tens of
// thousands of series. Past it, followers get none, and a warning says so.
const followerLagSeriesMax = 10_000

// partitionSeries are the per-partition series registered for one replica, so that
// they are unregistered when it goes away or changes role.
type partitionSeries struct {
	labels string // {topic="…",partition="…"}
	// fetcherLag is the follower-side lag's series, "" unless the replica follows.
	fetcherLag string
	// followerLag holds the lag series of each follower, while this node leads.
	followerLag map[int32][2]string
}

// partitionGauges keeps the per-partition series current, once per upkeep pass: the
// log end offset and high watermark of every replica; the lag of each follower
// (gregor_follower_lag_offsets, _seconds) while this node leads; the follower-side lag
// (gregor_replica_fetcher_lag_offsets) while it follows. Series of replicas gone
// (deleted topics, moved replicas), of a role left or of a follower no longer assigned
// are unregistered, before any new one is registered (a topic deleted and created
// again has new replicas under the same names). The gauges read atomics, or the
// leadership's read lock, at scrape time. Only the upkeep goroutine calls it.
func (s *Server) partitionGauges(all []*replica.Partition) {
	set := s.cfg.Metrics
	live := make(map[*replica.Partition]struct{}, len(all))
	for _, p := range all {
		live[p] = struct{}{}
	}
	for p, g := range s.gauged {
		if _, ok := live[p]; !ok {
			s.unregisterSeries(g)
			delete(s.gauged, p)
		}
	}
	if s.gauged == nil {
		s.gauged = map[*replica.Partition]*partitionSeries{}
	}
	for _, p := range all {
		g := s.gauged[p]
		if g == nil {
			g = &partitionSeries{labels: fmt.Sprintf(`{topic=%q,partition="%d"}`, p.Topic, p.Index)}
			s.gauged[p] = g
			set.GetOrCreateGauge("gregor_partition_log_end_offset"+g.labels, func() float64 { return float64(p.Log().LogEndOffset()) })
			set.GetOrCreateGauge("gregor_partition_high_watermark"+g.labels, func() float64 { return float64(p.HighWatermark()) })
		}
		switch following := p.Role() == replica.RoleFollower; {
		case following && g.fetcherLag == "":
			g.fetcherLag = "gregor_replica_fetcher_lag_offsets" + g.labels
			set.GetOrCreateGauge(g.fetcherLag, func() float64 { return float64(p.FetcherLag()) })
		case !following && g.fetcherLag != "":
			set.UnregisterMetric(g.fetcherLag)
			g.fetcherLag = ""
		}
		s.followerLagGauges(p, g)
	}
}

// followerLagGauges makes g's follower lag series those of p's followers while this
// node leads p, and none otherwise.
func (s *Server) followerLagGauges(p *replica.Partition, g *partitionSeries) {
	set := s.cfg.Metrics
	var followers []int32
	if p.IsLeader() {
		for _, id := range p.Replicas() {
			if id != s.cfg.NodeID {
				followers = append(followers, id)
			}
		}
	}
	for id, names := range g.followerLag {
		if !slices.Contains(followers, id) {
			set.UnregisterMetric(names[0])
			set.UnregisterMetric(names[1])
			delete(g.followerLag, id)
			s.followerLagSeries--
		}
	}
	for _, id := range followers {
		if _, ok := g.followerLag[id]; ok {
			continue
		}
		if s.followerLagSeries >= followerLagSeriesMax {
			if !s.followerLagCapped {
				s.followerLagCapped = true
				s.logger.Warn("too many followers to export the lag of each; some have none", "max", followerLagSeriesMax)
			}
			return
		}
		labels := fmt.Sprintf(`{topic=%q,partition="%d",replica="%d"}`, p.Topic, p.Index, id)
		names := [2]string{"gregor_follower_lag_offsets" + labels, "gregor_follower_lag_seconds" + labels}
		set.GetOrCreateGauge(names[0], func() float64 {
			offsets, _, _ := p.FollowerLag(id, time.Now().UnixNano())
			return float64(offsets)
		})
		set.GetOrCreateGauge(names[1], func() float64 {
			_, lag, _ := p.FollowerLag(id, time.Now().UnixNano())
			return lag.Seconds()
		})
		if g.followerLag == nil {
			g.followerLag = map[int32][2]string{}
		}
		g.followerLag[id] = names
		s.followerLagSeries++
	}
}

// unregisterSeries removes every series of g.
func (s *Server) unregisterSeries(g *partitionSeries) {
	set := s.cfg.Metrics
	set.UnregisterMetric("gregor_partition_log_end_offset" + g.labels)
	set.UnregisterMetric("gregor_partition_high_watermark" + g.labels)
	if g.fetcherLag != "" {
		set.UnregisterMetric(g.fetcherLag)
	}
	for _, names := range g.followerLag {
		set.UnregisterMetric(names[0])
		set.UnregisterMetric(names[1])
		s.followerLagSeries--
	}
}

// applyRetention deletes expired segments of the led partitions, never past the high
// watermark.
func (s *Server) applyRetention() {
	for _, p := range s.replicas.Partitions() {
		if !p.IsLeader() {
			continue
		}
		res, err := p.Log().DeleteRetained(p.HighWatermark())
		if err != nil {
			s.logger.Error("retention", "topic", p.Topic, "partition", p.Index, "err", err)
			continue
		}
		if res.Segments > 0 {
			s.logger.Info("retention deleted segments", "topic", p.Topic, "partition", p.Index,
				"segments", res.Segments, "bytes", res.Bytes, "logStartOffset", res.LogStartOffset)
		}
	}
}

func (s *Server) checkpointRecoveryPoints() {
	for _, p := range s.replicas.Partitions() {
		if err := p.Log().Checkpoint(); err != nil {
			s.logger.Error("recovery-point checkpoint", "topic", p.Topic, "partition", p.Index, "err", err)
		}
	}
}
