// Package dataplane is the Kafka-protocol data-plane node (gregor-dp): a gnet event-loop
// server that decodes requests with proto, answers them in request order per connection,
// and writes responses zero-copy through sendfile (header bytes, then file regions of
// segment logs). It handles requests only: the partition replicas, their roles, high
// watermarks, producer state and appends are package replica's, which the handlers
// call. It talks to the control plane only through a small interface that cmd/dp
// satisfies with controlplane/client. Handler files are named by API key
// (18_apiversions.go, …) and open with the versions they serve.
package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
)

// Defaults of the limits, each a Config field.
const (
	// DefaultMaxConnections bounds open client connections in all.
	DefaultMaxConnections = 10_000
	// DefaultMaxConnectionsPerIP bounds open connections from one address
	// (Kafka's max.connections.per.ip is unbounded; a flood of idle connections from one
	// host is the usual way to exhaust a broker).
	DefaultMaxConnectionsPerIP = 1_000
	// DefaultMaxInFlightPerConnection bounds requests read but not yet answered on one
	// connection: past it the connection's further bytes wait in the buffer. Clients
	// pipeline 5 by default.
	DefaultMaxInFlightPerConnection = 100
	// DefaultFrameReadTimeout bounds how long one request may take to arrive once its
	// first byte has (a slow-drip client holds memory and a connection slot).
	DefaultFrameReadTimeout = 30 * time.Second
	// DefaultIdleTimeout closes connections with no request for this long
	// (connections.max.idle.ms).
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultWriteTimeout bounds a parked response write: a reader that takes no bytes for
	// this long is cut off.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultCopyBelowBytes: file regions smaller than this are copied, not sendfile'd
	// (one syscall less for a tiny fetch).
	DefaultCopyBelowBytes = 0
	// DefaultReadBufferBytes is each event loop's socket read buffer: a request that fits
	// in one read is handled where it was read, with no copy; a larger one is assembled
	// in a buffer of its own (one copy of each byte).
	DefaultReadBufferBytes = 1 << 20
	// housekeepingInterval is how often deadlines are checked.
	housekeepingInterval = time.Second
)

// Config holds a data-plane node's settings. Zero fields take their defaults.
type Config struct {
	// NodeID is this node's broker id (--id).
	NodeID int32
	// Listen is the Kafka listener address, host:port (--listen).
	Listen string
	// DataDir holds the partition replicas' logs, one directory each (--data-dir).
	DataDir string
	// LogConfig gives the storage settings of a topic's logs; nil means the topic's
	// configs from the control plane over the storage engine's defaults.
	LogConfig func(topic string) segment.Config
	// Advertise is the host:port clients are told to use; empty means Listen.
	Advertise string
	// EventLoops is the number of gnet event loops (default 2: this node is sized for
	// small machines; each loop is one goroutine locked to its connections).
	EventLoops int
	// MaxFrameBytes limits a request's size (default 100 MiB); checked before any
	// allocation.
	MaxFrameBytes int
	// Connection limits; see the Default… constants.
	MaxConnections           int
	MaxConnectionsPerIP      int
	MaxInFlightPerConnection int
	FrameReadTimeout         time.Duration
	IdleTimeout              time.Duration
	WriteTimeout             time.Duration
	// ReadBufferBytes is each event loop's read buffer (rounded up to a power of two).
	ReadBufferBytes int
	// Pprof serves Go's profiles under /debug/pprof/ on the HTTP handler.
	Pprof bool
	// CopyBelowBytes sends file regions below this size by pread+write.
	CopyBelowBytes int64
	// ControlPlane is the control plane; cmd/dp wires controlplane/client.
	ControlPlane ControlPlane
	// AutoCreateTopics creates a topic (with the default partitions and replication
	// factor) when a Metadata request names one that does not exist and allows it, as
	// Kafka's auto.create.topics.enable does. Off by default.
	AutoCreateTopics bool
	// HWRecorder receives high-watermark checkpoints (nil: none are reported).
	HWRecorder HWRecorder
	// LeaseSafeUntil is when this node's control-plane registration may have expired at
	// the latest (controlplane/client's Registration.SafeUntil). Past it the controller
	// may have moved this node's leaderships, so the node acknowledges no more writes
	// (NOT_LEADER_OR_FOLLOWER) until its lease is renewed. nil: never fenced.
	LeaseSafeUntil func() time.Time
	// BrokerEpoch is this node's registration epoch (controlplane/client's
	// Registration.Broker().Epoch). With it set, Reconcile leads only partitions whose
	// state was written after this registration, and none once the view shows another
	// registration of this node id: a leadership given to an earlier process of the node
	// (before a crash and restart) waits until the controller gives it to this one with
	// a new leader epoch, and a process whose registration a later one took over stops
	// leading. 0: not checked.
	BrokerEpoch int64
	// DialReplica dials a leader's Kafka listener (addr, as registered) for this node's
	// replica fetchers; nil: a TCP dial of addr. The cluster harness routes it through
	// its links between nodes.
	DialReplica func(ctx context.Context, brokerID int32, addr string) (net.Conn, error)
	// ReplicaLagTimeMax is Kafka's replica.lag.time.max.ms: an ISR follower that has not
	// caught up with its leader's log end for this long leaves the ISR (default
	// DefaultReplicaLagTimeMax).
	ReplicaLagTimeMax time.Duration
	// Replica fetchers' settings (Kafka's replica.fetch.*); see the DefaultReplica…
	// constants of fetcher.go.
	ReplicaFetchMaxWait          time.Duration
	ReplicaFetchMinBytes         int32
	ReplicaFetchMaxBytes         int32
	ReplicaFetchResponseMaxBytes int32
	ReplicaFetchBackoff          time.Duration
	ReplicaSocketTimeout         time.Duration
	// ReplicaAppend is how a follower appends what it fetched: ReplicaAppendCopy or
	// ReplicaAppendSplice (fetcher_splice.go); empty: DefaultReplicaAppend.
	ReplicaAppend string
	// Upkeep intervals; see the Default… constants of housekeeping.go.
	HWReportInterval       time.Duration
	RetentionCheckInterval time.Duration
	CheckpointInterval     time.Duration
	// Logger receives the node's logs (default slog.Default()).
	Logger *slog.Logger
	// Metrics is the set the node registers its metrics in (default a new set).
	Metrics *metrics.Set
}

