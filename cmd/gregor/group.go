package main

// gregor group: list, describe (members, committed offsets, lag), seek (set an empty
// group's committed offsets), delete — the group APIs through kadm.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

func groupCommand() *command {
	return &command{name: "group", summary: "list, describe, seek and delete consumer groups",
		subs: []*command{
			{name: "list", summary: "list groups with their states", maxArgs: 0, setup: groupList},
			{name: "describe", args: "GROUP...", summary: "a group's members, committed offsets and lag", minArgs: 1, maxArgs: -1, setup: groupDescribe},
			{name: "seek", args: "GROUP", summary: "set an empty group's committed offsets", minArgs: 1, maxArgs: 1, setup: groupSeek,
				long: seekLong},
			{name: "delete", args: "GROUP...", summary: "delete empty groups and their committed offsets", minArgs: 1, maxArgs: -1, setup: groupDelete},
		}}
}

const seekLong = `--to is start, end, an offset (clamped to each partition's start and end, as
kafka-consumer-groups does), or a time (@unix-ms or RFC 3339: the first offset at or
after it). The group must have no members: stop its consumers first. The topics are
--topics, else those the group has committed offsets for.

  gregor group seek my-group --to start --topics demo`

// groupNotFound is the error of a group that does not exist: Kafka describes an
// unknown group as Dead, with no members and nothing committed.
func groupNotFound(group string) string {
	return itemErr(kerr.GroupIDNotFound, "", fmt.Sprintf("group %q does not exist", group), "list groups with gregor group list")
}

// groupErr explains the errors a group's change can meet.
func groupErr(group string, err error, serverMsg string) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, kerr.GroupIDNotFound):
		return groupNotFound(group)
	case errors.Is(err, kerr.NonEmptyGroup):
		return itemErr(err, serverMsg, fmt.Sprintf("group %q has members", group),
			"stop its consumers (or let their sessions expire), then try again; gregor group describe "+group+" lists them")
	case errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.IllegalGeneration), errors.Is(err, kerr.RebalanceInProgress):
		return itemErr(err, serverMsg, fmt.Sprintf("group %q has members, whose offsets are theirs to commit", group),
			"stop its consumers first")
	case errors.Is(err, kerr.CoordinatorNotAvailable), errors.Is(err, kerr.NotCoordinator):
		return itemErr(err, serverMsg, "the group coordinator is not available", "check the control plane with gregor cluster health")
	}
	return itemErr(err, serverMsg, "", "")
}

// groupSummary is one group as group list shows it.
type groupSummary struct {
	Group        string `json:"group"`
	State        string `json:"state"`
	ProtocolType string `json:"protocolType"`
	Coordinator  int32  `json:"coordinator"`
}

func groupList(fs *pflag.FlagSet) runFunc {
	return func(ctx context.Context, g *globals, _ []string) error {
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		// A node that does not answer is named on stderr; the others' groups are listed.
		gs, err := adm.ListGroups(ctx)
		if _, err = g.broadcastErr(err, "ListGroups"); err != nil {
			return g.requestErr(err, "ListGroups")
		}
		// ListGroups gives states from v4 on; DescribeGroups gives them always (best
		// effort: a group it does not describe shows ListGroups' state).
		var states kadm.DescribedGroups
		if names := gs.Groups(); len(names) > 0 {
			states, _ = adm.DescribeGroups(ctx, names...)
		}
		list := []groupSummary{}
		for _, lg := range gs.Sorted() {
			s := groupSummary{Group: lg.Group, State: lg.State, ProtocolType: lg.ProtocolType, Coordinator: lg.Coordinator}
			if d, ok := states[lg.Group]; ok && d.Err == nil && s.State == "" {
				s.State = d.State
			}
			list = append(list, s)
		}
		return writeRows(g, list, []string{"GROUP", "STATE", "PROTOCOL-TYPE", "COORDINATOR"}, func(s groupSummary) []any {
			return []any{s.Group, orDash(s.State), orDash(s.ProtocolType), s.Coordinator}
		})
	}
}

// groupMember is one member as group describe shows it.
type groupMember struct {
	MemberID   string             `json:"memberId"`
	InstanceID string             `json:"instanceId,omitempty"`
	ClientID   string             `json:"clientId"`
	ClientHost string             `json:"clientHost"`
	Assignment map[string][]int32 `json:"assignment"`
}

// groupOffset is one committed offset and its lag.
type groupOffset struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// CurrentOffset is the committed offset, -1 when none.
	CurrentOffset int64  `json:"currentOffset"`
	LogEndOffset  int64  `json:"logEndOffset"`
	Lag           int64  `json:"lag"`
	MemberID      string `json:"memberId,omitempty"`
	ClientID      string `json:"clientId,omitempty"`
	Host          string `json:"host,omitempty"`
	Error         string `json:"error,omitempty"`
}

// groupView is group describe's document for one group.
type groupView struct {
	Group        string        `json:"group"`
	Coordinator  int32         `json:"coordinator"`
	State        string        `json:"state"`
	ProtocolType string        `json:"protocolType"`
	Protocol     string        `json:"protocol"`
	Members      []groupMember `json:"members"`
	Offsets      []groupOffset `json:"offsets"`
	TotalLag     int64         `json:"totalLag"`
}

