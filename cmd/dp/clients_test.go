package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// Compatibility with the clients of docs/kafka-compat.md besides franz-go (whose process
// test is TestProcessesWithKcatAndFranzGo): sarama (Go), kcat (librdkafka) and
// kafka-python (Debian packages, which `make test` installs), each against real gregor-cp
// and gregor-dp processes. Each test creates a topic, produces keyed records with headers with
// acks=all and acks=1, reads everything back byte-exact, checks that a key always lands in
// one partition, in order, looks offsets up by time, and deletes the topic.

// startProcessCluster runs one gregor-cp and one gregor-dp process and returns the
// node's Kafka address.
func startProcessCluster(t *testing.T) string {
	t.Helper()
	_, dp := startNode(t, testcluster.Options{})
	return dp.Addr()
}

// withAdmin runs fn with a franz-go admin client of the node at addr.
func withAdmin(t *testing.T, addr string, fn func(ctx context.Context, adm *kadm.Client)) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fn(ctx, kadm.NewClient(cl))
}

// checkTimeLookup asks franz-go's admin for the first offset at or after ms in each
// partition and expects 0 (every record of the test is newer).
func checkTimeLookup(t *testing.T, addr, topic string, ms int64) {
	t.Helper()
	withAdmin(t, addr, func(ctx context.Context, adm *kadm.Client) {
		listed, err := adm.ListOffsetsAfterMilli(ctx, ms, topic)
		if err != nil {
			t.Fatal(err)
		}
		listed.Each(func(o kadm.ListedOffset) {
			if o.Err != nil || o.Offset != 0 {
				t.Errorf("offset by time in %s-%d: %+v", topic, o.Partition, o)
			}
		})
	})
}

// want is a record the test produced: key, value, a header value.
type want struct{ key, value, header string }

func wantRecords(tag string, n int) []want {
	out := make([]want, n)
	for i := range out {
		out[i] = want{key: fmt.Sprintf("k%d", i%4), value: fmt.Sprintf("%s-value-%03d", tag, i), header: fmt.Sprint(i)}
	}
	return out
}

// got is a record a client read back.
type got struct {
	want
	partition int32
	offset    int64
}

// checkReadBack compares what was read with what was written: every record once, keys
// confined to one partition each, in production order within a key.
func checkReadBack(t *testing.T, written []want, read []got) {
	t.Helper()
	if len(read) != len(written) {
		t.Fatalf("read %d records, wrote %d", len(read), len(written))
	}
	sort.Slice(read, func(i, j int) bool {
		if read[i].partition != read[j].partition {
			return read[i].partition < read[j].partition
		}
		return read[i].offset < read[j].offset
	})
	byKey := map[string][]got{}
	partOf := map[string]int32{}
	for _, r := range read {
		if p, ok := partOf[r.key]; ok && p != r.partition {
			t.Fatalf("key %s in partitions %d and %d", r.key, p, r.partition)
		}
		partOf[r.key] = r.partition
		byKey[r.key] = append(byKey[r.key], r)
	}
	wantByKey := map[string][]want{}
	for _, w := range written {
		wantByKey[w.key] = append(wantByKey[w.key], w)
	}
	for k, ws := range wantByKey {
		gs := byKey[k]
		if len(gs) != len(ws) {
			t.Fatalf("key %s: read %d, wrote %d", k, len(gs), len(ws))
		}
		for i := range ws {
			if gs[i].want != ws[i] {
				t.Fatalf("key %s record %d: read %+v, wrote %+v", k, i, gs[i].want, ws[i])
			}
		}
	}
}

