package main

// gregor topic: create, delete, list, describe, add-partitions, alter-config (the
// Kafka admin APIs through kadm), produce and consume (topic_io.go).

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func topicCommand() *command {
	return &command{name: "topic", summary: "create, delete, list, describe, alter, produce to and consume from topics",
		subs: []*command{
			{name: "create", args: "TOPIC...", summary: "create topics", minArgs: 1, maxArgs: -1, setup: topicCreate},
			{name: "delete", args: "TOPIC...", summary: "delete topics and their records", minArgs: 1, maxArgs: -1, setup: topicDelete},
			{name: "list", summary: "list topics with their partition counts and replication factors", maxArgs: 0, setup: topicList},
			{name: "describe", args: "TOPIC...", summary: "a topic's partitions (leaders, replicas, ISR, offsets) and configs", minArgs: 1, maxArgs: -1, setup: topicDescribe},
			{name: "add-partitions", args: "TOPIC...", summary: "add partitions to topics", minArgs: 1, maxArgs: -1, setup: topicAddPartitions},
			{name: "alter-config", args: "TOPIC...", summary: "set or delete topic configs (IncrementalAlterConfigs)", minArgs: 1, maxArgs: -1, setup: topicAlterConfig},
			{name: "produce", args: "TOPIC", summary: "produce records read from stdin, one per line", minArgs: 1, maxArgs: 1, setup: topicProduce,
				long: produceLong},
			{name: "consume", args: "TOPIC...", summary: "print a topic's records", minArgs: 1, maxArgs: -1, setup: topicConsume,
				long: consumeLong},
		}}
}

// bounded is the command's context bounded by --timeout.
func (g *globals) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, g.timeout)
}

// topicResult is one topic's outcome in the answer of a change.
type topicResult struct {
	Topic string `json:"topic"`
	Error string `json:"error,omitempty"`
}

// writeResults prints each topic's outcome (TOPIC STATUS), each error also on stderr,
// and returns errReported when any failed.
func (g *globals) writeResults(rs []topicResult, extra func(r topicResult) []any, headers ...string) error {
	failed := false
	for _, r := range rs {
		if r.Error != "" {
			failed = true
			g.warnf("%s", r.Error)
		}
	}
	if err := writeRows(g, rs, append([]string{"TOPIC"}, append(headers, "STATUS")...), func(r topicResult) []any {
		cols := []any{r.Topic}
		if extra != nil {
			cols = append(cols, extra(r)...)
		}
		return append(cols, statusText(r.Error, "OK"))
	}); err != nil {
		return err
	}
	if failed {
		return errReported
	}
	return nil
}

// topicErr explains the errors a topic's change can meet.
func topicErr(topic string, err error, serverMsg string) string {
	if err == nil {
		return ""
	}
	switch {
	case errors.Is(err, kerr.TopicAlreadyExists):
		return itemErr(err, "", fmt.Sprintf("topic %q exists", topic), "see it with gregor topic describe "+topic)
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		return itemErr(err, "", fmt.Sprintf("topic %q does not exist", topic), "list topics with gregor topic list")
	case errors.Is(err, kerr.InvalidReplicationFactor):
		return itemErr(err, serverMsg, "replication factor refused", "gregor cluster info lists the live nodes")
	case errors.Is(err, kerr.InvalidPartitions):
		return itemErr(err, serverMsg, "partition count refused", "")
	case errors.Is(err, kerr.InvalidConfig):
		return itemErr(err, serverMsg, "config refused", "docs/kafka-compat.md lists the topic configs Gregor accepts")
	case errors.Is(err, kerr.InvalidTopicException):
		return itemErr(err, serverMsg, fmt.Sprintf("%q is not a valid topic name", topic), "names use letters, digits, '.', '_' and '-', at most 249")
	case errors.Is(err, kerr.PolicyViolation):
		return itemErr(err, serverMsg, "refused by the cluster's policy", "")
	}
	return itemErr(err, serverMsg, "", "")
}