// groupViews describes groups with their lag; a group that does not exist is left out
// and named in missing.
func groupViews(ctx context.Context, g *globals, adm *kadm.Client, groups []string) (views []groupView, missing []string, err error) {
	lags, err := adm.Lag(ctx, groups...)
	if err != nil {
		return nil, nil, g.requestErr(err, "DescribeGroups")
	}
	for _, name := range groups {
		l, ok := lags[name]
		if !ok || errors.Is(l.DescribeErr, kerr.GroupIDNotFound) {
			missing = append(missing, name)
			continue
		}
		if l.DescribeErr != nil {
			return nil, nil, failf("group %s: %s", name, groupErr(name, l.DescribeErr, ""))
		}
		if l.FetchErr != nil {
			return nil, nil, failf("offsets of group %s: %s", name, groupErr(name, l.FetchErr, ""))
		}
		v := groupView{Group: name, Coordinator: l.Coordinator.NodeID, State: l.State, ProtocolType: l.ProtocolType,
			Protocol: l.Protocol, Members: []groupMember{}, Offsets: []groupOffset{}}
		for _, m := range l.Members {
			gm := groupMember{MemberID: m.MemberID, ClientID: m.ClientID, ClientHost: m.ClientHost, Assignment: map[string][]int32{}}
			if m.InstanceID != nil {
				gm.InstanceID = *m.InstanceID
			}
			if a, ok := m.Assigned.AsConsumer(); ok {
				for _, t := range a.Topics {
					gm.Assignment[t.Topic] = t.Partitions
				}
			}
			v.Members = append(v.Members, gm)
		}
		for _, ml := range l.Lag.Sorted() {
			o := groupOffset{Topic: ml.Topic, Partition: ml.Partition, CurrentOffset: ml.Commit.At, LogEndOffset: ml.End.Offset, Lag: ml.Lag}
			if ml.Member != nil {
				o.MemberID, o.ClientID, o.Host = ml.Member.MemberID, ml.Member.ClientID, ml.Member.ClientHost
			}
			if ml.Err != nil {
				o.Error = describe(ml.Err, "")
			}
			if o.Lag > 0 {
				v.TotalLag += o.Lag
			}
			v.Offsets = append(v.Offsets, o)
		}
		if v.State == "Dead" && len(v.Members) == 0 && len(v.Offsets) == 0 {
			missing = append(missing, name)
			continue
		}
		views = append(views, v)
	}
	return views, missing, nil
}

func groupDescribe(fs *pflag.FlagSet) runFunc {
	return func(ctx context.Context, g *globals, groups []string) error {
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		views, missing, err := groupViews(ctx, g, adm, groups)
		if err != nil {
			return err
		}
		for _, m := range missing {
			g.warnf("%s", groupNotFound(m))
		}
		return writeViews(g, views, writeGroupView, len(missing) > 0)
	}
}

func writeGroupView(g *globals, v groupView) {
	w := g.stdout
	t := newTable(w)
	t.row("GROUP", v.Group)
	t.row("COORDINATOR", v.Coordinator)
	t.row("STATE", v.State)
	t.row("PROTOCOL", orDash(strings.TrimSpace(v.ProtocolType+" "+v.Protocol)))
	t.row("MEMBERS", len(v.Members))
	t.row("TOTAL-LAG", v.TotalLag)
	t.flush()
	if len(v.Offsets) == 0 {
		return
	}
	fmt.Fprintln(w)
	t = newTable(w, "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "MEMBER-ID", "CLIENT-ID", "HOST")
	for _, o := range v.Offsets {
		lag := any(o.Lag)
		if o.Error != "" {
			lag = o.Error
		}
		t.row(o.Topic, o.Partition, offsetText(o.CurrentOffset), offsetText(o.LogEndOffset), lag, orDash(o.MemberID), orDash(o.ClientID), orDash(o.Host))
	}
	t.flush()
}

// seekResult is one partition's outcome of group seek.
type seekResult struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// PreviousOffset is the committed offset before, -1 when none.
	PreviousOffset int64  `json:"previousOffset"`
	NewOffset      int64  `json:"newOffset"`
	Error          string `json:"error,omitempty"`
}

