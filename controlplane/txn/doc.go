// Package txn is Gregor's transaction coordinator (Kafka's KIP-98, with KIP-890 part
// 1's verification): InitProducerId with a transactional id, AddPartitionsToTxn,
// AddOffsetsToTxn, EndTxn, DescribeTransactions and ListTransactions, the
// WriteTxnMarkers that end a transaction on each of its partitions, the abort of
// transactions past their timeout, and the expiry of idle transactional ids.
// (TxnOffsetCommit is the group coordinator's, package groups: it holds the offsets
// pending until this coordinator ends the transaction.)
//
// The active controller runs one Coordinator per term of controllership, beside the
// group coordinator: data-plane nodes forward the transaction requests to its internal
// listener like the group requests. Every transactional id's state lives in memory and
// in etcd (one record per id, through a Store fenced on the controller's election);
// every change is written before it is answered, and a new term loads every record
// back, sends the markers of the transactions it finds half-ended again, and answers
// COORDINATOR_LOAD_IN_PROGRESS until it has loaded.
//
// Like package groups, the rules depend on nothing but a Store, a clock
// (clockwork.Clock), a MarkerSender (how a WriteTxnMarkers request reaches a node), the
// partitions' leaders (a function of the controller's view) and the group coordinator
// (GroupOffsets), so the unit tests run them on a fake clock against a store in memory.
// docs/transactions.md describes the states, keys, timeouts and answers.
package txn
