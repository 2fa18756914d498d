package main

// gregor cluster: info (nodes, the active controller, unhealthy partitions, groups and
// their lag) and health (exit status 1 while partitions are offline or
// under-replicated, --exit-when-healthy to wait for it).

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/api"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
)

func clusterCommand() *command {
	return &command{name: "cluster", summary: "the cluster's nodes, controller, partition health and groups",
		subs: []*command{
			{name: "info", summary: "nodes, the active controller, offline and under-replicated partitions, groups with lag", maxArgs: 0, setup: clusterInfo},
			{name: "health", summary: "exit status 0 when no partition is offline or under-replicated, 1 otherwise", maxArgs: 0, setup: clusterHealth,
				long: healthLong},
		}}
}

const healthLong = `A partition is offline when it has no leader, under-replicated when its ISR is smaller
than its replica set. --exit-when-healthy waits (up to --timeout) until the cluster is
healthy, printing each change; --watch prints each change until Ctrl-C.

  gregor cluster health --exit-when-healthy --timeout 2m && echo ready`

// partitionRef is a partition named in a health report.
type partitionRef struct {
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Leader    int32   `json:"leader"`
	Replicas  []int32 `json:"replicas"`
	ISR       []int32 `json:"isr"`
}

func (p partitionRef) String() string { return fmt.Sprintf("%s/%d", p.Topic, p.Partition) }

// health is what cluster health reports.
type health struct {
	Healthy bool `json:"healthy"`
	// KafkaController is the node Metadata names as controller (admin requests go to
	// it); the active controller is a control-plane member, in cluster info.
	KafkaController           int32          `json:"kafkaController"`
	Nodes                     []int32        `json:"nodes"`
	NodesDown                 []int32        `json:"nodesDown"`
	OfflinePartitions         []partitionRef `json:"offlinePartitions"`
	UnderReplicatedPartitions []partitionRef `json:"underReplicatedPartitions"`
}

// healthOf reads the partitions' health from Metadata: offline (no leader),
// under-replicated (ISR smaller than the replicas); and the nodes down: with the control
// plane's node list (cpNodes non-nil), the nodes it knows that are not registered (a
// decommissioned node excepted: it was taken out of service); without, the nodes named
// as replicas that Metadata does not list (Metadata lists the registered nodes).
func healthOf(md kadm.Metadata, cpNodes []api.Node) health {
	h := health{KafkaController: md.Controller, Nodes: md.Brokers.NodeIDs(), NodesDown: []int32{},
		OfflinePartitions: []partitionRef{}, UnderReplicatedPartitions: []partitionRef{}}
	if h.Nodes == nil {
		h.Nodes = []int32{}
	}
	slices.Sort(h.Nodes)
	down := map[int32]bool{}
	for _, t := range md.Topics.Sorted() {
		for _, p := range t.Partitions.Sorted() {
			ref := partitionRef{Topic: t.Topic, Partition: p.Partition, Leader: p.Leader, Replicas: orEmpty(p.Replicas), ISR: orEmpty(p.ISR)}
			if p.Leader < 0 {
				h.OfflinePartitions = append(h.OfflinePartitions, ref)
			}
			if len(p.ISR) < len(p.Replicas) {
				h.UnderReplicatedPartitions = append(h.UnderReplicatedPartitions, ref)
			}
			if cpNodes == nil {
				for _, r := range p.Replicas {
					if !slices.Contains(h.Nodes, r) {
						down[r] = true
					}
				}
			}
		}
	}
	for _, n := range cpNodes {
		if !n.Registered && n.State != api.NodeDecommissioned {
			down[n.ID] = true
		}
	}
	for id := range down {
		h.NodesDown = append(h.NodesDown, id)
	}
	slices.Sort(h.NodesDown)
	h.Healthy = len(h.Nodes) > 0 && len(h.OfflinePartitions) == 0 && len(h.UnderReplicatedPartitions) == 0
	return h
}

// cpNodesBestEffort reads the control plane's node list for a command that can do
// without it: nil, and a note on stderr the first time (*warned), when it does not
// answer.
func cpNodesBestEffort(ctx context.Context, g *globals, warned *bool) []api.Node {
	nodes, err := g.cpNodes(ctx)
	if err != nil {
		if !*warned {
			*warned = true
			g.warnf("control plane: %v; nodes down are those named as replicas but not registered", cpErr(err, "GET /v1/nodes"))
		}
		return nil
	}
	if nodes == nil {
		nodes = []api.Node{}
	}
	return nodes
}