func (c Config) withDefaults() (Config, error) {
	if c.DataDir == "" {
		return c, fmt.Errorf("dataplane: no data directory")
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:9092"
	}
	if c.Advertise == "" {
		c.Advertise = c.Listen
	}
	if c.EventLoops == 0 {
		c.EventLoops = 2
	}
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = proto.DefaultMaxFrameBytes
	}
	if c.ReadBufferBytes == 0 {
		c.ReadBufferBytes = DefaultReadBufferBytes
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxConnectionsPerIP == 0 {
		c.MaxConnectionsPerIP = DefaultMaxConnectionsPerIP
	}
	if c.MaxInFlightPerConnection == 0 {
		c.MaxInFlightPerConnection = DefaultMaxInFlightPerConnection
	}
	if c.FrameReadTimeout == 0 {
		c.FrameReadTimeout = DefaultFrameReadTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.HWReportInterval == 0 {
		c.HWReportInterval = DefaultHWReportInterval
	}
	if c.RetentionCheckInterval == 0 {
		c.RetentionCheckInterval = DefaultRetentionCheckInterval
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewSet()
	}
	c.setReplicaDefaults()
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return c, fmt.Errorf("dataplane: listen address %q: %w", c.Listen, err)
	}
	if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
		return c, fmt.Errorf("dataplane: advertised address %q: %w", c.Advertise, err)
	}
	if c.ReplicaAppend != ReplicaAppendCopy && c.ReplicaAppend != ReplicaAppendSplice {
		return c, fmt.Errorf("dataplane: replica append path %q: want %q or %q", c.ReplicaAppend, ReplicaAppendCopy, ReplicaAppendSplice)
	}
	if c.EventLoops < 1 || c.MaxFrameBytes < 64 || c.MaxConnections < 1 || c.MaxConnectionsPerIP < 1 || c.MaxInFlightPerConnection < 1 || c.ReadBufferBytes < 1 {
		return c, fmt.Errorf("dataplane: limits out of range: %+v", c)
	}
	return c, nil
}

func (c *Config) setReplicaDefaults() {
	if c.ReplicaFetchMaxWait == 0 {
		c.ReplicaFetchMaxWait = DefaultReplicaFetchMaxWait
	}
	if c.ReplicaFetchMinBytes == 0 {
		c.ReplicaFetchMinBytes = DefaultReplicaFetchMinBytes
	}
	if c.ReplicaFetchMaxBytes == 0 {
		c.ReplicaFetchMaxBytes = DefaultReplicaFetchMaxBytes
	}
	if c.ReplicaFetchResponseMaxBytes == 0 {
		c.ReplicaFetchResponseMaxBytes = DefaultReplicaFetchResponseMaxBytes
	}
	if c.ReplicaFetchBackoff == 0 {
		c.ReplicaFetchBackoff = DefaultReplicaFetchBackoff
	}
	if c.ReplicaLagTimeMax == 0 {
		c.ReplicaLagTimeMax = DefaultReplicaLagTimeMax
	}
	if c.ReplicaSocketTimeout == 0 {
		c.ReplicaSocketTimeout = DefaultReplicaSocketTimeout
	}
	if c.ReplicaAppend == "" {
		c.ReplicaAppend = DefaultReplicaAppend
	}
}
