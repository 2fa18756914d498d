package main

// gregor node: the data-plane nodes as the control plane knows them (Kafka has no API
// for a node's lifecycle), through gregor-cp's HTTP API: GET /v1/nodes, POST
// /v1/nodes/{id}/decommission and /recommission, decoded into controlplane/api's types.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/api"
	"github.com/spf13/pflag"
)

func nodeCommand() *command {
	return &command{name: "node", summary: "list data-plane nodes; decommission and recommission them",
		subs: []*command{
			{name: "list", summary: "every node the control plane knows: state, address, rack, replicas, leaderships", maxArgs: 0, setup: nodeList,
				long: nodeListLong},
			{name: "decommission", args: "NODE-ID", summary: "move every replica off a node and give it no new one", minArgs: 1, maxArgs: 1,
				setup: nodeDecommission, long: decommissionLong},
			{name: "recommission", args: "NODE-ID", summary: "let a decommissioned (or draining) node take replicas again", minArgs: 1, maxArgs: 1,
				setup: nodeRecommission},
		}}
}

const nodeListLong = `STATE is the control plane's: live (registered), unregistered (known, holding
replicas, but its process is not running: down), draining (being decommissioned: its
replicas are moving away) or decommissioned (it holds none and gets none). A draining
node whose replicas cannot all move says why under BLOCKED.`

// nodeAddr is a node's registered address, "" when not registered.
func nodeAddr(n api.Node) string {
	if !n.Registered {
		return ""
	}
	return net.JoinHostPort(n.Host, strconv.Itoa(int(n.Port)))
}

// nodeNotes says what the state alone does not: stopping, stopped while draining,
// blocked.
func nodeNotes(n api.Node) string {
	var notes []string
	if n.ControlledShutdown {
		notes = append(notes, "controlled shutdown")
	}
	switch {
	case n.State == api.NodeUnregistered:
		notes = append(notes, "down: not registered")
	case !n.Registered && n.State == api.NodeDraining:
		notes = append(notes, "not running (its replicas move all the same)")
	}
	if len(n.Blocked) > 0 {
		notes = append(notes, fmt.Sprintf("blocked (%d)", len(n.Blocked)))
	}
	return strings.Join(notes, "; ")
}

// writeNodes prints nodes as a table, then the blocked reasons of draining nodes.
func writeNodes(g *globals, nodes []api.Node) {
	t := newTable(g.stdout, "ID", "STATE", "ADDRESS", "RACK", "REPLICAS", "LEADERS", "NOTES")
	for _, n := range nodes {
		t.row(n.ID, n.State, orDash(nodeAddr(n)), orDash(n.Rack), n.Replicas, n.Leaders, orDash(nodeNotes(n)))
	}
	t.flush()
	var blocked []api.Node
	for _, n := range nodes {
		if len(n.Blocked) > 0 {
			blocked = append(blocked, n)
		}
	}
	if len(blocked) == 0 {
		return
	}
	section(g.stdout, false, "BLOCKED")
	t = newTable(g.stdout, "NODE", "REASON")
	for _, n := range blocked {
		for _, r := range n.Blocked {
			t.row(n.ID, r)
		}
	}
	t.flush()
}

func nodeList(fs *pflag.FlagSet) runFunc {
	return func(ctx context.Context, g *globals, _ []string) error {
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		nodes, err := g.cpNodes(ctx)
		if err != nil {
			return cpErr(err, "GET /v1/nodes")
		}
		if nodes == nil {
			nodes = []api.Node{}
		}
		if g.json() {
			return writeJSON(g.stdout, nodes)
		}
		writeNodes(g, nodes)
		return nil
	}
}

const decommissionLong = `The control plane moves the node's replicas to the other nodes (each new replica
catches up before the old one leaves) and places no new replica on it. The command
waits, at most --timeout, until the node is decommissioned (it holds no replica),
printing on stderr the replicas left and, when some cannot move, why (too few other
live nodes for a partition's replication factor, a partition without a leader). Then
stop the node. --no-wait returns once the control plane has the request. recommission
undoes it (moves already started are not reverted).

  gregor node decommission 3 --timeout 30m`

// cpErr explains a failed control-plane request: the server's own message (an
// api.Error), with a hint for a node it does not know.
func cpErr(err error, what string) error {
	var se *cpStatusError
	if !errors.As(err, &se) {
		return err
	}
	msg := se.message()
	switch {
	case se.status == http.StatusNotFound && msg == "404 page not found":
		// Go's mux: the route does not exist.
		return failf("%s: this control plane does not serve it (HTTP 404); it needs a Gregor version with node decommissioning", what)
	case se.status == http.StatusNotFound:
		return failf("%s: %s; gregor node list shows the nodes", what, msg)
	case se.status == http.StatusServiceUnavailable:
		return failf("%s: the control plane cannot answer now (HTTP 503: %s); try again, or check it with gregor cluster health", what, msg)
	}
	return failf("%s: HTTP %d: %s", what, se.status, msg)
}