func refs(ps []partitionRef) string {
	if len(ps) == 0 {
		return "-"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, " ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func writeHealth(g *globals, h health) error {
	if g.json() {
		return writeJSON(g.stdout, h)
	}
	t := newTable(g.stdout)
	t.row("HEALTHY", yesNo(h.Healthy))
	t.row("KAFKA-CONTROLLER", h.KafkaController)
	t.row("NODES", int32s(h.Nodes))
	t.row("NODES-DOWN", int32s(h.NodesDown))
	t.row("OFFLINE-PARTITIONS", refs(h.OfflinePartitions))
	t.row("UNDER-REPLICATED-PARTITIONS", refs(h.UnderReplicatedPartitions))
	t.flush()
	return nil
}

func clusterHealth(fs *pflag.FlagSet) runFunc {
	watch := fs.BoolP("watch", "w", false, "print the health each time it changes, until Ctrl-C")
	untilHealthy := fs.Bool("exit-when-healthy", false, "wait until healthy (at most --timeout), printing each change")
	interval := fs.Duration("interval", time.Second, "how often --watch and --exit-when-healthy look")
	return func(ctx context.Context, g *globals, _ []string) error {
		if *watch && *untilHealthy {
			return usageErrorf("give one of --watch and --exit-when-healthy")
		}
		if *interval <= 0 {
			return usageErrorf("--interval must be positive")
		}
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		var deadline <-chan time.Time
		if *untilHealthy {
			deadline = time.After(g.timeout)
		}
		var last string
		cpWarned := false
		for {
			rctx, cancel := g.bounded(ctx)
			md, err := adm.Metadata(rctx)
			var cpNodes []api.Node
			if err == nil {
				cpNodes = cpNodesBestEffort(rctx, g, &cpWarned)
			}
			cancel()
			if err != nil && !*watch && !*untilHealthy {
				return g.requestErr(err, "Metadata")
			}
			var h health
			if err == nil {
				h = healthOf(md, cpNodes)
				if key := fmt.Sprint(h); key != last {
					last = key
					if *watch || *untilHealthy {
						fmt.Fprintf(g.stdout, "%s\n", time.Now().Format(time.TimeOnly))
					}
					if err := writeHealth(g, h); err != nil {
						return err
					}
				}
			} else {
				g.warnf("%v", g.requestErr(err, "Metadata"))
			}
			switch {
			case !*watch && !*untilHealthy:
				if !h.Healthy {
					return &exitError{code: exitFailed, msg: unhealthyReason(h)}
				}
				return nil
			case *untilHealthy && err == nil && h.Healthy:
				return nil
			}
			select {
			case <-ctx.Done():
				if *watch {
					return nil
				}
				return failf("interrupted before the cluster was healthy")
			case <-deadline:
				return failf("not healthy within %s (--timeout): %s", g.timeout, unhealthyReason(h))
			case <-time.After(*interval):
			}
		}
	}
}

// unhealthyReason says why h is not healthy.
func unhealthyReason(h health) string {
	var why []string
	if len(h.Nodes) == 0 {
		why = append(why, "no live node")
	}
	if n := len(h.OfflinePartitions); n > 0 {
		why = append(why, fmt.Sprintf("%d partition(s) offline", n))
	}
	if n := len(h.UnderReplicatedPartitions); n > 0 {
		why = append(why, fmt.Sprintf("%d partition(s) under-replicated", n))
	}
	if len(h.NodesDown) > 0 {
		why = append(why, "node(s) "+int32s(h.NodesDown)+" down")
	}
	if len(why) == 0 {
		return "no answer from the cluster"
	}
	return strings.Join(why, ", ") + "; see gregor cluster info"
}

// clusterNode is one node as cluster info shows it: every node Metadata lists (the
// registered ones) or names as a replica, and every node the control plane knows.
type clusterNode struct {
	ID   int32  `json:"id"`
	Addr string `json:"address,omitempty"`
	Rack string `json:"rack,omitempty"`
	// State is the control plane's (api.NodeLive, NodeUnregistered, NodeDraining,
	// NodeDecommissioned); without an answer from it, live for a node Metadata lists and
	// unregistered for one it names only as a replica.
	State string `json:"state"`
	// ControlledShutdown: the node is stopping, its leaderships moving away.
	ControlledShutdown bool `json:"controlledShutdown,omitempty"`
	// Leaders and Replicas count the partitions it leads and holds, from Metadata.
	Leaders  int `json:"leaders"`
	Replicas int `json:"replicas"`
	// Blocked says why a draining node's replicas cannot all move now.
	Blocked []string `json:"blocked,omitempty"`
}

// groupLag is one group as cluster info shows it.
type groupLag struct {
	Group    string `json:"group"`
	State    string `json:"state"`
	Members  int    `json:"members"`
	TotalLag int64  `json:"totalLag"`
	Error    string `json:"error,omitempty"`
}

// clusterInfoView is cluster info's document.
type clusterInfoView struct {
	ClusterID string `json:"clusterId"`
	// Controller is the active controller, a control-plane member ("" when the control
	// plane did not answer).
	Controller          string        `json:"controller"`
	ControlPlaneMembers []string      `json:"controlPlaneMembers"`
	Nodes               []clusterNode `json:"nodes"`
	Topics              int           `json:"topics"`
	Partitions          int           `json:"partitions"`
	health
	Groups []groupLag `json:"groups"`
	// NotAnswering are the nodes that did not answer their piece of a broadcast
	// (ListGroups): what only they know is missing above.
	NotAnswering []notAnswering `json:"notAnswering"`
}

// clusterNodes joins Metadata's nodes (registered ones, and the replicas it names) with
// the control plane's (nil: it did not answer).
func clusterNodes(md kadm.Metadata, cpNodes []api.Node) []clusterNode {
	byID := map[int32]*clusterNode{}
	get := func(id int32) *clusterNode {
		n := byID[id]
		if n == nil {
			n = &clusterNode{ID: id, State: api.NodeUnregistered}
			byID[id] = n
		}
		return n
	}
	for _, b := range md.Brokers {
		n := get(b.NodeID)
		n.Addr, n.State = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))), api.NodeLive
		if b.Rack != nil {
			n.Rack = *b.Rack
		}
	}
	for _, t := range md.Topics {
		for _, p := range t.Partitions {
			if p.Leader >= 0 {
				get(p.Leader).Leaders++
			}
			for _, r := range p.Replicas {
				get(r).Replicas++
			}
		}
	}
	for _, cn := range cpNodes {
		n := get(cn.ID)
		// A node Metadata lists is registered: the control plane knows it (it answers
		// from a view at least as new as the node's); its state says more (draining).
		n.State, n.ControlledShutdown, n.Blocked = cn.State, cn.ControlledShutdown, cn.Blocked
		if n.Addr == "" && cn.Registered {
			n.Addr = net.JoinHostPort(cn.Host, strconv.Itoa(int(cn.Port)))
		}
		if n.Rack == "" {
			n.Rack = cn.Rack
		}
	}
	out := make([]clusterNode, 0, len(byID))
	for _, n := range byID {
		out = append(out, *n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func clusterInfo(fs *pflag.FlagSet) runFunc {
	return func(ctx context.Context, g *globals, _ []string) error {
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		md, err := adm.Metadata(ctx)
		if err != nil {
			return g.requestErr(err, "Metadata")
		}
		v := clusterInfoView{ClusterID: md.Cluster, ControlPlaneMembers: []string{}, Groups: []groupLag{}, NotAnswering: []notAnswering{}}
		for _, t := range md.Topics {
			v.Topics++
			v.Partitions += len(t.Partitions)
		}
		// The control plane: the active controller, its members, the nodes' states.
		var cpNodes []api.Node
		if cv, err := g.cpCluster(ctx); err != nil {
			g.warnf("control plane: %v", cpErr(err, "GET /v1/cluster"))
		} else {
			v.Controller = cv.Controller
			for _, m := range cv.Members {
				v.ControlPlaneMembers = append(v.ControlPlaneMembers, m.Name)
			}
			warned := false
			cpNodes = cpNodesBestEffort(ctx, g, &warned)
		}
		v.health = healthOf(md, cpNodes)
		v.Nodes = clusterNodes(md, cpNodes)
		// Groups and their lag: what the nodes that answer know.
		v.Groups, v.NotAnswering = groupLags(ctx, g, adm)
		if g.json() {
			return writeJSON(g.stdout, v)
		}
		writeClusterInfo(g, v)
		return nil
	}
}

// groupLags lists the groups with their lag for cluster info. A node that does not
// answer is named (in notAnswering, and on stderr) and its groups left out; a request
// that fails as a whole is noted on stderr and leaves the groups out.
func groupLags(ctx context.Context, g *globals, adm *kadm.Client) ([]groupLag, []notAnswering) {
	out := []groupLag{}
	listed, err := adm.ListGroups(ctx)
	missing, err := g.broadcastErr(err, "ListGroups")
	if missing == nil {
		missing = []notAnswering{}
	}
	if err != nil {
		g.warnf("groups not listed: %v", g.requestErr(err, "ListGroups"))
		return out, missing
	}
	names := listed.Groups()
	if len(names) == 0 {
		return out, missing
	}
	lags, err := adm.Lag(ctx, names...)
	if err != nil {
		g.warnf("groups not described: %v", g.requestErr(err, "DescribeGroups"))
		for _, name := range names {
			l := listed[name]
			out = append(out, groupLag{Group: name, State: l.State, Error: "not described"})
		}
	}
	for _, l := range lags.Sorted() {
		gl := groupLag{Group: l.Group, State: l.State, Members: len(l.Members)}
		switch {
		case l.DescribeErr != nil:
			gl.Error = describe(l.DescribeErr, "")
		case l.FetchErr != nil:
			gl.Error = describe(l.FetchErr, "")
		}
		for _, ml := range l.Lag.Sorted() {
			if ml.Lag > 0 {
				gl.TotalLag += ml.Lag
			}
		}
		out = append(out, gl)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	return out, missing
}

func writeClusterInfo(g *globals, v clusterInfoView) {
	w := g.stdout
	section(w, true, "CLUSTER")
	t := newTable(w)
	t.row("CLUSTER-ID", orDash(v.ClusterID))
	t.row("CONTROLLER", orDash(v.Controller)+" (control plane; Kafka clients see node "+fmt.Sprint(v.KafkaController)+")")
	t.row("CONTROL-PLANE", orDash(strings.Join(v.ControlPlaneMembers, ",")))
	t.row("TOPICS", v.Topics)
	t.row("PARTITIONS", v.Partitions)
	t.row("HEALTHY", yesNo(v.Healthy))
	t.flush()

	section(w, false, "NODES")
	t = newTable(w, "ID", "STATE", "ADDRESS", "RACK", "LEADERS", "REPLICAS", "NOTES")
	for _, n := range v.Nodes {
		var notes []string
		if n.ControlledShutdown {
			notes = append(notes, "controlled shutdown")
		}
		if slices.Contains(v.NodesDown, n.ID) {
			notes = append(notes, "down: not registered")
		}
		if len(n.Blocked) > 0 {
			notes = append(notes, fmt.Sprintf("draining blocked (%d reason(s): gregor node list)", len(n.Blocked)))
		}
		t.row(n.ID, n.State, orDash(n.Addr), orDash(n.Rack), n.Leaders, n.Replicas, orDash(strings.Join(notes, "; ")))
	}
	t.flush()

	if len(v.OfflinePartitions)+len(v.UnderReplicatedPartitions) > 0 {
		section(w, false, "UNHEALTHY PARTITIONS")
		t = newTable(w, "TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR", "PROBLEM")
		for _, p := range v.OfflinePartitions {
			t.row(p.Topic, p.Partition, "none", int32s(p.Replicas), int32s(p.ISR), "offline")
		}
		for _, p := range v.UnderReplicatedPartitions {
			if p.Leader < 0 {
				continue // listed as offline
			}
			t.row(p.Topic, p.Partition, p.Leader, int32s(p.Replicas), int32s(p.ISR), "under-replicated")
		}
		t.flush()
	}

	section(w, false, "GROUPS")
	t = newTable(w, "GROUP", "STATE", "MEMBERS", "TOTAL-LAG", "ERROR")
	for _, gl := range v.Groups {
		t.row(gl.Group, orDash(gl.State), gl.Members, gl.TotalLag, orDash(gl.Error))
	}
	t.flush()

	if len(v.NotAnswering) > 0 {
		section(w, false, "NOT ANSWERING")
		t = newTable(w, "NODE", "REQUEST", "ERROR")
		for _, na := range v.NotAnswering {
			t.row(na.Node, na.Request, na.Error)
		}
		t.flush()
	}
}