func groupSeek(fs *pflag.FlagSet) runFunc {
	to := fs.String("to", "", "start, end, an offset, or a time (@unix-ms or RFC 3339)")
	topicsFlag := fs.StringSlice("topics", nil, "topics to seek (default: those the group has committed offsets for)")
	dry := fs.Bool("dry-run", false, "print the offsets it would commit, commit nothing")
	return func(ctx context.Context, g *globals, args []string) error {
		group := args[0]
		if *to == "" {
			return usageErrorf("--to is required: start, end, an offset, or a time")
		}
		target, err := parseStartOffset(*to)
		if err != nil {
			return usageErrorf("--to %q: start, end, an offset, or a time (@unix-ms or RFC 3339)", *to)
		}
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		described, err := adm.DescribeGroups(ctx, group)
		if err != nil {
			return g.requestErr(err, "DescribeGroups")
		}
		d := described[group]
		if d.Err != nil && !errors.Is(d.Err, kerr.GroupIDNotFound) {
			return failf("%s", groupErr(group, d.Err, d.ErrMessage))
		}
		if n := len(d.Members); n > 0 {
			return failf("%s", itemErr(kerr.NonEmptyGroup, "", fmt.Sprintf("group %q has %d member(s) (state %s)", group, n, d.State),
				"stop its consumers first: a live group's offsets are its members' to commit"))
		}
		committed, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			return g.requestErr(err, "OffsetFetch")
		}
		topics := *topicsFlag
		if len(topics) == 0 {
			topics = committed.Partitions().Topics()
			sort.Strings(topics)
		}
		if len(topics) == 0 {
			return usageErrorf("group %q has no committed offsets: name the topics with --topics", group)
		}
		offsets, err := seekTargets(ctx, g, adm, target, topics)
		if err != nil {
			return err
		}
		var results []seekResult
		for _, o := range offsets.Sorted() {
			prev := int64(-1)
			if c, ok := committed.Lookup(o.Topic, o.Partition); ok && c.Err == nil {
				prev = c.At
			}
			results = append(results, seekResult{Topic: o.Topic, Partition: o.Partition, PreviousOffset: prev, NewOffset: o.At})
		}
		if !*dry {
			resp, err := adm.CommitOffsets(ctx, group, offsets)
			if err != nil {
				return g.requestErr(err, "OffsetCommit")
			}
			for i, r := range results {
				if c, ok := resp.Lookup(r.Topic, r.Partition); ok && c.Err != nil {
					results[i].Error = groupErr(group, c.Err, "")
				}
			}
		}
		failed := false
		for _, r := range results {
			if r.Error != "" {
				failed = true
				g.warnf("%s/%d: %s", r.Topic, r.Partition, r.Error)
			}
		}
		ok := "OK"
		if *dry {
			ok = "dry run"
		}
		if err := writeRows(g, results, []string{"TOPIC", "PARTITION", "PREVIOUS-OFFSET", "NEW-OFFSET", "STATUS"}, func(r seekResult) []any {
			return []any{r.Topic, r.Partition, offsetText(r.PreviousOffset), r.NewOffset, statusText(r.Error, ok)}
		}); err != nil {
			return err
		}
		if failed {
			return errReported
		}
		return nil
	}
}

// seekTargets resolves --to into an offset for every partition of topics.
func seekTargets(ctx context.Context, g *globals, adm *kadm.Client, target startOffset, topics []string) (kadm.Offsets, error) {
	for _, t := range topics {
		if _, err := topicPartitions(ctx, g, adm, t); err != nil {
			return nil, err
		}
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, g.requestErr(err, "ListOffsets")
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, g.requestErr(err, "ListOffsets")
	}
	var after kadm.ListedOffsets
	if target.kind == "time" {
		if after, err = adm.ListOffsetsAfterMilli(ctx, target.millis, topics...); err != nil {
			return nil, g.requestErr(err, "ListOffsets")
		}
	}
	out := kadm.Offsets{}
	var firstErr error
	ends.Each(func(end kadm.ListedOffset) {
		start, _ := starts.Lookup(end.Topic, end.Partition)
		if end.Err != nil || start.Err != nil {
			if firstErr == nil {
				firstErr = failf("offsets of %s/%d: %s", end.Topic, end.Partition, describe(errors.Join(end.Err, start.Err), ""))
			}
			return
		}
		at := end.Offset
		switch target.kind {
		case "start":
			at = start.Offset
		case "offset":
			at = min(max(target.offset, start.Offset), end.Offset)
		case "time":
			if a, ok := after.Lookup(end.Topic, end.Partition); ok && a.Err == nil && a.Offset >= 0 {
				at = a.Offset
			}
		}
		out.Add(kadm.Offset{Topic: end.Topic, Partition: end.Partition, At: at, LeaderEpoch: -1})
	})
	return out, firstErr
}

func groupDelete(fs *pflag.FlagSet) runFunc {
	return func(ctx context.Context, g *globals, groups []string) error {
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		resp, err := adm.DeleteGroups(ctx, groups...)
		if err != nil && len(resp) == 0 {
			return g.requestErr(err, "DeleteGroups")
		}
		type result struct {
			Group string `json:"group"`
			Error string `json:"error,omitempty"`
		}
		var rs []result
		failed := false
		for _, name := range groups {
			r, ok := resp[name]
			e := ""
			if !ok {
				e = "no answer for this group"
			} else {
				e = groupErr(name, r.Err, "")
			}
			if e != "" {
				failed = true
				g.warnf("%s", e)
			}
			rs = append(rs, result{Group: name, Error: e})
		}
		if err := writeRows(g, rs, []string{"GROUP", "STATUS"}, func(r result) []any {
			return []any{r.Group, statusText(r.Error, "OK")}
		}); err != nil {
			return err
		}
		if failed {
			return errReported
		}
		return nil
	}
}
