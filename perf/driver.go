package perf

import (
	"context"
	"encoding/binary"
)

// Driver connects the harness to one messaging system. The harness creates the topics a
// workload needs, opens producers and consumers on them, and reads the CPU time of the
// system's server processes; everything system-specific lives behind this interface.
type Driver interface {
	// Name is the driver's name as given to --driver ("kafka", "jetstream", …).
	Name() string
	// System names what the driver is talking to, for reports ("Gregor",
	// "NATS JetStream 2.9.10", …). It may be refined once the driver is connected.
	System() string
	// Durability says what an acknowledged publish means with the settings the driver
	// uses (fsync policy, storage), so reports can say how the systems differ.
	Durability() string
	// CreateTopic creates a topic (or stream, or set of keys) with the given partitions.
	CreateTopic(ctx context.Context, topic string, partitions int) error
	// DeleteTopic removes a topic created by CreateTopic, freeing its storage.
	DeleteTopic(ctx context.Context, topic string) error
	// NewProducer opens a producer on topic. ack is called once for every message a
	// successful Send accepted, when the system acknowledged it or failed to.
	NewProducer(ctx context.Context, topic string, w *Workload, ack AckFunc) (Producer, error)
	// NewConsumer opens a consumer of the given partitions of topic, reading from the
	// topic's start, and calls handle for every message it receives. handle is called
	// from one goroutine at a time and must not retain value.
	NewConsumer(ctx context.Context, topic string, partitions []int, w *Workload, handle ConsumeFunc) (Consumer, error)
	// ServerPIDs are the processes whose CPU time the run accounts to the system; none
	// when they are unknown (a remote broker).
	ServerPIDs() []int
	// Close releases the driver's connections and stops any process it started.
	Close() error
}

// AckFunc reports that the message intended for intendedNs (Unix ns) was acknowledged
// (err == nil) or failed. Drivers may call it from any goroutine.
type AckFunc func(intendedNs int64, err error)

// ConsumeFunc receives one message's value.
type ConsumeFunc func(value []byte)

// Producer publishes messages to one topic.
type Producer interface {
	// Send publishes value to partition, with key (nil for none). The first 8 bytes of
	// value hold intendedNs, little endian (see StampValue). Send may block to apply
	// back-pressure; it does not retain key or value after it returns. An error means the
	// message was not accepted and ack will not be called for it.
	Send(ctx context.Context, partition int, key, value []byte, intendedNs int64) error
	// Flush sends anything buffered and waits until every accepted message was acked.
	Flush(ctx context.Context) error
	// Close flushes and releases the producer.
	Close() error
}

// Consumer receives messages until closed.
type Consumer interface {
	// Close stops the consumer; handle is not called after Close returns.
	Close() error
}

// StampValue writes the intended send time into the first 8 bytes of value.
func StampValue(value []byte, intendedNs int64) {
	binary.LittleEndian.PutUint64(value, uint64(intendedNs))
}

// ValueStamp reads the intended send time back from a message value; ok is false if the
// value is too short to hold one.
func ValueStamp(value []byte) (intendedNs int64, ok bool) {
	if len(value) < 8 {
		return 0, false
	}
	return int64(binary.LittleEndian.Uint64(value)), true
}
