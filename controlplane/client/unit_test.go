package client

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/twmb/franz-go/pkg/kerr"
)

func TestValidateTopicName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"orders", true},
		{"a.b_c-D9", true},
		{strings.Repeat("x", cluster.TopicNameLenMax), true},
		{strings.Repeat("x", cluster.TopicNameLenMax+1), false},
		{"", false},
		{".", false},
		{"..", false},
		{"...", true},
		{"a/b", false},
		{"a b", false},
		{"é", false},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%.20q", tc.name), func(t *testing.T) {
			err := ValidateTopicName(tc.name)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidateTopicName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
			}
			if err != nil && !errors.Is(err, kerr.InvalidTopicException) {
				t.Fatalf("error %v does not carry INVALID_TOPIC_EXCEPTION", err)
			}
		})
	}
}

func TestValidateConfigs(t *testing.T) {
	tests := []struct {
		k, v string
		ok   bool
	}{
		{cluster.ConfigRetentionMs, "-1", true},
		{cluster.ConfigRetentionMs, "604800000", true},
		{cluster.ConfigRetentionMs, "-2", false},
		{cluster.ConfigRetentionMs, "1h", false},
		{cluster.ConfigMinInsyncReplicas, "2", true},
		{cluster.ConfigMinInsyncReplicas, "0", false},
		{cluster.ConfigMessageTimestampType, "LogAppendTime", true},
		{cluster.ConfigMessageTimestampType, "logappendtime", false},
		{cluster.ConfigUncleanLeaderElection, "true", true},
		{cluster.ConfigUncleanLeaderElection, "yes", false},
		{cluster.ConfigSegmentBytes, "13", false},
		{cluster.ConfigCleanupPolicy, "compact", false},
		{cluster.ConfigCompressionType, "producer", true},
		// Kafka recompresses for every other value; Gregor stores batches as sent.
		{cluster.ConfigCompressionType, "zstd", false},
		{cluster.ConfigCompressionType, "gzip", false},
		{cluster.ConfigCompressionType, "snappy", false},
		{cluster.ConfigCompressionType, "lz4", false},
		{cluster.ConfigCompressionType, "uncompressed", false},
		{cluster.ConfigCompressionType, "Producer", false},
		{cluster.ConfigCleanupPolicy, "delete", true},
		{cluster.ConfigCleanupPolicy, "delete,compact", false},
		{cluster.ConfigMaxMessageBytes, "0", true},
		{cluster.ConfigMaxMessageBytes, "-1", false},
		{cluster.ConfigMaxMessageBytes, "2147483648", false},
		{cluster.ConfigRetentionBytes, "-1", true},
		{cluster.ConfigRetentionBytes, "1", true},
		{cluster.ConfigRetentionBytes, "0", false},
		{cluster.ConfigRetentionBytes, "00", false},
		{cluster.ConfigRetentionBytes, "-0", false},
		{cluster.ConfigRetentionBytes, "-2", false},
		{cluster.ConfigSegmentMs, "9223372036854775807", true},
		{cluster.ConfigSegmentMs, "0", false},
		{cluster.ConfigFlushMessages, "1", true},
		{cluster.ConfigFlushMessages, "9223372036854775807", true},
		{cluster.ConfigFlushMessages, "0", false},
		{cluster.ConfigFlushMessages, "-1", false},
		{cluster.ConfigFlushMs, "0", true},
		{cluster.ConfigFlushMs, "1000", true},
		{cluster.ConfigFlushMs, "9223372036854775807", true},
		{cluster.ConfigFlushMs, "-1", false},
		{cluster.ConfigFlushMs, "1s", false},
		{"no.such.config", "1", false},
	}
	for _, tc := range tests {
		t.Run(tc.k+"="+tc.v, func(t *testing.T) {
			err := ValidateConfigs(map[string]string{tc.k: tc.v})
			if (err == nil) != tc.ok {
				t.Fatalf("got %v, want ok=%v", err, tc.ok)
			}
			if code, ok := KafkaCode(err); err != nil && (!ok || code != kerr.InvalidConfig.Code) {
				t.Fatalf("error %v has code %d, want INVALID_CONFIG", err, code)
			}
		})
	}
}

// TestCompressionTypeRefusalSaysWhy: a client refused compression.type=zstd learns that
// only "producer" is supported, not merely that the value is invalid.
func TestCompressionTypeRefusalSaysWhy(t *testing.T) {
	err := ValidateConfigs(map[string]string{cluster.ConfigCompressionType: "zstd"})
	if err == nil || !strings.Contains(err.Error(), `only "producer" is supported`) {
		t.Fatalf("got %v", err)
	}
}

// TestAssignReplicasSpread: every partition gets rf distinct replicas; preferred
// leaders and replicas are spread evenly; with racks, each partition spans min(rf, racks) racks.
func TestAssignReplicasSpread(t *testing.T) {
	brokers := func(racks ...string) []cluster.Broker {
		var out []cluster.Broker
		for i, r := range racks {
			out = append(out, cluster.Broker{ID: int32(i + 1), Rack: r})
		}
		return out
	}
	tests := []struct {
		name       string
		brokers    []cluster.Broker
		partitions int
		rf         int
	}{
		{"3 nodes rf3", brokers("", "", ""), 6, 3},
		{"5 nodes rf2", brokers("", "", "", "", ""), 50, 2},
		{"1 node", brokers(""), 4, 1},
		{"3 racks of 2 rf3", brokers("a", "a", "b", "b", "c", "c"), 12, 3},
		{"2 racks of 3 rf3", brokers("a", "a", "a", "b", "b", "b"), 12, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for start := 0; start < len(tc.brokers); start++ {
				a := AssignReplicas(tc.brokers, tc.partitions, tc.rf, 0, start)
				if len(a) != tc.partitions {
					t.Fatalf("%d partitions assigned, want %d", len(a), tc.partitions)
				}
				leaders := map[int32]int{}
				replicas := map[int32]int{}
				rackOf := map[int32]string{}
				racks := map[string]bool{}
				for _, b := range tc.brokers {
					rackOf[b.ID] = b.Rack
					racks[b.Rack] = true
				}
				for p, r := range a {
					if len(r) != tc.rf {
						t.Fatalf("partition %d: %v, want %d replicas", p, r, tc.rf)
					}
					seen := map[int32]bool{}
					spanned := map[string]bool{}
					for _, id := range r {
						if seen[id] {
							t.Fatalf("partition %d: duplicate replica in %v", p, r)
						}
						seen[id] = true
						replicas[id]++
						spanned[rackOf[id]] = true
					}
					leaders[r[0]]++
					if racks[""] {
						continue
					}
					if want := min(tc.rf, len(racks)); len(spanned) != want {
						t.Fatalf("partition %d: %v spans %d racks, want %d", p, r, len(spanned), want)
					}
				}
				assertEven(t, "preferred leaders", leaders, tc.brokers, tc.partitions)
				assertEven(t, "replicas", replicas, tc.brokers, tc.partitions*tc.rf)
			}
		})
	}
}

// assertEven checks that total units are spread over the brokers with counts that
// differ by at most one.
func assertEven(t *testing.T, what string, counts map[int32]int, brokers []cluster.Broker, total int) {
	t.Helper()
	lo, hi := total/len(brokers), (total+len(brokers)-1)/len(brokers)
	for _, b := range brokers {
		if c := counts[b.ID]; c < lo || c > hi {
			t.Fatalf("%s: node %d has %d, want %d..%d (all: %v)", what, b.ID, c, lo, hi, counts)
		}
	}
}
