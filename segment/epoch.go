package segment

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// EpochEntry says that leader epoch Epoch wrote its first batch at StartOffset.
type EpochEntry struct {
	Epoch       int32
	StartOffset int64
}

// LeaderEpochCache maps leader epochs to the offset where each began, persisted in
// leader-epoch-checkpoint (format in checkpoint.go). A follower asks the leader for the
// end offset of its latest epoch (OffsetForLeaderEpoch) and truncates to it, never to its
// own high watermark (KIP-101, KIP-279). It is truncated with the log. The log's lock
// guards it.
type LeaderEpochCache struct {
	path string
	// entries are sorted. Invariant: epochs and start offsets both strictly increase.
	entries []EpochEntry
}

func loadLeaderEpochCache(dir string) (*LeaderEpochCache, error) {
	c := &LeaderEpochCache{path: filepath.Join(dir, leaderEpochFile)}
	lines, err := readCheckpointLines(c.path)
	if err != nil {
		return nil, err
	}
	if lines == nil {
		return c, nil
	}
	n, err := strconv.Atoi(lines[0])
	if err != nil || n != len(lines)-1 {
		return nil, fmt.Errorf("segment: %s: entry count %q does not match %d lines", c.path, lines[0], len(lines)-1)
	}
	for _, line := range lines[1:] {
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("segment: %s: bad line %q", c.path, line)
		}
		epoch, err1 := strconv.ParseInt(fields[0], 10, 32)
		start, err2 := strconv.ParseInt(fields[1], 10, 64)
		if err1 != nil || err2 != nil || epoch < 0 || start < 0 {
			return nil, fmt.Errorf("segment: %s: bad line %q", c.path, line)
		}
		e := EpochEntry{Epoch: int32(epoch), StartOffset: start}
		if k := len(c.entries); k > 0 && (e.Epoch <= c.entries[k-1].Epoch || e.StartOffset <= c.entries[k-1].StartOffset) {
			return nil, fmt.Errorf("segment: %s: entries out of order at %q", c.path, line)
		}
		c.entries = append(c.entries, e)
	}
	return c, nil
}

func (c *LeaderEpochCache) persist() error {
	var b []byte
	b = fmt.Appendf(b, "%d\n%d\n", checkpointVersion, len(c.entries))
	for _, e := range c.entries {
		b = fmt.Appendf(b, "%d %d\n", e.Epoch, e.StartOffset)
	}
	return WriteFileAtomic(c.path, b)
}

// Entries returns a copy of the cache's entries.
func (c *LeaderEpochCache) Entries() []EpochEntry { return append([]EpochEntry(nil), c.entries...) }

// latest returns the latest epoch, or -1 when there is none.
func (c *LeaderEpochCache) latest() int32 {
	if len(c.entries) == 0 {
		return -1
	}
	return c.entries[len(c.entries)-1].Epoch
}

// assign records that epoch starts at startOffset, if epoch is newer than the latest. An
// entry whose start offset is not below startOffset is dropped first (the log was
// truncated under it). It reports whether the cache changed.
func (c *LeaderEpochCache) assign(epoch int32, startOffset int64) bool {
	if epoch < 0 || epoch <= c.latest() {
		return false
	}
	for len(c.entries) > 0 && c.entries[len(c.entries)-1].StartOffset >= startOffset {
		c.entries = c.entries[:len(c.entries)-1]
	}
	c.entries = append(c.entries, EpochEntry{Epoch: epoch, StartOffset: startOffset})
	return true
}

// endOffsetFor answers OffsetForLeaderEpoch: the largest epoch ≤ epoch that the cache
// knows and the offset where it ended — the start of the next epoch, or logEndOffset for
// the latest. An epoch older than every epoch the cache knows ended where the first
// known one starts, as Kafka answers it: whatever the asker holds of it is not here.
// With no epoch at all, or for a negative one, it returns (-1, -1), Kafka's
// UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET.
func (c *LeaderEpochCache) endOffsetFor(epoch int32, logEndOffset int64) (int32, int64) {
	if epoch < 0 || len(c.entries) == 0 {
		return -1, -1
	}
	if epoch < c.entries[0].Epoch {
		return epoch, c.entries[0].StartOffset
	}
	for i := len(c.entries) - 1; i >= 0; i-- {
		if c.entries[i].Epoch <= epoch {
			if i == len(c.entries)-1 {
				return c.entries[i].Epoch, logEndOffset
			}
			return c.entries[i].Epoch, c.entries[i+1].StartOffset
		}
	}
	return -1, -1
}

// truncateFromEnd drops the entries that start at or after endOffset (the log was
// truncated to endOffset). It reports whether the cache changed.
func (c *LeaderEpochCache) truncateFromEnd(endOffset int64) bool {
	n := len(c.entries)
	for n > 0 && c.entries[n-1].StartOffset >= endOffset {
		n--
	}
	changed := n != len(c.entries)
	c.entries = c.entries[:n]
	return changed
}

// truncateFromStart drops the entries wholly below startOffset (the log start moved
// there), keeping the one in force at startOffset with its start moved up to it. It
// reports whether the cache changed.
func (c *LeaderEpochCache) truncateFromStart(startOffset int64) bool {
	i := 0 // the last entry starting at or below startOffset
	for i+1 < len(c.entries) && c.entries[i+1].StartOffset <= startOffset {
		i++
	}
	if len(c.entries) == 0 || c.entries[0].StartOffset >= startOffset {
		return false
	}
	c.entries = append(c.entries[:0], c.entries[i:]...)
	c.entries[0].StartOffset = startOffset
	return true
}

// clear drops every entry.
func (c *LeaderEpochCache) clear() bool {
	changed := len(c.entries) > 0
	c.entries = c.entries[:0]
	return changed
}
