package main

// gregor transaction: list (ListTransactions), describe (DescribeTransactions),
// describe-producers (DescribeProducers), find-hanging and abort (WriteTxnMarkers to a
// partition's leader) — what Kafka's kafka-transactions.sh does (KIP-664).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func transactionCommand() *command {
	return &command{name: "transaction", summary: "list and describe transactions, find and abort hanging ones",
		subs: []*command{
			{name: "list", summary: "list transactional ids with their coordinators, producer ids and states", maxArgs: 0, setup: txnList},
			{name: "describe", args: "TRANSACTIONAL-ID...", summary: "a transaction's state, producer, timeout, start and partitions", minArgs: 1, maxArgs: -1, setup: txnDescribe},
			{name: "describe-producers", summary: "the producers the leaders of a topic's partitions keep, and their open transactions", maxArgs: 0,
				setup: txnDescribeProducers},
			{name: "find-hanging", summary: "open transactions on partitions that their coordinator no longer ends", maxArgs: 0,
				setup: txnFindHanging, long: findHangingLong},
			{name: "abort", summary: "abort a hanging transaction on one partition (a last resort)", maxArgs: 0,
				setup: txnAbort, long: abortLong},
		}}
}

const findHangingLong = `An open transaction on a partition is hanging when the producer last wrote to the
partition longer ago than --max-transaction-timeout (the longest transaction timeout the
cluster accepts: the coordinator would have aborted it by then), or when the
coordinator of its transactional id no longer has that producer id's transaction
ongoing with the partition in it. A hanging transaction holds read_committed consumers
back at its first offset. The partitions are those of --topic, of the partitions
--node leads, or all. The exit status is 0 whether or not some hang (1 only when some
partition or node did not answer).

  gregor transaction find-hanging --topic demo`

const abortLong = `Writes an abort marker for one producer's open transaction on one partition, on the
partition's leader, as the coordinator would: the records of that transaction on that
partition are dropped for read_committed consumers and they read on past them. Name the
transaction by its first offset (--start-offset, as find-hanging and describe-producers
print it), or by --producer-id, --producer-epoch and --coordinator-epoch.

This is a last resort for a transaction its coordinator lost track of (find-hanging
reports those). The coordinator ends transactions itself, and aborts one that outlives
its timeout: do not abort a transaction it still has ongoing.

  gregor transaction abort --topic demo --partition 0 --start-offset 1234`

// txnStates are the transaction states (Kafka's TransactionState), as list --state takes
// them.
var txnStates = []string{"Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort", "Dead", "PrepareEpochFence"}

// txnOpen reports whether a coordinator's state has the transaction not ended yet on
// its partitions.
func txnOpen(state string) bool {
	switch state {
	case "Ongoing", "PrepareCommit", "PrepareAbort", "PrepareEpochFence":
		return true
	}
	return false
}

// parseTxnStates checks --state's names (case-insensitive) and returns Kafka's spelling.
func parseTxnStates(names []string) ([]string, error) {
	var out []string
	for _, n := range names {
		i := slices.IndexFunc(txnStates, func(s string) bool { return strings.EqualFold(s, strings.TrimSpace(n)) })
		if i < 0 {
			return nil, usageErrorf("--state %q: one of %s", n, strings.Join(txnStates, ", "))
		}
		out = append(out, txnStates[i])
	}
	return out, nil
}

// txnSummary is one transactional id as transaction list shows it.
type txnSummary struct {
	TransactionalID string `json:"transactionalId"`
	Coordinator     int32  `json:"coordinator"`
	ProducerID      int64  `json:"producerId"`
	State           string `json:"state"`
}

