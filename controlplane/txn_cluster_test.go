package controlplane_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/txn"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// fakeKafka is a Kafka listener standing in for a data-plane node: it records the
// WriteTxnMarkers requests it gets and answers them with answer's codes.
type fakeKafka struct {
	ln     net.Listener
	mu     sync.Mutex
	got    []*kmsg.WriteTxnMarkersRequest
	answer func(n int, topic string, partition int32) int16 // n: the request's number, from 0
}

func newFakeKafka(t *testing.T) *fakeKafka {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fk := &fakeKafka{ln: ln}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go fk.serve(nc)
		}
	}()
	return fk
}

func (fk *fakeKafka) port() int32 { return int32(fk.ln.Addr().(*net.TCPAddr).Port) }

func (fk *fakeKafka) requests() []*kmsg.WriteTxnMarkersRequest {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	return slices.Clone(fk.got)
}

// serve reads Kafka requests (a WriteTxnMarkers only) and answers them.
func (fk *fakeKafka) serve(nc net.Conn) {
	defer nc.Close()
	br := bufio.NewReader(nc)
	for {
		var size [4]byte
		if _, err := io.ReadFull(br, size[:]); err != nil {
			return
		}
		buf := make([]byte, binary.BigEndian.Uint32(size[:]))
		if _, err := io.ReadFull(br, buf); err != nil {
			return
		}
		r := kbin.Reader{Src: buf}
		key, version, corr := r.Int16(), r.Int16(), r.Int32()
		r.NullableString()
		req := kmsg.NewPtrWriteTxnMarkersRequest()
		if key != req.Key() {
			return
		}
		req.SetVersion(version)
		if req.IsFlexible() {
			for n := r.Uvarint(); n > 0 && r.Ok(); n-- {
				r.Uvarint()
				r.Span(int(r.Uvarint()))
			}
		}
		if r.Complete() != nil || req.ReadFrom(r.Src) != nil {
			return
		}
		fk.mu.Lock()
		n := len(fk.got)
		fk.got = append(fk.got, req)
		answer := fk.answer
		fk.mu.Unlock()
		resp := testutil.WriteTxnMarkersAnswer(req, func(topic string, p int32) int16 {
			if answer == nil {
				return 0
			}
			return answer(n, topic, p)
		})
		out := kbin.AppendInt32(nil, corr)
		if resp.IsFlexible() {
			out = append(out, 0)
		}
		out = resp.AppendTo(out)
		frame := kbin.AppendInt32(nil, int32(len(out)))
		if _, err := nc.Write(append(frame, out...)); err != nil {
			return
		}
	}
}

// txnCall forwards req as a data-plane node would, retrying while the coordinator
// loads (as clients retry COORDINATOR_LOAD_IN_PROGRESS).
func (gt *groupTester) txnCall(req kmsg.Request, code func(kmsg.Response) int16) kmsg.Response {
	gt.t.Helper()
	var resp kmsg.Response
	testutil.CheckFor(gt.t, 20*time.Second, func() error {
		var err error
		if resp, err = gt.callE(req); err != nil {
			return err
		}
		if c := code(resp); c == kerr.CoordinatorLoadInProgress.Code {
			return kerr.CoordinatorLoadInProgress
		}
		return nil
	})
	return resp
}

