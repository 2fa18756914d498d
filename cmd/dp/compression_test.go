package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/proto"
)

// librdkafka's compression against real gregor-cp and gregor-dp processes. librdkafka
// before 2.11.1 (Debian's 2.0.2, under kcat and confluent-kafka) compresses with gzip,
// snappy or lz4 only if the broker lists Produce v0 (KAFKA-18659); otherwise it logs
// "Broker does not support compression type" and sends those batches uncompressed. Each
// test produces with every codec and checks three things: librdkafka did not give up on
// the codec, the batches the node stores carry it (fetched raw, so no client decompresses
// them first), and the records read back intact, through franz-go and the producing
// client itself.

// librdkafkaCodecs are the codecs librdkafka can produce with and their RecordBatch
// attribute bits.
var librdkafkaCodecs = []struct {
	name  string
	codec int
}{
	{"gzip", proto.CodecGzip},
	{"snappy", proto.CodecSnappy},
	{"lz4", proto.CodecLZ4},
	{"zstd", proto.CodecZstd},
}

// compressedRecords is how many records each codec's topic gets.
const compressedRecords = 200

// compressibleRecords returns the records a codec's topic gets: keyed, with values long
// and repetitive enough that even a batch of one record compresses below its size
// (librdkafka sends a batch uncompressed when compression does not shrink it). The
// Python script builds the same ones.
func compressibleRecords(codec string) []want {
	out := make([]want, compressedRecords)
	for i := range out {
		out[i] = want{key: fmt.Sprintf("k%d", i%4), value: fmt.Sprintf("%s-%03d-%s", codec, i, strings.Repeat("gregor ", 30))}
	}
	return out
}

// checkCompressed fetches topic's partition 0 raw, from offset 0 to the high watermark,
// and expects count records in batches that all carry codec.
func checkCompressed(t *testing.T, addr, topic string, codec, count int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var batches, records int
	for offset, hw := int64(0), int64(-1); hw < 0 || offset < hw; {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID, req.MaxBytes, req.SessionEpoch = -1, 1<<20, -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.FetchOffset, rp.PartitionMaxBytes = offset, 1<<20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatalf("fetch %s at %d: %v", topic, offset, err)
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 || resp.Topics[0].Partitions[0].ErrorCode != 0 {
			t.Fatalf("fetch %s at %d: %+v", topic, offset, resp)
		}
		p := resp.Topics[0].Partitions[0]
		hw = p.HighWatermark
		b := p.RecordBatches
		if len(b) == 0 && offset < hw {
			t.Fatalf("fetch %s at %d: no batch below the high watermark %d", topic, offset, hw)
		}
		for len(b) > 0 {
			h, err := proto.ParseRecordBatchHeader(b)
			if err != nil || h.Size() > len(b) {
				break // the answer may end in part of a batch
			}
			if h.Codec() != codec {
				t.Fatalf("%s: batch at offset %d (%d records) stored with codec %d, want %d",
					topic, h.BaseOffset, h.RecordCount, h.Codec(), codec)
			}
			batches++
			records += int(h.RecordCount)
			offset = h.NextOffset()
			b = b[h.Size():]
		}
	}
	if records != count {
		t.Fatalf("%s: %d records stored in %d batches, want %d", topic, records, batches, count)
	}
	t.Logf("%s: %d records in %d batches, codec %d", topic, records, batches, codec)
}

// readBackFranzGo consumes topic's partition 0 from the start with franz-go, which
// decompresses every codec itself, until it has n records.
func readBackFranzGo(t *testing.T, addr, topic string, n int) []got {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
		topic: {0: kgo.NewOffset().AtStart()}}), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var read []got
	for len(read) < n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		fs := cl.PollFetches(ctx)
		timedOut := ctx.Err() != nil
		cancel()
		if timedOut {
			t.Fatalf("%s: franz-go read %d of %d records", topic, len(read), n)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s-%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			read = append(read, got{want{key: string(r.Key), value: string(r.Value)}, r.Partition, r.Offset})
		})
	}
	return read
}

// checkCodecNotRefused fails if librdkafka's output (with debug=msg, which reports every
// time it gives up on a codec; its notice-level log of it is rate-limited) says it sent a
// batch uncompressed because of the broker.
func checkCodecNotRefused(t *testing.T, client string, out []byte) {
	t.Helper()
	if strings.Contains(string(out), "does not support compression") {
		t.Fatalf("%s did not compress:\n%s", client, out)
	}
}

