package replica

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/gregor-streaming/gregor/segment"
)

// Config is a Manager's setting.
type Config struct {
	// Dir is the data directory: one sub-directory per replica, <topic>-<partition>.
	Dir string
	// NodeID is this node's id: the replica of an assignment that is not a follower.
	NodeID int32
	// Logger takes what the replicas log (nil: slog.Default()).
	Logger *slog.Logger
}

// Manager owns the partition replicas of this node (Kafka's ReplicaManager, without the
// request handling): one directory each under the data directory, opened when the node
// first leads the partition, and the role changes the controller's state asks for.
//
// Concurrency: mu guards the map of replicas, each replica's configs and the high
// watermarks restored for replicas not open yet; lookups take the read lock. Lock
// order: mu before any Partition's locks; hwFileMu before mu.
type Manager struct {
	cfg Config

	mu         sync.RWMutex
	partitions map[string]map[int32]*Partition
	// restored are the high watermarks of the checkpoint file (hwcheckpoint.go) of
	// replicas not open yet: a replica takes its own when it opens, and the file keeps
	// the others. Nil until the file is read, at the first open.
	restored map[string]map[int32]int64
	// hints are high watermarks from the control plane for replicas this node has no
	// checkpoint of (SetHighWatermarkHints).
	hints map[string]map[int32]HighWatermarkHint

	// hwFileMu serialises writes of the checkpoint file; written is what the last one
	// wrote.
	hwFileMu sync.Mutex
	written  map[string]map[int32]int64
}

// NewManager makes the replica manager of a data directory; it opens nothing yet.
func NewManager(cfg Config) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	segment.RemoveDeletedDirs(cfg.Dir)
	return &Manager{cfg: cfg, partitions: map[string]map[int32]*Partition{}}
}

// Partition returns the replica of topic-partition on this node, or nil.
func (m *Manager) Partition(topic string, partition int32) *Partition {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.partitions[topic][partition]
}

// PartitionBytes is Partition for a topic name held as bytes (no conversion is
// allocated).
func (m *Manager) PartitionBytes(topic []byte, partition int32) *Partition {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.partitions[string(topic)][partition]
}

// Partitions lists every replica on this node.
func (m *Manager) Partitions() []*Partition {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var all []*Partition
	for _, parts := range m.partitions {
		for _, p := range parts {
			all = append(all, p)
		}
	}
	return all
}

// PartitionDir is where the replica of topic-partition keeps its log.
func (m *Manager) PartitionDir(topic string, partition int32) string {
	return filepath.Join(m.cfg.Dir, topic+"-"+strconv.Itoa(int(partition)))
}

// MakeLeader opens (or creates) the replica's log if needed and makes this node its
// leader as st says, then wakes the requests parked on it. configs are the topic's
// configs and logConfig the log settings made from them: an open log whose settings
// were made from other configs takes the new ones, so a log follows its topic's configs
// whenever the view changes, even a log opened before the topic's configs were known.
// Settings that cannot be applied are an error, but the node leads all the same:
// refusing leadership would make the partition unavailable, not the settings take
// effect. The replica is returned whenever it exists, error or not.
func (m *Manager) MakeLeader(topic string, partition int32, st PartitionState,
	configs map[string]string, logConfig func() segment.Config) (*Partition, error) {
	m.mu.Lock()
	p, cfgErr := m.open(topic, partition, st.TopicID, configs, logConfig)
	if p == nil {
		m.mu.Unlock()
		return nil, cfgErr
	}
	p.makeLeader(st)
	m.mu.Unlock()
	p.wakeWaiters()
	return p, cfgErr
}

