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
