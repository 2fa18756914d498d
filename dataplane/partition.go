package dataplane

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gregor-streaming/gregor/segment"
)

// Partition is one partition replica on this node: its log and what the node knows of
// its leadership. The high watermark is what consumers may read: with the ISR holding
// only this node it is the log end offset; replication (followers fetching) moves it by
// the ISR's progress instead.
type Partition struct {
	Topic string
	Index int32
	log   *segment.Log

	// mu serialises appends with the producer state they check and update.
	mu        sync.Mutex
	producers producerStates

	// leaderEpoch is the epoch this node leads with, or -1 when it does not lead.
	leaderEpoch atomic.Int32
	// isrSize is the number of replicas in the ISR; with 1 the high watermark follows
	// the log end offset.
	isrSize atomic.Int32
	// highWatermark: consumers read below it. Invariant: ≤ the log end offset.
	highWatermark atomic.Int64
	// minInsyncReplicas is the topic's min.insync.replicas for acks=all.
	minInsyncReplicas atomic.Int32
	// waiters are delayed fetches and produces parked on this partition.
	waiters waiters
	// reportedHW is the high watermark last recorded for the control plane; gauges is
	// set once the partition's metrics are registered.
	reportedHW atomic.Int64
	gauges     atomic.Bool
	// configs are the topic configs the log's settings were last made from; guarded by
	// the replica manager's mu.
	configs map[string]string
}

// IsLeader reports whether this node leads the partition.
func (p *Partition) IsLeader() bool { return p.leaderEpoch.Load() >= 0 }

// HighWatermark is the offset below which records are committed.
func (p *Partition) HighWatermark() int64 { return p.highWatermark.Load() }

// Log is the partition's log.
func (p *Partition) Log() *segment.Log { return p.log }

// advanceHighWatermark moves the high watermark after an append: to the log end offset
// while this node is the whole ISR.
func (p *Partition) advanceHighWatermark() {
	if p.isrSize.Load() <= 1 {
		p.highWatermark.Store(p.log.LogEndOffset())
	}
}

// replicaManager owns the partition replicas of this node, one directory each,
// <data-dir>/<topic>-<partition>.
type replicaManager struct {
	dir string

	mu         sync.RWMutex
	partitions map[string]map[int32]*Partition
}

func newReplicaManager(dir string) *replicaManager {
	return &replicaManager{dir: dir, partitions: map[string]map[int32]*Partition{}}
}

// get returns the replica of topic-partition on this node, or nil.
func (rm *replicaManager) get(topic string, partition int32) *Partition {
	rm.mu.RLock()
	defer rm.mu.RUnlock()
	return rm.partitions[topic][partition]
}

// getBytes is get for a topic name held as bytes (no conversion is allocated).
func (rm *replicaManager) getBytes(topic []byte, partition int32) *Partition {
	rm.mu.RLock()
	defer rm.mu.RUnlock()
	return rm.partitions[string(topic)][partition]
}

// partitionDir is where a replica's log lives.
func (rm *replicaManager) partitionDir(topic string, partition int32) string {
	return filepath.Join(rm.dir, topic+"-"+strconv.Itoa(int(partition)))
}

// becomeLeader opens (or creates) the replica's log if needed and makes this node its
// leader at leaderEpoch with the given ISR size. configs are the topic's configs and
// logCfg the log settings made from them: an open log whose settings were made from
// other configs takes the new ones, so a log follows its topic's configs whenever the
// view changes, even a log opened before the topic's configs were known. Settings that
// cannot be applied are an error, but the node leads all the same: refusing leadership
// would make the partition unavailable, not the settings take effect.
func (rm *replicaManager) becomeLeader(topic string, partition, leaderEpoch int32, isrSize int, minISR int,
	configs map[string]string, logCfg func() segment.Config) (*Partition, error) {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	p := rm.partitions[topic][partition]
	var cfgErr error
	if p != nil && !maps.Equal(p.configs, configs) {
		if err := p.log.UpdateConfig(logCfg()); err != nil {
			cfgErr = fmt.Errorf("dataplane: configs of %s-%d: %w", topic, partition, err)
		} else {
			p.configs = configs
		}
	}
	if p == nil {
		log, err := segment.Open(rm.partitionDir(topic, partition), logCfg())
		if err != nil {
			return nil, fmt.Errorf("dataplane: open %s-%d: %w", topic, partition, err)
		}
		p = &Partition{Topic: topic, Index: partition, log: log, configs: configs}
		p.leaderEpoch.Store(-1)
		if err := p.producers.rebuild(log); err != nil {
			_ = log.Close()
			return nil, err
		}
		if rm.partitions[topic] == nil {
			rm.partitions[topic] = map[int32]*Partition{}
		}
		rm.partitions[topic][partition] = p
	}
	p.isrSize.Store(int32(isrSize))
	p.minInsyncReplicas.Store(int32(minISR))
	p.leaderEpoch.Store(leaderEpoch)
	p.advanceHighWatermark()
	return p, cfgErr
}

// deleteTopic closes and removes every replica of topic.
func (rm *replicaManager) deleteTopic(topic string) error {
	rm.mu.Lock()
	parts := rm.partitions[topic]
	delete(rm.partitions, topic)
	rm.mu.Unlock()
	var errs []error
	for _, p := range parts {
		p.leaderEpoch.Store(-1)
		if err := p.log.Delete(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// closeAll closes every log cleanly.
func (rm *replicaManager) closeAll() error {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	var errs []error
	for _, parts := range rm.partitions {
		for _, p := range parts {
			if err := p.log.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	rm.partitions = map[string]map[int32]*Partition{}
	return errors.Join(errs...)
}

// existingReplicas lists the topic-partition directories under the data dir.
func (rm *replicaManager) existingReplicas() (map[string][]int32, error) {
	entries, err := os.ReadDir(rm.dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string][]int32{}
	for _, e := range entries {
		i := strings.LastIndexByte(e.Name(), '-')
		if !e.IsDir() || i <= 0 {
			continue
		}
		p, err := strconv.ParseInt(e.Name()[i+1:], 10, 32)
		if err != nil || p < 0 {
			continue
		}
		out[e.Name()[:i]] = append(out[e.Name()[:i]], int32(p))
	}
	return out, nil
}
