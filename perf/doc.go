// Package perf will hold the bench suite: OpenMessaging-style workloads (YAML), drivers
// for the Kafka protocol (franz-go and a raw pre-encoded batch producer), NATS JetStream
// and Redis Streams, latency accounting with hdrhistogram, and the reporting that
// regenerates BENCHMARKS.md.
package perf
