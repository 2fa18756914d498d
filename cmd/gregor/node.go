package main

// gregor node: the data-plane nodes as the control plane knows them (Kafka has no API
// for node lifecycle), through gregor-cp's HTTP API.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

func nodeCommand() *command {
	return &command{name: "node", summary: "list data-plane nodes; decommission and recommission them",
		subs: []*command{
			{name: "list", summary: "the registered nodes, their replicas and leaderships, their state", maxArgs: 0, setup: nodeList},
			{name: "decommission", args: "NODE-ID", summary: "move every replica off a node and give it no new one", minArgs: 1, maxArgs: 1,
				setup: nodeDecommission, long: decommissionLong},
			{name: "recommission", args: "NODE-ID", summary: "let a decommissioned (or draining) node take replicas again", minArgs: 1, maxArgs: 1,
				setup: nodeRecommission},
		}}
}

// nodeView is one node as node list shows it.
type nodeView struct {
	ID       int32  `json:"id"`
	Addr     string `json:"address"`
	Rack     string `json:"rack,omitempty"`
	State    string `json:"state"`
	Leaders  int    `json:"leaders"`
	Replicas int    `json:"replicas"`
}

func nodeList(fs *pflag.FlagSet) runFunc {
	return func(ctx context.Context, g *globals, _ []string) error {
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		cv, err := g.cpCluster(ctx)
		if err != nil {
			return err
		}
		views := nodeViews(cv)
		states, err := g.cpNodeStates(ctx)
		if err != nil && !errors.Is(err, errNotServed) {
			return err
		}
		for i, n := range views {
			if st := states[n.ID]; st != "" && st != "up" && n.State != "down" {
				views[i].State = st
			}
		}
		if g.json() {
			return writeJSON(g.stdout, views)
		}
		t := newTable(g.stdout, "ID", "ADDRESS", "RACK", "STATE", "LEADERS", "REPLICAS")
		for _, n := range views {
			t.row(n.ID, orDash(n.Addr), orDash(n.Rack), n.State, n.Leaders, n.Replicas)
		}
		t.flush()
		return nil
	}
}

