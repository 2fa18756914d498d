package client

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// BeginControlledShutdown tells the controller that this node is about to stop (Kafka's
// controlled shutdown): it puts the node's ShutdownKey under the registration's lease,
// fenced on the broker epoch. From then on the controller elects the node leader
// nowhere, moves each leadership it holds to another live ISR member (a new leader
// epoch; a partition with no other goes offline, its ISR kept), takes it out of every
// ISR that keeps a member without it, and an AlterISR adding it is refused
// (INELIGIBLE_REPLICA). The node waits until its view shows it leads nothing, then
// stops; the key goes with the registration. It is idempotent; a registration lost
// or taken over is refused (ErrRegistrationLost).
func (r *Registration) BeginControlledShutdown(ctx context.Context) error {
	me := r.broker
	resp, err := r.c.txn(ctx, "controlled_shutdown", []clientv3.Cmp{brokerEpochIs(me.ID, me.Epoch)},
		[]clientv3.Op{clientv3.OpPut(cluster.ShutdownKey(me.ID), cluster.MustJSON(cluster.ControlledShutdown{Epoch: me.Epoch}),
			clientv3.WithLease(r.lease))})
	if err != nil {
		return fmt.Errorf("client: controlled shutdown of %d: %w", me.ID, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("client: controlled shutdown of %d: %w", me.ID, ErrRegistrationLost)
	}
	return nil
}