// open returns the replica of topic-partition, opening (or creating) its log if needed,
// with its settings made from configs (see MakeLeader). A replica, open or on disk, of
// another topic id than topicID is an earlier topic's of the same name: it is deleted
// first (see PartitionState.TopicID). It returns nil only when the log cannot be opened.
// The caller holds mu.
func (m *Manager) open(topic string, partition int32, topicID string, configs map[string]string,
	logConfig func() segment.Config) (*Partition, error) {
	p := m.partitions[topic][partition]
	if p != nil && topicID != "" && p.topicID != "" && p.topicID != topicID {
		m.cfg.Logger.Warn("replica of an earlier topic of the same name: deleting it",
			"topic", topic, "partition", partition, "topic_id", p.topicID, "new_topic_id", topicID)
		p.resign()
		delete(m.partitions[topic], partition)
		if err := p.log.Delete(); err != nil {
			return nil, fmt.Errorf("replica: delete %s-%d of topic id %s: %w", topic, partition, p.topicID, err)
		}
		p = nil
	}
	var cfgErr error
	if p != nil && !maps.Equal(p.configs, configs) {
		if err := p.log.UpdateConfig(logConfig()); err != nil {
			cfgErr = fmt.Errorf("replica: configs of %s-%d: %w", topic, partition, err)
		} else {
			p.configs = configs
		}
	}
	if p == nil {
		dir := m.PartitionDir(topic, partition)
		if err := m.dropStray(topic, partition, dir, topicID); err != nil {
			return nil, err
		}
		log, err := segment.Open(dir, logConfig())
		if err != nil {
			return nil, fmt.Errorf("replica: open %s-%d: %w", topic, partition, err)
		}
		if topicID != "" {
			if err := writeTopicID(dir, topicID); err != nil {
				_ = log.Close()
				return nil, fmt.Errorf("replica: open %s-%d: %w", topic, partition, err)
			}
		}
		if p, err = newPartition(topic, partition, m.cfg.NodeID, log, m.cfg.Logger); err != nil {
			_ = log.Close()
			return nil, err
		}
		p.topicID = topicID
		p.highWatermark.Store(m.restoreHighWatermark(topic, partition, log))
		p.mu.Lock()
		p.pruneTxnsLocked() // the transactions closed below the restored high watermark
		p.mu.Unlock()
		p.configs = configs
		if m.partitions[topic] == nil {
			m.partitions[topic] = map[int32]*Partition{}
		}
		m.partitions[topic][partition] = p
	}
	return p, cfgErr
}

// dropStray removes dir, a replica directory not open, when it records another topic id
// than topicID, with the high watermark restored for it. A directory that records none
// (made before ids were recorded) is kept and takes topicID. The caller holds mu.
func (m *Manager) dropStray(topic string, partition int32, dir, topicID string) error {
	if topicID == "" {
		return nil
	}
	had, err := readTopicID(dir)
	if err != nil {
		return fmt.Errorf("replica: open %s-%d: %w", topic, partition, err)
	}
	if had == "" || had == topicID {
		return nil
	}
	m.cfg.Logger.Warn("replica directory of an earlier topic of the same name: deleting it",
		"topic", topic, "partition", partition, "topic_id", had, "new_topic_id", topicID)
	if err := segment.RemoveDir(dir); err != nil {
		return fmt.Errorf("replica: delete %s of topic id %s: %w", dir, had, err)
	}
	delete(m.loadRestored()[topic], partition)
	return nil
}

// loadRestored returns m.restored, read from the checkpoint file at the first call. The
// caller holds mu.
func (m *Manager) loadRestored() map[string]map[int32]int64 {
	if m.restored == nil {
		var err error
		if m.restored, err = readHWCheckpoint(m.cfg.Dir); err != nil {
			m.cfg.Logger.Warn("high-watermark checkpoint unreadable; using the control plane's", "err", err)
			m.restored = map[string]map[int32]int64{}
		}
	}
	return m.restored
}

// restoreHighWatermark is the high watermark the replica of topic-partition opens with
// (restoredHighWatermark), and forgets what it was restored from. The caller holds mu.
func (m *Manager) restoreHighWatermark(topic string, partition int32, log *segment.Log) int64 {
	m.loadRestored()
	local, hasLocal := m.restored[topic][partition]
	hint, hasHint := m.hints[topic][partition]
	delete(m.restored[topic], partition)
	delete(m.hints[topic], partition)
	hw := restoredHighWatermark(local, hasLocal, hint, hasHint, log.LogStartOffset(), log.LogEndOffset(), log.LatestEpoch())
	if hasLocal || hasHint {
		m.cfg.Logger.Debug("high watermark restored", "topic", topic, "partition", partition, "hw", hw,
			"checkpoint", local, "hasCheckpoint", hasLocal, "hint", hint.HighWatermark, "hasHint", hasHint)
	}
	return hw
}

// SetHighWatermarkHints gives the high watermarks the control plane holds for this
// node's replicas (their leaders' checkpoints), for the replicas that open without a
// checkpoint of this node's own; nil forgets them. Each is used at most once, and only
// under the rule of restoredHighWatermark.
func (m *Manager) SetHighWatermarkHints(hints map[string]map[int32]HighWatermarkHint) {
	m.mu.Lock()
	m.hints = hints
	m.mu.Unlock()
}