func parseNodeID(s string) (int32, error) {
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil || n < 0 {
		return 0, usageErrorf("%q is not a node id", s)
	}
	return int32(n), nil
}

// nodeAction posts /v1/nodes/{id}/{action} and returns the node after it.
func (g *globals) nodeAction(ctx context.Context, id int32, action string) (api.Node, error) {
	ctx, cancel := g.bounded(ctx)
	defer cancel()
	path := fmt.Sprintf("/v1/nodes/%d/%s", id, action)
	var n api.Node
	if err := g.cpDo(ctx, http.MethodPost, path, nil, &n); err != nil {
		return n, cpErr(err, "POST "+path)
	}
	return n, nil
}

// writeNode prints one node: its document with --format json, else a table.
func writeNode(g *globals, n api.Node) error {
	if g.json() {
		return writeJSON(g.stdout, n)
	}
	writeNodes(g, []api.Node{n})
	return nil
}

// unblockHint says how to unblock a decommission.
func unblockHint(id int32) string {
	return fmt.Sprintf("to unblock it, add a node, lower those partitions' replication factor by a reassignment "+
		"(gregor partition reassign), or take the node back (gregor node recommission %d)", id)
}

func nodeDecommission(fs *pflag.FlagSet) runFunc {
	noWait := fs.Bool("no-wait", false, "return once the control plane has the request")
	interval := fs.Duration("interval", time.Second, "how often to look while waiting")
	return func(ctx context.Context, g *globals, args []string) error {
		id, err := parseNodeID(args[0])
		if err != nil {
			return err
		}
		if *interval <= 0 {
			return usageErrorf("--interval must be positive")
		}
		n, err := g.nodeAction(ctx, id, "decommission")
		if err != nil {
			return err
		}
		if !*noWait {
			if n, err = waitDecommissioned(ctx, g, n, *interval); err != nil {
				return err
			}
		}
		return writeNode(g, n)
	}
}

// waitDecommissioned waits, at most --timeout, until node n is decommissioned, printing
// on stderr the replicas left (when the count changes, and every progressInterval) and
// the blocked reasons (when they change). It returns the node as last seen.
func waitDecommissioned(ctx context.Context, g *globals, n api.Node, interval time.Duration) (api.Node, error) {
	deadline := time.NewTimer(g.timeout)
	defer deadline.Stop()
	id := n.ID
	left, lastLine := -1, time.Time{}
	var blocked []string
	var lastErr string
	for {
		switch n.State {
		case api.NodeDecommissioned:
			return n, nil
		case api.NodeLive, api.NodeUnregistered:
			return n, failf("node %d was recommissioned while waiting (state %s): it is not being decommissioned", id, n.State)
		}
		if !slices.Equal(n.Blocked, blocked) {
			blocked = n.Blocked
			if len(blocked) == 0 {
				g.warnf("node %d: no longer blocked", id)
			} else {
				g.warnf("node %d: %d replica(s) cannot move now:\n  %s", id, len(blocked), strings.Join(blocked, "\n  "))
			}
		}
		if n.Replicas != left || time.Since(lastLine) >= progressInterval {
			left, lastLine = n.Replicas, time.Now()
			g.warnf("node %d: draining, %d replica(s) left to move (%d leadership(s))", id, n.Replicas, n.Leaders)
		}
		select {
		case <-ctx.Done():
			return n, failf("interrupted while waiting; node %d goes on draining (gregor node list)", id)
		case <-deadline.C:
			if len(n.Blocked) > 0 {
				return n, failf("node %d not decommissioned within %s (--timeout): blocked: %s; %s",
					id, g.timeout, strings.Join(n.Blocked, "; "), unblockHint(id))
			}
			return n, failf("node %d not decommissioned within %s (--timeout): %d replica(s) left to move; it goes on draining "+
				"(wait longer with --timeout, or watch gregor node list)", id, g.timeout, n.Replicas)
		case <-time.After(interval):
		}
		rctx, cancel := g.bounded(ctx)
		nodes, err := g.cpNodes(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				continue // reported above
			}
			// The control plane may be changing controller or restarting: keep looking
			// until --timeout.
			if msg := err.Error(); msg != lastErr {
				lastErr = msg
				g.warnf("GET /v1/nodes: %v; still waiting", err)
			}
			continue
		}
		lastErr = ""
		i := slices.IndexFunc(nodes, func(m api.Node) bool { return m.ID == id })
		if i < 0 {
			return n, failf("node %d is no longer known to the control plane (recommissioned and gone?); gregor node list shows the nodes", id)
		}
		n = nodes[i]
	}
}

func nodeRecommission(fs *pflag.FlagSet) runFunc {
	return func(ctx context.Context, g *globals, args []string) error {
		id, err := parseNodeID(args[0])
		if err != nil {
			return err
		}
		n, err := g.nodeAction(ctx, id, "recommission")
		if err != nil {
			return err
		}
		return writeNode(g, n)
	}
}