// parseConfigs parses repeated k=v flags.
func parseConfigs(flag string, kvs []string) (map[string]*string, error) {
	m := map[string]*string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErrorf("%s %q: want name=value", flag, kv)
		}
		m[k] = &v
	}
	return m, nil
}

func topicCreate(fs *pflag.FlagSet) runFunc {
	partitions := fs.Int32P("partitions", "p", -1, "number of partitions (-1: the cluster's default)")
	rf := fs.Int16P("replication-factor", "r", -1, "replicas of each partition (-1: the cluster's default)")
	configs := fs.StringArrayP("config", "c", nil, "topic config name=value (repeatable), e.g. -c retention.ms=3600000")
	dry := fs.Bool("dry-run", false, "validate only: the cluster checks the request and creates nothing")
	return func(ctx context.Context, g *globals, topics []string) error {
		cfg, err := parseConfigs("--config", *configs)
		if err != nil {
			return err
		}
		if *partitions == 0 || *partitions < -1 || *rf == 0 || *rf < -1 {
			return usageErrorf("--partitions and --replication-factor are at least 1 (or -1 for the default)")
		}
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		create := adm.CreateTopics
		if *dry {
			create = adm.ValidateCreateTopics
		}
		resp, err := create(ctx, *partitions, *rf, cfg, topics...)
		if err != nil {
			return g.requestErr(err, "CreateTopics")
		}
		var rs []topicResult
		for _, t := range topics {
			r := resp[t]
			rs = append(rs, topicResult{Topic: t, Error: topicErr(t, r.Err, r.ErrMessage)})
		}
		return g.writeResults(rs, nil)
	}
}

func topicDelete(fs *pflag.FlagSet) runFunc {
	return func(ctx context.Context, g *globals, topics []string) error {
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		resp, err := adm.DeleteTopics(ctx, topics...)
		if err != nil {
			return g.requestErr(err, "DeleteTopics")
		}
		var rs []topicResult
		for _, t := range topics {
			r := resp[t]
			rs = append(rs, topicResult{Topic: t, Error: topicErr(t, r.Err, r.ErrMessage)})
		}
		return g.writeResults(rs, nil)
	}
}

// topicSummary is one topic as topic list shows it.
type topicSummary struct {
	Topic             string `json:"topic"`
	ID                string `json:"id,omitempty"`
	Partitions        int    `json:"partitions"`
	ReplicationFactor int    `json:"replicationFactor"`
}

func topicList(fs *pflag.FlagSet) runFunc {
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
		list := []topicSummary{}
		for _, t := range md.Topics.Sorted() {
			if t.IsInternal {
				continue
			}
			list = append(list, topicSummary{Topic: t.Topic, ID: topicID(t.ID), Partitions: len(t.Partitions), ReplicationFactor: t.Partitions.NumReplicas()})
		}
		return writeRows(g, list, []string{"NAME", "PARTITIONS", "REPLICAS"}, func(t topicSummary) []any {
			return []any{t.Topic, t.Partitions, t.ReplicationFactor}
		})
	}
}

// partitionView is one partition as topic describe shows it.
type partitionView struct {
	Partition       int32   `json:"partition"`
	Leader          int32   `json:"leader"`
	LeaderEpoch     int32   `json:"leaderEpoch"`
	Replicas        []int32 `json:"replicas"`
	ISR             []int32 `json:"isr"`
	OfflineReplicas []int32 `json:"offlineReplicas"`
	LogStartOffset  int64   `json:"logStartOffset"`
	HighWatermark   int64   `json:"highWatermark"`
	Error           string  `json:"error,omitempty"`
}

// configView is one config as topic describe shows it.
type configView struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	Source    string `json:"source"`
	Sensitive bool   `json:"sensitive,omitempty"`
}

// topicView is topic describe's document for one topic.
type topicView struct {
	topicSummary
	Configs        []configView    `json:"configs"`
	PartitionsList []partitionView `json:"partitionDetails"`
}

