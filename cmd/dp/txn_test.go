package main

// Transactions with librdkafka (confluent-kafka over librdkafka 2.0.2) against real
// gregor-cp and gregor-dp processes.

import (
	"context"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// confluentTxnScript runs a transactional producer (commit, abort, commit, each
// transaction four records on each of three partitions) and then reads the topic back
// at read_committed and at read_uncommitted, printing "READ\t<isolation>\t<value>".
const confluentTxnScript = `
import sys, time
from confluent_kafka import Producer, Consumer, TopicPartition, OFFSET_BEGINNING
addr, topic = sys.argv[1], sys.argv[2]
p = Producer({'bootstrap.servers': addr, 'transactional.id': 'confluent-txn', 'transaction.timeout.ms': 30000})
p.init_transactions(30)
def txn(name, commit):
    p.begin_transaction()
    for part in range(3):
        for i in range(4):
            p.produce(topic, value=('%s-%d-%d' % (name, part, i)).encode(), partition=part)
    if commit:
        p.commit_transaction(30)
    else:
        p.flush(30)
        p.abort_transaction(30)
txn('commit1', True)
txn('abort1', False)
txn('commit2', True)
for iso in ('read_committed', 'read_uncommitted'):
    c = Consumer({'bootstrap.servers': addr, 'group.id': 'confluent-' + iso, 'isolation.level': iso,
                  'enable.auto.commit': False})
    c.assign([TopicPartition(topic, part, OFFSET_BEGINNING) for part in range(3)])
    last = set('commit2-%d-3' % part for part in range(3))
    seen = []
    deadline = time.time() + 30
    while last - set(seen) and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            print('ERROR', m.error(), flush=True)
            continue
        seen.append(m.value().decode())
    for v in seen:
        print('READ', iso, v, sep='\t')
    c.close()
`

// TestTxnConfluentKafka: librdkafka's transactional producer commits, aborts and
// commits; its read_committed consumer reads exactly the committed records, its
// read_uncommitted consumer all of them.
func TestTxnConfluentKafka(t *testing.T) {
	needBinary(t, "/usr/lib/python3/dist-packages/confluent_kafka/__init__.py", "python3-confluent-kafka")
	addr := startProcessCluster(t)
	const topic = "confluent-txn"
	createTopic(t, addr, topic, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/usr/bin/python3", "-c", confluentTxnScript, addr, topic).CombinedOutput()
	if err != nil {
		t.Fatalf("confluent-kafka: %v\n%s", err, out)
	}
	values := func(names ...string) []string {
		var vs []string
		for _, name := range names {
			for p := range 3 {
				for i := range 4 {
					vs = append(vs, fmt.Sprintf("%s-%d-%d", name, p, i))
				}
			}
		}
		slices.Sort(vs)
		return vs
	}
	seen := map[string]map[string]int{"read_committed": {}, "read_uncommitted": {}}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Split(line, "\t"); len(f) == 3 && f[0] == "READ" && seen[f[1]] != nil {
			seen[f[1]][f[2]]++
		} else if strings.HasPrefix(line, "ERROR") {
			t.Log(line) // a consumer's error event: librdkafka retries
		}
	}
	for iso, want := range map[string][]string{
		"read_committed":   values("commit1", "commit2"),
		"read_uncommitted": values("commit1", "abort1", "commit2"),
	} {
		if got := slices.Sorted(maps.Keys(seen[iso])); !slices.Equal(got, want) {
			t.Errorf("%s consumer read %v, want %v\n%s", iso, got, want, out)
		}
		for v, n := range seen[iso] {
			if n != 1 {
				t.Errorf("%s consumer read %q %d times", iso, v, n)
			}
		}
	}
}