func txnList(fs *pflag.FlagSet) runFunc {
	statesFlag := fs.StringSlice("state", nil, "only transactions in these states (Ongoing, PrepareCommit, CompleteAbort, ...)")
	pids := fs.Int64Slice("producer-id", nil, "only the transactional ids of these producer ids")
	return func(ctx context.Context, g *globals, _ []string) error {
		states, err := parseTxnStates(*statesFlag)
		if err != nil {
			return err
		}
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		listed, _, err := listTransactions(ctx, g, adm, *pids, states)
		if err != nil {
			return err
		}
		list := []txnSummary{}
		for _, l := range listed.Sorted() {
			list = append(list, txnSummary{TransactionalID: l.TxnID, Coordinator: l.Coordinator, ProducerID: l.ProducerID, State: l.State})
		}
		return writeRows(g, list, []string{"TRANSACTIONAL-ID", "COORDINATOR", "PRODUCER-ID", "STATE"}, func(s txnSummary) []any {
			return []any{s.TransactionalID, s.Coordinator, s.ProducerID, s.State}
		})
	}
}

// listTransactions asks every node for the transactional ids it coordinates; a node
// that does not answer is named on stderr (partial), and what the others answered is
// returned.
func listTransactions(ctx context.Context, g *globals, adm *kadm.Client, pids []int64, states []string) (listed kadm.ListedTransactions, partial bool, err error) {
	listed, err = adm.ListTransactions(ctx, pids, states)
	na, err := g.broadcastErr(err, "ListTransactions")
	if err != nil {
		return nil, false, g.requestErr(err, "ListTransactions")
	}
	return listed, len(na) > 0, nil
}

// txnPartition is one topic's partitions in a transaction.
type txnPartition struct {
	Topic      string  `json:"topic"`
	Partitions []int32 `json:"partitions"`
}

// txnView is transaction describe's document for one transactional id.
type txnView struct {
	TransactionalID string `json:"transactionalId"`
	Coordinator     int32  `json:"coordinator"`
	State           string `json:"state"`
	ProducerID      int64  `json:"producerId"`
	ProducerEpoch   int16  `json:"producerEpoch"`
	TimeoutMs       int32  `json:"transactionTimeoutMs"`
	// StartTimestamp is when the ongoing (or last) transaction started, in Unix
	// milliseconds; -1 when none did.
	StartTimestamp int64          `json:"startTimestamp"`
	Partitions     []txnPartition `json:"topicPartitions"`
}

// txnErr explains the errors describing a transactional id can meet.
func txnErr(id string, err error) string {
	switch {
	case errors.Is(err, kerr.TransactionalIDNotFound):
		return itemErr(err, "", fmt.Sprintf("transactional id %q is not known to its coordinator", id),
			"list transactions with gregor transaction list")
	case errors.Is(err, kerr.CoordinatorNotAvailable), errors.Is(err, kerr.NotCoordinator), errors.Is(err, kerr.CoordinatorLoadInProgress):
		return itemErr(err, "", "the transaction coordinator is not available", "check the control plane with gregor cluster health")
	}
	return itemErr(err, "", "", "")
}

func txnDescribe(fs *pflag.FlagSet) runFunc {
	return func(ctx context.Context, g *globals, ids []string) error {
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		described, err := adm.DescribeTransactions(ctx, ids...)
		if err != nil && len(described) == 0 {
			return g.requestErr(err, "DescribeTransactions")
		}
		var views []txnView
		failed := false
		for _, id := range ids {
			d, ok := described[id]
			if !ok || d.Err != nil {
				e := d.Err
				if !ok {
					e = err
				}
				g.warnf("%s", txnErr(id, e))
				failed = true
				continue
			}
			v := txnView{TransactionalID: id, Coordinator: d.Coordinator, State: d.State, ProducerID: d.ProducerID,
				ProducerEpoch: d.ProducerEpoch, TimeoutMs: d.TimeoutMillis, StartTimestamp: d.StartTimestamp, Partitions: []txnPartition{}}
			for _, tp := range d.Topics.Sorted() { // partitions sorted too
				v.Partitions = append(v.Partitions, txnPartition{Topic: tp.Topic, Partitions: orEmpty(tp.Partitions)})
			}
			views = append(views, v)
		}
		return writeViews(g, views, writeTxnView, failed)
	}
}