func topicDescribe(fs *pflag.FlagSet) runFunc {
	return func(ctx context.Context, g *globals, topics []string) error {
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		md, err := adm.Metadata(ctx, topics...)
		if err != nil {
			return g.requestErr(err, "Metadata")
		}
		var views []topicView
		failed := false
		for _, name := range topics {
			td, ok := md.Topics[name]
			if !ok || td.Err != nil {
				err := td.Err
				if err == nil {
					err = kerr.UnknownTopicOrPartition
				}
				g.warnf("%s", topicErr(name, err, ""))
				failed = true
				continue
			}
			v, err := describeTopic(ctx, g, adm, td)
			if err != nil {
				return err
			}
			views = append(views, v)
		}
		return writeViews(g, views, writeTopicView, failed)
	}
}

// describeTopic gathers a topic's configs and each partition's offsets.
func describeTopic(ctx context.Context, g *globals, adm *kadm.Client, td kadm.TopicDetail) (topicView, error) {
	v := topicView{topicSummary: topicSummary{Topic: td.Topic, ID: topicID(td.ID), Partitions: len(td.Partitions),
		ReplicationFactor: td.Partitions.NumReplicas()}, Configs: []configView{}, PartitionsList: []partitionView{}}
	rcs, err := adm.DescribeTopicConfigs(ctx, td.Topic)
	if err != nil {
		return v, g.requestErr(err, "DescribeConfigs")
	}
	for _, rc := range rcs {
		if rc.Err != nil {
			g.warnf("configs of %s: %s", td.Topic, describe(rc.Err, rc.ErrMessage))
			continue
		}
		for _, c := range rc.Configs {
			cv := configView{Name: c.Key, Source: c.Source.String(), Sensitive: c.Sensitive}
			if c.Value != nil {
				cv.Value = *c.Value
			}
			v.Configs = append(v.Configs, cv)
		}
	}
	sort.Slice(v.Configs, func(i, j int) bool { return v.Configs[i].Name < v.Configs[j].Name })
	starts, err := adm.ListStartOffsets(ctx, td.Topic)
	if err != nil {
		return v, g.requestErr(err, "ListOffsets")
	}
	ends, err := adm.ListEndOffsets(ctx, td.Topic)
	if err != nil {
		return v, g.requestErr(err, "ListOffsets")
	}
	for _, p := range td.Partitions.Sorted() {
		pv := partitionView{Partition: p.Partition, Leader: p.Leader, LeaderEpoch: p.LeaderEpoch, Replicas: orEmpty(p.Replicas),
			ISR: orEmpty(p.ISR), OfflineReplicas: orEmpty(p.OfflineReplicas), LogStartOffset: -1, HighWatermark: -1}
		if p.Err != nil {
			pv.Error = describe(p.Err, "")
		}
		if o, ok := starts.Lookup(td.Topic, p.Partition); ok && o.Err == nil {
			pv.LogStartOffset = o.Offset
		} else if ok && pv.Error == "" {
			pv.Error = describe(o.Err, "")
		}
		if o, ok := ends.Lookup(td.Topic, p.Partition); ok && o.Err == nil {
			pv.HighWatermark = o.Offset
		}
		v.PartitionsList = append(v.PartitionsList, pv)
	}
	return v, nil
}

// topicID prints a topic id, "" when the cluster gave none (Metadata before v10).
func topicID(id kadm.TopicID) string {
	if id == (kadm.TopicID{}) {
		return ""
	}
	return id.String()
}

// orEmpty is s, or an empty slice for nil (JSON: [], not null).
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// offsetText prints an offset, or "-" when unknown (-1).
func offsetText(o int64) any {
	if o < 0 {
		return "-"
	}
	return o
}