// nodeViews lists the registered nodes and the nodes holding replicas without a
// registration (down), with their replica and leader counts.
func nodeViews(cv *cpClusterView) []nodeView {
	byID := map[int32]*nodeView{}
	for _, b := range cv.Brokers {
		byID[b.ID] = &nodeView{ID: b.ID, Addr: fmt.Sprintf("%s:%d", b.Host, b.Port), Rack: b.Rack, State: "up"}
	}
	for _, id := range cv.ControlledShutdown {
		if n := byID[id]; n != nil {
			n.State = "controlled-shutdown"
		}
	}
	for _, t := range cv.Topics {
		for _, p := range t.PartitionStates {
			for _, r := range p.Replicas {
				n := byID[r]
				if n == nil {
					n = &nodeView{ID: r, State: "down"}
					byID[r] = n
				}
				n.Replicas++
			}
			if n := byID[p.Leader]; n != nil {
				n.Leaders++
			}
		}
	}
	out := []nodeView{}
	for _, n := range byID {
		out = append(out, *n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

const decommissionLong = `The control plane moves the node's replicas to the other nodes (each new replica
catches up before the old one leaves) and places no new replica on it; the command
waits until the node holds none, printing progress on stderr, unless --no-wait. Then
stop the node. recommission undoes it.

  gregor node decommission 3`

// errNotServed is a control plane that does not serve an endpoint (an older version).
var errNotServed = errors.New("not served")

// cpNode is one entry of GET /v1/nodes, as far as the CLI reads it: the node's state,
// or its decommission's.
type cpNode struct {
	ID           int32  `json:"id"`
	State        string `json:"state"`
	Decommission *struct {
		State string `json:"state"`
	} `json:"decommission,omitempty"`
}

// cpNodeStates reads GET /v1/nodes (a list, or {"nodes": [...]}) into each node's
// state; errNotServed when the control plane has no such endpoint.
func (g *globals) cpNodeStates(ctx context.Context) (map[int32]string, error) {
	var raw json.RawMessage
	if err := g.cpDo(ctx, http.MethodGet, "/v1/nodes", nil, &raw); err != nil {
		return nil, notServed(err)
	}
	var nodes []cpNode
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '{' {
		var wrapped struct {
			Nodes []cpNode `json:"nodes"`
		}
		if err := json.Unmarshal(raw, &wrapped); err != nil {
			return nil, failf("GET /v1/nodes: the answer is not what this gregor expects: %v", err)
		}
		nodes = wrapped.Nodes
	} else if err := json.Unmarshal(raw, &nodes); err != nil {
		return nil, failf("GET /v1/nodes: the answer is not what this gregor expects: %v", err)
	}
	out := map[int32]string{}
	for _, n := range nodes {
		st := n.State
		if n.Decommission != nil && n.Decommission.State != "" {
			st = n.Decommission.State
		}
		out[n.ID] = st
	}
	return out, nil
}

// notServed turns the 404 of a route the control plane does not have (Go's mux answers
// "404 page not found") into errNotServed; other errors, a 404 about an unknown node
// among them, pass.
func notServed(err error) error {
	var se *cpStatusError
	if errors.As(err, &se) && se.status == http.StatusNotFound && strings.TrimSpace(se.body) == "404 page not found" {
		return fmt.Errorf("%w: %v", errNotServed, err)
	}
	return err
}

// lifecycleErr explains a failed decommission or recommission.
func lifecycleErr(err error, what string) error {
	err = notServed(err)
	var se *cpStatusError
	switch {
	case errors.Is(err, errNotServed):
		return failf("this control plane does not serve %s (HTTP 404); it needs a Gregor version with node decommissioning", what)
	case errors.As(err, &se) && se.status == http.StatusNotFound:
		return failf("%s: %s; gregor node list shows the nodes", what, strings.TrimSpace(se.body))
	case errors.As(err, &se):
		return failf("%s: %s", what, strings.TrimSpace(se.body))
	}
	return err
}

func parseNodeID(s string) (int32, error) {
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil || n < 0 {
		return 0, usageErrorf("%q is not a node id", s)
	}
	return int32(n), nil
}

// replicasOn counts the replicas node id holds, from the control plane's view.
func replicasOn(cv *cpClusterView, id int32) int {
	n := 0
	for _, t := range cv.Topics {
		for _, p := range t.PartitionStates {
			for _, r := range p.Replicas {
				if r == id {
					n++
				}
			}
		}
	}
	return n
}

func nodeDecommission(fs *pflag.FlagSet) runFunc {
	noWait := fs.Bool("no-wait", false, "return once the control plane accepted it")
	interval := fs.Duration("interval", time.Second, "how often to look while waiting")
	return func(ctx context.Context, g *globals, args []string) error {
		id, err := parseNodeID(args[0])
		if err != nil {
			return err
		}
		if *interval <= 0 {
			return usageErrorf("--interval must be positive")
		}
		what := fmt.Sprintf("POST /v1/nodes/%d/decommission", id)
		rctx, cancel := g.bounded(ctx)
		err = g.cpDo(rctx, http.MethodPost, fmt.Sprintf("/v1/nodes/%d/decommission", id), nil, nil)
		cancel()
		if err != nil {
			return lifecycleErr(err, what)
		}
		left := -1
		if !*noWait {
			last := time.Time{}
			for {
				rctx, cancel := g.bounded(ctx)
				cv, err := g.cpCluster(rctx)
				cancel()
				if err != nil {
					if ctx.Err() != nil {
						return failf("interrupted while waiting; node %d goes on draining (gregor node list)", id)
					}
					return err
				}
				if left = replicasOn(cv, id); left == 0 {
					break
				}
				if time.Since(last) >= progressInterval {
					last = time.Now()
					g.warnf("node %d: %d replicas left to move", id, left)
				}
				select {
				case <-ctx.Done():
					return failf("interrupted while waiting; node %d goes on draining (gregor node list)", id)
				case <-time.After(*interval):
				}
			}
		}
		state := "draining"
		if left == 0 {
			state = "drained: no replica left; it can be stopped"
		}
		if g.json() {
			return writeJSON(g.stdout, map[string]any{"id": id, "decommission": "accepted", "replicasLeft": left})
		}
		t := newTable(g.stdout, "NODE", "STATUS")
		t.row(id, state)
		t.flush()
		return nil
	}
}

func nodeRecommission(fs *pflag.FlagSet) runFunc {
	return func(ctx context.Context, g *globals, args []string) error {
		id, err := parseNodeID(args[0])
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		if err := g.cpDo(ctx, http.MethodPost, fmt.Sprintf("/v1/nodes/%d/recommission", id), nil, nil); err != nil {
			return lifecycleErr(err, fmt.Sprintf("POST /v1/nodes/%d/recommission", id))
		}
		if g.json() {
			return writeJSON(g.stdout, map[string]any{"id": id, "recommission": "accepted"})
		}
		t := newTable(g.stdout, "NODE", "STATUS")
		t.row(id, "recommissioned: takes replicas again")
		t.flush()
		return nil
	}
}