// millisText prints a time in Unix milliseconds as RFC 3339 in UTC, "-" when unknown
// (below 0).
func millisText(ms int64) string {
	if ms < 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// sinceMillis is how long ago a time in Unix milliseconds was, to the millisecond.
func sinceMillis(ms int64, now time.Time) time.Duration {
	return now.Sub(time.UnixMilli(ms)).Round(time.Millisecond)
}

func writeTxnView(g *globals, v txnView) {
	t := newTable(g.stdout)
	t.row("TRANSACTIONAL-ID", v.TransactionalID)
	t.row("COORDINATOR", v.Coordinator)
	t.row("STATE", v.State)
	t.row("PRODUCER-ID", v.ProducerID)
	t.row("PRODUCER-EPOCH", v.ProducerEpoch)
	t.row("TIMEOUT", time.Duration(v.TimeoutMs)*time.Millisecond)
	start := millisText(v.StartTimestamp)
	if v.StartTimestamp >= 0 {
		start += fmt.Sprintf(" (%s ago)", sinceMillis(v.StartTimestamp, time.Now()).Round(time.Second))
	}
	t.row("START-TIME", start)
	t.flush()
	if len(v.Partitions) == 0 {
		return
	}
	fmt.Fprintln(g.stdout)
	t = newTable(g.stdout, "TOPIC", "PARTITIONS")
	for _, p := range v.Partitions {
		t.row(p.Topic, int32s(p.Partitions))
	}
	t.flush()
}

// producerView is one producer of a partition as describe-producers shows it.
type producerView struct {
	Topic            string `json:"topic"`
	Partition        int32  `json:"partition"`
	Leader           int32  `json:"leader"`
	ProducerID       int64  `json:"producerId"`
	ProducerEpoch    int16  `json:"producerEpoch"`
	LastSequence     int32  `json:"lastSequence"`
	LastTimestamp    int64  `json:"lastTimestamp"`
	CoordinatorEpoch int32  `json:"coordinatorEpoch"`
	// CurrentTxnStartOffset is the first offset of the producer's open transaction on
	// the partition, -1 when it has none.
	CurrentTxnStartOffset int64 `json:"currentTransactionStartOffset"`
}

func producerViewOf(p kadm.DescribedProducer) producerView {
	return producerView{Topic: p.Topic, Partition: p.Partition, Leader: p.Leader, ProducerID: p.ProducerID,
		ProducerEpoch: p.ProducerEpoch, LastSequence: p.LastSequence, LastTimestamp: p.LastTimestamp,
		CoordinatorEpoch: p.CoordinatorEpoch, CurrentTxnStartOffset: p.CurrentTxnStartOffset}
}

// describeProducers asks the leaders of the partitions of set for their producers. A
// partition that could not be described (its leader did not answer, or answered an
// error) is named on stderr and reported in failed; the others' producers are returned.
func describeProducers(ctx context.Context, g *globals, adm *kadm.Client, set kadm.TopicsSet) (ps []kadm.DescribedProducer, failed bool, err error) {
	described, err := adm.DescribeProducers(ctx, set)
	na, err := g.broadcastErr(err, "DescribeProducers")
	if err != nil {
		return nil, false, g.requestErr(err, "DescribeProducers")
	}
	failed = len(na) > 0
	for _, dp := range described.SortedPartitions() {
		if dp.Err != nil {
			g.warnf("%s/%d: %s", dp.Topic, dp.Partition, itemErr(dp.Err, dp.ErrMessage, "", ""))
			failed = true
			continue
		}
		ps = append(ps, dp.ActiveProducers.Sorted()...)
	}
	return ps, failed, nil
}

// topicSet is the partitions of topic (all of them when ps is empty), checked to exist.
func topicSet(ctx context.Context, g *globals, adm *kadm.Client, topic string, ps []int32) (kadm.TopicsSet, error) {
	all, err := topicPartitions(ctx, g, adm, topic)
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		if !containsInt32(all, p) {
			return nil, failf("%s", itemErr(kerr.UnknownTopicOrPartition, "", fmt.Sprintf("topic %q has no partition %d", topic, p),
				"see its partitions with gregor topic describe "+topic))
		}
	}
	if len(ps) == 0 {
		ps = all
	}
	s := kadm.TopicsSet{}
	s.Add(topic, ps...)
	return s, nil
}

