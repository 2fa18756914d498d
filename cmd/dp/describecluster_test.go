package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// describeCluster asks node id for DescribeCluster through cl (whose versions pick the
// request's) and fails on a request error.
func describeCluster(t *testing.T, cl *kgo.Client, id int32, req *kmsg.DescribeClusterRequest) *kmsg.DescribeClusterResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl.Broker(int(id)))
	if err != nil {
		t.Fatalf("DescribeCluster to node %d: %v", id, err)
	}
	return resp
}

// clusterView is what Metadata and DescribeCluster both tell of the cluster.
type clusterView struct {
	cluster    string
	controller int32
	brokers    []string // "id host:port rack"
}

func brokerLine(id int32, host string, port int32, rack *string) string {
	r := ""
	if rack != nil {
		r = *rack
	}
	return fmt.Sprintf("%d %s:%d %s", id, host, port, r)
}

// checkDescribeCluster compares every live node's DescribeCluster answer, at v0 and v1,
// with its Metadata answer (kadm's BrokerMetadata) and with the nodes that run: each
// running node listed once with its advertised address and rack, the lowest id as the
// controller, the same cluster id.
func checkDescribeCluster(t *testing.T, c *testcluster.Cluster, rack string) {
	t.Helper()
	var want []string
	for _, dp := range c.DPs {
		if dp.Running() {
			want = append(want, fmt.Sprintf("%d %s %s", dp.ID, dp.Addr(), rack))
		}
	}
	wantController := c.DPs[0].ID
	for _, dp := range c.DPs {
		if dp.Running() {
			wantController = dp.ID
			break
		}
	}
	for _, dp := range c.DPs {
		if !dp.Running() {
			continue
		}
		for _, versions := range []*kversion.Versions{kversion.V3_6_0(), kversion.V3_7_0()} { // DescribeCluster v0, v1
			cl := c.Client(t, kgo.SeedBrokers(dp.Addr()), kgo.MaxVersions(versions))
			md, err := kadm.NewClient(cl).BrokerMetadata(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			fromMetadata := clusterView{cluster: md.Cluster, controller: md.Controller}
			for _, b := range md.Brokers {
				fromMetadata.brokers = append(fromMetadata.brokers, brokerLine(b.NodeID, b.Host, b.Port, b.Rack))
			}
			resp := describeCluster(t, cl, dp.ID, kmsg.NewPtrDescribeClusterRequest())
			if resp.ErrorCode != 0 || resp.EndpointType != 1 || resp.ClusterAuthorizedOperations != math.MinInt32 {
				t.Fatalf("%s DescribeCluster v%d: %+v", dp.Name(), resp.Version, resp)
			}
			described := clusterView{cluster: resp.ClusterID, controller: resp.ControllerID}
			for _, b := range resp.Brokers {
				described.brokers = append(described.brokers, brokerLine(b.NodeID, b.Host, b.Port, b.Rack))
			}
			wantView := clusterView{cluster: "gregor", controller: wantController, brokers: want}
			for what, got := range map[string]clusterView{"Metadata": fromMetadata, "DescribeCluster": described} {
				if got.cluster != wantView.cluster || got.controller != wantView.controller || !slices.Equal(got.brokers, wantView.brokers) {
					t.Errorf("%s %s (versions of Kafka %s): %+v, want %+v", dp.Name(), what, versions.VersionGuess(), got, wantView)
				}
			}
		}
	}
}

// TestDescribeCluster: every data-plane node answers DescribeCluster (v0, v1) with the
// live nodes, their racks and the same cluster and controller ids as Metadata — the
// lowest live id, which moves when that node dies —, with the cluster's authorized
// operations only when asked, and refuses to describe controllers, as a Kafka broker
// does. (confluent-kafka's AdminClient.describe_cluster came in 2.3; Debian's is 1.7.)
func TestDescribeCluster(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{DataPlanes: 3, Processes: true, DPFlags: []string{"--rack", "rack-a"}})
	checkDescribeCluster(t, c, "rack-a")

	dp := c.DPs[1]
	cl := c.Client(t)
	asked := kmsg.NewPtrDescribeClusterRequest()
	asked.IncludeClusterAuthorizedOperations = true
	ops := kadm.DecodeACLOperations(describeCluster(t, cl, dp.ID, asked).ClusterAuthorizedOperations)
	for _, op := range []kmsg.ACLOperation{kmsg.ACLOperationDescribe, kmsg.ACLOperationCreate, kmsg.ACLOperationAlter,
		kmsg.ACLOperationIdempotentWrite, kmsg.ACLOperationClusterAction, kmsg.ACLOperationDescribeConfigs,
		kmsg.ACLOperationAlterConfigs} {
		if !slices.Contains(ops, op) {
			t.Errorf("cluster authorized operations %v lack %v", ops, op)
		}
	}
	for _, tc := range []struct {
		endpointType int8
		code         int16
	}{{2, kerr.MismatchedEndpointType.Code}, {3, kerr.UnsupportedEndpointType.Code}} {
		req := kmsg.NewPtrDescribeClusterRequest()
		req.EndpointType = tc.endpointType
		if resp := describeCluster(t, cl, dp.ID, req); resp.ErrorCode != tc.code || len(resp.Brokers) != 0 {
			t.Errorf("endpoint type %d: %v, %d brokers; want %v", tc.endpointType,
				kerr.ErrorForCode(resp.ErrorCode), len(resp.Brokers), kerr.ErrorForCode(tc.code))
		}
	}

	// The controller id dies: once its lease runs out, every answer moves to the next.
	c.Kill(c.DPs[0])
	c.CheckFor(t, 30*time.Second, func() error {
		if _, ok := c.Metadata(t).Brokers[c.DPs[0].ID]; ok {
			return fmt.Errorf("%s still registered", c.DPs[0].Name())
		}
		return nil
	})
	c.CheckFor(t, 10*time.Second, func() error { // each node's view follows the watch
		for _, dp := range c.DPs[1:] {
			resp := describeCluster(t, cl, dp.ID, kmsg.NewPtrDescribeClusterRequest())
			if resp.ControllerID != c.DPs[1].ID || len(resp.Brokers) != 2 {
				return fmt.Errorf("%s: controller %d, %d brokers", dp.Name(), resp.ControllerID, len(resp.Brokers))
			}
		}
		return nil
	})
	checkDescribeCluster(t, c, "rack-a")
}
