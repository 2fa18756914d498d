// Package cluster is Gregor's cluster model and its etcd key schema: the registered
// data-plane nodes (Broker), topics and their configs, partition states (replicas,
// leader, leader epoch, ISR, partition epoch, reassignment in progress), node
// decommissions, high-watermark checkpoints, the group
// coordinator's address and the keys every one of them is stored under. SCHEMA.md in
// controlplane/ describes each key, its value and its writer.
//
// Both sides of the control plane share it: the control-plane node (controller, group
// coordinator) and controlplane/client, the only package a data-plane node uses to talk
// to the control plane. It imports nothing else of Gregor's, so neither side can pull
// the other in through it.
package cluster