func TestSarama(t *testing.T) {
	addr := startProcessCluster(t)
	start := time.Now().UnixMilli()
	newConfig := func(acks sarama.RequiredAcks) *sarama.Config {
		cfg := sarama.NewConfig() // one per client: sarama's goroutines keep reading it
		cfg.Version = sarama.V2_1_0_0
		cfg.Producer.Return.Successes = true
		cfg.Producer.Partitioner = sarama.NewHashPartitioner
		cfg.Producer.RequiredAcks = acks
		return cfg
	}
	cfg := newConfig(sarama.WaitForAll)
	admin, err := sarama.NewClusterAdmin([]string{addr}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.CreateTopic("sarama", &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false); err != nil {
		t.Fatal(err)
	}
	var written []want
	for _, acks := range []sarama.RequiredAcks{sarama.WaitForAll, sarama.WaitForLocal} {
		p, err := sarama.NewSyncProducer([]string{addr}, newConfig(acks))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range wantRecords(fmt.Sprintf("acks%d", acks), 40) {
			_, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: "sarama", Key: sarama.StringEncoder(w.key),
				Value: sarama.StringEncoder(w.value), Headers: []sarama.RecordHeader{{Key: []byte("h"), Value: []byte(w.header)}}})
			if err != nil {
				t.Fatalf("acks %d: %v", acks, err)
			}
			written = append(written, w)
		}
		p.Close()
	}
	sc, err := sarama.NewClient([]string{addr}, newConfig(sarama.WaitForAll))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	c, err := sarama.NewConsumerFromClient(sc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var read []got
	for p := int32(0); p < 3; p++ {
		end, err := sc.GetOffset("sarama", p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		if end == 0 {
			continue
		}
		pc, err := c.ConsumePartition("sarama", p, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		for done := false; !done; {
			select {
			case m := <-pc.Messages():
				read = append(read, got{want{string(m.Key), string(m.Value), string(m.Headers[0].Value)}, m.Partition, m.Offset})
				done = m.Offset+1 >= end
			case <-time.After(10 * time.Second):
				t.Fatalf("partition %d: no message", p)
			}
		}
		pc.Close()
	}
	checkReadBack(t, written, read)
	// By time: sarama's own ListOffsets, then deletion through its admin.
	for p := int32(0); p < 3; p++ {
		off, err := sc.GetOffset("sarama", p, start-1000)
		if err != nil || (off != 0 && off != -1) {
			t.Fatalf("sarama offset by time, partition %d: %d %v", p, off, err)
		}
	}
	if err := admin.DeleteTopic("sarama"); err != nil {
		t.Fatalf("sarama delete: %v", err)
	}
}

// createTopic creates a topic through the node with franz-go's admin client.
func createTopic(t *testing.T, addr, topic string, partitions int32) {
	t.Helper()
	withAdmin(t, addr, func(ctx context.Context, adm *kadm.Client) {
		if resp, err := adm.CreateTopics(ctx, partitions, 1, nil, topic); err != nil || resp[topic].Err != nil {
			t.Fatalf("create %s: %v %+v", topic, err, resp[topic])
		}
	})
}

func needBinary(t *testing.T, path, pkg string) {
	t.Helper()
	_, err := os.Stat(path)
	testutil.NeedDep(t, err, "Debian package "+pkg)
}

func TestKcat(t *testing.T) {
	needBinary(t, "/usr/bin/kcat", "kcat")
	addr := startProcessCluster(t)
	start := time.Now().UnixMilli()
	createTopic(t, addr, "kcat", 3)
	var written []want
	for _, acks := range []string{"all", "1"} {
		ws := wantRecords("acks"+acks, 40)
		// kcat takes one header per -H for the whole run, so each record is its own run
		// would be slow: the header carries the run's acks and the value carries the index.
		var in bytes.Buffer
		for i := range ws {
			ws[i].header = "acks=" + acks
			fmt.Fprintf(&in, "%s:%s\n", ws[i].key, ws[i].value)
		}
		cmd := exec.Command("kcat", "-b", addr, "-P", "-t", "kcat", "-K:", "-H", "h=acks="+acks,
			"-X", "acks="+acks, "-X", "partitioner=murmur2_random")
		cmd.Stdin = &in
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kcat produce acks=%s: %v\n%s", acks, err, out)
		}
		written = append(written, ws...)
	}
	out, err := exec.Command("kcat", "-b", addr, "-C", "-t", "kcat", "-o", "beginning", "-e",
		"-f", "%k\t%s\t%h\t%p\t%o\n").Output()
	if err != nil {
		t.Fatalf("kcat consume: %v", err)
	}
	var read []got
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 5 {
			t.Fatalf("kcat line %q", line)
		}
		var g got
		g.key, g.value, g.header = f[0], f[1], strings.TrimPrefix(f[2], "h=")
		fmt.Sscan(f[3], &g.partition)
		fmt.Sscan(f[4], &g.offset)
		read = append(read, g)
	}
	checkReadBack(t, written, read)
	// librdkafka's offsets-for-times through kcat -Q: every partition's first record is
	// newer than start, so the answer is offset 0.
	q := exec.Command("kcat", "-b", addr, "-Q", "-t", fmt.Sprintf("kcat:0:%d", start-1000), "-t", fmt.Sprintf("kcat:1:%d", start-1000))
	out, err = q.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "offset 0") {
		t.Fatalf("kcat -Q: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "offset") && !strings.HasSuffix(strings.TrimSpace(line), "offset 0") && !strings.HasSuffix(strings.TrimSpace(line), "offset -1") {
			t.Fatalf("kcat -Q: %q", line)
		}
	}
	checkTimeLookup(t, addr, "kcat", start-1000)
	deleteTopic(t, addr, "kcat") // kcat cannot delete topics
}

