package chaos

import (
	"fmt"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/chaos/history"
)

// sanity is this package's own small check of a finished history, beside the
// checker's: every acknowledged acks=all send is in every final replica at its
// acknowledged offset; the replicas agree below the smallest high watermark; no value
// of an idempotent producer is in a log twice; every record a consumer read is the
// final log's record at that offset. It returns at most a few problems of each kind.
func sanity(h *history.History) []string {
	type tp struct {
		topic string
		p     int32
	}
	finals := map[tp][]history.ReplicaLog{}
	for _, f := range h.Finals {
		finals[tp{f.Topic, f.Partition}] = append(finals[tp{f.Topic, f.Partition}], f)
	}
	at := func(l history.ReplicaLog, off int64) (string, bool) {
		if len(l.Records) == 0 || off < l.Records[0].Offset {
			return "", false
		}
		// Offsets are dense from the log start (no compaction).
		i := off - l.Records[0].Offset
		if i >= int64(len(l.Records)) || l.Records[i].Offset != off {
			for _, r := range l.Records {
				if r.Offset == off {
					return r.Value, true
				}
			}
			return "", false
		}
		return l.Records[i].Value, true
	}
	var out []string
	count := map[string]int{}
	add := func(kind, format string, args ...any) {
		if count[kind]++; count[kind] <= 5 {
			out = append(out, kind+": "+fmt.Sprintf(format, args...))
		}
	}
	for _, s := range h.Sends {
		if s.Outcome != history.OK || s.Acks != -1 {
			continue
		}
		logs := finals[tp{s.Topic, s.Partition}]
		if len(logs) == 0 {
			add("lost", "%s-%d: no final replica read", s.Topic, s.Partition)
		}
		for _, l := range logs {
			if v, ok := at(l, s.Offset); !ok || v != s.Value {
				add("lost", "%s acknowledged at %s-%d@%d, node %d holds %q there (found: %v)", s.Value, s.Topic,
					s.Partition, s.Offset, l.Node, v, ok)
			}
		}
	}
	for key, logs := range finals {
		hw := int64(-1)
		for _, l := range logs {
			if l.HighWatermark >= 0 && (hw < 0 || l.HighWatermark < hw) {
				hw = l.HighWatermark
			}
		}
		for _, l := range logs[1:] {
			for _, r := range logs[0].Records {
				if hw >= 0 && r.Offset >= hw {
					break
				}
				if v, ok := at(l, r.Offset); !ok || v != r.Value {
					add("divergent", "%s-%d@%d below high watermark %d: node %d %q, node %d %q", key.topic, key.p,
						r.Offset, hw, logs[0].Node, r.Value, l.Node, v)
					break
				}
			}
		}
	}
	idem := map[string]bool{}
	for _, s := range h.Sends {
		if s.Idempotent {
			idem[s.Value] = true
		}
	}
	for key, logs := range finals {
		seen := map[string]int64{}
		for _, r := range logs[0].Records {
			if prev, ok := seen[r.Value]; ok && idem[r.Value] {
				add("duplicate", "%s in %s-%d at %d and %d", r.Value, key.topic, key.p, prev, r.Offset)
			}
			seen[r.Value] = r.Offset
		}
	}
	for _, p := range h.Polls {
		logs := finals[tp{p.Topic, p.Partition}]
		if len(logs) == 0 {
			continue
		}
		for _, r := range p.Records {
			if v, ok := at(logs[0], r.Offset); !ok || v != r.Value {
				add("bad-read", "%s read %q at %s-%d@%d, the final log holds %q (found: %v)", p.Consumer, r.Value,
					p.Topic, p.Partition, r.Offset, v, ok)
			}
		}
	}
	for kind, n := range count {
		if n > 5 {
			out = append(out, fmt.Sprintf("%s: %d in all", kind, n))
		}
	}
	return out
}

// TestSanity: the sanity check finds a lost write, a divergence, a duplicate and a bad
// read in a made-up history, and nothing in a good one.
func TestSanity(t *testing.T) {
	now := time.Now()
	good := &history.History{
		Sends: []history.Send{
			{Producer: "p", Idempotent: true, Acks: -1, Topic: "t", Partition: 0, Value: "a", Outcome: history.OK, Offset: 0, Start: now, End: now},
			{Producer: "p", Idempotent: true, Acks: -1, Topic: "t", Partition: 0, Value: "b", Outcome: history.Info, Offset: -1, Start: now, End: now},
		},
		Polls: []history.Poll{{Consumer: "c", Topic: "t", Partition: 0, Records: []history.Record{{Offset: 0, Value: "a"}}}},
		Finals: []history.ReplicaLog{
			{Node: 1, Topic: "t", Partition: 0, HighWatermark: 1, Records: []history.Record{{Offset: 0, Value: "a"}}},
			{Node: 2, Topic: "t", Partition: 0, HighWatermark: 1, Records: []history.Record{{Offset: 0, Value: "a"}, {Offset: 1, Value: "b"}}},
		},
	}
	if got := sanity(good); len(got) != 0 {
		t.Fatalf("good history: %q", got)
	}
	bad := &history.History{
		Sends: append(good.Sends, history.Send{Producer: "p", Idempotent: true, Acks: -1, Topic: "t", Partition: 0,
			Value: "c", Outcome: history.OK, Offset: 1}),
		Polls: []history.Poll{{Consumer: "c", Topic: "t", Partition: 0, Records: []history.Record{{Offset: 1, Value: "x"}}}},
		Finals: []history.ReplicaLog{
			{Node: 1, Topic: "t", Partition: 0, HighWatermark: 3, Records: []history.Record{{Offset: 0, Value: "a"}, {Offset: 1, Value: "b"}, {Offset: 2, Value: "b"}}},
			{Node: 2, Topic: "t", Partition: 0, HighWatermark: 3, Records: []history.Record{{Offset: 0, Value: "z"}, {Offset: 1, Value: "b"}, {Offset: 2, Value: "b"}}},
		},
	}
	got := sanity(bad)
	for _, kind := range []string{"lost", "divergent", "duplicate", "bad-read"} {
		found := false
		for _, g := range got {
			if len(g) > len(kind) && g[:len(kind)+1] == kind+":" {
				found = true
			}
		}
		if !found {
			t.Errorf("no %s found in %q", kind, got)
		}
	}
}
