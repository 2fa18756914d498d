package dataplane

// The configs a node describes (DescribeConfigs, 32_describeconfigs.go) and refuses or
// changes (AlterConfigs and IncrementalAlterConfigs, 33_alterconfigs.go and
// 44_incrementalalterconfigs.go): a topic's, stored in its etcd value and changed
// through the control plane, and the node's own settings, which are its command-line
// flags, fixed while it runs.

import (
	"context"
	"slices"
	"strconv"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// topicConfigDef describes one topic config Gregor understands.
type topicConfigDef struct {
	name string
	typ  kmsg.ConfigType
	// def is the value a topic has when it sets nothing.
	def string
	// brokerName is the broker config whose value is the topic default (Kafka's
	// synonym: retention.ms's is log.retention.ms).
	brokerName string
	doc        string
}

// flushNever is Kafka's default of flush.messages and flush.ms, Long.MAX_VALUE: the log
// is not forced to disk (replication is the durability).
const flushNever = "9223372036854775807"

// topicConfigDefs lists the topic configs, sorted by name; the names and the rules of
// their values are controlplane/cluster's and controlplane/client's (ValidateConfigs).
var topicConfigDefs = []topicConfigDef{
	{cluster.ConfigCleanupPolicy, kmsg.ConfigTypeList, "delete", "log.cleanup.policy",
		`How old segments are removed: "delete" (by retention.ms and retention.bytes). Compaction is not supported.`},
	{cluster.ConfigCompressionType, kmsg.ConfigTypeString, "producer", "compression.type",
		`"producer": batches are stored as the producer compressed them. Recompression is not supported.`},
	{cluster.ConfigFlushMessages, kmsg.ConfigTypeLong, flushNever, "log.flush.interval.messages",
		"Force the log to disk after this many messages (1: before every acknowledgement). The default never forces it: replication is the durability."},
	{cluster.ConfigFlushMs, kmsg.ConfigTypeLong, flushNever, "log.flush.interval.ms",
		"Force the log to disk when data has been unflushed this long (0: before every acknowledgement). The default never forces it."},
	{cluster.ConfigMaxMessageBytes, kmsg.ConfigTypeInt, strconv.Itoa(segment.DefaultMaxBatchBytes), "message.max.bytes",
		"The largest record batch accepted, as the producer sent it (compressed)."},
	{cluster.ConfigMessageTimestampType, kmsg.ConfigTypeString, "CreateTime", "log.message.timestamp.type",
		`"CreateTime" (the producer's timestamps) or "LogAppendTime" (the leader's clock at the append).`},
	{cluster.ConfigMinInsyncReplicas, kmsg.ConfigTypeInt, "1", "min.insync.replicas",
		"The in-sync replicas an acks=all produce needs (NOT_ENOUGH_REPLICAS below it)."},
	{cluster.ConfigRetentionBytes, kmsg.ConfigTypeLong, "-1", "log.retention.bytes",
		"The size a partition's log is kept to by deleting its oldest segments; -1: no limit."},
	{cluster.ConfigRetentionMs, kmsg.ConfigTypeLong, strconv.FormatInt(segment.DefaultRetentionAge.Milliseconds(), 10), "log.retention.ms",
		"How long a segment is kept after its newest record; -1: forever."},
	{cluster.ConfigSegmentBytes, kmsg.ConfigTypeInt, strconv.Itoa(segment.DefaultSegmentBytes), "log.segment.bytes",
		"The size at which a log's active segment is rolled."},
	{cluster.ConfigSegmentMs, kmsg.ConfigTypeLong, strconv.FormatInt(segment.DefaultSegmentAge.Milliseconds(), 10), "log.roll.ms",
		"The age at which a log's active segment is rolled, so that retention can delete it."},
	{cluster.ConfigUncleanLeaderElection, kmsg.ConfigTypeBoolean, "false", "unclean.leader.election.enable",
		"Elect a replica outside the ISR when no in-sync replica is alive, at the cost of losing records."},
}

// topicConfigDefaults are the values a topic has when it sets nothing.
var topicConfigDefaults = func() map[string]string {
	m := make(map[string]string, len(topicConfigDefs))
	for _, d := range topicConfigDefs {
		m[d.name] = d.def
	}
	return m
}()

// lookupTopicConfig returns the definition of a topic config, or nil.
func lookupTopicConfig(name string) *topicConfigDef {
	i, ok := slices.BinarySearchFunc(topicConfigDefs, name, func(d topicConfigDef, n string) int {
		switch {
		case d.name < n:
			return -1
		case d.name > n:
			return 1
		}
		return 0
	})
	if !ok {
		return nil
	}
	return &topicConfigDefs[i]
}

// validTopicConfig reports whether the control plane accepts value for the topic
// config name.
func validTopicConfig(name, value string) bool {
	return client.ValidateConfigs(map[string]string{name: value}) == nil
}

// listConfig reports whether a topic config is a list (APPEND and SUBTRACT apply).
func listConfig(name string) bool {
	d := lookupTopicConfig(name)
	return d != nil && d.typ == kmsg.ConfigTypeList
}

// nodeConfig is one of the node's settings as a Kafka broker config: read-only, fixed
// for the process's life.
type nodeConfig struct {
	name string
	// value is nil for a setting the node does not have (broker.rack without --rack).
	value *string
	typ   kmsg.ConfigType
	// flag is the gregor-dp flag that sets it (STATIC_BROKER_CONFIG), or "" for a
	// value built into the node (DEFAULT_CONFIG).
	flag string
	doc  string
}

// nodeConfigs lists this node's settings, sorted by name: those Kafka names, with the
// node's values, and the brokers' topic defaults (the topic configs' synonyms).
func (s *Server) nodeConfigs() []nodeConfig {
	str := func(v string) *string { return &v }
	ms := func(v int64) *string { return str(strconv.FormatInt(v, 10)) }
	snap := s.snapshot()
	listen, advertise := s.cfg.Listen, s.cfg.Listen
	if s.cfg.Advertise != "" {
		advertise = s.cfg.Advertise
	}
	var rack *string
	if b, ok := snap.Brokers[s.cfg.NodeID]; ok {
		advertise = brokerAddr(b.Host, b.Port)
		if b.Rack != "" {
			rack = str(b.Rack)
		}
	}
	out := []nodeConfig{
		{"advertised.listeners", str("PLAINTEXT://" + advertise), kmsg.ConfigTypeList, "--advertise", "The address clients are told to connect to."},
		{"auto.create.topics.enable", str(strconv.FormatBool(s.cfg.AutoCreateTopics)), kmsg.ConfigTypeBoolean, "--auto-create-topics", "Create a topic a Metadata request names if it does not exist."},
		{"broker.id", str(strconv.Itoa(int(s.cfg.NodeID))), kmsg.ConfigTypeInt, "--id", "The node's id."},
		{"broker.rack", rack, kmsg.ConfigTypeString, "--rack", "The node's rack, for spreading replicas."},
		{"connections.max.idle.ms", ms(s.cfg.IdleTimeout.Milliseconds()), kmsg.ConfigTypeLong, "--idle-timeout", "Connections idle this long are closed."},
		{"default.replication.factor", str(strconv.Itoa(client.DefaultReplicationFactor)), kmsg.ConfigTypeInt, "", "The replication factor of a topic created without one."},
		{"listeners", str("PLAINTEXT://" + listen), kmsg.ConfigTypeList, "--listen", "The Kafka listener."},
		{"log.dirs", str(s.cfg.DataDir), kmsg.ConfigTypeString, "--data-dir", "The directory of the partitions' logs."},
		{"max.connections", str(strconv.Itoa(s.cfg.MaxConnections)), kmsg.ConfigTypeInt, "--max-connections", "Open client connections in all."},
		{"max.connections.per.ip", str(strconv.Itoa(s.cfg.MaxConnectionsPerIP)), kmsg.ConfigTypeInt, "--max-connections-per-ip", "Open client connections from one address."},
		{"num.partitions", str(strconv.Itoa(client.DefaultPartitions)), kmsg.ConfigTypeInt, "", "The partitions of a topic created without a count."},
		{"replica.fetch.backoff.ms", ms(s.cfg.ReplicaFetchBackoff.Milliseconds()), kmsg.ConfigTypeInt, "", "A follower's wait after a failed fetch."},
		{"replica.fetch.max.bytes", str(strconv.Itoa(int(s.cfg.ReplicaFetchMaxBytes))), kmsg.ConfigTypeInt, "", "The bytes a follower fetches per partition."},
		{"replica.fetch.min.bytes", str(strconv.Itoa(int(s.cfg.ReplicaFetchMinBytes))), kmsg.ConfigTypeInt, "", "The bytes a follower's fetch waits for."},
		{"replica.fetch.response.max.bytes", str(strconv.Itoa(int(s.cfg.ReplicaFetchResponseMaxBytes))), kmsg.ConfigTypeInt, "", "The bytes of a follower's fetch response."},
		{"replica.fetch.wait.max.ms", ms(s.cfg.ReplicaFetchMaxWait.Milliseconds()), kmsg.ConfigTypeInt, "", "How long a follower's fetch waits for its minimum bytes."},
		{"replica.lag.time.max.ms", ms(s.cfg.ReplicaLagTimeMax.Milliseconds()), kmsg.ConfigTypeLong, "--replica-lag-time-max", "An in-sync follower that has not caught up for this long leaves the ISR."},
		{"replica.socket.timeout.ms", ms(s.cfg.ReplicaSocketTimeout.Milliseconds()), kmsg.ConfigTypeInt, "", "A follower's network timeout."},
		{"socket.request.max.bytes", str(strconv.Itoa(s.cfg.MaxFrameBytes)), kmsg.ConfigTypeInt, "--max-frame-bytes", "The largest request accepted."},
	}
	for _, d := range topicConfigDefs {
		out = append(out, nodeConfig{d.brokerName, str(d.def), d.typ, "", "The default of the topic config " + d.name + ". " + d.doc})
	}
	slices.SortFunc(out, func(a, b nodeConfig) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	})
	return out
}

