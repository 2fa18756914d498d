package main

// gregor partition: reassign (AlterPartitionReassignments, waiting on
// ListPartitionReassignments with progress; the control plane's GET /v1/reassignments
// for which adding replicas are in sync) and elect-leader (ElectLeaders).

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/api"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

func partitionCommand() *command {
	return &command{name: "partition", summary: "move partition replicas and elect leaders",
		subs: []*command{
			{name: "reassign", args: "TOPIC/PARTITION:REPLICAS...", summary: "move partitions' replicas to other nodes", minArgs: 0, maxArgs: -1,
				setup: partitionReassign, long: reassignLong},
			{name: "elect-leader", args: "[TOPIC[/PARTITION,...]...]", summary: "elect preferred (or unclean) leaders", minArgs: 0, maxArgs: -1,
				setup: partitionElect, long: electLong},
		}}
}

const reassignLong = `Each argument names a partition and its new replicas, the first the preferred leader:
demo/0:2,3,1. New replicas catch up before the old ones leave; the command waits for
that, printing progress on stderr, unless --no-wait. --cancel TOPIC/PARTITION... stops
reassignments in progress; --status [TOPIC/PARTITION...] lists them.

  gregor partition reassign demo/0:2,3 demo/1:3,1`

const electLong = `With no argument and --all, every partition. --type preferred (the default) moves
leadership back to each partition's preferred replica (the first of its replicas) when it
is in the ISR; --type unclean elects a replica outside the ISR for an offline partition,
losing what only the old leader had.

  gregor partition elect-leader demo/0,1`

// parsePartitions reads TOPIC or TOPIC/P[,P...] arguments into a set (a topic alone:
// every partition, as kadm's empty partition list means).
func parsePartitions(args []string) (kadm.TopicsSet, error) {
	s := kadm.TopicsSet{}
	for _, a := range args {
		topic, ps, ok := strings.Cut(a, "/")
		if topic == "" {
			return nil, usageErrorf("%q: want TOPIC or TOPIC/PARTITION[,PARTITION...]", a)
		}
		if !ok {
			s.Add(topic)
			continue
		}
		ids, err := parseInt32s(ps)
		if err != nil {
			return nil, usageErrorf("%q: %v", a, err)
		}
		s.Add(topic, ids...)
	}
	return s, nil
}

// electResult is one partition's outcome of elect-leader.
type electResult struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Leader    int32  `json:"leader"`
	Error     string `json:"error,omitempty"`
}

func partitionElect(fs *pflag.FlagSet) runFunc {
	how := fs.String("type", "preferred", "preferred or unclean")
	all := fs.Bool("all", false, "every partition of every topic")
	return func(ctx context.Context, g *globals, args []string) error {
		var kind kadm.ElectLeadersHow
		switch *how {
		case "preferred":
			kind = kadm.ElectPreferredReplica
		case "unclean":
			kind = kadm.ElectLiveReplica
		default:
			return usageErrorf("--type %q: preferred or unclean", *how)
		}
		if (len(args) == 0) != *all {
			return usageErrorf("name partitions (TOPIC or TOPIC/0,1) or give --all, not both")
		}
		set, err := parsePartitions(args)
		if err != nil {
			return err
		}
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		if *all {
			set = nil
		} else {
			// A topic named alone means its partitions: list them, so that an unknown
			// topic is reported as such.
			for _, t := range set.Topics() {
				ps, err := topicPartitions(ctx, g, adm, t)
				if err != nil {
					return err
				}
				if len(set[t]) == 0 {
					set.Add(t, ps...)
				}
			}
		}
		resp, err := adm.ElectLeaders(ctx, kind, set)
		if err != nil {
			return g.requestErr(err, "ElectLeaders")
		}
		var electedTopics []string
		for t := range resp {
			electedTopics = append(electedTopics, t)
		}
		md, err := adm.Metadata(ctx, electedTopics...)
		if err != nil {
			return g.requestErr(err, "Metadata")
		}
		var rs []electResult
		for t, ps := range resp {
			for p, r := range ps {
				er := electResult{Topic: t, Partition: p, Leader: -1}
				if td, ok := md.Topics[t]; ok {
					if pd, ok := td.Partitions[p]; ok {
						er.Leader = pd.Leader
					}
				}
				if r.Err != nil && !errors.Is(r.Err, kerr.ElectionNotNeeded) {
					er.Error = electErr(t, p, r.Err, r.ErrMessage)
				}
				rs = append(rs, er)
			}
		}
		sort.Slice(rs, func(i, j int) bool {
			if rs[i].Topic != rs[j].Topic {
				return rs[i].Topic < rs[j].Topic
			}
			return rs[i].Partition < rs[j].Partition
		})
		failed := false
		for _, r := range rs {
			if r.Error != "" {
				failed = true
				g.warnf("%s/%d: %s", r.Topic, r.Partition, r.Error)
			}
		}
		if rs == nil {
			rs = []electResult{} // JSON: [], not null
		}
		if err := writeRows(g, rs, []string{"TOPIC", "PARTITION", "LEADER", "STATUS"}, func(r electResult) []any {
			leader := any(r.Leader)
			if r.Leader < 0 {
				leader = "none"
			}
			return []any{r.Topic, r.Partition, leader, statusText(r.Error, "OK")}
		}); err != nil {
			return err
		}
		if failed {
			return errReported
		}
		return nil
	}
}

