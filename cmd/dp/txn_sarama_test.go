package main

// Transactions with sarama against real gregor-cp and gregor-dp processes: its
// transactional producer (commits, aborts, group offsets, fencing) and its consumers at
// both isolation levels.

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// saramaTxnVersion is the Kafka version the sarama clients of TestTxnSarama claim. sarama
// derives each request's version from it and then lowers it to the maximum the broker's
// ApiVersions answer lists, so any version from 2.8 on sends the transaction APIs at the
// versions Gregor serves (InitProducerId v4, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn
// and TxnOffsetCommit v3) and the rest clamped to the table of docs/kafka-compat.md
// (Produce v10 to v8, OffsetFetch v8 to v7, and so on). From 3.9 on, though, sarama opens
// every connection with ApiVersions v4, which the node answers with UNSUPPORTED_VERSION
// (KIP-511) before sarama retries with v3: 3.8.1 is the newest version under which every
// request sarama sends is one the node serves.
var saramaTxnVersion = sarama.V3_8_1_0

// saramaLog keeps sarama's log lines for a failing test to print.
type saramaLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *saramaLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *saramaLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *saramaLog) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Reset()
}

// saramaLogs holds what sarama logs in this test binary. sarama.Logger is a package
// variable its goroutines read (those closing a client's brokers run on after Close
// returns), so it is set once, before any test runs, and never written again.
var saramaLogs = &saramaLog{}

func init() { sarama.Logger = log.New(saramaLogs, "[sarama] ", log.Ltime|log.Lmicroseconds) }

// within runs fn and fails the test if it has not returned after d: a request the
// broker never answers shows up as the step that hung rather than as the test timeout.
func within(t *testing.T, what string, d time.Duration, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s: still waiting after %v", what, d)
		return nil
	}
}

// saramaTxnConfig is a sarama configuration for producing to partitions the caller names;
// with a transactional id, for a transactional producer.
func saramaTxnConfig(txnID string) *sarama.Config {
	cfg := sarama.NewConfig() // one per client: sarama's goroutines keep reading it
	cfg.Version = saramaTxnVersion
	cfg.ClientID = "sarama-txn-test"
	cfg.Net.DialTimeout = 10 * time.Second
	cfg.Net.ReadTimeout = 10 * time.Second
	cfg.Net.WriteTimeout = 10 * time.Second
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Timeout = 10 * time.Second
	cfg.Consumer.Return.Errors = true
	if txnID != "" {
		cfg.Producer.Idempotent = true
		cfg.Producer.Transaction.ID = txnID
		cfg.Producer.Transaction.Timeout = 30 * time.Second
		cfg.Net.MaxOpenRequests = 1
	}
	return cfg
}