// newTxnTester registers fk as data-plane node 1, creates topic with parts partitions
// and waits until node 1 leads every one of them, so that markers go to fk.
func newTxnTester(t testing.TB, c *testcluster.Cluster, fk *fakeKafka, topic string, parts int32) *groupTester {
	t.Helper()
	if _, err := c.RegisterFakeDP(t, cluster.Broker{ID: 1, Host: "127.0.0.1", Port: fk.port()}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	gt := newGroupTester(t, c)
	gt.createTopic(topic, parts)
	testutil.CheckFor(t, 10*time.Second, func() error {
		snap := c.Metadata(t)
		for p := range parts {
			if st := snap.Partitions[cluster.TopicPartition{Topic: topic, Partition: p}]; st.Leader != 1 {
				return fmt.Errorf("%s-%d led by %d", topic, p, st.Leader)
			}
		}
		return nil
	})
	return gt
}

// initTxn sends InitProducerId for the transactional id (60 s timeout), retrying while
// the coordinator loads.
func (gt *groupTester) initTxn(id string) *kmsg.InitProducerIDResponse {
	gt.t.Helper()
	ir := kmsg.NewPtrInitProducerIDRequest()
	ir.SetVersion(4)
	ir.TransactionalID, ir.TransactionTimeoutMillis, ir.ProducerID, ir.ProducerEpoch = kmsg.StringPtr(id), 60_000, -1, -1
	return gt.txnCall(ir, func(r kmsg.Response) int16 { return r.(*kmsg.InitProducerIDResponse).ErrorCode }).(*kmsg.InitProducerIDResponse)
}

// commitTxnOffset adds group to the producer's transaction (AddOffsetsToTxn) and
// commits offset for partition 0 of topic in it (TxnOffsetCommit), failing the test
// on an error.
func (gt *groupTester) commitTxnOffset(id string, pid int64, epoch int16, group, topic string, offset int64) {
	gt.t.Helper()
	or := kmsg.NewPtrAddOffsetsToTxnRequest()
	or.SetVersion(3)
	or.TransactionalID, or.ProducerID, or.ProducerEpoch, or.Group = id, pid, epoch, group
	if c := gt.call(or).(*kmsg.AddOffsetsToTxnResponse).ErrorCode; c != 0 {
		gt.t.Fatalf("AddOffsetsToTxn: %v", kerr.ErrorForCode(c))
	}
	tc := kmsg.NewPtrTxnOffsetCommitRequest()
	tc.SetVersion(3)
	tc.TransactionalID, tc.Group, tc.ProducerID, tc.ProducerEpoch, tc.Generation = id, group, pid, epoch, -1
	tc.Topics = []kmsg.TxnOffsetCommitRequestTopic{{Topic: topic, Partitions: []kmsg.TxnOffsetCommitRequestTopicPartition{{Partition: 0, Offset: offset, LeaderEpoch: -1}}}}
	if c := gt.call(tc).(*kmsg.TxnOffsetCommitResponse).Topics[0].Partitions[0].ErrorCode; c != 0 {
		gt.t.Fatalf("TxnOffsetCommit: %v", kerr.ErrorForCode(c))
	}
}

// commitTxn ends the producer's transaction with a commit (EndTxn), failing the test
// on an error.
func (gt *groupTester) commitTxn(id string, pid int64, epoch int16) {
	gt.t.Helper()
	er := kmsg.NewPtrEndTxnRequest()
	er.SetVersion(3)
	er.TransactionalID, er.ProducerID, er.ProducerEpoch, er.Commit = id, pid, epoch, true
	if c := gt.call(er).(*kmsg.EndTxnResponse).ErrorCode; c != 0 {
		gt.t.Fatalf("EndTxn: %v", kerr.ErrorForCode(c))
	}
}

// TestTxnForwardedEndToEnd runs a transaction through the internal listener, with real
// Kafka requests, to its markers at the partitions' leader — a fake Kafka listener
// registered as data-plane node 1, which refuses the first marker request — and
// checks the offsets it committed become visible once it has.
func TestTxnForwardedEndToEnd(t *testing.T) {
	c := newControlPlane(t, 1)
	fk := newFakeKafka(t)
	fk.answer = func(n int, _ string, _ int32) int16 {
		if n == 0 {
			return kerr.NotLeaderForPartition.Code // retried
		}
		return 0
	}
	gt := newTxnTester(t, c, fk, "tx", 2)

	init := gt.initTxn("tid")
	if init.ErrorCode != 0 || init.ProducerEpoch != 0 {
		t.Fatalf("InitProducerId: %v epoch %d", kerr.ErrorForCode(init.ErrorCode), init.ProducerEpoch)
	}
	pid, epoch := init.ProducerID, init.ProducerEpoch

	ar := kmsg.NewPtrAddPartitionsToTxnRequest()
	ar.SetVersion(3)
	ar.TransactionalID, ar.ProducerID, ar.ProducerEpoch = "tid", pid, epoch
	ar.Topics = []kmsg.AddPartitionsToTxnRequestTopic{{Topic: "tx", Partitions: []int32{0, 1}}}
	for _, p := range gt.call(ar).(*kmsg.AddPartitionsToTxnResponse).Topics[0].Partitions {
		if p.ErrorCode != 0 {
			t.Fatalf("AddPartitionsToTxn tx-%d: %v", p.Partition, kerr.ErrorForCode(p.ErrorCode))
		}
	}
	// The check a partition leader makes before a transaction's first batch (KIP-890).
	vr := kmsg.NewPtrAddPartitionsToTxnRequest()
	vr.SetVersion(4)
	vr.Transactions = []kmsg.AddPartitionsToTxnRequestTransaction{{TransactionalID: "tid", ProducerID: pid,
		ProducerEpoch: epoch, VerifyOnly: true, Topics: []kmsg.AddPartitionsToTxnRequestTransactionTopic{{Topic: "tx", Partitions: []int32{0}}}}}
	if c := gt.call(vr).(*kmsg.AddPartitionsToTxnResponse).Transactions[0].Topics[0].Partitions[0].ErrorCode; c != 0 {
		t.Fatalf("verification: %v", kerr.ErrorForCode(c))
	}

	gt.commitTxnOffset("tid", pid, epoch, "g", "tx", 42)
	if got := gt.fetch("g", "tx", 0)[0].Offset; got != -1 {
		t.Fatalf("an offset of a transaction not ended is visible: %d", got)
	}

	gt.commitTxn("tid", pid, epoch)
	dr := kmsg.NewPtrDescribeTransactionsRequest()
	dr.TransactionalIDs = []string{"tid"}
	testutil.CheckFor(t, 20*time.Second, func() error {
		st := gt.call(dr).(*kmsg.DescribeTransactionsResponse).TransactionStates[0]
		if st.State != "CompleteCommit" {
			return fmt.Errorf("state %s (%d marker requests)", st.State, len(fk.requests()))
		}
		return nil
	})
	if got := gt.fetch("g", "tx", 0)[0].Offset; got != 42 {
		t.Fatalf("offset after the commit: %d, want 42", got)
	}
	// The markers: both partitions in one request to their leader, sent again after the
	// refusal, with the coordinator epoch of this term (stored in etcd).
	reqs := fk.requests()
	if len(reqs) < 2 {
		t.Fatalf("%d marker requests, want the refused one and its retry", len(reqs))
	}
	resp, err := c.ControlPlaneClient(t).Etcd().Get(testCtx(t), cluster.TxnCoordinatorEpochKey)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("coordinator epoch key: %v %v", resp, err)
	}
	stored, _ := strconv.Atoi(string(resp.Kvs[0].Value))
	for i, r := range reqs {
		if len(r.Markers) != 1 {
			t.Fatalf("request %d: %d markers", i, len(r.Markers))
		}
		mk := r.Markers[0]
		if mk.ProducerID != pid || mk.ProducerEpoch != epoch || !mk.Committed || mk.CoordinatorEpoch != int32(stored) || stored < 1 {
			t.Fatalf("request %d: marker %+v (coordinator epoch stored: %d)", i, mk, stored)
		}
		if len(mk.Topics) != 1 || mk.Topics[0].Topic != "tx" || !slices.Equal(mk.Topics[0].Partitions, []int32{0, 1}) {
			t.Fatalf("request %d: topics %+v, want tx 0 and 1 batched", i, mk.Topics)
		}
	}
}

