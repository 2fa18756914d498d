package main

// Transactions with librdkafka (confluent-kafka over the system's librdkafka 2.0.2, or
// the 2.12.0 of workload.LibrdkafkaDir where it is built) against real gregor-cp and
// gregor-dp processes.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// confluentTxnScript runs a transactional producer through the transactions of its
// third argument ("<name>:<1 to commit, 0 to abort>,...", the last one committed),
// each four records on each of three partitions, and then reads the topic back at
// read_committed and at read_uncommitted, printing "READ\t<isolation>\t<value>"; its
// first line is "LIBRDKAFKA <version>".
const confluentTxnScript = `
import sys, time
from confluent_kafka import Producer, Consumer, TopicPartition, OFFSET_BEGINNING, libversion
addr, topic = sys.argv[1], sys.argv[2]
plan = [(t.split(':')[0], t.split(':')[1] == '1') for t in sys.argv[3].split(',')]
print('LIBRDKAFKA', libversion()[0], flush=True)
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
for name, commit in plan:
    txn(name, commit)
for iso in ('read_committed', 'read_uncommitted'):
    c = Consumer({'bootstrap.servers': addr, 'group.id': 'confluent-' + iso, 'isolation.level': iso,
                  'enable.auto.commit': False})
    c.assign([TopicPartition(topic, part, OFFSET_BEGINNING) for part in range(3)])
    last = set('%s-%d-3' % (plan[-1][0], part) for part in range(3))
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

// TestTxnConfluentKafka: librdkafka's transactional producer commits and aborts
// transactions in turn, two aborts in a row among them; its read_committed consumer
// reads exactly the committed records, its read_uncommitted consumer all of them.
func TestTxnConfluentKafka(t *testing.T) {
	needBinary(t, "/usr/lib/python3/dist-packages/confluent_kafka/__init__.py", "python3-confluent-kafka")
	addr := startProcessCluster(t)
	const topic = "confluent-txn"
	createTopic(t, addr, topic, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	plan := []struct {
		name   string
		commit bool
	}{{"commit1", true}, {"abort1", false}, {"abort2", false}, {"commit2", true}, {"abort3", false}, {"commit3", true}}
	var arg []string
	var committed, all []string
	for _, txn := range plan {
		flag := 0
		if txn.commit {
			flag = 1
			committed = append(committed, txn.name)
		}
		arg = append(arg, fmt.Sprintf("%s:%d", txn.name, flag))
		all = append(all, txn.name)
	}
	out, err := rdkafkaCommand(ctx, confluentTxnScript, addr, topic, strings.Join(arg, ",")).CombinedOutput()
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
		} else if strings.HasPrefix(line, "ERROR") || strings.HasPrefix(line, "LIBRDKAFKA") {
			t.Log(line) // a consumer's error event (librdkafka retries), the library's version
		}
	}
	for iso, want := range map[string][]string{
		"read_committed":   values(committed...),
		"read_uncommitted": values(all...),
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