func electErr(topic string, p int32, err error, serverMsg string) string {
	switch {
	case errors.Is(err, kerr.PreferredLeaderNotAvailable):
		return itemErr(err, serverMsg, "the preferred replica is down or out of the ISR",
			"see the partition with gregor topic describe "+topic)
	case errors.Is(err, kerr.EligibleLeadersNotAvailable):
		return itemErr(err, serverMsg, "no live replica to elect", "bring one of its replicas' nodes back")
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		return itemErr(err, "", fmt.Sprintf("%s/%d does not exist", topic, p), "see the topic with gregor topic describe "+topic)
	}
	return itemErr(err, serverMsg, "", "")
}

// reassignment is one partition's move as reassign shows it.
type reassignment struct {
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Target    []int32 `json:"targetReplicas,omitempty"`
	Replicas  []int32 `json:"replicas"`
	Adding    []int32 `json:"addingReplicas"`
	Removing  []int32 `json:"removingReplicas"`
	// AddingInSync are the adding replicas in the ISR already (the control plane's
	// GET /v1/reassignments; absent when it did not answer): the move completes once
	// it holds every adding replica.
	AddingInSync []int32 `json:"addingInSync,omitempty"`
	Leader       int32   `json:"leader"`
	ISR          []int32 `json:"isr"`
	Done         bool    `json:"done"`
	Error        string  `json:"error,omitempty"`
}

// parseMoves reads TOPIC/PARTITION:R1,R2,... arguments (cancel: TOPIC/PARTITION).
func parseMoves(args []string, cancel bool) (kadm.AlterPartitionAssignmentsReq, []reassignment, error) {
	var req kadm.AlterPartitionAssignmentsReq
	var moves []reassignment
	for _, a := range args {
		tp, replicas, hasReplicas := strings.Cut(a, ":")
		topic, ps, ok := strings.Cut(tp, "/")
		p, err := strconv.ParseInt(ps, 10, 32)
		want := "TOPIC/PARTITION:REPLICAS (demo/0:1,2,3)"
		if cancel {
			want = "TOPIC/PARTITION (demo/0)"
		}
		if !ok || topic == "" || err != nil || p < 0 || hasReplicas == cancel {
			return nil, nil, usageErrorf("%q: want %s", a, want)
		}
		m := reassignment{Topic: topic, Partition: int32(p)}
		if !cancel {
			ids, err := parseInt32s(replicas)
			if err != nil {
				return nil, nil, usageErrorf("%q: %v", a, err)
			}
			seen := map[int32]bool{}
			for _, id := range ids {
				if seen[id] {
					return nil, nil, usageErrorf("%q: node %d twice", a, id)
				}
				seen[id] = true
			}
			m.Target = ids
		}
		req.Assign(topic, int32(p), m.Target) // nil replicas cancel
		moves = append(moves, m)
	}
	return req, moves, nil
}

