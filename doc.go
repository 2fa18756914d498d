// Package gregor is a streaming log broker that speaks Apache Kafka's wire protocol,
// built as two kinds of process: data-plane nodes (gregor-dp, package node over
// dataplane, replica and segment) that move the bytes, and a control plane (gregor-cp,
// package controlplane over embedded etcd) that decides who leads and who is in sync.
//
// This root package holds no code, only the repository-wide checks (deps_test.go, which
// enforces the package map of docs/architecture.md).
package gregor