// lookupNodeConfig returns the entry of configs named name, or nil.
func lookupNodeConfig(configs []nodeConfig, name string) *nodeConfig {
	for i := range configs {
		if configs[i].name == name {
			return &configs[i]
		}
	}
	return nil
}

// nodeConfigRefusal is the message for a change of a node setting: Kafka refuses a
// static broker config's update ("Cannot update these configs dynamically"); here
// every node setting is static.
func nodeConfigRefusal(configs []nodeConfig, name string) string {
	c := lookupNodeConfig(configs, name)
	switch {
	case c == nil:
		return "unknown broker config " + strconv.Quote(name)
	case c.flag == "":
		return "cannot update broker config " + strconv.Quote(name) + " dynamically: it is built into the node"
	}
	return "cannot update broker config " + strconv.Quote(name) + " dynamically: it is the node's flag " + c.flag + ", set when the node starts"
}

// configChange is one resource of an AlterConfigs or IncrementalAlterConfigs request,
// decoded: what to do to a topic's configs, or the node's settings it names.
type configChange struct {
	typ  kmsg.ConfigResourceType
	name string
	// err refuses the resource before anything is looked up (a malformed entry).
	err error
	// names are the configs it names, for a BROKER resource's refusal.
	names []string
	// alter turns a topic's stored configs into the new set.
	alter func(configs map[string]string) (map[string]string, error)
}