func writeTopicView(g *globals, v topicView) {
	w := g.stdout
	section(w, true, "SUMMARY")
	t := newTable(w)
	t.row("NAME", v.Topic)
	t.row("ID", orDash(v.ID))
	t.row("PARTITIONS", v.Partitions)
	t.row("REPLICAS", v.ReplicationFactor)
	t.flush()
	section(w, false, "CONFIGS")
	t = newTable(w, "KEY", "VALUE", "SOURCE")
	for _, c := range v.Configs {
		t.row(c.Name, c.Value, c.Source)
	}
	t.flush()
	section(w, false, "PARTITIONS")
	t = newTable(w, "PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "OFFLINE-REPLICAS", "LOG-START-OFFSET", "HIGH-WATERMARK", "ERROR")
	for _, p := range v.PartitionsList {
		leader := any(p.Leader)
		if p.Leader < 0 {
			leader = "none"
		}
		t.row(p.Partition, leader, p.LeaderEpoch, int32s(p.Replicas), int32s(p.ISR), int32s(p.OfflineReplicas),
			offsetText(p.LogStartOffset), offsetText(p.HighWatermark), orDash(p.Error))
	}
	t.flush()
}

func topicAddPartitions(fs *pflag.FlagSet) runFunc {
	num := fs.IntP("num", "n", 0, "partitions to add to each topic")
	total := fs.Int("partitions", 0, "instead, the total each topic should have (Kafka's kafka-topics --alter --partitions)")
	dry := fs.Bool("dry-run", false, "validate only")
	return func(ctx context.Context, g *globals, topics []string) error {
		if (*num > 0) == (*total > 0) || *num < 0 || *total < 0 {
			return usageErrorf("give one of --num N (partitions to add) and --partitions N (the total), N ≥ 1")
		}
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		var resp kadm.CreatePartitionsResponses
		switch {
		case *num > 0 && *dry:
			resp, err = adm.ValidateCreatePartitions(ctx, *num, topics...)
		case *num > 0:
			resp, err = adm.CreatePartitions(ctx, *num, topics...)
		case *dry:
			resp, err = adm.ValidateUpdatePartitions(ctx, *total, topics...)
		default:
			resp, err = adm.UpdatePartitions(ctx, *total, topics...)
		}
		if err != nil {
			return g.requestErr(err, "CreatePartitions")
		}
		var rs []topicResult
		for _, t := range topics {
			r, ok := resp[t]
			if !ok {
				// kadm asks Metadata for the current counts first and leaves out a
				// topic it does not find.
				rs = append(rs, topicResult{Topic: t, Error: topicErr(t, kerr.UnknownTopicOrPartition, "")})
				continue
			}
			rs = append(rs, topicResult{Topic: t, Error: topicErr(t, r.Err, r.ErrMessage)})
		}
		return g.writeResults(rs, nil)
	}
}

func topicAlterConfig(fs *pflag.FlagSet) runFunc {
	set := fs.StringArrayP("set", "s", nil, "set a config: name=value (repeatable)")
	del := fs.StringArrayP("delete", "d", nil, "delete a config, back to its default: name (repeatable)")
	dry := fs.Bool("dry-run", false, "validate only")
	return func(ctx context.Context, g *globals, topics []string) error {
		sets, err := parseConfigs("--set", *set)
		if err != nil {
			return err
		}
		var alters []kadm.AlterConfig
		names := make([]string, 0, len(sets))
		for k := range sets {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			alters = append(alters, kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: sets[k]})
		}
		for _, k := range *del {
			if _, both := sets[k]; both || k == "" {
				return usageErrorf("--delete %q: not a config name, or also given to --set", k)
			}
			alters = append(alters, kadm.AlterConfig{Op: kadm.DeleteConfig, Name: k})
		}
		if len(alters) == 0 {
			return usageErrorf("nothing to change: give --set name=value or --delete name")
		}
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		alter := adm.AlterTopicConfigs
		if *dry {
			alter = adm.ValidateAlterTopicConfigs
		}
		resp, err := alter(ctx, alters, topics...)
		byName := map[string]kadm.AlterConfigsResponse{}
		switch {
		case unsupported(err) || (err == nil && allUnsupported(resp)):
			// A cluster without IncrementalAlterConfigs: AlterConfigs replaces a topic's
			// whole config, so read each topic's own configs, change them, write them.
			g.warnf("the cluster does not serve IncrementalAlterConfigs; using AlterConfigs (each topic's configs read, changed, written whole)")
			for _, t := range topics {
				r, err := alterConfigsWhole(ctx, adm, t, sets, *del, *dry)
				if err != nil {
					return g.requestErr(err, "AlterConfigs")
				}
				byName[t] = r
			}
		case err != nil:
			return g.requestErr(err, "IncrementalAlterConfigs")
		default:
			for _, r := range resp {
				byName[r.Name] = r
			}
		}
		var rs []topicResult
		for _, t := range topics {
			r, ok := byName[t]
			if !ok {
				rs = append(rs, topicResult{Topic: t, Error: "no answer for this topic"})
				continue
			}
			rs = append(rs, topicResult{Topic: t, Error: topicErr(t, r.Err, r.ErrMessage)})
		}
		return g.writeResults(rs, nil)
	}
}

