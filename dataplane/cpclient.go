package dataplane

import (
	"context"
	"errors"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// ClientControlPlane is the ControlPlane of a real node: controlplane/client with its
// metadata watch and this node's registration (set once registered).
type ClientControlPlane struct {
	Client       *client.Client
	Metadata     *client.Metadata
	Registration *client.Registration
}

// Snapshot implements ControlPlane.
func (c *ClientControlPlane) Snapshot() *client.Snapshot { return c.Metadata.Snapshot() }

// WaitRevision implements ControlPlane.
func (c *ClientControlPlane) WaitRevision(ctx context.Context, rev int64) (*client.Snapshot, error) {
	return c.Metadata.WaitRevision(ctx, rev)
}

// CreateTopic implements ControlPlane.
func (c *ClientControlPlane) CreateTopic(ctx context.Context, spec client.TopicSpec) (cluster.Topic, int64, error) {
	return c.Client.CreateTopic(ctx, spec)
}

// DeleteTopic implements ControlPlane.
func (c *ClientControlPlane) DeleteTopic(ctx context.Context, name string) (int64, error) {
	return c.Client.DeleteTopic(ctx, name)
}

// CreatePartitions implements ControlPlane.
func (c *ClientControlPlane) CreatePartitions(ctx context.Context, name string, total int32) (int64, error) {
	return c.Client.CreatePartitions(ctx, name, total)
}

// AlterTopicConfigs implements ControlPlane.
func (c *ClientControlPlane) AlterTopicConfigs(ctx context.Context, name string, validateOnly bool, alter func(map[string]string) (map[string]string, error)) (int64, error) {
	return c.Client.AlterTopicConfigs(ctx, name, validateOnly, alter)
}

// AllocateProducerIDs implements ControlPlane.
func (c *ClientControlPlane) AllocateProducerIDs(ctx context.Context) (client.ProducerIDBlock, error) {
	if c.Registration == nil {
		return client.ProducerIDBlock{}, errors.New("dataplane: not registered with the control plane yet")
	}
	return c.Registration.AllocateProducerIDs(ctx)
}

// AlterISR implements ControlPlane.
func (c *ClientControlPlane) AlterISR(ctx context.Context, req client.AlterISRRequest) (cluster.PartitionState, error) {
	if c.Registration == nil {
		return cluster.PartitionState{}, errors.New("dataplane: not registered with the control plane yet")
	}
	return c.Registration.AlterISR(ctx, req)
}

// ForwardGroupRequest implements ControlPlane.
func (c *ClientControlPlane) ForwardGroupRequest(ctx context.Context, place *client.GroupPlace, clientHost string, request []byte) ([]byte, error) {
	return c.Client.ForwardGroupRequestInOrder(ctx, place, clientHost, request)
}