// TestTxnBadForwardedRequest: a transaction request whose flexible body does not have
// its shape is refused as malformed, and the listener serves on.
func TestTxnBadForwardedRequest(t *testing.T) {
	c := newControlPlane(t, 1)
	gt := newGroupTester(t, c)
	// EndTxn v3 whose tag buffer claims 2³²−1 tags.
	b := kbin.AppendInt16(nil, int16(kmsg.EndTxn))
	b = kbin.AppendInt16(b, 3)
	b = kbin.AppendInt32(b, 7)
	b = kbin.AppendNullableString(b, kmsg.StringPtr("x"))
	b = append(b, 0)
	b = kbin.AppendCompactString(b, "tid")
	b = kbin.AppendInt64(b, 1)
	b = kbin.AppendInt16(b, 0)
	b = kbin.AppendBool(b, true)
	b = kbin.AppendUvarint(b, 1<<32-1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := gt.cli.ForwardGroupRequest(ctx, "127.0.0.9", b); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("malformed EndTxn: %v, want a bad-request refusal", err)
	}
	ir := kmsg.NewPtrInitProducerIDRequest()
	ir.SetVersion(4)
	ir.TransactionalID, ir.TransactionTimeoutMillis, ir.ProducerID, ir.ProducerEpoch = kmsg.StringPtr("ok"), 1000, -1, -1
	if r := gt.txnCall(ir, func(r kmsg.Response) int16 { return r.(*kmsg.InitProducerIDResponse).ErrorCode }).(*kmsg.InitProducerIDResponse); r.ErrorCode != 0 {
		t.Fatalf("InitProducerId after a malformed request: %v", kerr.ErrorForCode(r.ErrorCode))
	}
}

