package txn

import (
	"testing"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// FuzzRecord: any bytes stored as a transactional id's record load or are refused,
// without a panic; what loads stores back to a record that loads the same.
func FuzzRecord(f *testing.F) {
	d := txnData{producerID: 7, lastProducerID: -1, epoch: 3, lastEpoch: 2, timeoutMs: 1000, state: StateOngoing,
		startMs: 5, updateMs: 6}.clone()
	d.partitions[topicPartition{Topic: "t", Partition: 1}] = struct{}{}
	d.groups["g"] = struct{}{}
	f.Add([]byte(d.marshal()))
	f.Add([]byte(`{"state":"Dead"}`))
	f.Add([]byte(`{"state":"Empty","partitions":[{"topic":"t","partitions":null}]}`))
	key := cluster.TransactionKey("x")
	f.Fuzz(func(t *testing.T, b []byte) {
		ds, err := decodeRecords([]KV{{Key: key, Value: b}})
		if err != nil {
			return
		}
		d := ds["x"]
		again, err := decodeRecords([]KV{{Key: key, Value: []byte(d.marshal())}})
		if err != nil {
			t.Fatalf("a loaded record does not load again: %v", err)
		}
		if again["x"].marshal() != d.marshal() {
			t.Fatal("load(store(x)) != x")
		}
	})
}