func partitionReassign(fs *pflag.FlagSet) runFunc {
	noWait := fs.Bool("no-wait", false, "return once the cluster accepted the moves")
	cancelFlag := fs.Bool("cancel", false, "cancel the reassignments of the partitions named (TOPIC/PARTITION)")
	status := fs.Bool("status", false, "list the reassignments in progress (of the partitions named, or all)")
	interval := fs.Duration("interval", time.Second, "how often to look while waiting")
	return func(ctx context.Context, g *globals, args []string) error {
		if *status && *cancelFlag {
			return usageErrorf("give one of --status and --cancel")
		}
		if *interval <= 0 {
			return usageErrorf("--interval must be positive")
		}
		if *status {
			set, err := parsePartitions(args)
			if err != nil {
				return err
			}
			return reassignStatus(ctx, g, set)
		}
		if len(args) == 0 {
			return usageErrorf("missing TOPIC/PARTITION:REPLICAS")
		}
		req, moves, err := parseMoves(args, *cancelFlag)
		if err != nil {
			return err
		}
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		rctx, cancel := g.bounded(ctx)
		resp, err := adm.AlterPartitionAssignments(rctx, req)
		cancel()
		if err != nil {
			return g.requestErr(err, "AlterPartitionReassignments")
		}
		failed := false
		for i, m := range moves {
			if r, ok := resp[m.Topic][m.Partition]; ok && r.Err != nil {
				moves[i].Error = reassignErr(m, r.Err, r.ErrMessage, *cancelFlag)
				g.warnf("%s/%d: %s", m.Topic, m.Partition, moves[i].Error)
				failed = true
			}
		}
		if !*noWait && !*cancelFlag {
			if err := waitReassigned(ctx, g, adm, moves, *interval); err != nil {
				return err
			}
		}
		if err := writeMoves(g, moves, !*noWait && !*cancelFlag); err != nil {
			return err
		}
		if failed {
			return errReported
		}
		return nil
	}
}

func reassignErr(m reassignment, err error, serverMsg string, cancel bool) string {
	switch {
	case errors.Is(err, kerr.InvalidReplicaAssignment):
		return itemErr(err, serverMsg, fmt.Sprintf("replicas %s refused for %s/%d", int32s(m.Target), m.Topic, m.Partition),
			"name live nodes that are not being decommissioned: gregor node list shows them")
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		return itemErr(err, "", fmt.Sprintf("%s/%d does not exist", m.Topic, m.Partition), "see the topic with gregor topic describe "+m.Topic)
	case errors.Is(err, kerr.NoReassignmentInProgress) && cancel:
		return itemErr(err, "", fmt.Sprintf("%s/%d is not being reassigned", m.Topic, m.Partition), "")
	case errors.Is(err, kerr.ReassignmentInProgress):
		return itemErr(err, serverMsg, fmt.Sprintf("%s/%d is being reassigned already", m.Topic, m.Partition),
			"wait for it (gregor partition reassign --status) or cancel it (--cancel)")
	}
	return itemErr(err, serverMsg, "", "")
}

// waitReassigned waits until every accepted move is done — the partition no longer
// listed as reassigning, its replicas the target — printing progress on stderr.
func waitReassigned(ctx context.Context, g *globals, adm *kadm.Client, moves []reassignment, interval time.Duration) error {
	set := kadm.TopicsSet{}
	for _, m := range moves {
		if m.Error == "" {
			set.Add(m.Topic, m.Partition)
		}
	}
	if len(set) == 0 {
		return nil
	}
	lastLine := time.Time{}
	cpWarned := false
	for {
		rctx, cancel := g.bounded(ctx)
		listed, err := adm.ListPartitionReassignments(rctx, set)
		var md kadm.Metadata
		if err == nil {
			md, err = adm.Metadata(rctx, set.Topics()...)
		}
		var inSync map[tp][]int32
		if err == nil && time.Since(lastLine) >= progressInterval {
			inSync = cpAddingInSync(rctx, g, &cpWarned)
		}
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return failf("interrupted while waiting; the reassignments go on (gregor partition reassign --status)")
			}
			return g.requestErr(err, "ListPartitionReassignments")
		}
		pending := 0
		var notes []string
		for i, m := range moves {
			if m.Error != "" {
				continue
			}
			moves[i].Adding, moves[i].Removing = []int32{}, []int32{}
			if pd, ok := md.Topics[m.Topic].Partitions[m.Partition]; ok {
				moves[i].Replicas, moves[i].ISR, moves[i].Leader = orEmpty(pd.Replicas), orEmpty(pd.ISR), pd.Leader
			}
			r, listedNow := listed[m.Topic][m.Partition]
			if listedNow {
				moves[i].Adding, moves[i].Removing = orEmpty(r.AddingReplicas), orEmpty(r.RemovingReplicas)
			}
			moves[i].Done = !listedNow && equalInt32s(moves[i].Replicas, m.Target)
			if !moves[i].Done {
				pending++
				note := fmt.Sprintf("%s/%d adding %s", m.Topic, m.Partition, int32s(moves[i].Adding))
				if ids, ok := inSync[tp{m.Topic, m.Partition}]; ok {
					note += fmt.Sprintf(" (in sync: %s)", int32s(ids))
				}
				notes = append(notes, note+fmt.Sprintf(" removing %s (ISR %s)", int32s(moves[i].Removing), int32s(moves[i].ISR)))
			}
		}
		if pending == 0 {
			return nil
		}
		if time.Since(lastLine) >= progressInterval {
			lastLine = time.Now()
			g.warnf("%d of %d partitions moving: %s", pending, len(moves), strings.Join(notes, "; "))
		}
		select {
		case <-ctx.Done():
			return failf("interrupted while waiting; the reassignments go on (gregor partition reassign --status)")
		case <-time.After(interval):
		}
	}
}