func txnDescribeProducers(fs *pflag.FlagSet) runFunc {
	topic := fs.String("topic", "", "the topic whose partitions' producers to describe (required)")
	partitions := fs.Int32Slice("partition", nil, "only these partitions (default: all)")
	return func(ctx context.Context, g *globals, _ []string) error {
		if *topic == "" {
			return usageErrorf("--topic is required")
		}
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		set, err := topicSet(ctx, g, adm, *topic, *partitions)
		if err != nil {
			return err
		}
		ps, failed, err := describeProducers(ctx, g, adm, set)
		if err != nil {
			return err
		}
		rows := []producerView{}
		for _, p := range ps {
			rows = append(rows, producerViewOf(p))
		}
		if err := writeRows(g, rows, []string{"TOPIC", "PARTITION", "LEADER", "PRODUCER-ID", "PRODUCER-EPOCH", "LAST-SEQUENCE",
			"LAST-TIMESTAMP", "COORDINATOR-EPOCH", "TXN-START-OFFSET"}, func(p producerView) []any {
			return []any{p.Topic, p.Partition, p.Leader, p.ProducerID, p.ProducerEpoch, p.LastSequence,
				millisText(p.LastTimestamp), p.CoordinatorEpoch, offsetText(p.CurrentTxnStartOffset)}
		}); err != nil {
			return err
		}
		if failed {
			return errReported
		}
		return nil
	}
}

// hangingTxn is one hanging transaction on one partition as find-hanging shows it.
type hangingTxn struct {
	producerView
	// AgeMs is how long ago the producer last wrote to the partition.
	AgeMs           int64  `json:"ageMs"`
	TransactionalID string `json:"transactionalId,omitempty"`
	Reason          string `json:"reason"`
}

// defaultMaxTxnTimeout is Kafka's transaction.max.timeout.ms, and gregor-cp's
// --transaction-max-timeout.
const defaultMaxTxnTimeout = 15 * time.Minute

func txnFindHanging(fs *pflag.FlagSet) runFunc {
	topic := fs.String("topic", "", "only the partitions of this topic")
	nodeFlag := fs.Int32("node", -1, "only the partitions this node leads")
	maxTimeout := fs.Duration("max-transaction-timeout", defaultMaxTxnTimeout,
		"the longest transaction timeout the cluster accepts: a transaction open longer than this hangs")
	return func(ctx context.Context, g *globals, _ []string) error {
		if *maxTimeout <= 0 {
			return usageErrorf("--max-transaction-timeout must be above 0")
		}
		if *topic != "" && *nodeFlag >= 0 {
			return usageErrorf("give --topic or --node, not both")
		}
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		var set kadm.TopicsSet
		if *topic != "" {
			if set, err = topicSet(ctx, g, adm, *topic, nil); err != nil {
				return err
			}
		} else {
			md, err := adm.Metadata(ctx)
			if err != nil {
				return g.requestErr(err, "Metadata")
			}
			if *nodeFlag >= 0 && !containsNode(md.Brokers, *nodeFlag) {
				return failf("node %d is not in the cluster's metadata; gregor cluster info lists the nodes", *nodeFlag)
			}
			set = kadm.TopicsSet{}
			md.Topics.EachPartition(func(p kadm.PartitionDetail) {
				if *nodeFlag < 0 || p.Leader == *nodeFlag {
					set.Add(p.Topic, p.Partition)
				}
			})
		}
		var hanging []hangingTxn
		failed := false
		if len(set) > 0 {
			if hanging, failed, err = findHanging(ctx, g, adm, set, *maxTimeout, time.Now()); err != nil {
				return err
			}
		}
		if !g.json() && len(hanging) == 0 {
			fmt.Fprintln(g.stdout, "no hanging transaction")
		} else if err := writeRows(g, orEmpty(hanging), []string{"TOPIC", "PARTITION", "PRODUCER-ID", "PRODUCER-EPOCH",
			"COORDINATOR-EPOCH", "START-OFFSET", "AGE", "TRANSACTIONAL-ID", "REASON"}, func(h hangingTxn) []any {
			return []any{h.Topic, h.Partition, h.ProducerID, h.ProducerEpoch, h.CoordinatorEpoch, h.CurrentTxnStartOffset,
				time.Duration(h.AgeMs) * time.Millisecond, orDash(h.TransactionalID), h.Reason}
		}); err != nil {
			return err
		}
		if len(hanging) > 0 {
			g.warnf("abort one with gregor transaction abort --topic T --partition P --start-offset O, once sure its coordinator will not end it")
		}
		if failed {
			return errReported
		}
		return nil
	}
}

