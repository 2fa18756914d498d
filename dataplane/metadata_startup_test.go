package dataplane

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// viewOnly is a control plane that only has a metadata view: the node's state before
// its first reconcile needs no other operation.
type viewOnly struct {
	ControlPlane
	snap *client.Snapshot
}

func (v viewOnly) Snapshot() *client.Snapshot { return v.snap }

// TestMetadataBeforeFirstReconcile: a node whose listener is open but which has not
// reconciled yet answers Metadata from the control plane's view, not from an empty one —
// librdkafka takes a topic missing from a Metadata answer for a deleted topic and fails
// its queued messages.
func TestMetadataBeforeFirstReconcile(t *testing.T) {
	tp := cluster.TopicPartition{Topic: "t", Partition: 0}
	snap := &client.Snapshot{
		Brokers:    map[int32]cluster.Broker{1: {ID: 1, Host: "127.0.0.1", Port: 9092}},
		Topics:     map[string]cluster.Topic{"t": {Name: "t", Partitions: 1, ReplicationFactor: 1}},
		Partitions: map[cluster.TopicPartition]cluster.PartitionState{tp: {Topic: "t", Replicas: []int32{1}, Leader: 1, ISR: []int32{1}}},
	}
	s := startServer(t, Config{NodeID: 1, ControlPlane: viewOnly{snap: snap}})
	c := dial(t, s)
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr("t")}}
	if _, err := c.Write(frameRequest(req, 8, 1)); err != nil {
		t.Fatal(err)
	}
	_, body := readResponse(t, c, false)
	resp := kmsg.NewPtrMetadataResponse()
	resp.SetVersion(8)
	if err := resp.ReadFrom(body); err != nil {
		t.Fatal(err)
	}
	if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 || len(resp.Topics[0].Partitions) != 1 ||
		resp.Topics[0].Partitions[0].Leader != 1 || len(resp.Brokers) != 1 {
		t.Fatalf("metadata before the first reconcile: %+v", resp)
	}
}