func equalInt32s(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func writeMoves(g *globals, moves []reassignment, waited bool) error {
	return writeRows(g, moves, []string{"TOPIC", "PARTITION", "TARGET", "REPLICAS", "ISR", "LEADER", "STATUS"}, func(m reassignment) []any {
		ok := "accepted"
		switch {
		case m.Target == nil:
			ok = "cancelled"
		case waited && m.Done:
			ok = "done"
		}
		leader := any(m.Leader)
		if !waited || m.Error != "" {
			leader = "-"
		}
		return []any{m.Topic, m.Partition, int32s(m.Target), int32s(m.Replicas), int32s(m.ISR), leader, statusText(m.Error, ok)}
	})
}

// tp is a topic partition.
type tp struct {
	topic     string
	partition int32
}

// cpAddingInSync reads, best effort, the adding replicas in sync of each partition
// being moved from the control plane (GET /v1/reassignments): nil, and a note on stderr
// the first time (*warned), when it does not answer.
func cpAddingInSync(ctx context.Context, g *globals, warned *bool) map[tp][]int32 {
	list, err := g.cpReassignments(ctx)
	if err != nil {
		if !*warned {
			*warned = true
			g.warnf("control plane: %v; which adding replicas are in sync is not shown", cpErr(err, "GET /v1/reassignments"))
		}
		return nil
	}
	out := map[tp][]int32{}
	for _, r := range list.Reassignments {
		out[tp{r.Topic, r.Partition}] = orEmpty(r.AddingInSync)
	}
	return out
}

// reassignStatus lists the reassignments in progress: Kafka's
// ListPartitionReassignments, with the control plane's view of each (target, adding
// replicas in sync, leader, ISR) when it answers.
func reassignStatus(ctx context.Context, g *globals, set kadm.TopicsSet) error {
	adm, err := g.admin(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := g.bounded(ctx)
	defer cancel()
	if len(set) == 0 {
		set = nil
	}
	listed, err := adm.ListPartitionReassignments(ctx, set)
	if err != nil {
		return g.requestErr(err, "ListPartitionReassignments")
	}
	var cpView map[tp]api.Reassignment
	if cl, err := g.cpReassignments(ctx); err != nil {
		g.warnf("control plane: %v; which adding replicas are in sync is not shown", cpErr(err, "GET /v1/reassignments"))
	} else {
		cpView = map[tp]api.Reassignment{}
		for _, r := range cl.Reassignments {
			cpView[tp{r.Topic, r.Partition}] = r
		}
	}
	list := []reassignment{}
	for _, r := range listed.Sorted() {
		m := reassignment{Topic: r.Topic, Partition: r.Partition, Replicas: orEmpty(r.Replicas),
			Adding: orEmpty(r.AddingReplicas), Removing: orEmpty(r.RemovingReplicas), Leader: -1, ISR: []int32{}}
		if c, ok := cpView[tp{r.Topic, r.Partition}]; ok {
			m.Target, m.AddingInSync, m.Leader, m.ISR = c.TargetReplicas, orEmpty(c.AddingInSync), c.Leader, orEmpty(c.ISR)
		}
		list = append(list, m)
	}
	return writeRows(g, list, []string{"TOPIC", "PARTITION", "REPLICAS", "TARGET", "ADDING", "IN-SYNC", "REMOVING", "LEADER", "ISR"}, func(r reassignment) []any {
		inSync, leader := "?", any("?")
		if cpView != nil {
			inSync, leader = int32s(r.AddingInSync), r.Leader
			if r.Leader < 0 {
				leader = "none"
			}
		}
		return []any{r.Topic, r.Partition, int32s(r.Replicas), int32s(r.Target), int32s(r.Adding), inSync, int32s(r.Removing), leader, int32s(r.ISR)}
	})
}