func containsNode(bs kadm.BrokerDetails, id int32) bool {
	for _, b := range bs {
		if b.NodeID == id {
			return true
		}
	}
	return false
}

// findHanging returns the open transactions on the partitions of set that hang: the
// producer last wrote longer ago than maxTimeout, or the coordinator of its
// transactional id does not have that producer's transaction open with the partition
// in it. The second is checked again on the partition after the coordinator answered,
// so that a transaction that ended meanwhile (its marker written, then the coordinator's
// state changed) is not reported. failed: some partition or node did not answer.
func findHanging(ctx context.Context, g *globals, adm *kadm.Client, set kadm.TopicsSet, maxTimeout time.Duration, now time.Time) ([]hangingTxn, bool, error) {
	ps, failed, err := describeProducers(ctx, g, adm, set)
	if err != nil {
		return nil, false, err
	}
	var open []kadm.DescribedProducer
	var pids []int64
	for _, p := range ps {
		if p.CurrentTxnStartOffset >= 0 {
			open = append(open, p)
			if !slices.Contains(pids, p.ProducerID) {
				pids = append(pids, p.ProducerID)
			}
		}
	}
	if len(open) == 0 {
		return nil, failed, nil
	}
	// The transactional ids of those producer ids, and what their coordinators say.
	listed, partialList, err := listTransactions(ctx, g, adm, pids, nil)
	if err != nil {
		return nil, false, err
	}
	// With a node unanswered, a producer id listed by none may be that node's.
	failed = failed || partialList
	idOf := map[int64]string{}
	for _, l := range listed {
		idOf[l.ProducerID] = l.TxnID
	}
	var described kadm.DescribedTransactions
	if ids := listed.TransactionalIDs(); len(ids) > 0 {
		described, err = adm.DescribeTransactions(ctx, ids...)
		if err != nil && len(described) == 0 {
			return nil, false, g.requestErr(err, "DescribeTransactions")
		}
	}
	var out, recheck []hangingTxn
	for _, p := range open {
		h := hangingTxn{producerView: producerViewOf(p), AgeMs: sinceMillis(p.LastTimestamp, now).Milliseconds(), TransactionalID: idOf[p.ProducerID]}
		if age := time.Duration(h.AgeMs) * time.Millisecond; age > maxTimeout {
			h.Reason = fmt.Sprintf("open for more than %s", maxTimeout)
			out = append(out, h)
			continue
		}
		if h.TransactionalID == "" {
			if !partialList {
				h.Reason = "no coordinator knows this producer id"
				recheck = append(recheck, h)
			}
			continue
		}
		d, ok := described[h.TransactionalID]
		switch {
		case !ok || d.Err != nil:
			// Not described (its coordinator did not answer): it may well be ongoing.
			if ok && errors.Is(d.Err, kerr.TransactionalIDNotFound) {
				h.Reason = "its transactional id is gone"
				recheck = append(recheck, h)
			}
		case d.ProducerID != p.ProducerID:
			h.Reason = fmt.Sprintf("its transactional id moved to producer id %d", d.ProducerID)
			recheck = append(recheck, h)
		case !txnOpen(d.State):
			h.Reason = "its coordinator's transaction is " + d.State
			recheck = append(recheck, h)
		case !d.Topics.Lookup(p.Topic, p.Partition):
			h.Reason = "the partition is not in its coordinator's transaction"
			recheck = append(recheck, h)
		}
	}
	if len(recheck) > 0 {
		again := kadm.TopicsSet{}
		for _, h := range recheck {
			again.Add(h.Topic, h.Partition)
		}
		ps, f, err := describeProducers(ctx, g, adm, again)
		if err != nil {
			return nil, false, err
		}
		failed = failed || f
		for _, h := range recheck {
			for _, p := range ps {
				if p.Topic == h.Topic && p.Partition == h.Partition && p.ProducerID == h.ProducerID &&
					p.CurrentTxnStartOffset == h.CurrentTxnStartOffset {
					out = append(out, h)
					break
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.ProducerID < b.ProducerID
	})
	return out, failed, nil
}

// abortResult is what transaction abort wrote.
type abortResult struct {
	Topic            string `json:"topic"`
	Partition        int32  `json:"partition"`
	Leader           int32  `json:"leader"`
	ProducerID       int64  `json:"producerId"`
	ProducerEpoch    int16  `json:"producerEpoch"`
	CoordinatorEpoch int32  `json:"coordinatorEpoch"`
	// StartOffset is the aborted transaction's first offset, -1 when the producer was
	// named by its id (the partition's open transaction then unknown).
	StartOffset int64 `json:"startOffset"`
}

func txnAbort(fs *pflag.FlagSet) runFunc {
	topic := fs.String("topic", "", "the partition's topic (required)")
	partition := fs.Int32("partition", -1, "the partition (required)")
	startOffset := fs.Int64("start-offset", -1, "the first offset of the transaction to abort (describe-producers' TXN-START-OFFSET)")
	pid := fs.Int64("producer-id", -1, "the producer id whose transaction to abort (instead of --start-offset)")
	epoch := fs.Int16("producer-epoch", -1, "with --producer-id: its epoch")
	coordEpoch := fs.Int32("coordinator-epoch", -1, "with --producer-id: the coordinator epoch of its last marker (describe-producers' COORDINATOR-EPOCH)")
	return func(ctx context.Context, g *globals, _ []string) error {
		byID := *pid >= 0 || *epoch >= 0 || *coordEpoch >= 0
		switch {
		case *topic == "" || *partition < 0:
			return usageErrorf("--topic and --partition are required")
		case byID == (*startOffset >= 0):
			return usageErrorf("give --start-offset, or --producer-id, --producer-epoch and --coordinator-epoch")
		case byID && (*pid < 0 || *epoch < 0 || *coordEpoch < 0):
			return usageErrorf("--producer-id, --producer-epoch and --coordinator-epoch go together")
		}
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		ctx, cancel := g.bounded(ctx)
		defer cancel()
		td, err := topicDetail(ctx, g, adm, *topic)
		if err != nil {
			return err
		}
		pd, ok := td.Partitions[*partition]
		if !ok {
			return failf("%s", itemErr(kerr.UnknownTopicOrPartition, "", fmt.Sprintf("topic %q has no partition %d", *topic, *partition),
				"see its partitions with gregor topic describe "+*topic))
		}
		r := abortResult{Topic: *topic, Partition: *partition, Leader: pd.Leader, ProducerID: *pid, ProducerEpoch: *epoch,
			CoordinatorEpoch: *coordEpoch, StartOffset: -1}
		if !byID {
			// The producer whose open transaction starts there, as its leader keeps it.
			set := kadm.TopicsSet{}
			set.Add(*topic, *partition)
			ps, failed, err := describeProducers(ctx, g, adm, set)
			if err != nil {
				return err
			}
			if failed {
				return errReported
			}
			found := false
			for _, p := range ps {
				if p.CurrentTxnStartOffset == *startOffset {
					// Kafka's tool takes a producer without a marker yet (-1) at
					// coordinator epoch 0.
					r.Leader, r.ProducerID, r.ProducerEpoch, r.CoordinatorEpoch = p.Leader, p.ProducerID, p.ProducerEpoch, max(p.CoordinatorEpoch, 0)
					r.StartOffset, found = p.CurrentTxnStartOffset, true
					break
				}
			}
			if !found {
				return failf("no producer of %s/%d has an open transaction starting at offset %d; gregor transaction describe-producers --topic %s --partition %d lists them",
					*topic, *partition, *startOffset, *topic, *partition)
			}
		}
		if r.Leader < 0 {
			return failf("%s", itemErr(kerr.LeaderNotAvailable, "", fmt.Sprintf("%s/%d has no leader", *topic, *partition),
				"see the partition with gregor topic describe "+*topic))
		}
		if err := writeAbortMarker(ctx, g, r); err != nil {
			return err
		}
		return writeRows(g, []abortResult{r}, []string{"TOPIC", "PARTITION", "LEADER", "PRODUCER-ID", "PRODUCER-EPOCH",
			"COORDINATOR-EPOCH", "START-OFFSET", "STATUS"}, func(r abortResult) []any {
			return []any{r.Topic, r.Partition, r.Leader, r.ProducerID, r.ProducerEpoch, r.CoordinatorEpoch, offsetText(r.StartOffset), "aborted"}
		})
	}
}

// writeAbortMarker sends WriteTxnMarkers with r's abort marker to the partition's leader,
// as the coordinator would, and returns the partition's error.
func writeAbortMarker(ctx context.Context, g *globals, r abortResult) error {
	req := kmsg.NewPtrWriteTxnMarkersRequest()
	m := kmsg.NewWriteTxnMarkersRequestMarker()
	m.ProducerID, m.ProducerEpoch, m.Committed, m.CoordinatorEpoch = r.ProducerID, r.ProducerEpoch, false, r.CoordinatorEpoch
	mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
	mt.Topic, mt.Partitions = r.Topic, []int32{r.Partition}
	m.Topics = append(m.Topics, mt)
	req.Markers = append(req.Markers, m)
	kresp, err := g.kafka.cl.Broker(int(r.Leader)).Request(ctx, req)
	if err != nil {
		return g.requestErr(err, "WriteTxnMarkers")
	}
	resp := kresp.(*kmsg.WriteTxnMarkersResponse)
	for _, rm := range resp.Markers {
		for _, rt := range rm.Topics {
			for _, rp := range rt.Partitions {
				if rt.Topic != r.Topic || rp.Partition != r.Partition {
					continue
				}
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					return failf("%s/%d: %s", r.Topic, r.Partition, abortErr(err))
				}
				return nil
			}
		}
	}
	return failf("WriteTxnMarkers: node %d did not answer for %s/%d", r.Leader, r.Topic, r.Partition)
}

// abortErr explains the errors an abort marker can meet.
func abortErr(err error) string {
	switch {
	case errors.Is(err, kerr.InvalidProducerEpoch):
		return itemErr(err, "", "the producer has a newer epoch on the partition", "describe its producers again: the transaction is not the one named")
	case errors.Is(err, kerr.TransactionCoordinatorFenced):
		return itemErr(err, "", "the coordinator epoch is below the producer's last marker's", "give describe-producers' COORDINATOR-EPOCH")
	case errors.Is(err, kerr.NotLeaderForPartition):
		return itemErr(err, "", "the leader moved", "try again")
	case errors.Is(err, kerr.NotEnoughReplicas):
		return itemErr(err, "", "the partition has fewer in-sync replicas than min.insync.replicas", "see the partition with gregor topic describe")
	}
	return itemErr(err, "", "", "")
}