// TestTxnSarama runs sarama's transactional producer against the processes: transactions
// committed and aborted over three partitions, one consume-transform-produce transaction
// committing a group's offsets and aborted ones carrying offsets too, two generations of
// fencing (a producer fenced between transactions, another in the middle of one), and
// sarama's consumers reading the output back at read_committed and read_uncommitted.
func TestTxnSarama(t *testing.T) {
	saramaLogs.Reset()
	addr := startProcessCluster(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sarama's log:\n%s", saramaLogs)
		}
	})
	const (
		in, out = "sarama-txn-in", "sarama-txn-out"
		group   = "sarama-txn-group"
		txnID   = "sarama-txn"
		step    = 20 * time.Second
	)
	brokers := []string{addr}
	createTopic(t, addr, in, 3)
	createTopic(t, addr, out, 3)

	plain, err := sarama.NewSyncProducer(brokers, saramaTxnConfig(""))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	for p := range int32(3) {
		for i := range 6 {
			if _, _, err := plain.SendMessage(&sarama.ProducerMessage{Topic: in, Partition: p,
				Value: sarama.StringEncoder(fmt.Sprintf("in-%d-%d", p, i))}); err != nil {
				t.Fatalf("input %d: %v", p, err)
			}
		}
	}
	input := make([][]*sarama.ConsumerMessage, 3)
	for p := range int32(3) {
		input[p] = saramaConsume(t, brokers, in, p, sarama.ReadUncommitted, func(m *sarama.ConsumerMessage) bool {
			return m.Offset == 5
		})
	}

	// What each partition of out must show: the committed records at read_committed, all
	// records at read_uncommitted, and one marker per transaction that wrote there.
	var committed, all [3][]string
	var markers [3]int
	produce := func(p sarama.SyncProducer, part int32, vals ...string) error {
		for _, v := range vals {
			if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: out, Partition: part, Value: sarama.StringEncoder(v)}); err != nil {
				return err
			}
		}
		return nil
	}
	// txn runs one transaction writing three records to each partition of parts, with
	// stage (when not nil) adding to it before it ends.
	txn := func(p sarama.SyncProducer, name string, commit bool, parts []int32, stage func() error) {
		t.Helper()
		if err := p.BeginTxn(); err != nil {
			t.Fatalf("%s: begin: %v", name, err)
		}
		for _, part := range parts {
			vals := []string{fmt.Sprintf("%s-%d-0", name, part), fmt.Sprintf("%s-%d-1", name, part), fmt.Sprintf("%s-%d-2", name, part)}
			if err := within(t, name+": produce", step, func() error { return produce(p, part, vals...) }); err != nil {
				t.Fatalf("%s: produce to %d: %v", name, part, err)
			}
			all[part] = append(all[part], vals...)
			if commit {
				committed[part] = append(committed[part], vals...)
			}
			markers[part]++
		}
		if stage != nil {
			if err := stage(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		end, what := p.AbortTxn, "abort"
		if commit {
			end, what = p.CommitTxn, "commit"
		}
		if err := within(t, name+": "+what, step, end); err != nil {
			t.Fatalf("%s: %s: %v (status %s)", name, what, err, p.TxnStatus())
		}
	}
	newProducer := func(name string) sarama.SyncProducer {
		t.Helper()
		var p sarama.SyncProducer
		// The constructor sends InitProducerId and waits for the answer.
		if err := within(t, name+": init", step, func() (err error) {
			p, err = sarama.NewSyncProducer(brokers, saramaTxnConfig(txnID))
			return err
		}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return p
	}
	every := []int32{0, 1, 2}

	a := newProducer("producer A")
	defer a.Close()
	// t1 transforms the first three input records of each partition and commits the
	// group's offsets past them (offset 3), through AddMessageToTxn.
	txn(a, "t1", true, nil, func() error {
		for part := range int32(3) {
			var vals []string
			for _, m := range input[part][:3] {
				vals = append(vals, "t1-"+string(m.Value))
			}
			if err := within(t, "t1: produce", step, func() error { return produce(a, part, vals...) }); err != nil {
				return err
			}
			all[part] = append(all[part], vals...)
			committed[part] = append(committed[part], vals...)
			markers[part]++
			meta := "t1"
			if err := a.AddMessageToTxn(input[part][2], group, &meta); err != nil {
				return fmt.Errorf("AddMessageToTxn: %w", err)
			}
		}
		return nil
	})
	// t2 is aborted with offsets 6 added. sarama sends a transaction's offsets only when
	// it commits, so these never reach the broker; the aborted offsets the coordinator
	// does see come from saramaAbortedOffsets below.
	txn(a, "t2", false, every, func() error {
		meta := "t2"
		offsets := map[string][]*sarama.PartitionOffsetMetadata{in: nil}
		for part := range int32(3) {
			offsets[in] = append(offsets[in], &sarama.PartitionOffsetMetadata{Partition: part, Offset: 6, LeaderEpoch: -1, Metadata: &meta})
		}
		return a.AddOffsetsToTxn(offsets, group)
	})

	client, err := sarama.NewClient(brokers, saramaTxnConfig(""))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	// admin shares client; closing client closes both.
	saramaAbortedOffsets(t, client, admin, "sarama-txn-raw", group, in, step)

	txn(a, "t3", true, every, nil)

	// The group's offsets are t1's: neither t2's (never sent) nor the raw transaction's
	// (sent, then aborted). sarama's offset manager asks at read_committed, with
	// require_stable, so its answer comes only once no transaction holds offsets of the
	// group; the admin's plain OffsetFetch must agree.
	stableCfg := saramaTxnConfig("")
	stableCfg.Consumer.IsolationLevel = sarama.ReadCommitted
	stableCfg.Metadata.Retry.Max = 40 // the offset manager's retries on UNSTABLE_OFFSET_COMMIT
	stableCfg.Metadata.Retry.Backoff = 100 * time.Millisecond
	stableClient, err := sarama.NewClient(brokers, stableCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer stableClient.Close()
	om, err := sarama.NewOffsetManagerFromClient(group, stableClient)
	if err != nil {
		t.Fatal(err)
	}
	defer om.Close()
	for part := range int32(3) {
		var off int64
		var meta string
		if err := within(t, "offset manager", step, func() error {
			pom, err := om.ManagePartition(in, part)
			if err != nil {
				return err
			}
			defer pom.AsyncClose()
			off, meta = pom.NextOffset()
			return nil
		}); err != nil {
			t.Fatalf("offset manager, %s-%d: %v", in, part, err)
		}
		if off != 3 || meta != "t1" {
			t.Errorf("offset manager, %s-%d: offset %d metadata %q, want t1's 3", in, part, off, meta)
		}
	}
	checkGroupOffsets(t, admin, group, in, 3, "t1")

	// Fencing between transactions: B initializes with A's transactional id, and A's next
	// transaction fails at its first AddPartitionsToTxn.
	b := newProducer("producer B")
	defer b.Close()
	if err := a.BeginTxn(); err != nil {
		t.Fatalf("t4: begin: %v", err)
	}
	err = within(t, "t4: produce", step, func() error { return produce(a, 0, "t4-0-0") })
	if !errors.Is(err, sarama.ErrProducerFenced) {
		t.Errorf("t4: fenced producer A produced: %v, want %v", err, sarama.ErrProducerFenced)
	}
	if err := within(t, "t4: commit", step, a.CommitTxn); err == nil {
		t.Errorf("t4: fenced producer A committed")
	}
	if a.TxnStatus()&sarama.ProducerTxnFlagFatalError == 0 {
		t.Errorf("t4: producer A's status %s, want a fatal error", a.TxnStatus())
	}
	txn(b, "t5", true, every, nil)

	// Fencing inside a transaction: B's t6 has written to partitions 0 and 1 when C
	// initializes, so the coordinator aborts t6, and B's commit is refused.
	if err := b.BeginTxn(); err != nil {
		t.Fatalf("t6: begin: %v", err)
	}
	for _, part := range []int32{0, 1} {
		vals := []string{fmt.Sprintf("t6-%d-0", part), fmt.Sprintf("t6-%d-1", part), fmt.Sprintf("t6-%d-2", part)}
		if err := within(t, "t6: produce", step, func() error { return produce(b, part, vals...) }); err != nil {
			t.Fatalf("t6: produce to %d: %v", part, err)
		}
		all[part] = append(all[part], vals...)
		markers[part]++
	}
	c := newProducer("producer C")
	defer c.Close()
	err = within(t, "t6: commit", step, b.CommitTxn)
	if !errors.Is(err, sarama.ErrProducerFenced) {
		t.Errorf("t6: fenced producer B's commit: %v, want %v", err, sarama.ErrProducerFenced)
	}
	txn(c, "t7", true, every, nil)

	// A plain record closes each partition: once a consumer has it, it has been past
	// every marker (the last one included) and every record before.
	for part := range int32(3) {
		v := fmt.Sprintf("end-%d", part)
		if err := produce(plain, part, v); err != nil {
			t.Fatalf("end record %d: %v", part, err)
		}
		all[part] = append(all[part], v)
		committed[part] = append(committed[part], v)
	}

	for _, level := range []sarama.IsolationLevel{sarama.ReadCommitted, sarama.ReadUncommitted} {
		want := committed
		if level == sarama.ReadUncommitted {
			want = all
		}
		for part := range int32(3) {
			end := fmt.Sprintf("end-%d", part)
			msgs := saramaConsume(t, brokers, out, part, level, func(m *sarama.ConsumerMessage) bool {
				return string(m.Value) == end
			})
			var vals []string
			last := int64(-1)
			for _, m := range msgs {
				vals = append(vals, string(m.Value))
				if m.Offset <= last {
					t.Errorf("level %d, partition %d: offset %d after %d", level, part, m.Offset, last)
				}
				last = m.Offset
			}
			if !slices.Equal(vals, want[part]) {
				t.Errorf("level %d, partition %d: read %d records\n%q\nwant %d\n%q", level, part, len(vals), vals, len(want[part]), want[part])
			}
			// Every offset of the partition is a record read at read_uncommitted or a
			// marker; a marker delivered as a message would have shown in vals above.
			if level == sarama.ReadUncommitted && last != int64(len(all[part])+markers[part]-1) {
				t.Errorf("partition %d: end record at offset %d, want %d (%d records, %d markers)",
					part, last, len(all[part])+markers[part]-1, len(all[part]), markers[part])
			}
		}
	}
}

// saramaConsume reads partition part of topic from its start at level with a sarama
// consumer, until last reports the final message wanted.
func saramaConsume(t *testing.T, brokers []string, topic string, part int32, level sarama.IsolationLevel,
	last func(*sarama.ConsumerMessage) bool) []*sarama.ConsumerMessage {
	t.Helper()
	cfg := saramaTxnConfig("")
	cfg.Consumer.IsolationLevel = level
	c, err := sarama.NewConsumer(brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pc, err := c.ConsumePartition(topic, part, sarama.OffsetOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var msgs []*sarama.ConsumerMessage
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m := <-pc.Messages():
			msgs = append(msgs, m)
			if last(m) {
				return msgs
			}
		case err := <-pc.Errors():
			t.Fatalf("consume %s-%d at level %d: %v", topic, part, level, err)
		case <-deadline:
			t.Fatalf("consume %s-%d at level %d: the last record not read after 20s (%d read)", topic, part, level, len(msgs))
		}
	}
}

// checkGroupOffsets wants the admin's OffsetFetch to show offset and metadata for every
// partition of topic.
func checkGroupOffsets(t *testing.T, admin sarama.ClusterAdmin, group, topic string, offset int64, metadata string) {
	t.Helper()
	resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0, 1, 2}})
	if err != nil {
		t.Fatalf("ListConsumerGroupOffsets: %v", err)
	}
	for part := range int32(3) {
		b := resp.GetBlock(topic, part)
		if b == nil || b.Err != sarama.ErrNoError || b.Offset != offset || b.Metadata != metadata {
			t.Errorf("group offsets, %s-%d: %+v, want offset %d metadata %q", topic, part, b, offset, metadata)
		}
	}
}

