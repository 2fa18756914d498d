package main

// The control plane's HTTP API, for what Kafka has no API for: the active controller
// (a control-plane member, not a Kafka node), the members, the nodes and their states,
// node decommissioning, how far reassignments have got. The documents of the replica
// movement API (/v1/nodes, /v1/reassignments) are decoded into gregor-cp's own types,
// package controlplane/api (which imports nothing); the older cluster view
// (/v1/cluster, controlplane/http.go) has no such package: the types below mirror the
// fields the CLI shows.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/gregor-streaming/gregor/controlplane/api"
)

// cpResponseBytesMax bounds a control-plane answer the CLI reads.
const cpResponseBytesMax = 64 << 20

// cpClusterView is GET /v1/cluster.
type cpClusterView struct {
	Name               string     `json:"name"`
	Ready              bool       `json:"ready"`
	IsController       bool       `json:"isController"`
	Controller         string     `json:"controller"`
	Members            []cpMember `json:"members"`
	Brokers            []cpBroker `json:"brokers"`
	ControlledShutdown []int32    `json:"controlledShutdown"`
	Topics             []cpTopic  `json:"topics"`
	OfflinePartitions  int        `json:"offlinePartitions"`
	UnderReplicated    int        `json:"underReplicatedPartitions"`
	PreferredImbalance int        `json:"preferredReplicaImbalance"`
}

type cpMember struct {
	Name       string   `json:"name"`
	ID         string   `json:"id"`
	ClientURLs []string `json:"clientURLs"`
}

type cpBroker struct {
	ID   int32  `json:"id"`
	Host string `json:"host"`
	Port int32  `json:"port"`
	Rack string `json:"rack,omitempty"`
}

type cpTopic struct {
	Name            string        `json:"name"`
	PartitionStates []cpPartition `json:"partitionStates"`
}

type cpPartition struct {
	Partition int32   `json:"partition"`
	Replicas  []int32 `json:"replicas"`
	Leader    int32   `json:"leader"`
	ISR       []int32 `json:"isr"`
}

// cpStatusError is an HTTP answer other than 2xx.
type cpStatusError struct {
	status int
	body   string
}

func (e *cpStatusError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.status, e.message())
}

// message is the server's error: the api.Error document's text, else the body.
func (e *cpStatusError) message() string {
	var doc api.Error
	if json.Unmarshal([]byte(e.body), &doc) == nil && doc.Error != "" {
		return doc.Error
	}
	return strings.TrimSpace(e.body)
}

// cpAddrs returns the --control-plane addresses.
func (g *globals) cpAddrs() []string {
	var out []string
	for _, s := range strings.Split(g.controlPlane, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, strings.TrimPrefix(strings.TrimPrefix(s, "http://"), "https://"))
		}
	}
	return out
}

// cpDo sends a request to the first control-plane member that answers and decodes
// its JSON answer into out (nil: ignored). A member that does not answer, or answers
// 503 (starting, or cut off from etcd), is skipped; when none answers, the error exits
// 3; when every one that answered said 503, the last 503 is returned.
func (g *globals) cpDo(ctx context.Context, method, path string, body, out any) error {
	addrs := g.cpAddrs()
	if len(addrs) == 0 {
		return usageErrorf("--control-plane is empty")
	}
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return err
		}
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Timeout: dialTimeout}).DialContext}}
	defer hc.CloseIdleConnections()
	var dialErr error
	var unavailable *cpStatusError
	for _, a := range addrs {
		req, err := http.NewRequestWithContext(ctx, method, "http://"+a+path, bytes.NewReader(payload))
		if err != nil {
			return usageErrorf("--control-plane %q: %v", a, err)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := hc.Do(req)
		if err != nil {
			var op *net.OpError
			if errors.As(err, &op) && ctx.Err() == nil {
				dialErr = err
				continue
			}
			if ctx.Err() != nil {
				return failf("%s %s: no answer within %s (--timeout)", method, path, g.timeout)
			}
			return failf("%s %s: %v", method, path, err)
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, cpResponseBytesMax))
		resp.Body.Close()
		if err != nil {
			return failf("%s %s: %v", method, path, err)
		}
		if resp.StatusCode == http.StatusServiceUnavailable {
			unavailable = &cpStatusError{status: resp.StatusCode, body: string(data)}
			continue
		}
		if resp.StatusCode/100 != 2 {
			return &cpStatusError{status: resp.StatusCode, body: string(data)}
		}
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				return failf("%s %s: the answer is not what this gregor expects: %v", method, path, err)
			}
		}
		return nil
	}
	if unavailable != nil {
		return unavailable
	}
	return unreachablef("no control plane answers at %s (%v); point --control-plane or %s at a gregor-cp's --http address",
		g.controlPlane, unwrapNet(dialErr), envControlPlane)
}

// cpCluster reads GET /v1/cluster.
func (g *globals) cpCluster(ctx context.Context) (*cpClusterView, error) {
	var v cpClusterView
	if err := g.cpDo(ctx, http.MethodGet, "/v1/cluster", nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// cpNodes reads GET /v1/nodes: every node the control plane knows, by id.
func (g *globals) cpNodes(ctx context.Context) ([]api.Node, error) {
	var v api.NodeList
	if err := g.cpDo(ctx, http.MethodGet, "/v1/nodes", nil, &v); err != nil {
		return nil, err
	}
	return v.Nodes, nil
}

// cpReassignments reads GET /v1/reassignments: the partitions being moved.
func (g *globals) cpReassignments(ctx context.Context) (*api.ReassignmentList, error) {
	var v api.ReassignmentList
	if err := g.cpDo(ctx, http.MethodGet, "/v1/reassignments", nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}