// TestLibrdkafkaCompressionKcat: kcat produces 200 records to a topic per codec (gzip,
// snappy, lz4, zstd); librdkafka does not refuse the codec, every stored batch carries it,
// and franz-go and kcat read the records back intact.
func TestLibrdkafkaCompressionKcat(t *testing.T) {
	needBinary(t, "/usr/bin/kcat", "kcat")
	addr := startProcessCluster(t)
	for _, c := range librdkafkaCodecs {
		topic := "kcat-" + c.name
		createTopic(t, addr, topic, 1)
		written := compressibleRecords(c.name)
		var in strings.Builder
		for _, w := range written {
			fmt.Fprintf(&in, "%s:%s\n", w.key, w.value)
		}
		// linger.ms gathers the records into a few batches, as a real producer would.
		cmd := exec.Command("kcat", "-b", addr, "-P", "-t", topic, "-K:", "-z", c.name, "-X", "linger.ms=100", "-d", "msg")
		cmd.Stdin = strings.NewReader(in.String())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kcat produce %s: %v\n%s", c.name, err, out)
		}
		checkCodecNotRefused(t, "kcat", out)
		checkCompressed(t, addr, topic, c.codec, len(written))
		checkReadBack(t, written, readBackFranzGo(t, addr, topic, len(written)))
		out, err = exec.Command("kcat", "-b", addr, "-C", "-t", topic, "-o", "beginning", "-e",
			"-f", "%k\t%s\t%p\t%o\n").Output()
		if err != nil {
			t.Fatalf("kcat consume %s: %v", c.name, err)
		}
		var read []got
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Split(line, "\t")
			if len(f) != 4 {
				t.Fatalf("kcat line %q", line)
			}
			g := got{want: want{key: f[0], value: f[1]}}
			fmt.Sscan(f[2], &g.partition)
			fmt.Sscan(f[3], &g.offset)
			read = append(read, g)
		}
		checkReadBack(t, written, read)
	}
}

// confluentCompressionScript produces compressibleRecords to "<prefix>-<codec>" for each
// codec of argv with that codec, reports delivery failures ("FAILED codec error"), then
// reads each topic back: "READ codec key value partition offset".
const confluentCompressionScript = `
import sys
from confluent_kafka import Producer, Consumer, TopicPartition
addr, prefix, n, codecs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
def records(codec):
    return [("k%d" % (i % 4), "%s-%03d-%s" % (codec, i, "gregor " * 30)) for i in range(n)]
for codec in codecs:
    p = Producer({"bootstrap.servers": addr, "compression.codec": codec, "linger.ms": 100, "debug": "msg"})
    failed = []
    for key, value in records(codec):
        p.produce(prefix + "-" + codec, key=key.encode(), value=value.encode(),
            on_delivery=lambda err, msg: failed.append(err) if err else None)
    if p.flush(30) != 0:
        print("FAILED %s unflushed" % codec, flush=True)
    for err in failed:
        print("FAILED %s %s" % (codec, err), flush=True)
c = Consumer({"bootstrap.servers": addr, "group.id": "unused", "enable.auto.commit": False, "fetch.wait.max.ms": 100})
for codec in codecs:
    c.assign([TopicPartition(prefix + "-" + codec, 0, 0)])
    got = 0
    while got < n:
        m = c.poll(10)
        if m is None:
            break
        if m.error():
            print("consume error: %s" % m.error(), file=sys.stderr, flush=True)
            continue
        print("READ\t%s\t%s\t%s\t%d\t%d" % (codec, m.key().decode(), m.value().decode(), m.partition(), m.offset()), flush=True)
        got += 1
c.close()
`

// TestLibrdkafkaCompressionConfluentKafka: confluent-kafka produces 200 records to a
// topic per codec (gzip, snappy, lz4, zstd); librdkafka does not refuse the codec, every
// stored batch carries it, and franz-go and confluent-kafka read the records back intact.
func TestLibrdkafkaCompressionConfluentKafka(t *testing.T) {
	needBinary(t, "/usr/lib/python3/dist-packages/confluent_kafka/__init__.py", "python3-confluent-kafka")
	addr := startProcessCluster(t)
	args := []string{"-c", confluentCompressionScript, addr, "confluent", fmt.Sprint(compressedRecords)}
	for _, c := range librdkafkaCodecs {
		createTopic(t, addr, "confluent-"+c.name, 1)
		args = append(args, c.name)
	}
	out, err := exec.Command("/usr/bin/python3", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("confluent-kafka: %v\n%s", err, out)
	}
	checkCodecNotRefused(t, "confluent-kafka", out)
	read := map[string][]got{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		switch {
		case strings.HasPrefix(line, "FAILED"):
			t.Fatalf("confluent-kafka: %s\n%s", line, out)
		case len(f) == 6 && f[0] == "READ":
			g := got{want: want{key: f[2], value: f[3]}}
			fmt.Sscan(f[4], &g.partition)
			fmt.Sscan(f[5], &g.offset)
			read[f[1]] = append(read[f[1]], g)
		}
	}
	for _, c := range librdkafkaCodecs {
		topic := "confluent-" + c.name
		written := compressibleRecords(c.name)
		checkCompressed(t, addr, topic, c.codec, len(written))
		checkReadBack(t, written, readBackFranzGo(t, addr, topic, len(written)))
		checkReadBack(t, written, read[c.name])
	}
}
