package dataplane

import (
	"fmt"
	"time"

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
	defer hw.Stop()
	defer retention.Stop()
	defer checkpoint.Stop()
	defer isr.Stop()
	for {
		select {
		case <-stop:
			return
		case <-isr.C:
			s.maintainISR()
		case <-hw.C:
			s.reportHighWatermarks()
		case <-retention.C:
			s.applyRetention()
		case <-checkpoint.C:
			s.checkpointRecoveryPoints()
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

// partitionGauges registers the log end offset and high watermark gauges of each
// replica once, and forgets the replicas that are gone. Only the upkeep goroutine calls
// it.
func (s *Server) partitionGauges(all []*replica.Partition) {
	seen := make(map[*replica.Partition]struct{}, len(all))
	for _, p := range all {
		seen[p] = struct{}{}
		if _, ok := s.gauged[p]; ok {
			continue
		}
		labels := fmt.Sprintf(`{topic=%q,partition="%d"}`, p.Topic, p.Index)
		s.cfg.Metrics.GetOrCreateGauge("gregor_partition_log_end_offset"+labels, func() float64 { return float64(p.Log().LogEndOffset()) })
		s.cfg.Metrics.GetOrCreateGauge("gregor_partition_high_watermark"+labels, func() float64 { return float64(p.HighWatermark()) })
	}
	s.gauged = seen
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
