package main

// gregor node: the data-plane nodes as the control plane knows them (Kafka has no API
// for node lifecycle), through gregor-cp's HTTP API.

import (
	"context"
	"fmt"
	"sort"

	"github.com/spf13/pflag"
)

func nodeCommand() *command {
	return &command{name: "node", summary: "list data-plane nodes; decommission and recommission them",
		subs: []*command{
			{name: "list", summary: "the registered nodes, their replicas and leaderships, their state", maxArgs: 0, setup: nodeList},
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
