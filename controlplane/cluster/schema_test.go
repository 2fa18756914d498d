package cluster

import "testing"

func TestPartitionKeyRoundTrip(t *testing.T) {
	for _, tp := range []TopicPartition{{Topic: "a", Partition: 0}, {Topic: "a.b-c_d", Partition: 4095}, {Topic: "x", Partition: 17}} {
		got, err := ParsePartitionKey(PartitionKey(tp.Topic, tp.Partition))
		if err != nil || got != tp {
			t.Fatalf("round trip %v: %v, %v", tp, got, err)
		}
	}
	if _, err := ParsePartitionKey(PartitionsPrefix + "noslash"); err == nil {
		t.Fatal("key without partition accepted")
	}
}

func TestOffsetKeyRoundTrip(t *testing.T) {
	for _, group := range []string{"g", "a/b c%", ""} {
		tp := TopicPartition{Topic: "t.x", Partition: 12}
		g, got, err := ParseOffsetKey(OffsetKey(group, tp.Topic, tp.Partition))
		if err != nil || g != group || got != tp {
			t.Fatalf("round trip %q %v: %q %v, %v", group, tp, g, got, err)
		}
		if gk, err := ParseGroupKey(GroupKey(group)); err != nil || gk != group {
			t.Fatalf("group key round trip %q: %q, %v", group, gk, err)
		}
	}
	if tp, ok := ParseHWKey(HWKey("t/x", 3)); !ok || tp != (TopicPartition{Topic: "t/x", Partition: 3}) {
		t.Fatalf("HW key round trip: %v %v", tp, ok)
	}
}

func TestTransactionKeysRoundTrip(t *testing.T) {
	for _, id := range []string{"tx", "a/b c%", ""} {
		if got, err := ParseTransactionKey(TransactionKey(id)); err != nil || got != id {
			t.Fatalf("transaction key round trip %q: %q, %v", id, got, err)
		}
		tp := TopicPartition{Topic: "t.x", Partition: 7}
		g, pid, got, err := ParseTxnOffsetKey(TxnOffsetKey(id, 1234, tp.Topic, tp.Partition))
		if err != nil || g != id || pid != 1234 || got != tp {
			t.Fatalf("txn offset key round trip %q: %q %d %v, %v", id, g, pid, got, err)
		}
	}
	if _, _, _, err := ParseTxnOffsetKey(TxnOffsetsPrefix + "g/x/t/1"); err == nil {
		t.Fatal("txn offset key with a bad producer id accepted")
	}
}
