package dataplane_test

// Transaction requests on a node of the cluster harness: FindCoordinator for a
// transactional id, and the transaction APIs forwarded to the control plane's
// transaction coordinator and answered back at their versions (flexible ones too).

import (
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/dataplane"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

func TestTxnRequestsForwarded(t *testing.T) {
	cl, dp := startNode(t, testcluster.Options{})
	cl.CreateTopic(t, "tt", 2, 1)
	c := dial(t, dp.Addr())
	corr := int32(0)
	call := func(req kmsg.Request, version int16) kmsg.Response {
		t.Helper()
		corr++
		return dataplane.RoundTrip(t, c, req, version, corr)
	}

	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.CoordinatorType, fc.CoordinatorKey = dataplane.CoordinatorTypeTransaction, "tid"
	if resp := call(fc, 2).(*kmsg.FindCoordinatorResponse); resp.ErrorCode != 0 || resp.NodeID != 1 {
		t.Fatalf("FindCoordinator for a transactional id: %+v", resp)
	}

	var pid int64
	testutil.CheckFor(t, 20*time.Second, func() error {
		ir := kmsg.NewPtrInitProducerIDRequest()
		ir.TransactionalID, ir.TransactionTimeoutMillis, ir.ProducerID, ir.ProducerEpoch = kmsg.StringPtr("tid"), 60_000, -1, -1
		resp := call(ir, 4).(*kmsg.InitProducerIDResponse)
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return err // the coordinator may still be loading
		}
		if resp.ProducerEpoch != 0 {
			t.Fatalf("first InitProducerId: epoch %d", resp.ProducerEpoch)
		}
		pid = resp.ProducerID
		return nil
	})
	// Without a transactional id the node answers itself, at every version.
	for v := int16(0); v <= 4; v++ {
		ir := kmsg.NewPtrInitProducerIDRequest()
		ir.ProducerID, ir.ProducerEpoch = -1, -1
		resp := call(ir, v).(*kmsg.InitProducerIDResponse)
		if resp.ErrorCode != 0 || resp.ProducerEpoch != 0 || resp.ProducerID == pid {
			t.Fatalf("idempotent InitProducerId v%d: %+v", v, resp)
		}
	}

	ar := kmsg.NewPtrAddPartitionsToTxnRequest()
	ar.TransactionalID, ar.ProducerID, ar.ProducerEpoch = "tid", pid, 0
	ar.Topics = []kmsg.AddPartitionsToTxnRequestTopic{{Topic: "tt", Partitions: []int32{1}}}
	if c := call(ar, 3).(*kmsg.AddPartitionsToTxnResponse).Topics[0].Partitions[0].ErrorCode; c != 0 {
		t.Fatalf("AddPartitionsToTxn: %v", kerr.ErrorForCode(c))
	}
	dr := kmsg.NewPtrDescribeTransactionsRequest()
	dr.TransactionalIDs = []string{"tid", "unknown"}
	states := call(dr, 0).(*kmsg.DescribeTransactionsResponse).TransactionStates
	if len(states) != 2 || states[0].State != "Ongoing" || states[0].ProducerID != pid ||
		len(states[0].Topics) != 1 || !slices.Equal(states[0].Topics[0].Partitions, []int32{1}) ||
		states[1].ErrorCode != kerr.TransactionalIDNotFound.Code {
		t.Fatalf("DescribeTransactions: %+v", states)
	}
	lr := kmsg.NewPtrListTransactionsRequest()
	lr.StateFilters = []string{"Ongoing"}
	listed := call(lr, 0).(*kmsg.ListTransactionsResponse).TransactionStates
	if len(listed) != 1 || listed[0].TransactionalID != "tid" || listed[0].ProducerID != pid {
		t.Fatalf("ListTransactions: %+v", listed)
	}
	// A fenced producer: another InitProducerId bumps the epoch (after aborting).
	er := kmsg.NewPtrEndTxnRequest()
	er.TransactionalID, er.ProducerID, er.ProducerEpoch = "tid", pid, 1
	if c := call(er, 3).(*kmsg.EndTxnResponse).ErrorCode; c != kerr.ProducerFenced.Code {
		t.Fatalf("EndTxn at an epoch the producer never had: %v", kerr.ErrorForCode(c))
	}

	// A flexible body that does not have its shape closes the connection, as a
	// malformed request does.
	b := kbin.AppendInt16(nil, int16(kmsg.EndTxn))
	b = kbin.AppendInt16(b, 3)
	b = kbin.AppendInt32(b, 99)
	b = kbin.AppendNullableString(b, kmsg.StringPtr("x"))
	b = append(b, 0)
	b = kbin.AppendCompactString(b, "tid")
	b = kbin.AppendInt64(b, pid)
	b = kbin.AppendInt16(b, 0)
	b = kbin.AppendBool(b, true)
	b = kbin.AppendUvarint(b, 1<<32-1)
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(b)))
	if _, err := c.Write(append(frame, b...)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 64))
	var ne net.Error
	if n != 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("after a malformed EndTxn: read %d bytes, %v; want the connection closed", n, err)
	}
}
