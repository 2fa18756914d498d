// Package perf is Gregor's bench suite, modelled on the OpenMessaging Benchmark (OMB):
// a workload (YAML, OMB's field names) is run against a messaging system through a
// Driver, and the harness measures publish and consume rates, publish and end-to-end
// latency (HdrHistogram, corrected for coordinated omission at fixed rates), and the CPU
// each server process spends per GB moved.
//
// The package itself holds what is system-independent — workloads, rate control, latency
// accounting, the run loop, results and their reports (terminal table, JSON,
// BENCHMARKS.md section, SVG charts, the A/B table comparing two builds of Gregor). The
// drivers for the Kafka protocol, NATS JetStream and Redis Streams, and the code that
// starts the peers, live in perf/drivers so that this package can be tested against an
// in-memory sink without any server. The cluster part of the suite — replication's cost
// and recovery on three data-plane processes — is perf/replication.
//
// Every message carries, in its first 8 bytes, the time it was meant to be sent (Unix
// nanoseconds, little endian). The consumer subtracts it from the time of arrival, so
// end-to-end latency needs no clock other than the one machine's.
package perf
