package dataplane

// The transaction APIs, forwarded to the transaction coordinator in the active
// control-plane node exactly as the group APIs are (11_groups.go: a connection's
// requests keep their order, and a request nobody answered gets NOT_COORDINATOR, so
// the client looks its coordinator up again):
//
//   - InitProducerId, key 22, versions 0-4, when it names a transactional id
//     (22_initproducerid.go; without one this node answers it)
//   - AddPartitionsToTxn, key 24, versions 0-3 (v4 is the partition leaders' batched
//     form: clients are not offered it)
//   - AddOffsetsToTxn, key 25, versions 0-3
//   - EndTxn, key 26, versions 0-3
//   - TxnOffsetCommit, key 28, versions 0-3 (answered by the group coordinator)
//   - DescribeTransactions, key 65, version 0
//   - ListTransactions, key 66, version 0: like ListGroups, Kafka answers it per broker
//     with the transactional ids that broker coordinates, so each node keeps those
//     rendezvous hashing gives to it (10_findcoordinator.go).
//
// A flexible version's body is checked against its shape (client.TxnRequestShape)
// before kmsg decodes it.

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/client"
)

const listTransactionsKey = int16(kmsg.ListTransactions)

func refuseInitProducerID(_ *kmsg.InitProducerIDRequest, resp *kmsg.InitProducerIDResponse) {
	resp.ErrorCode, resp.ProducerID, resp.ProducerEpoch = kerr.NotCoordinator.Code, -1, -1
}

func refuseAddPartitionsToTxn(req *kmsg.AddPartitionsToTxnRequest, resp *kmsg.AddPartitionsToTxnResponse) {
	notCoordinator := func(string, int32) int16 { return kerr.NotCoordinator.Code }
	resp.Topics = append(resp.Topics, client.AddPartitionsTopicsAnswer(req.Topics, notCoordinator)...)
	for _, t := range req.Transactions { // v4
		resp.Transactions = append(resp.Transactions, client.AddPartitionsTxnAnswer(t, notCoordinator))
	}
}

func refuseAddOffsetsToTxn(_ *kmsg.AddOffsetsToTxnRequest, resp *kmsg.AddOffsetsToTxnResponse) {
	resp.ErrorCode = kerr.NotCoordinator.Code
}

func refuseEndTxn(_ *kmsg.EndTxnRequest, resp *kmsg.EndTxnResponse) {
	resp.ErrorCode = kerr.NotCoordinator.Code
}

func refuseTxnOffsetCommit(req *kmsg.TxnOffsetCommitRequest, resp *kmsg.TxnOffsetCommitResponse) {
	for _, t := range req.Topics {
		rt := kmsg.NewTxnOffsetCommitResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
			rp.Partition, rp.ErrorCode = p.Partition, kerr.NotCoordinator.Code
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
}

func refuseDescribeTransactions(req *kmsg.DescribeTransactionsRequest, resp *kmsg.DescribeTransactionsResponse) {
	for _, id := range req.TransactionalIDs {
		st := kmsg.NewDescribeTransactionsResponseTransactionState()
		st.TransactionalID, st.ErrorCode = id, kerr.NotCoordinator.Code
		resp.TransactionStates = append(resp.TransactionStates, st)
	}
}

func refuseListTransactions(_ *kmsg.ListTransactionsRequest, resp *kmsg.ListTransactionsResponse) {
	resp.ErrorCode = kerr.CoordinatorNotAvailable.Code // not about one transactional id
}

// ownTransactionsOnly keeps, of a ListTransactions response body at version, the
// transactional ids this node coordinates.
func (s *Server) ownTransactionsOnly(body []byte, version int16) ([]byte, error) {
	resp := kmsg.NewPtrListTransactionsResponse()
	resp.SetVersion(version)
	if err := resp.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("dataplane: ListTransactions answer from the coordinator: %w", err)
	}
	resp.TransactionStates = coordinatedHere(s, resp.TransactionStates,
		func(st kmsg.ListTransactionsResponseTransactionState) string { return st.TransactionalID })
	return resp.AppendTo(nil), nil
}
