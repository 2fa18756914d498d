package client

// Transactions: a data-plane node forwards its clients' transaction requests
// (InitProducerId with a transactional id, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn,
// TxnOffsetCommit, DescribeTransactions, ListTransactions) to the active controller
// exactly as group requests go (ForwardGroupRequestInOrder), and a partition leader
// sends the same way its AddPartitionsToTxn v4 VerifyOnly checks (KIP-890). The
// controller answers them from its transaction coordinator (TxnOffsetCommit from its
// group coordinator).
//
// Both ends decode a flexible version's body only after proto.CheckShape has walked it
// with TxnRequestShape, which bounds every count by the bytes that follow it.

import (
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/proto"
)

// TxnAPIs are the forwarded transaction APIs and the highest version the controller
// serves of each. (AddPartitionsToTxn v4 is the partition leaders' batched form; a
// data-plane node offers its clients v0-3.)
var TxnAPIs = map[int16]int16{
	int16(kmsg.InitProducerID):       4,
	int16(kmsg.AddPartitionsToTxn):   4,
	int16(kmsg.AddOffsetsToTxn):      3,
	int16(kmsg.EndTxn):               3,
	int16(kmsg.TxnOffsetCommit):      3,
	int16(kmsg.DescribeTransactions): 0,
	int16(kmsg.ListTransactions):     0,
}

// Shapes of the flexible versions of the transaction requests.
var (
	initProducerIDV2 = proto.Shape{proto.CompactString, proto.Int32, proto.Tags}
	initProducerIDV3 = proto.Shape{proto.CompactString, proto.Int32, proto.Int64, proto.Int16, proto.Tags}
	txnTopicsShape   = proto.CompactArray(proto.CompactString, proto.CompactArray(proto.Int32), proto.Tags)
	addPartitionsV3  = proto.Shape{proto.CompactString, proto.Int64, proto.Int16, txnTopicsShape, proto.Tags}
	addPartitionsV4  = proto.Shape{proto.CompactArray(proto.CompactString, proto.Int64, proto.Int16, proto.Bool,
		txnTopicsShape, proto.Tags), proto.Tags}
	addOffsetsV3      = proto.Shape{proto.CompactString, proto.Int64, proto.Int16, proto.CompactString, proto.Tags}
	endTxnV3          = proto.Shape{proto.CompactString, proto.Int64, proto.Int16, proto.Bool, proto.Tags}
	txnOffsetCommitV3 = proto.Shape{proto.CompactString, proto.CompactString, proto.Int64, proto.Int16, proto.Int32,
		proto.CompactString, proto.CompactString, proto.CompactArray(proto.CompactString,
			proto.CompactArray(proto.Int32, proto.Int64, proto.Int32, proto.CompactString, proto.Tags), proto.Tags), proto.Tags}
	describeTransactionsV0 = proto.Shape{proto.CompactArray(proto.CompactString), proto.Tags}
	listTransactionsV0     = proto.Shape{proto.CompactArray(proto.CompactString), proto.CompactArray(proto.Int64), proto.Tags}
)

// TxnRequestShape returns the body shape of a forwarded transaction request's
// flexible version; ok is false for a key or version not served, or not flexible
// (kmsg bounds those itself).
func TxnRequestShape(key, version int16) (shape proto.Shape, ok bool) {
	if maxVersion, served := TxnAPIs[key]; !served || version < 0 || version > maxVersion {
		return nil, false
	}
	switch kmsg.Key(key) {
	case kmsg.InitProducerID:
		switch {
		case version >= 3:
			return initProducerIDV3, true
		case version == 2:
			return initProducerIDV2, true
		}
	case kmsg.AddPartitionsToTxn:
		switch version {
		case 3:
			return addPartitionsV3, true
		case 4:
			return addPartitionsV4, true
		}
	case kmsg.AddOffsetsToTxn:
		return addOffsetsV3, version == 3
	case kmsg.EndTxn:
		return endTxnV3, version == 3
	case kmsg.TxnOffsetCommit:
		return txnOffsetCommitV3, version == 3
	case kmsg.DescribeTransactions:
		return describeTransactionsV0, true
	case kmsg.ListTransactions:
		return listTransactionsV0, true
	}
	return nil, false
}

// AddPartitionsTopicsAnswer answers the topics of an AddPartitionsToTxn v0-3 request:
// each partition with code(topic, partition). The coordinator answers with it, and a
// data-plane node refusing the request.
func AddPartitionsTopicsAnswer(topics []kmsg.AddPartitionsToTxnRequestTopic,
	code func(topic string, partition int32) int16) []kmsg.AddPartitionsToTxnResponseTopic {
	var out []kmsg.AddPartitionsToTxnResponseTopic
	for _, t := range topics {
		rt := kmsg.NewAddPartitionsToTxnResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
			rp.Partition, rp.ErrorCode = p, code(t.Topic, p)
			rt.Partitions = append(rt.Partitions, rp)
		}
		out = append(out, rt)
	}
	return out
}

// AddPartitionsTxnAnswer answers one transaction of an AddPartitionsToTxn v4 request:
// each partition with code(topic, partition).
func AddPartitionsTxnAnswer(t kmsg.AddPartitionsToTxnRequestTransaction,
	code func(topic string, partition int32) int16) kmsg.AddPartitionsToTxnResponseTransaction {
	rt := kmsg.NewAddPartitionsToTxnResponseTransaction()
	rt.TransactionalID = t.TransactionalID
	for _, tt := range t.Topics {
		rtt := kmsg.NewAddPartitionsToTxnResponseTransactionTopic()
		rtt.Topic = tt.Topic
		for _, p := range tt.Partitions {
			rp := kmsg.NewAddPartitionsToTxnResponseTransactionTopicPartition()
			rp.Partition, rp.ErrorCode = p, code(tt.Topic, p)
			rtt.Partitions = append(rtt.Partitions, rp)
		}
		rt.Topics = append(rt.Topics, rtt)
	}
	return rt
}
