package main

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/gregor-streaming/gregor/controlplane/api"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestBroadcastErr checks that a broadcast one node did not answer keeps the others'
// answer and names the node, and that one no node answered stays an error.
func TestBroadcastErr(t *testing.T) {
	var stderr bytes.Buffer
	g := &globals{stderr: &stderr, path: "cluster info"}
	partial := &kadm.ShardErrors{Name: "ListGroups", Errs: []kadm.ShardError{
		{Req: kmsg.NewPtrListGroupsRequest(), Err: syscall.ECONNRESET, Broker: kadm.BrokerDetail{NodeID: 3}},
	}}
	missing, err := g.broadcastErr(partial, "ListGroups")
	if err != nil || len(missing) != 1 || missing[0].Node != 3 || missing[0].Request != "ListGroups" ||
		!strings.Contains(missing[0].Error, "connection reset") {
		t.Errorf("partial: %+v %v", missing, err)
	}
	if !strings.Contains(stderr.String(), "node 3 did not answer ListGroups (connection reset by peer)") {
		t.Errorf("stderr: %q", stderr.String())
	}
	all := &kadm.ShardErrors{Name: "ListGroups", AllFailed: true, Errs: partial.Errs}
	if missing, err := g.broadcastErr(all, "ListGroups"); err == nil || missing != nil {
		t.Errorf("all failed: %+v %v", missing, err)
	}
	other := errors.New("boom")
	if _, err := g.broadcastErr(other, "ListGroups"); err != other {
		t.Errorf("other error: %v", err)
	}
	if missing, err := g.broadcastErr(nil, "ListGroups"); err != nil || missing != nil {
		t.Errorf("nil: %+v %v", missing, err)
	}
}

// TestHealthNodesDown checks where cluster health's nodes down come from: the control
// plane's node list when it answers (a known node not registered, a decommissioned
// one excepted), else the replicas Metadata names but does not list.
func TestHealthNodesDown(t *testing.T) {
	md := kadm.Metadata{
		Brokers: kadm.BrokerDetails{{NodeID: 1}, {NodeID: 2}, {NodeID: 3}}, // 3 still listed
		Topics: kadm.TopicDetails{"t": {Topic: "t", Partitions: kadm.PartitionDetails{
			0: {Topic: "t", Partition: 0, Leader: 1, Replicas: []int32{1, 2, 3, 4}, ISR: []int32{1, 2}},
		}}},
	}
	if h := healthOf(md, nil); !slices.Equal(h.NodesDown, []int32{4}) || h.Healthy || len(h.UnderReplicatedPartitions) != 1 {
		t.Errorf("from Metadata: %+v", h)
	}
	nodes := []api.Node{
		{ID: 1, State: api.NodeLive, Registered: true},
		{ID: 2, State: api.NodeDraining, Registered: true},
		{ID: 3, State: api.NodeUnregistered},
		{ID: 4, State: api.NodeDraining},
		{ID: 5, State: api.NodeDecommissioned},
	}
	if h := healthOf(md, nodes); !slices.Equal(h.NodesDown, []int32{3, 4}) {
		t.Errorf("from the control plane: %+v", h)
	}
	if h := healthOf(md, []api.Node{}); len(h.NodesDown) != 0 {
		t.Errorf("from a control plane that knows no node down: %+v", h)
	}
	cn := clusterNodes(md, nodes)
	want := []string{api.NodeLive, api.NodeDraining, api.NodeUnregistered, api.NodeDraining, api.NodeDecommissioned}
	if len(cn) != len(want) {
		t.Fatalf("cluster nodes: %+v", cn)
	}
	for i, n := range cn {
		if n.ID != int32(i+1) || n.State != want[i] {
			t.Errorf("cluster node %+v, want id %d state %s", n, i+1, want[i])
		}
	}
}

// TestMergeConfigs checks the configs AlterConfigs writes when the cluster has no
// IncrementalAlterConfigs: the topic's own, changed.
func TestMergeConfigs(t *testing.T) {
	s := func(v string) *string { return &v }
	own := map[string]*string{"min.insync.replicas": s("2"), "retention.ms": s("1000"), "segment.bytes": s("1048576")}
	got := mergeConfigs(own, map[string]*string{"retention.ms": s("5000"), "cleanup.policy": s("delete")}, []string{"segment.bytes"})
	want := [][2]string{{"cleanup.policy", "delete"}, {"min.insync.replicas", "2"}, {"retention.ms", "5000"}}
	if !slices.Equal(got, want) {
		t.Errorf("merged %v, want %v", got, want)
	}
}

// TestCPStatusError checks that the control plane's error document is shown as its
// text, and a plain body as it is.
func TestCPStatusError(t *testing.T) {
	err := cpErr(&cpStatusError{status: 404, body: `{"error": "node 9 is not known: not registered and holding no replica"}` + "\n"}, "POST /v1/nodes/9/decommission")
	if want := "POST /v1/nodes/9/decommission: node 9 is not known: not registered and holding no replica; gregor node list shows the nodes"; err.Error() != want {
		t.Errorf("404: %q, want %q", err, want)
	}
	if err := cpErr(&cpStatusError{status: 404, body: "404 page not found\n"}, "GET /v1/nodes"); !strings.Contains(err.Error(), "does not serve it") {
		t.Errorf("no route: %v", err)
	}
	if err := cpErr(&cpStatusError{status: 503, body: `{"error": "starting"}`}, "GET /v1/nodes"); !strings.Contains(err.Error(), "HTTP 503: starting") {
		t.Errorf("503: %v", err)
	}
}