// TestTxnEtcdStore runs the transaction coordinator's store against etcd: coordinator
// epochs grow, writes and loads round-trip, producer-id blocks do not overlap, and all
// of it is refused once the fence (the election key) has moved.
func TestTxnEtcdStore(t *testing.T) {
	c := newControlPlane(t, 1)
	cli := c.ControlPlaneClient(t)
	ec := cli.Etcd()
	ctx := testCtx(t)
	const fenceKey = "/test/txn-fence"
	put, err := ec.Put(ctx, fenceKey, "x")
	if err != nil {
		t.Fatal(err)
	}
	rev := put.Header.Revision
	fence := clientv3.Compare(clientv3.CreateRevision(fenceKey), "=", rev)
	txnf := func(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) (*clientv3.TxnResponse, error) {
		return ec.Txn(ctx).If(cmps...).Then(ops...).Commit()
	}
	alloc := func(ctx context.Context) (int64, int64, error) {
		b, err := cli.AllocateProducerIDsAsController(ctx, fenceKey, rev)
		if errors.Is(err, client.ErrElectionLost) {
			return 0, 0, txn.ErrNotActive
		}
		return b.First, b.Size, err
	}
	st := txn.NewEtcdStore(ec, txnf, fence, alloc, nil)
	defer st.Close()

	e1, err := st.NextCoordinatorEpoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := st.NextCoordinatorEpoch(ctx)
	if err != nil || e2 <= e1 {
		t.Fatalf("coordinator epochs %d then %d (%v)", e1, e2, err)
	}
	f1, n1, err1 := st.AllocateProducerIDs(ctx)
	f2, _, err2 := st.AllocateProducerIDs(ctx)
	if err1 != nil || err2 != nil || n1 <= 0 || f2 < f1+n1 {
		t.Fatalf("producer-id blocks %d+%d then %d (%v, %v)", f1, n1, f2, err1, err2)
	}
	rec := `{"producerId":1,"lastProducerId":-1,"epoch":0,"lastEpoch":-1,"timeoutMs":1000,"state":"Empty","startMs":-1,"updateMs":0}`
	done := make(chan error, 1)
	st.Submit([]txn.Op{{Key: cluster.TransactionKey("store-test"), Value: rec}}, func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	kvs, err := st.Load(ctx)
	if err != nil || !slices.ContainsFunc(kvs, func(kv txn.KV) bool {
		return kv.Key == cluster.TransactionKey("store-test") && string(kv.Value) == rec
	}) {
		t.Fatalf("load: %v %v", kvs, err)
	}

	// The fence moves (another term): every write is refused.
	if _, err := ec.Delete(ctx, fenceKey); err != nil {
		t.Fatal(err)
	}
	if _, err := ec.Put(ctx, fenceKey, "y"); err != nil {
		t.Fatal(err)
	}
	st.Submit([]txn.Op{{Key: cluster.TransactionKey("store-test"), Delete: true}}, func(err error) { done <- err })
	if err := <-done; !errors.Is(err, txn.ErrNotActive) {
		t.Fatalf("fenced write: %v", err)
	}
	if _, err := st.NextCoordinatorEpoch(ctx); !errors.Is(err, txn.ErrNotActive) {
		t.Fatalf("fenced epoch: %v", err)
	}
	if _, _, err := st.AllocateProducerIDs(ctx); !errors.Is(err, txn.ErrNotActive) {
		t.Fatalf("fenced allocation: %v", err)
	}
	_, _ = ec.Delete(ctx, cluster.TransactionKey("store-test"))
}

// TestTxnMarkersResentAfterFailover: a commit whose markers no partition took when the
// controller stops is completed by the next controller, which sends the markers again
// with a higher coordinator epoch; the offsets committed in the transaction become
// visible then.
func TestTxnMarkersResentAfterFailover(t *testing.T) {
	c := newControlPlane(t, 3)
	fk := newFakeKafka(t)
	var mu sync.Mutex
	refuse := true
	fk.answer = func(int, string, int32) int16 {
		mu.Lock()
		defer mu.Unlock()
		if refuse {
			return kerr.NotLeaderForPartition.Code
		}
		return 0
	}
	gt := newTxnTester(t, c, fk, "fx", 1)
	init := gt.initTxn("ftx")
	pid, epoch := init.ProducerID, init.ProducerEpoch
	ar := kmsg.NewPtrAddPartitionsToTxnRequest()
	ar.SetVersion(3)
	ar.TransactionalID, ar.ProducerID, ar.ProducerEpoch = "ftx", pid, epoch
	ar.Topics = []kmsg.AddPartitionsToTxnRequestTopic{{Topic: "fx", Partitions: []int32{0}}}
	if c := gt.call(ar).(*kmsg.AddPartitionsToTxnResponse).Topics[0].Partitions[0].ErrorCode; c != 0 {
		t.Fatalf("AddPartitionsToTxn: %v", kerr.ErrorForCode(c))
	}
	gt.commitTxnOffset("ftx", pid, epoch, "fg", "fx", 7)
	gt.commitTxn("ftx", pid, epoch)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if len(fk.requests()) == 0 {
			return errors.New("no marker sent yet")
		}
		return nil
	})
	firstEpoch := fk.requests()[0].Markers[0].CoordinatorEpoch

	old := c.WaitController(t)
	if err := c.Stop(old); err != nil {
		t.Fatal(err)
	}
	next := c.WaitController(t)
	if next == old {
		t.Fatal("controller did not move")
	}
	mu.Lock()
	refuse = false
	mu.Unlock()
	dr := kmsg.NewPtrDescribeTransactionsRequest()
	dr.TransactionalIDs = []string{"ftx"}
	testutil.CheckFor(t, 30*time.Second, func() error {
		resp, err := gt.callE(dr)
		if err != nil {
			return err
		}
		if st := resp.(*kmsg.DescribeTransactionsResponse).TransactionStates[0]; st.State != "CompleteCommit" {
			return fmt.Errorf("state %s (code %d)", st.State, st.ErrorCode)
		}
		return nil
	})
	reqs := fk.requests()
	last := reqs[len(reqs)-1].Markers[0]
	if last.CoordinatorEpoch <= firstEpoch || !last.Committed || last.ProducerID != pid {
		t.Fatalf("marker after the failover %+v, first coordinator epoch %d", last, firstEpoch)
	}
	if got := gt.fetch("fg", "fx", 0)[0].Offset; got != 7 {
		t.Fatalf("offset after the commit: %d, want 7", got)
	}
}