// saramaAbortedOffsets runs, with sarama's request types on its broker connections, a
// transaction that only commits offsets 5 of the group on every partition of topic and
// is then aborted: the offsets reach the group coordinator (which sarama's producer does
// for committed transactions only). While the transaction is open, an OffsetFetch with
// require_stable must be refused with UNSTABLE_OFFSET_COMMIT and a plain one must show
// the offsets committed before (t1's).
func saramaAbortedOffsets(t *testing.T, client sarama.Client, admin sarama.ClusterAdmin, txnID, group, topic string, step time.Duration) {
	t.Helper()
	// retry sends until the answer's error is not one a client retries; the coordinator
	// answers those while it loads or finishes an earlier transaction.
	retry := func(what string, send func() (sarama.KError, error)) {
		t.Helper()
		deadline := time.Now().Add(step)
		for {
			kerr, err := send()
			if err == nil && kerr == sarama.ErrNoError {
				return
			}
			retriable := err == nil && (kerr == sarama.ErrConcurrentTransactions || kerr == sarama.ErrOffsetsLoadInProgress ||
				kerr == sarama.ErrConsumerCoordinatorNotAvailable || kerr == sarama.ErrNotCoordinatorForConsumer)
			if !retriable || time.Now().After(deadline) {
				t.Fatalf("raw transaction: %s: %v %v", what, err, kerr)
			}
			_ = client.RefreshTransactionCoordinator(txnID)
			_ = client.RefreshCoordinator(group)
			time.Sleep(50 * time.Millisecond) // a retry's backoff, as a client's
		}
	}
	var pid int64
	var epoch int16
	retry("InitProducerId", func() (sarama.KError, error) {
		coord, err := client.TransactionCoordinator(txnID)
		if err != nil {
			return 0, err
		}
		resp, err := coord.InitProducerID(&sarama.InitProducerIDRequest{Version: 4, TransactionalID: &txnID,
			TransactionTimeout: 30 * time.Second, ProducerID: -1, ProducerEpoch: -1})
		if err != nil {
			return 0, err
		}
		pid, epoch = resp.ProducerID, resp.ProducerEpoch
		return resp.Err, nil
	})
	retry("AddOffsetsToTxn", func() (sarama.KError, error) {
		coord, err := client.TransactionCoordinator(txnID)
		if err != nil {
			return 0, err
		}
		resp, err := coord.AddOffsetsToTxn(&sarama.AddOffsetsToTxnRequest{Version: 3, TransactionalID: txnID,
			ProducerID: pid, ProducerEpoch: epoch, GroupID: group})
		if err != nil {
			return 0, err
		}
		return resp.Err, nil
	})
	meta := "raw-abort"
	offsets := map[string][]*sarama.PartitionOffsetMetadata{topic: nil}
	for part := range int32(3) {
		offsets[topic] = append(offsets[topic], &sarama.PartitionOffsetMetadata{Partition: part, Offset: 5, LeaderEpoch: -1, Metadata: &meta})
	}
	retry("TxnOffsetCommit", func() (sarama.KError, error) {
		coord, err := client.Coordinator(group)
		if err != nil {
			return 0, err
		}
		resp, err := coord.TxnOffsetCommit(&sarama.TxnOffsetCommitRequest{Version: 3, TransactionalID: txnID, GroupID: group,
			ProducerID: pid, ProducerEpoch: epoch, GenerationID: -1, Topics: offsets})
		if err != nil {
			return 0, err
		}
		for _, errs := range resp.Topics {
			for _, pe := range errs {
				if pe.Err != sarama.ErrNoError {
					return pe.Err, nil
				}
			}
		}
		return sarama.ErrNoError, nil
	})

	coord, err := client.Coordinator(group)
	if err != nil {
		t.Fatal(err)
	}
	req := sarama.NewOffsetFetchRequest(saramaTxnVersion, group, map[string][]int32{topic: {0, 1, 2}})
	req.RequireStable = true
	resp, err := coord.FetchOffset(req)
	if err != nil {
		t.Fatalf("OffsetFetch, require_stable: %v", err)
	}
	for part := range int32(3) {
		got := resp.Err
		if b := resp.GetBlock(topic, part); b != nil {
			got = b.Err
		}
		if got != sarama.ErrUnstableOffsetCommit {
			t.Errorf("OffsetFetch v%d with require_stable, %s-%d, offsets pending in an open transaction: %v, want %v",
				req.Version, topic, part, got, sarama.ErrUnstableOffsetCommit)
		}
	}
	checkGroupOffsets(t, admin, group, topic, 3, "t1")

	retry("EndTxn (abort)", func() (sarama.KError, error) {
		coord, err := client.TransactionCoordinator(txnID)
		if err != nil {
			return 0, err
		}
		resp, err := coord.EndTxn(&sarama.EndTxnRequest{Version: 3, TransactionalID: txnID,
			ProducerID: pid, ProducerEpoch: epoch, TransactionResult: false})
		if err != nil {
			return 0, err
		}
		return resp.Err, nil
	})
}
