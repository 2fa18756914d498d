// Package node assembles a Gregor data-plane node from its parts — the data directory's
// lock and incarnation, the control-plane client and metadata watch, the registration
// (with the wait for an earlier incarnation's lease), the high-watermark checkpointer,
// the Kafka listener (dataplane.Server), the HTTP endpoints and the reconcile loop — in
// one place: cmd/dp (gregor-dp) is flag parsing around StartDataPlane, and tests and the
// cluster harness (internal/testcluster) start nodes with the same call, so a node is
// put together one way only.
//
// A control-plane node is assembled by controlplane.Start; this package only adds the
// addresses file both commands write (see AddressesFileName).
//
// Every listener may be asked for port 0: the node binds it (the Kafka port is reserved
// before the node registers, so the registration carries the real port) and reports the
// bound addresses (DataPlane.Addr, DataPlane.HTTPAddr).
package node
