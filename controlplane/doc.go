// Package controlplane will hold the control-plane node (gregor-cp): an embedded etcd
// member, the controller (one active at a time, elected with concurrency.Election) that
// owns topics, partition leaders, leader epochs and ISRs, the consumer-group coordinator,
// and controlplane/client, the only package a data-plane node imports to talk to it.
package controlplane