// allUnsupported reports whether every topic of an answer failed with
// UNSUPPORTED_VERSION.
func allUnsupported(resp kadm.AlterConfigsResponses) bool {
	for _, r := range resp {
		if !errors.Is(r.Err, kerr.UnsupportedVersion) {
			return false
		}
	}
	return len(resp) > 0
}

// alterConfigsWhole changes a topic's configs through AlterConfigs, which sets the
// topic's whole config: its own configs (source DYNAMIC_TOPIC_CONFIG, from
// DescribeConfigs) with sets applied and dels removed. A read or a topic error is the
// topic's answer; err is the whole request's.
func alterConfigsWhole(ctx context.Context, adm *kadm.Client, topic string, sets map[string]*string, dels []string, dry bool) (kadm.AlterConfigsResponse, error) {
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return kadm.AlterConfigsResponse{}, err
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		return kadm.AlterConfigsResponse{Name: topic, Err: kerr.UnknownTopicOrPartition}, nil
	}
	if rc.Err != nil {
		return kadm.AlterConfigsResponse{Name: topic, Err: rc.Err, ErrMessage: rc.ErrMessage}, nil
	}
	own := map[string]*string{}
	for _, c := range rc.Configs {
		if c.Source != kmsg.ConfigSourceDynamicTopicConfig {
			continue
		}
		if c.Sensitive && c.Value == nil {
			return kadm.AlterConfigsResponse{Name: topic, Err: kerr.InvalidConfig,
				ErrMessage: fmt.Sprintf("config %s is sensitive: its value cannot be read back to be written whole by AlterConfigs", c.Key)}, nil
		}
		own[c.Key] = c.Value
	}
	var alters []kadm.AlterConfig
	for _, kv := range mergeConfigs(own, sets, dels) {
		alters = append(alters, kadm.AlterConfig{Op: kadm.SetConfig, Name: kv[0], Value: kmsg.StringPtr(kv[1])})
	}
	alter := adm.AlterTopicConfigsState
	if dry {
		alter = adm.ValidateAlterTopicConfigsState
	}
	resp, err := alter(ctx, alters, topic)
	if err != nil {
		return kadm.AlterConfigsResponse{}, err
	}
	r, err := resp.On(topic, nil)
	if err != nil {
		return kadm.AlterConfigsResponse{Name: topic, Err: errors.New("no answer for this topic")}, nil
	}
	return r, nil
}

// mergeConfigs returns a topic's own configs with sets applied and dels removed, as
// name-value pairs sorted by name.
func mergeConfigs(own, sets map[string]*string, dels []string) [][2]string {
	m := map[string]string{}
	for k, v := range own {
		if v != nil {
			m[k] = *v
		}
	}
	for k, v := range sets {
		m[k] = *v
	}
	for _, k := range dels {
		delete(m, k)
	}
	out := make([][2]string, 0, len(m))
	for k, v := range m {
		out = append(out, [2]string{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}
