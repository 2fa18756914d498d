package cluster

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// The transaction coordinator's keys (SCHEMA.md): one record per transactional id, the
// coordinator epoch, and the offsets committed in transactions not yet ended (held by
// the group coordinator).
const (
	// TransactionsPrefix holds one key per transactional id:
	// TransactionsPrefix + url.PathEscape(transactionalID).
	TransactionsPrefix = RootPrefix + "transactions/"
	// TxnCoordinatorEpochKey holds the coordinator epoch of the latest term of the
	// transaction coordinator (decimal text): each term writes one more than it read.
	TxnCoordinatorEpochKey = RootPrefix + "txn-coordinator-epoch"
	// TxnOffsetsPrefix holds one key per offset committed in a transaction not yet
	// ended: TxnOffsetsPrefix + url.PathEscape(group) + "/" + producerID + "/" + topic
	// + "/" + partition.
	TxnOffsetsPrefix = RootPrefix + "txn-offsets/"
)

// TransactionKey returns the key of a transactional id's record. Transactional ids may
// hold any character, so they are path-escaped.
func TransactionKey(id string) string { return TransactionsPrefix + url.PathEscape(id) }

// ParseTransactionKey returns the transactional id of a TransactionsPrefix key.
func ParseTransactionKey(key string) (string, error) {
	rest, ok := strings.CutPrefix(key, TransactionsPrefix)
	if !ok {
		return "", fmt.Errorf("transaction key %q: not under %s", key, TransactionsPrefix)
	}
	id, err := url.PathUnescape(rest)
	if err != nil {
		return "", fmt.Errorf("transaction key %q: %w", key, err)
	}
	return id, nil
}

// TxnOffsetsProducerPrefix returns the prefix of every offset producerID has committed
// for group in its ongoing transaction.
func TxnOffsetsProducerPrefix(group string, producerID int64) string {
	return TxnOffsetsPrefix + url.PathEscape(group) + "/" + strconv.FormatInt(producerID, 10) + "/"
}

// TxnOffsetKey returns the key of one offset producerID committed for group in its
// ongoing transaction.
func TxnOffsetKey(group string, producerID int64, topic string, partition int32) string {
	return TxnOffsetsProducerPrefix(group, producerID) + topic + "/" + strconv.Itoa(int(partition))
}

// ParseTxnOffsetKey splits a TxnOffsetKey.
func ParseTxnOffsetKey(key string) (group string, producerID int64, tp TopicPartition, err error) {
	rest, ok := strings.CutPrefix(key, TxnOffsetsPrefix)
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 4 {
		return "", 0, tp, fmt.Errorf("transactional offset key %q: bad shape", key)
	}
	if group, err = url.PathUnescape(parts[0]); err != nil {
		return "", 0, tp, fmt.Errorf("transactional offset key %q: %w", key, err)
	}
	if producerID, err = strconv.ParseInt(parts[1], 10, 64); err != nil {
		return "", 0, tp, fmt.Errorf("transactional offset key %q: %w", key, err)
	}
	p, err := strconv.ParseInt(parts[3], 10, 32)
	if err != nil {
		return "", 0, tp, fmt.Errorf("transactional offset key %q: %w", key, err)
	}
	return group, producerID, TopicPartition{Topic: parts[2], Partition: int32(p)}, nil
}
