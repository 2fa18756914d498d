// Package chaos is the fault suite: Jepsen-style runs against a local Gregor cluster of
// real gregor-cp and gregor-dp processes. A run drives producers and consumers with
// real Kafka clients (package chaos/workload), injects seeded faults through the test
// cluster harness (kills, pauses, network cuts, storage damage), records everything in
// a history (package chaos/history) and judges it (package chaos/checker): no
// acknowledged write lost, no duplicate from an idempotent producer, replicas agreeing
// below the high watermark, a linearizable control-plane history, and transactions all
// or nothing at read_committed.
//
// The scenarios are this package's tests: a short run of each is part of `make test`;
// `make chaos` runs a random mix for CHAOS_TIME (10 minutes by default).
package chaos
