package main

// gregor cluster: info (nodes, the active controller, unhealthy partitions, groups and
// their lag) and health (exit status 1 while partitions are offline or
// under-replicated, --exit-when-healthy to wait for it).

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

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
// under-replicated (ISR smaller than the replicas), and the nodes down (holding
// replicas, not registered).
func healthOf(md kadm.Metadata) health {
	h := health{KafkaController: md.Controller, Nodes: md.Brokers.NodeIDs(), NodesDown: []int32{},
		OfflinePartitions: []partitionRef{}, UnderReplicatedPartitions: []partitionRef{}}
	if h.Nodes == nil {
		h.Nodes = []int32{}
	}
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
			for _, r := range p.Replicas {
				if !slices.Contains(h.Nodes, r) {
					down[r] = true
				}
			}
		}
	}
	for id := range down {
		h.NodesDown = append(h.NodesDown, id)
	}
	slices.Sort(h.NodesDown)
	h.Healthy = len(h.Nodes) > 0 && len(h.OfflinePartitions) == 0 && len(h.UnderReplicatedPartitions) == 0
	return h
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
		for {
			rctx, cancel := g.bounded(ctx)
			md, err := adm.Metadata(rctx)
			cancel()
			if err != nil && !*watch && !*untilHealthy {
				return g.requestErr(err, "Metadata")
			}
			var h health
			if err == nil {
				h = healthOf(md)
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

// clusterNode is one node as cluster info shows it.
type clusterNode struct {
	ID   int32  `json:"id"`
	Addr string `json:"address"`
	Rack string `json:"rack,omitempty"`
	// ControlledShutdown: the node is stopping, its leaderships moving away.
	ControlledShutdown bool `json:"controlledShutdown,omitempty"`
	Leaders            int  `json:"leaders"`
	Replicas           int  `json:"replicas"`
}

// groupLag is one group as cluster info shows it.
type groupLag struct {
	Group    string `json:"group"`
	State    string `json:"state"`
	Members  int    `json:"members"`
	TotalLag int64  `json:"totalLag"`
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
		v := clusterInfoView{ClusterID: md.Cluster, health: healthOf(md), Nodes: []clusterNode{}, ControlPlaneMembers: []string{}, Groups: []groupLag{}}
		byID := map[int32]*clusterNode{}
		for _, b := range md.Brokers {
			n := clusterNode{ID: b.NodeID, Addr: fmt.Sprintf("%s:%d", b.Host, b.Port)}
			if b.Rack != nil {
				n.Rack = *b.Rack
			}
			v.Nodes = append(v.Nodes, n)
		}
		for i := range v.Nodes {
			byID[v.Nodes[i].ID] = &v.Nodes[i]
		}
		for _, t := range md.Topics {
			v.Topics++
			for _, p := range t.Partitions {
				v.Partitions++
				if n := byID[p.Leader]; n != nil {
					n.Leaders++
				}
				for _, r := range p.Replicas {
					if n := byID[r]; n != nil {
						n.Replicas++
					}
				}
			}
		}
		// The control plane: the active controller, its members, nodes stopping.
		if cv, err := g.cpCluster(ctx); err != nil {
			g.warnf("control plane: %v", err)
		} else {
			v.Controller = cv.Controller
			for _, m := range cv.Members {
				v.ControlPlaneMembers = append(v.ControlPlaneMembers, m.Name)
			}
			for _, id := range cv.ControlledShutdown {
				if n := byID[id]; n != nil {
					n.ControlledShutdown = true
				}
			}
		}
		// Groups and their lag.
		listed, err := adm.ListGroups(ctx)
		if err != nil && len(listed) == 0 {
			return g.requestErr(err, "ListGroups")
		}
		if names := listed.Groups(); len(names) > 0 {
			lags, err := adm.Lag(ctx, names...)
			if err != nil {
				return g.requestErr(err, "DescribeGroups")
			}
			for _, l := range lags.Sorted() {
				gl := groupLag{Group: l.Group, State: l.State, Members: len(l.Members)}
				for _, ml := range l.Lag.Sorted() {
					if ml.Lag > 0 {
						gl.TotalLag += ml.Lag
					}
				}
				v.Groups = append(v.Groups, gl)
			}
		}
		sort.Slice(v.Groups, func(i, j int) bool { return v.Groups[i].Group < v.Groups[j].Group })
		if g.json() {
			return writeJSON(g.stdout, v)
		}
		writeClusterInfo(g, v)
		return nil
	}
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
	t = newTable(w, "ID", "ADDRESS", "RACK", "LEADERS", "REPLICAS", "STATE")
	for _, n := range v.Nodes {
		state := "up"
		if n.ControlledShutdown {
			state = "controlled shutdown"
		}
		t.row(n.ID, n.Addr, orDash(n.Rack), n.Leaders, n.Replicas, state)
	}
	for _, id := range v.NodesDown {
		t.row(id, "-", "-", 0, "-", "down (holds replicas, not registered)")
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
	t = newTable(w, "GROUP", "STATE", "MEMBERS", "TOTAL-LAG")
	for _, gl := range v.Groups {
		t.row(gl.Group, orDash(gl.State), gl.Members, gl.TotalLag)
	}
	t.flush()
}
