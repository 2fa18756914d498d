package segment

import (
	"fmt"
	"log/slog"
	"math"
	"time"
)

// Defaults, named after the Kafka topic configs they mirror.
const (
	// DefaultSegmentBytes is segment.bytes: roll the active segment past this size.
	DefaultSegmentBytes = 1 << 30
	// DefaultSegmentAge is segment.ms: roll the active segment once its first batch is
	// this old.
	DefaultSegmentAge = 7 * 24 * time.Hour
	// DefaultIndexIntervalBytes is index.interval.bytes: one offset-index entry per this
	// many bytes of log.
	DefaultIndexIntervalBytes = 4096
	// DefaultIndexMaxBytes is segment.index.bytes: the preallocated size of each index;
	// a full index rolls the segment.
	DefaultIndexMaxBytes = 10 << 20
	// DefaultMaxBatchBytes is max.message.bytes: the largest batch accepted (Kafka's
	// 1 MiB plus the log overhead).
	DefaultMaxBatchBytes = 1<<20 + 12

	// maxSegmentBytes bounds segment.bytes: positions in the offset index are 32-bit
	// and Kafka keeps them signed.
	maxSegmentBytes = math.MaxInt32
	// minIndexMaxBytes keeps room for a useful index even when misconfigured.
	minIndexMaxBytes = 4 * timeIndexEntrySize
)

// TimestampType is message.timestamp.type.
type TimestampType int8

const (
	// CreateTime keeps the producer's timestamps.
	CreateTime TimestampType = iota
	// LogAppendTime stamps each batch with the broker's clock on append.
	LogAppendTime
)

// FlushPolicy says when a log forces its writes to disk. The zero value flushes only on
// roll and close and relies on replication for durability, as Kafka does by default.
type FlushPolicy struct {
	// Messages, if > 0, flushes once this many messages are unflushed (flush.messages).
	Messages int64
	// Interval, if > 0, flushes when data has been unflushed this long (flush.ms),
	// checked by a background goroutine of the log.
	Interval time.Duration
	// Sync makes Append return only once its batches are on disk. Appends that run
	// concurrently share one fdatasync (group commit).
	Sync bool
}

// Config holds the settings of one partition replica's log. The zero value of each field
// means its default.
type Config struct {
	// SegmentBytes is segment.bytes (default 1 GiB, at most 2 GiB-1).
	SegmentBytes int64
	// SegmentAge is segment.ms (default 7 days).
	SegmentAge time.Duration
	// IndexIntervalBytes is index.interval.bytes (default 4 KiB).
	IndexIntervalBytes int
	// IndexMaxBytes is segment.index.bytes (default 10 MiB).
	IndexMaxBytes int
	// MaxBatchBytes is max.message.bytes: larger batches are refused (default 1 MiB+12).
	// A limit below a batch header's 61 bytes refuses every batch, as Kafka's
	// max.message.bytes=0 does.
	MaxBatchBytes int
	// RetentionAge is retention.ms; negative means keep forever, zero the default
	// (7 days, as Kafka).
	RetentionAge time.Duration
	// RetentionBytes is retention.bytes; zero or negative means no size limit.
	RetentionBytes int64
	// TimestampType is message.timestamp.type.
	TimestampType TimestampType
	// Flush is the durability policy.
	Flush FlushPolicy
	// Now is the clock (tests inject one); nil means time.Now.
	Now func() time.Time
	// Logger receives recovery reports and background errors; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultRetentionAge is retention.ms's default.
const DefaultRetentionAge = 7 * 24 * time.Hour

// withDefaults returns c with every zero field set to its default, or an error if a
// field is out of range.
func (c Config) withDefaults() (Config, error) {
	if c.SegmentBytes == 0 {
		c.SegmentBytes = DefaultSegmentBytes
	}
	if c.SegmentAge == 0 {
		c.SegmentAge = DefaultSegmentAge
	}
	if c.IndexIntervalBytes == 0 {
		c.IndexIntervalBytes = DefaultIndexIntervalBytes
	}
	if c.IndexMaxBytes == 0 {
		c.IndexMaxBytes = DefaultIndexMaxBytes
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.RetentionAge == 0 {
		c.RetentionAge = DefaultRetentionAge
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.SegmentBytes < 1 || c.SegmentBytes > maxSegmentBytes:
		return c, fmt.Errorf("segment: segment.bytes %d out of range [1, %d]", c.SegmentBytes, maxSegmentBytes)
	case c.SegmentAge < 0:
		return c, fmt.Errorf("segment: segment.ms %v is negative", c.SegmentAge)
	case c.IndexIntervalBytes < 0:
		return c, fmt.Errorf("segment: index.interval.bytes %d is negative", c.IndexIntervalBytes)
	case c.IndexMaxBytes < minIndexMaxBytes || c.IndexMaxBytes > math.MaxInt32:
		return c, fmt.Errorf("segment: segment.index.bytes %d out of range [%d, %d]", c.IndexMaxBytes, minIndexMaxBytes, math.MaxInt32)
	case c.MaxBatchBytes < 0:
		return c, fmt.Errorf("segment: max.message.bytes %d is negative", c.MaxBatchBytes)
	case c.Flush.Messages < 0 || c.Flush.Interval < 0:
		return c, fmt.Errorf("segment: negative flush policy %+v", c.Flush)
	}
	return c, nil
}