// applyConfigChange makes one resource's change through the control plane and returns
// the etcd revision to wait for (0: none). A BROKER resource naming this node is
// refused for its first config (every node setting is static), as Kafka refuses a
// static broker config; with no configs nothing changes.
func (s *Server) applyConfigChange(ctx context.Context, c *configChange, validateOnly bool) (int64, error) {
	if c.err != nil {
		return 0, c.err
	}
	switch c.typ {
	case kmsg.ConfigResourceTypeTopic:
		rev, err := s.cp.AlterTopicConfigs(ctx, c.name, validateOnly, c.alter)
		if validateOnly {
			rev = 0
		}
		return rev, err
	case kmsg.ConfigResourceTypeBroker:
		if msg, ok := s.isThisNode(c.name); !ok {
			return 0, &client.Error{Code: kerr.InvalidRequest, Message: msg}
		}
		if len(c.names) > 0 {
			return 0, &client.Error{Code: kerr.InvalidConfig, Message: nodeConfigRefusal(s.nodeConfigs(), c.names[0])}
		}
		return 0, nil
	}
	return 0, &client.Error{Code: kerr.InvalidRequest, Message: "unsupported resource type " + c.typ.String()}
}

// alterConfigs makes the decoded changes of an AlterConfigs or IncrementalAlterConfigs
// request and answers it. The two APIs differ only in how a resource's configs change
// (replacingChange, incrementalChange), so the refusal of a resource named twice, the
// topic/broker split (applyConfigChange) and the answer are one piece. answer stores
// resource i's result in resp: both APIs' resource results have the same fields, so it
// is built once, as AlterConfigs's.
func (s *Server) alterConfigs(r *request, changes []configChange, validateOnly bool, resp kmsg.Response, answer func(i int, res kmsg.AlterConfigsResponseResource)) {
	duplicateResources(changes)
	s.adminEach(r, 0, len(changes), resp, func(ctx context.Context, i int) (int64, error) {
		return s.applyConfigChange(ctx, &changes[i], validateOnly)
	}, func(i int, err error) {
		res := kmsg.NewAlterConfigsResponseResource()
		res.ResourceType, res.ResourceName = changes[i].typ, changes[i].name
		res.ErrorCode, res.ErrorMessage = errorCode(err), errorMessage(err)
		answer(i, res)
	})
}

// duplicateResources marks, as Kafka does, every resource named more than once in a
// request: each is refused with INVALID_REQUEST.
func duplicateResources(changes []configChange) {
	type key struct {
		typ  kmsg.ConfigResourceType
		name string
	}
	seen := map[key]int{}
	for _, c := range changes {
		seen[key{c.typ, c.name}]++
	}
	for i := range changes {
		if seen[key{changes[i].typ, changes[i].name}] > 1 {
			changes[i].err = &client.Error{Code: kerr.InvalidRequest, Message: "each resource must appear at most once in a request"}
		}
	}
}