// CheckpointHighWatermarks writes the high watermark of every replica, and those read
// back for replicas not open yet, to the data directory's checkpoint file, unless
// nothing changed since the last write.
func (m *Manager) CheckpointHighWatermarks() error {
	m.hwFileMu.Lock()
	defer m.hwFileMu.Unlock()
	m.mu.RLock()
	hws := m.highWatermarksLocked()
	m.mu.RUnlock()
	return m.writeHighWatermarks(hws)
}

// highWatermarksLocked collects what the checkpoint file is to hold. The caller holds
// mu.
func (m *Manager) highWatermarksLocked() map[string]map[int32]int64 {
	hws := make(map[string]map[int32]int64, len(m.partitions)+len(m.restored))
	for topic, parts := range m.restored {
		if len(parts) > 0 {
			hws[topic] = maps.Clone(parts)
		}
	}
	for topic, parts := range m.partitions {
		if hws[topic] == nil {
			hws[topic] = make(map[int32]int64, len(parts))
		}
		for i, p := range parts {
			hws[topic][i] = p.HighWatermark()
		}
	}
	return hws
}

// writeHighWatermarks writes hws unless the file holds them already. The caller holds
// hwFileMu.
func (m *Manager) writeHighWatermarks(hws map[string]map[int32]int64) error {
	if maps.EqualFunc(hws, m.written, maps.Equal) {
		return nil
	}
	if err := writeHWCheckpoint(m.cfg.Dir, hws); err != nil {
		return err
	}
	m.written = hws
	return nil
}

// MakeFollower makes the replica of topic-partition, if this node has one, a follower of
// st.Leader (Partition.MakeFollower) and returns it; else it returns nil. It opens no
// log (Follow does).
func (m *Manager) MakeFollower(topic string, partition int32, st PartitionState) *Partition {
	p := m.Partition(topic, partition)
	if p != nil {
		p.MakeFollower(st)
	}
	return p
}

// Follow opens (or creates) the replica of topic-partition as MakeLeader does and makes
// it a follower of st.Leader: an assigned replica fetches its leader's log whether or
// not this node ever led it.
func (m *Manager) Follow(topic string, partition int32, st PartitionState,
	configs map[string]string, logConfig func() segment.Config) (*Partition, error) {
	m.mu.Lock()
	p, cfgErr := m.open(topic, partition, st.TopicID, configs, logConfig)
	m.mu.Unlock()
	if p != nil {
		p.MakeFollower(st)
	}
	return p, cfgErr
}

// DeleteTopic closes and removes every replica of topic, with its data.
func (m *Manager) DeleteTopic(topic string) error {
	m.mu.Lock()
	parts := m.partitions[topic]
	delete(m.partitions, topic)
	delete(m.restored, topic)
	delete(m.hints, topic)
	m.mu.Unlock()
	var errs []error
	for _, p := range parts {
		p.resign()
		if err := p.log.Delete(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// DeletePartition closes and removes this node's replica of topic-partition, with its
// data, open or only on disk: the partition was reassigned away from this node. The
// requests parked on it are woken to answer that this node no longer leads it. The
// files go in the background (segment.RemoveDir).
func (m *Manager) DeletePartition(topic string, partition int32) error {
	m.mu.Lock()
	p := m.partitions[topic][partition]
	delete(m.partitions[topic], partition)
	if len(m.partitions[topic]) == 0 {
		delete(m.partitions, topic)
	}
	delete(m.restored[topic], partition)
	delete(m.hints[topic], partition)
	m.mu.Unlock()
	if p == nil {
		return segment.RemoveDir(m.PartitionDir(topic, partition))
	}
	p.Resign()
	return p.log.Delete()
}

// Close checkpoints the high watermarks, closes every log cleanly and forgets the
// replicas.
func (m *Manager) Close() error {
	m.hwFileMu.Lock()
	defer m.hwFileMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	if len(m.partitions) > 0 {
		if err := m.writeHighWatermarks(m.highWatermarksLocked()); err != nil {
			errs = append(errs, err)
		}
	}
	for _, parts := range m.partitions {
		for _, p := range parts {
			// The producer state as of the end: the next open replays nothing.
			p.mu.Lock()
			if err := p.writeSnapshot(true); err != nil {
				errs = append(errs, err)
			}
			p.mu.Unlock()
			if err := p.log.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	m.partitions = map[string]map[int32]*Partition{}
	return errors.Join(errs...)
}

// ReplicasOnDisk lists the topic-partition directories under the data directory, open
// or not: after a restart, the replicas of topics deleted meanwhile are found here.
func (m *Manager) ReplicasOnDisk() (map[string][]int32, error) {
	entries, err := os.ReadDir(m.cfg.Dir)
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
