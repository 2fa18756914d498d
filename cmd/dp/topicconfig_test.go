package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Topic configs through real clients against real gregor-cp and gregor-dp processes: a
// config a topic was created with is what its partitions enforce.

// maxMessageBytes is the limit the tests create their topics with (franz-go's own
// large-message test uses 50 KiB).
const maxMessageBytes = 51200

// TestMaxMessageBytesFranzGo creates a topic with max.message.bytes=51200 and produces
// with franz-go (snappy, the client's own size limits raised so that it sends what the
// broker must refuse): a 10 MB record, which snappy shrinks to some hundreds of KB (below
// the 1 MiB default, so only the topic's limit refuses it), and an uncompressed 60 KB one
// get MESSAGE_TOO_LARGE; a 200 KB record that compresses under the limit is accepted
// (Kafka checks the batch as sent, compressed), and so is a small one; both read back.
func TestMaxMessageBytesFranzGo(t *testing.T) {
	addr := startProcessCluster(t)
	const topic = "maxmsg-franz"
	withAdmin(t, addr, func(ctx context.Context, adm *kadm.Client) {
		resp, err := adm.CreateTopics(ctx, 1, 1, map[string]*string{"max.message.bytes": kadm.StringPtr("51200")}, topic)
		if err != nil || resp[topic].Err != nil {
			t.Fatalf("create: %v %+v", err, resp[topic])
		}
		described, err := adm.DescribeTopicConfigs(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := described.On(topic, nil)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, c := range rc.Configs {
			if c.Key == "max.message.bytes" {
				found = true
				if c.MaybeValue() != "51200" {
					t.Fatalf("DescribeConfigs max.message.bytes = %q", c.MaybeValue())
				}
			}
		}
		if !found {
			t.Fatal("DescribeConfigs has no max.message.bytes")
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	newProducer := func(codec kgo.CompressionCodec) *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ProducerBatchCompression(codec),
			kgo.ProducerBatchMaxBytes(16<<20), kgo.MaxBufferedBytes(64<<20), kgo.RecordRetries(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	snappy, plain := newProducer(kgo.SnappyCompression()), newProducer(kgo.NoCompression())

	tooLarge := []struct {
		name string
		cl   *kgo.Client
		size int
	}{
		{"10 MB snappy", snappy, 10 << 20},
		{"60 KB uncompressed", plain, 60 << 10},
	}
	for _, tc := range tooLarge {
		err := tc.cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: bytes.Repeat([]byte("x"), tc.size)}).FirstErr()
		if !errors.Is(err, kerr.MessageTooLarge) {
			t.Fatalf("%s record: got %v, want MESSAGE_TOO_LARGE", tc.name, err)
		}
		if tc.cl == snappy && !strings.Contains(err.Error(), "compressed_bytes=") {
			t.Fatalf("%s record: %v does not say the batch was compressed", tc.name, err)
		}
	}
	accepted := []struct {
		cl    *kgo.Client
		value []byte
	}{
		{snappy, bytes.Repeat([]byte("y"), 200<<10)}, // compresses far below the limit
		{plain, []byte("small")},
	}
	for i, a := range accepted {
		r := &kgo.Record{Topic: topic, Value: a.value}
		if err := a.cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("record %d (%d bytes): %v", i, len(a.value), err)
		}
		if r.Offset != int64(i) {
			t.Fatalf("record %d at offset %d: a refused record took an offset", i, r.Offset)
		}
	}
	consumer, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	var read []*kgo.Record
	for len(read) < len(accepted) {
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		fs := consumer.PollFetches(pctx)
		timedOut := pctx.Err() != nil
		pcancel()
		if timedOut {
			t.Fatalf("read %d of %d records", len(read), len(accepted))
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s-%d: %v", topic, p, err) })
		read = append(read, fs.Records()...)
	}
	for i, r := range read {
		if i >= len(accepted) || r.Offset != int64(i) || !bytes.Equal(r.Value, accepted[i].value) {
			t.Fatalf("read record %d at offset %d, %d bytes; wrote %d records", i, r.Offset, len(r.Value), len(accepted))
		}
	}
}

// The Python clients' side of the max.message.bytes tests: create the topic with the
// limit, print what DescribeConfigs says, produce each case of argv (name, codec, kind,
// size) with a producer of its own whose client-side limits are raised, printing
// "PRODUCE name TOO_LARGE" for the broker's MESSAGE_TOO_LARGE or "PRODUCE name OK
// offset", then read the topic back: "READ offset length sha256". A client-side refusal
// raises at send time and fails the script. Kinds: "random" is incompressible, "fill"
// one repeated byte, "blocks" a random 16 KiB block repeated (deflate's 32 KiB window
// sees every repeat: 10 MB gzip to about 90 KB).
const maxMessagePythonCommon = `
import hashlib, os, sys
addr, topic, limit = sys.argv[1], sys.argv[2], sys.argv[3]
cases = [c.split(":") for c in sys.argv[4:]]
def value(kind, size):
    if kind == "random":
        return os.urandom(size)
    if kind == "blocks":
        block = os.urandom(16 << 10)
        return (block * (size // len(block) + 1))[:size]
    return b"f" * size
`

const maxMessageKafkaPythonScript = maxMessagePythonCommon + `
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic, ConfigResource, ConfigResourceType
from kafka.errors import MessageSizeTooLargeError
admin = KafkaAdminClient(bootstrap_servers=addr)
admin.create_topics([NewTopic(name=topic, num_partitions=1, replication_factor=1, topic_configs={"max.message.bytes": limit})])
for resp in admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)]):
    for res in resp.resources:
        for entry in res[4]:
            if entry[0] == "max.message.bytes":
                print("DESCRIBED %s" % entry[1], flush=True)
admin.close()
n = 0
for name, codec, kind, size in cases:
    p = KafkaProducer(bootstrap_servers=addr, acks="all", compression_type=None if codec == "none" else codec,
        max_request_size=32 << 20, buffer_memory=64 << 20, retries=0, linger_ms=0)
    future = p.send(topic, value=value(kind, int(size)))
    try:
        print("PRODUCE %s OK %d" % (name, future.get(timeout=60).offset), flush=True)
        n += 1
    except MessageSizeTooLargeError:
        print("PRODUCE %s TOO_LARGE" % name, flush=True)
    p.close()
c = KafkaConsumer(bootstrap_servers=addr, auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=10000)
c.assign([TopicPartition(topic, 0)])
got = 0
for m in c:
    print("READ %d %d %s" % (m.offset, len(m.value), hashlib.sha256(m.value).hexdigest()), flush=True)
    got += 1
    if got == n:
        break
c.close()
`

const maxMessageConfluentScript = maxMessagePythonCommon + `
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, ConfigResource
admin = AdminClient({"bootstrap.servers": addr})
for f in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1, config={"max.message.bytes": limit})], operation_timeout=20).values():
    f.result()
for f in admin.describe_configs([ConfigResource("topic", topic)]).values():
    print("DESCRIBED %s" % f.result()["max.message.bytes"].value, flush=True)
n = 0
for name, codec, kind, size in cases:
    p = Producer({"bootstrap.servers": addr, "acks": "all", "compression.codec": codec, "message.max.bytes": 32 << 20,
        "linger.ms": 0, "message.send.max.retries": 0})
    report = []
    p.produce(topic, value=value(kind, int(size)), on_delivery=lambda err, msg: report.append((err, msg)))
    p.flush(60)
    if not report:
        print("PRODUCE %s NO_REPORT" % name, flush=True)
    elif report[0][0] is None:
        print("PRODUCE %s OK %d" % (name, report[0][1].offset()), flush=True)
        n += 1
    elif report[0][0].name() == "MSG_SIZE_TOO_LARGE":
        print("PRODUCE %s TOO_LARGE" % name, flush=True)
    else:
        print("PRODUCE %s %s" % (name, report[0][0].name()), flush=True)
c = Consumer({"bootstrap.servers": addr, "group.id": "unused", "enable.auto.commit": False, "fetch.wait.max.ms": 100})
c.assign([TopicPartition(topic, 0, 0)])
got = 0
while got < n:
    m = c.poll(10)
    if m is None:
        break
    if m.error():
        print("consume error: %s" % m.error(), file=sys.stderr, flush=True)
        continue
    print("READ %d %d %s" % (m.offset(), len(m.value()), hashlib.sha256(m.value()).hexdigest()), flush=True)
    got += 1
c.close()
`

// pyCase is one record a Python client produces: the codec its producer compresses with,
// the kind of content (see maxMessagePythonCommon) and its size, and whether the broker
// must refuse it.
type pyCase struct {
	name, codec, kind string
	size              int
	tooLarge          bool
}

// runMaxMessagePython runs script against a fresh cluster and checks its report: the
// topic described with the limit, each case refused or accepted as it must be, and the
// accepted records read back at consecutive offsets with their lengths ("fill" ones
// byte-exact).
func runMaxMessagePython(t *testing.T, script, topic string, cases []pyCase) {
	t.Helper()
	addr := startProcessCluster(t)
	args := []string{"-c", script, addr, topic, strconv.Itoa(maxMessageBytes)}
	for _, c := range cases {
		args = append(args, fmt.Sprintf("%s:%s:%s:%d", c.name, c.codec, c.kind, c.size))
	}
	cmd := exec.Command("/usr/bin/python3", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var described string
	produced := map[string]string{}
	var read []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "DESCRIBED":
			described = f[1]
		case len(f) >= 3 && f[0] == "PRODUCE":
			produced[f[1]] = strings.Join(f[2:], " ")
		case len(f) == 4 && f[0] == "READ":
			read = append(read, strings.Join(f[1:], " "))
		}
	}
	if described != strconv.Itoa(maxMessageBytes) {
		t.Fatalf("DescribeConfigs max.message.bytes = %q\n%s", described, out)
	}
	var wantRead []string
	for _, c := range cases {
		got := produced[c.name]
		if c.tooLarge {
			if got != "TOO_LARGE" {
				t.Fatalf("%s (%s %s, %d bytes): %q, want MESSAGE_TOO_LARGE\n%s", c.name, c.codec, c.kind, c.size, got, out)
			}
			continue
		}
		offset := len(wantRead)
		if got != fmt.Sprintf("OK %d", offset) {
			t.Fatalf("%s (%s %s, %d bytes): %q, want OK at offset %d\n%s", c.name, c.codec, c.kind, c.size, got, offset, out)
		}
		want := fmt.Sprintf("%d %d ", offset, c.size)
		if c.kind == "fill" {
			sum := sha256.Sum256(bytes.Repeat([]byte("f"), c.size))
			want += hex.EncodeToString(sum[:])
		}
		wantRead = append(wantRead, want)
	}
	if len(read) != len(wantRead) {
		t.Fatalf("read %d records, want %d\n%s", len(read), len(wantRead), out)
	}
	for i := range read {
		if !strings.HasPrefix(read[i], wantRead[i]) {
			t.Fatalf("read %q, want %q", read[i], wantRead[i])
		}
	}
}

// TestMaxMessageBytesKafkaPython: kafka-python (which has no snappy codec here: Debian
// ships it without python3-snappy) on a topic created with max.message.bytes=51200: a
// 10 MB record that gzips to about 90 KB and an uncompressed 60 KB one get
// MESSAGE_TOO_LARGE; a 200 KB record that gzips far under the limit and a small one are
// accepted and read back.
func TestMaxMessageBytesKafkaPython(t *testing.T) {
	needBinary(t, "/usr/lib/python3/dist-packages/kafka/__init__.py", "python3-kafka")
	runMaxMessagePython(t, maxMessageKafkaPythonScript, "maxmsg-kpy", []pyCase{
		{name: "10MB-gzip", codec: "gzip", kind: "blocks", size: 10 << 20, tooLarge: true},
		{name: "60KB-plain", codec: "none", kind: "random", size: 60 << 10, tooLarge: true},
		{name: "200KB-gzip", codec: "gzip", kind: "fill", size: 200 << 10},
		{name: "small", codec: "none", kind: "fill", size: 100},
	})
}

// TestMaxMessageBytesConfluentKafka: librdkafka (confluent-kafka) on a topic created
// with max.message.bytes=51200, as TestMaxMessageBytesKafkaPython: a 10 MB record that
// gzips to about 90 KB and an uncompressed 60 KB one get MESSAGE_TOO_LARGE; a 200 KB
// record that gzips far under the limit (refused if librdkafka sent it uncompressed, as
// it did while Gregor listed Produce from v3 only) and a small one are accepted and read
// back.
func TestMaxMessageBytesConfluentKafka(t *testing.T) {
	needBinary(t, "/usr/lib/python3/dist-packages/confluent_kafka/__init__.py", "python3-confluent-kafka")
	runMaxMessagePython(t, maxMessageConfluentScript, "maxmsg-confluent", []pyCase{
		{name: "10MB-gzip", codec: "gzip", kind: "blocks", size: 10 << 20, tooLarge: true},
		{name: "60KB-plain", codec: "none", kind: "random", size: 60 << 10, tooLarge: true},
		{name: "200KB-gzip", codec: "gzip", kind: "fill", size: 200 << 10},
		{name: "small", codec: "none", kind: "fill", size: 100},
	})
}
