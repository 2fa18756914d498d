// Package drivers holds the bench suite's drivers — the Kafka protocol (franz-go, and a
// raw producer of pre-encoded batches), NATS JetStream and Redis Streams — and starts the
// peers (nats-server, redis-server) on loopback when no address is given.
//
// Each driver runs its system with durability settings as close to Gregor's default
// (acks=1: the leader has written the batch to its log, in the page cache, before it
// acknowledges; fsync by flush policy) as the system allows, and says which in
// Durability.
package drivers

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gregor-streaming/gregor/perf"
)

// Names lists the drivers, in the order the suite runs them.
var Names = []string{"kafka-raw", "kafka", "jetstream", "redis"}

// DefaultBootstrap is where the Kafka drivers look for a broker by default: Gregor's
// data plane as `make run` starts it.
const DefaultBootstrap = "127.0.0.1:9092"

// Options configure a driver.
type Options struct {
	// Bootstrap is the system's address. Kafka drivers: a broker's host:port (default
	// DefaultBootstrap). jetstream: a nats:// URL, redis: a host:port, of a server
	// already running; empty starts one on loopback for the run.
	Bootstrap string
	// ServerPIDs are the processes to account the system's CPU to, when the harness did
	// not start them and they cannot be found from the listening port (nil: find it).
	ServerPIDs []int
	// WorkDir holds started peers' data and logs; empty: a temporary directory, removed
	// on Close.
	WorkDir string
	// Log receives warnings (consumer errors); nil discards them.
	Log io.Writer
	// ReplicationFactor and TopicConfigs are given to the topics a Kafka driver creates
	// (0 and nil: the broker's defaults), e.g. 3 and min.insync.replicas=2 for the
	// replication benchmarks. The other drivers ignore them.
	ReplicationFactor int16
	TopicConfigs      map[string]string
}

// New returns the driver called name, connected (and its peer started, if it starts
// one). The caller must Close it.
func New(name string, o Options) (perf.Driver, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	switch name {
	case "kafka":
		return newKafka(o, false)
	case "kafka-raw":
		return newKafka(o, true)
	case "jetstream":
		return newJetStream(o)
	case "redis":
		return newRedis(o)
	}
	return nil, fmt.Errorf("unknown driver %q (one of %s)", name, strings.Join(Names, ", "))
}

// workDir returns o.WorkDir, or a new temporary directory and a function removing it.
func workDir(o Options, prefix string) (dir string, cleanup func(), err error) {
	if o.WorkDir != "" {
		if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
			return "", nil, err
		}
		return o.WorkDir, func() {}, nil
	}
	dir, err = os.MkdirTemp("", "gregor-bench-"+prefix+"-")
	if err != nil {
		return "", nil, err
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

// serverPID resolves the pid to account CPU to for a server at addr that the harness
// did not start: the one given, or the local process listening on addr's port.
func serverPID(o Options, addr string) []int {
	if len(o.ServerPIDs) > 0 {
		return o.ServerPIDs
	}
	if !isLoopback(addr) {
		return nil
	}
	pid, err := PIDListening(portOf(addr))
	if err != nil {
		fmt.Fprintf(o.Log, "bench: server CPU not accounted: %v\n", err)
		return nil
	}
	return []int{pid}
}