// deleteTopic deletes a topic with franz-go's admin client.
func deleteTopic(t *testing.T, addr, topic string) {
	t.Helper()
	withAdmin(t, addr, func(ctx context.Context, adm *kadm.Client) {
		if resp, err := adm.DeleteTopics(ctx, topic); err != nil || resp[topic].Err != nil {
			t.Fatalf("delete %s: %v %+v", topic, err, resp[topic])
		}
	})
}

const kafkaPythonScript = `
import sys
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
addr, topic = sys.argv[1], sys.argv[2]
admin = KafkaAdminClient(bootstrap_servers=addr)
admin.create_topics([NewTopic(name=topic, num_partitions=3, replication_factor=1)])
admin.close()
n = 0
for acks in ("all", 1):
    p = KafkaProducer(bootstrap_servers=addr, acks=acks)
    for i in range(40):
        key = "k%d" % (i % 4)
        value = "acks%s-value-%03d" % (acks, i)
        p.send(topic, key=key.encode(), value=value.encode(), headers=[("h", str(i).encode())]).get(timeout=20)
        n += 1
    p.close()
c = KafkaConsumer(bootstrap_servers=addr, auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=10000)
c.assign([TopicPartition(topic, p) for p in range(3)])
got = 0
for m in c:
    print("%s\t%s\t%s\t%d\t%d" % (m.key.decode(), m.value.decode(), m.headers[0][1].decode(), m.partition, m.offset), flush=True)
    got += 1
    if got == n:
        break
ts = int(sys.argv[3])
found = c.offsets_for_times({TopicPartition(topic, p): ts for p in range(3)})
for tp, o in sorted(found.items()):
    print("TIME\t%d\t%s" % (tp.partition, "none" if o is None else str(o.offset)), flush=True)
c.close()
admin = KafkaAdminClient(bootstrap_servers=addr)
admin.delete_topics([topic])
admin.close()
print("DELETED", flush=True)
`

func TestKafkaPython(t *testing.T) {
	needBinary(t, "/usr/lib/python3/dist-packages/kafka/__init__.py", "python3-kafka")
	addr := startProcessCluster(t)
	start := time.Now().UnixMilli()
	out, err := exec.Command("/usr/bin/python3", "-c", kafkaPythonScript, addr, "kpy", fmt.Sprint(start-1000)).CombinedOutput()
	if err != nil {
		t.Fatalf("kafka-python: %v\n%s", err, out)
	}
	var written []want
	for _, acks := range []string{"all", "1"} {
		written = append(written, wantRecords("acks"+acks, 40)...)
	}
	var read []got
	timeLookups, deleted := 0, false
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		switch {
		case line == "DELETED":
			deleted = true
			continue
		case f[0] == "TIME":
			if len(f) != 3 || (f[2] != "0" && f[2] != "none") {
				t.Fatalf("kafka-python offsets_for_times: %q", line)
			}
			timeLookups++
			continue
		}
		if len(f) != 5 {
			t.Fatalf("kafka-python line %q\n%s", line, out)
		}
		var g got
		g.key, g.value, g.header = f[0], f[1], f[2]
		fmt.Sscan(f[3], &g.partition)
		fmt.Sscan(f[4], &g.offset)
		read = append(read, g)
	}
	checkReadBack(t, written, read)
	if timeLookups != 3 || !deleted {
		t.Fatalf("kafka-python: %d time lookups, deleted %v\n%s", timeLookups, deleted, out)
	}
}
