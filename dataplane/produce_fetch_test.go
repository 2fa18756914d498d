package dataplane

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"github.com/google/uuid"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// roundTrip sends req at version on c and decodes the answer.
func roundTrip(t testing.TB, c net.Conn, req kmsg.Request, version int16, corr int32) kmsg.Response {
	t.Helper()
	if _, err := c.Write(frameRequest(req, version, corr)); err != nil {
		t.Fatal(err)
	}
	return readAnswer(t, c, req, corr)
}

func readAnswer(t testing.TB, c net.Conn, req kmsg.Request, corr int32) kmsg.Response {
	t.Helper()
	got, body := readResponse(t, c, proto.IsFlexibleResponse(req.Key(), req.GetVersion()))
	if got != corr {
		t.Fatalf("correlation id %d, want %d", got, corr)
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	if err := resp.ReadFrom(body); err != nil {
		t.Fatalf("decode %s response: %v", kmsg.NameForKey(req.Key()), err)
	}
	return resp
}

func batch(n int, tag string, pid int64, epoch int16, seq int32) []byte {
	recs := make([]proto.Record, n)
	for i := range recs {
		recs[i] = proto.Record{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("%s-%d", tag, i)),
			Headers: []proto.RecordHeader{{Key: "h", Value: []byte(tag)}}}
	}
	return proto.AppendRecordBatch(nil, proto.RecordBatchHeader{
		PartitionLeaderEpoch: -1, BaseTimestamp: time.Now().UnixMilli(), ProducerID: pid, ProducerEpoch: epoch, BaseSequence: seq,
	}, recs)
}

func produceReq(topic string, partition int32, acks int16, records []byte) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.Acks = acks
	req.TimeoutMillis = 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition = partition
	rp.Records = records
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return req
}

func produce(t testing.TB, c net.Conn, version int16, topic string, partition int32, acks int16, records []byte) kmsg.ProduceResponseTopicPartition {
	t.Helper()
	resp := roundTrip(t, c, produceReq(topic, partition, acks, records), version, 1).(*kmsg.ProduceResponse)
	return resp.Topics[0].Partitions[0]
}

func fetchReq(topic string, partition int32, offset int64, maxBytes int32, minBytes int32, wait int32) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxWaitMillis = wait
	req.MinBytes = minBytes
	req.MaxBytes = maxBytes
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition = partition
	rp.FetchOffset = offset
	rp.PartitionMaxBytes = maxBytes
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return req
}

func TestProduceFetchAllVersions(t *testing.T) {
	s := startServer(t, Config{})
	if err := s.BecomeLeader("orders", 0, 3, 1, 1); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	var want [][]byte
	next := int64(0)
	for v := int16(3); v <= 8; v++ {
		for _, acks := range []int16{1, -1} {
			b := batch(3, fmt.Sprintf("v%d-acks%d", v, acks), -1, -1, -1)
			rp := produce(t, c, v, "orders", 0, acks, b)
			if rp.ErrorCode != 0 || rp.BaseOffset != next {
				t.Fatalf("produce v%d acks %d: %+v", v, acks, rp)
			}
			proto.SetBaseOffset(b, next)
			proto.SetPartitionLeaderEpoch(b, 3)
			want = append(want, b)
			next += 3
		}
	}
	// acks=0: no answer; the next request's answer comes next.
	b0 := batch(2, "acks0", -1, -1, -1)
	if _, err := c.Write(frameRequest(produceReq("orders", 0, 0, b0), 7, 55)); err != nil {
		t.Fatal(err)
	}
	proto.SetBaseOffset(b0, next)
	proto.SetPartitionLeaderEpoch(b0, 3)
	want = append(want, b0)
	next += 2
	id := uuid.New() // Fetch v13+ names the topic by its id in the view
	setView(s, map[string]uuid.UUID{"orders": id}, nil)
	for v := int16(proto.FetchVersionMin); v <= proto.FetchVersionMax; v++ {
		req := fetchReq("orders", 0, 0, 1<<20, 1, 0)
		req.Topics[0].TopicID = id
		resp := roundTrip(t, c, req, v, int32(100+v)).(*kmsg.FetchResponse)
		fp := resp.Topics[0].Partitions[0]
		if fp.ErrorCode != 0 || fp.HighWatermark != next || fp.LastStableOffset != next {
			t.Fatalf("fetch v%d: %+v", v, fp)
		}
		if !bytes.Equal(fp.RecordBatches, bytes.Join(want, nil)) {
			t.Fatalf("fetch v%d: records differ from what was produced", v)
		}
	}
	// Fetch from the middle of a batch returns the whole batch; at the end, nothing.
	resp := roundTrip(t, c, fetchReq("orders", 0, 4, 1, 0, 0), 11, 200).(*kmsg.FetchResponse)
	if fp := resp.Topics[0].Partitions[0]; !bytes.Equal(fp.RecordBatches, want[1]) {
		t.Fatalf("fetch at 4 with max 1 byte: %d bytes", len(fp.RecordBatches))
	}
	resp = roundTrip(t, c, fetchReq("orders", 0, next, 1<<20, 0, 0), 11, 201).(*kmsg.FetchResponse)
	if fp := resp.Topics[0].Partitions[0]; fp.ErrorCode != 0 || len(fp.RecordBatches) != 0 {
		t.Fatalf("fetch at the end: %+v", fp)
	}
	resp = roundTrip(t, c, fetchReq("orders", 0, next+1, 1<<20, 0, 0), 11, 202).(*kmsg.FetchResponse)
	if fp := resp.Topics[0].Partitions[0]; fp.ErrorCode != kerr.OffsetOutOfRange.Code {
		t.Fatalf("fetch past the end: %+v", fp)
	}
	if sf := s.fetchCounters.Sendfile.Load(); sf == 0 || s.fetchCounters.Copied.Load() != 0 {
		t.Fatalf("records not sent by sendfile: sendfile %d copy %d", sf, s.fetchCounters.Copied.Load())
	}
}

// TestProduceBelowV3 covers Produce's two ranges: ApiVersions (v0 and v3) lists Produce
// from v0, for librdkafka's compression check, and every other API at the versions it is
// served; a Produce v0, v1 or v2 request (acks=1 or 0, on a connection that has been
// answered before, pipelined ahead of another request) closes the connection as Kafka 4
// does: no byte answers it or the request after it, and nothing is appended.
func TestProduceBelowV3(t *testing.T) {
	s := startServer(t, Config{})
	if err := s.BecomeLeader("old", 0, 0, 1, 1); err != nil {
		t.Fatal(err)
	}
	for _, v := range []int16{0, 3} {
		c := dial(t, s)
		av := roundTrip(t, c, kmsg.NewPtrApiVersionsRequest(), v, 1).(*kmsg.ApiVersionsResponse)
		if av.ErrorCode != 0 || len(av.ApiKeys) != len(apis) {
			t.Fatalf("ApiVersions v%d: %+v", v, av)
		}
		for _, k := range av.ApiKeys {
			a := lookupAPI(k.ApiKey)
			wantMin := a.min
			if k.ApiKey == produceKey {
				wantMin = 0
				if a.min != proto.ProduceVersionMin || k.MaxVersion != proto.ProduceVersionMax {
					t.Fatalf("Produce served from v%d, listed up to v%d", a.min, k.MaxVersion)
				}
			}
			if k.MinVersion != wantMin || k.MaxVersion != a.advertisedMax() {
				t.Fatalf("ApiVersions v%d lists %s as %d..%d, want %d..%d",
					v, kmsg.NameForKey(k.ApiKey), k.MinVersion, k.MaxVersion, wantMin, a.advertisedMax())
			}
		}
	}
	for v := int16(0); v < proto.ProduceVersionMin; v++ {
		for _, acks := range []int16{1, 0} {
			t.Run(fmt.Sprintf("v%d/acks=%d", v, acks), func(t *testing.T) {
				c := dial(t, s)
				roundTrip(t, c, kmsg.NewPtrApiVersionsRequest(), 3, 1)
				wire := frameRequest(produceReq("old", 0, acks, batch(2, "old", -1, -1, -1)), v, 2)
				wire = append(wire, frameRequest(kmsg.NewPtrApiVersionsRequest(), 3, 3)...)
				if _, err := c.Write(wire); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := io.ReadFull(c, make([]byte, 1))
				if n != 0 || err == nil {
					t.Fatal("answered")
				}
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("connection still open")
				}
			})
		}
	}
	c := dial(t, s)
	resp := roundTrip(t, c, fetchReq("old", 0, 0, 1<<20, 0, 0), proto.FetchVersionTopicIDs-1, 9).(*kmsg.FetchResponse)
	if fp := resp.Topics[0].Partitions[0]; fp.ErrorCode != 0 || fp.HighWatermark != 0 || len(fp.RecordBatches) != 0 {
		t.Fatalf("a refused produce left records: %+v", fp)
	}
	checkServes(t, s)
}

func TestProduceErrors(t *testing.T) {
	s := startServer(t, Config{})
	if err := s.BecomeLeader("t", 0, 0, 1, 2); err != nil { // min.insync.replicas 2 > ISR 1
		t.Fatal(err)
	}
	c := dial(t, s)
	good := batch(2, "g", -1, -1, -1)
	corrupt := append([]byte(nil), good...)
	corrupt[len(corrupt)-1] ^= 1
	badMagic := append([]byte(nil), good...)
	badMagic[16] = 1
	for _, tc := range []struct {
		name    string
		topic   string
		part    int32
		acks    int16
		records []byte
		want    int16
	}{
		{"unknown topic", "nope", 0, 1, good, kerr.UnknownTopicOrPartition.Code},
		{"unknown partition", "t", 7, 1, good, kerr.UnknownTopicOrPartition.Code},
		{"bad acks", "t", 0, 2, good, kerr.InvalidRequiredAcks.Code},
		{"not enough replicas", "t", 0, -1, good, kerr.NotEnoughReplicas.Code},
		{"bad CRC", "t", 0, 1, corrupt, kerr.CorruptMessage.Code},
		{"wrong magic", "t", 0, 1, badMagic, kerr.CorruptMessage.Code},
		{"truncated", "t", 0, 1, good[:len(good)-5], kerr.CorruptMessage.Code},
		{"too large", "t", 0, 1, batch(1, string(make([]byte, 2<<20)), -1, -1, -1), kerr.MessageTooLarge.Code},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if rp := produce(t, c, 7, tc.topic, tc.part, tc.acks, tc.records); rp.ErrorCode != tc.want {
				t.Fatalf("error %d (%v), want %d", rp.ErrorCode, kerr.ErrorForCode(rp.ErrorCode), tc.want)
			}
		})
	}
	if rp := produce(t, c, 7, "t", 0, 1, good); rp.ErrorCode != 0 || rp.BaseOffset != 0 {
		t.Fatalf("good produce after bad ones: %+v", rp)
	}
}

// TestIdempotentProducer: the idempotent-producer answers reach the client, across a
// restart. The rules themselves are replica's (its TestProducerStateRules and
// TestLeaderAppend).
func TestIdempotentProducer(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, Config{DataDir: dir})
	if err := s.BecomeLeader("idem", 0, 0, 1, 1); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	b0 := batch(3, "a", 42, 0, 0)
	if rp := produce(t, c, 7, "idem", 0, -1, b0); rp.ErrorCode != 0 || rp.BaseOffset != 0 {
		t.Fatalf("first: %+v", rp)
	}
	if rp := produce(t, c, 7, "idem", 0, -1, batch(3, "a", 42, 0, 0)); rp.ErrorCode != 0 || rp.BaseOffset != 0 {
		t.Fatalf("retry must answer the original offset: %+v", rp)
	}
	if rp := produce(t, c, 7, "idem", 0, -1, batch(2, "b", 42, 0, 5)); rp.ErrorCode != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("gap: %+v", rp)
	}
	if rp := produce(t, c, 7, "idem", 0, -1, batch(2, "b", 42, 0, 3)); rp.ErrorCode != 0 || rp.BaseOffset != 3 {
		t.Fatalf("next: %+v", rp)
	}
	// The producer state is rebuilt from the log: a retry after a restart is still a
	// duplicate.
	s2 := restart(t, s, dir)
	if err := s2.BecomeLeader("idem", 0, 1, 1, 1); err != nil {
		t.Fatal(err)
	}
	c2 := dial(t, s2)
	if rp := produce(t, c2, 7, "idem", 0, -1, batch(2, "b", 42, 0, 3)); rp.ErrorCode != 0 || rp.BaseOffset != 3 {
		t.Fatalf("retry after restart: %+v", rp)
	}
	if rp := produce(t, c2, 7, "idem", 0, -1, batch(1, "d", 42, 0, 5)); rp.ErrorCode != 0 || rp.BaseOffset != 5 {
		t.Fatalf("next after restart: %+v", rp)
	}
}

// restart stops s and starts a new server on the same data directory.
func restart(t *testing.T, s *Server, dir string) *Server {
	t.Helper()
	ctx, cancel := contextWithTimeout(10 * time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	return startServer(t, Config{DataDir: dir})
}

// TestFetchLongPoll: a fetch with min_bytes parks until a produce on another connection
// brings data, and one that nothing satisfies answers empty at max_wait.
func TestFetchLongPoll(t *testing.T) {
	s := startServer(t, Config{})
	if err := s.BecomeLeader("lp", 0, 0, 1, 1); err != nil {
		t.Fatal(err)
	}
	consumer, producer := dial(t, s), dial(t, s)
	start := time.Now()
	longPoll := fetchReq("lp", 0, 0, 1<<20, 1, 10_000)
	if _, err := consumer.Write(frameRequest(longPoll, 11, 9)); err != nil {
		t.Fatal(err)
	}
	// The fetch parks in the purgatory (and shows in its size gauge) until data comes.
	deadline := time.Now().Add(5 * time.Second)
	for s.metrics.fetchWaiting.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("fetch never parked")
		}
		time.Sleep(5 * time.Millisecond)
	}
	b := batch(2, "wake", -1, -1, -1)
	if rp := produce(t, producer, 7, "lp", 0, 1, b); rp.ErrorCode != 0 {
		t.Fatal(rp)
	}
	resp := readAnswer(t, consumer, longPoll, 9).(*kmsg.FetchResponse)
	if fp := resp.Topics[0].Partitions[0]; len(fp.RecordBatches) != len(b) {
		t.Fatalf("woken fetch: %d bytes", len(fp.RecordBatches))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("long poll answered after %v", d)
	}
	if n := s.metrics.fetchWaiting.Load(); n != 0 {
		t.Fatalf("fetch purgatory size %d after the answer", n)
	}
	start = time.Now()
	resp = roundTrip(t, consumer, fetchReq("lp", 0, 2, 1<<20, 1, 300), 11, 10).(*kmsg.FetchResponse)
	if len(resp.Topics) != 1 {
		t.Fatalf("expired long poll answer: %+v", resp)
	}
	if fp := resp.Topics[0].Partitions[0]; fp.ErrorCode != 0 || len(fp.RecordBatches) != 0 || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("expired long poll: %+v after %v", fp, time.Since(start))
	}
}

func TestListOffsets(t *testing.T) {
	s := startServer(t, Config{})
	if err := s.BecomeLeader("lo", 0, 2, 1, 1); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	base := time.Now().UnixMilli()
	for i := range 5 {
		recs := []proto.Record{{Value: []byte("x")}, {TimestampDelta: 5, Value: []byte("y")}}
		b := proto.AppendRecordBatch(nil, proto.RecordBatchHeader{BaseTimestamp: base + int64(100*i), ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1}, recs)
		if rp := produce(t, c, 7, "lo", 0, 1, b); rp.ErrorCode != 0 {
			t.Fatal(rp)
		}
	}
	for v := int16(1); v <= 5; v++ {
		for _, tc := range []struct {
			ts, offset, recTs int64
		}{
			{-2, 0, -1}, {-1, 10, -1}, {base + 203, 5, base + 205}, {base + 100, 2, base + 100}, {base + 10_000, -1, -1},
		} {
			req := kmsg.NewPtrListOffsetsRequest()
			req.ReplicaID = -1
			rt := kmsg.NewListOffsetsRequestTopic()
			rt.Topic = "lo"
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Timestamp = tc.ts
			rt.Partitions = append(rt.Partitions, rp)
			req.Topics = append(req.Topics, rt)
			resp := roundTrip(t, c, req, v, 3).(*kmsg.ListOffsetsResponse)
			got := resp.Topics[0].Partitions[0]
			if got.ErrorCode != 0 || got.Offset != tc.offset || (tc.recTs >= 0 && got.Timestamp != tc.recTs) {
				t.Fatalf("v%d ts %d: %+v, want offset %d ts %d", v, tc.ts, got, tc.offset, tc.recTs)
			}
			if v >= 4 && got.LeaderEpoch != 2 {
				t.Fatalf("v%d leader epoch %d", v, got.LeaderEpoch)
			}
		}
	}
}

// TestSlowAndStalledConsumers: a consumer that does not read holds no event loop: a fast
// consumer on the same node is served meanwhile, and the stalled one is cut at the write
// deadline.
func TestSlowAndStalledConsumers(t *testing.T) {
	s := startServer(t, Config{WriteTimeout: time.Second, EventLoops: 1})
	if err := s.BecomeLeader("big", 0, 0, 1, 1); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	for i := range 40 {
		if rp := produce(t, c, 7, "big", 0, 1, batch(1, string(bytes.Repeat([]byte{byte(i)}, 400<<10)), -1, -1, -1)); rp.ErrorCode != 0 {
			t.Fatal(rp)
		}
	}
	fast := dial(t, s)
	roundTrip(t, fast, kmsg.NewPtrApiVersionsRequest(), 3, 77) // the node has accepted it
	fdsBefore := openFDs(t)
	stalled := dial(t, s)
	if tc, ok := stalled.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	if _, err := stalled.Write(frameRequest(fetchReq("big", 0, 0, 64<<20, 1, 0), 11, 1)); err != nil {
		t.Fatal(err)
	}
	// The fast consumer on the same (single) event loop is answered while the stalled
	// one's response is parked.
	for i := range 3 {
		resp := roundTrip(t, fast, fetchReq("big", 0, int64(i), 1<<20, 1, 0), 11, int32(i)).(*kmsg.FetchResponse)
		if fp := resp.Topics[0].Partitions[0]; fp.ErrorCode != 0 || len(fp.RecordBatches) == 0 {
			t.Fatalf("fast consumer: %+v", fp)
		}
	}
	// Without reading from the stalled connection (reading would unstall it), wait for
	// the node to drop it: three connections remain open (c, fast and the next check).
	deadline := time.Now().Add(10 * time.Second)
	for s.nconns.Load() > 2 {
		if time.Now().After(deadline) {
			t.Fatal("stalled consumer not cut at the write deadline")
		}
		time.Sleep(10 * time.Millisecond)
	}
	expectClosed(t, stalled)
	stalled.Close()
	// No descriptor outlives the stalled connection: its socket and the parked writer's
	// duplicate are closed.
	deadline = time.Now().Add(5 * time.Second)
	for openFDs(t) > fdsBefore {
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open, %d before the stalled consumer:\n%s", openFDs(t), fdsBefore, listFDs())
		}
		time.Sleep(10 * time.Millisecond)
	}
	checkServes(t, s)
}

func listFDs() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out = append(out, e.Name()+" → "+target)
	}
	return strings.Join(out, "\n")
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestZeroCopyShare fetches more than 64 MiB and checks that (nearly) all of it went out
// by sendfile, counted under gregor_fetch_bytes_total{path="sendfile"}.
func TestZeroCopyShare(t *testing.T) {
	s := startServer(t, Config{})
	if err := s.BecomeLeader("zc", 0, 0, 1, 1); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	value := bytes.Repeat([]byte("z"), 900<<10)
	for range 80 { // 80 × ~900 KiB ≈ 70 MiB
		recs := []proto.Record{{Value: value}}
		b := proto.AppendRecordBatch(nil, proto.RecordBatchHeader{BaseTimestamp: time.Now().UnixMilli(), ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1}, recs)
		if rp := produce(t, c, 7, "zc", 0, 1, b); rp.ErrorCode != 0 {
			t.Fatal(rp)
		}
	}
	before := s.fetchCounters.Sendfile.Load()
	var fetched int64
	for off := int64(0); off < 80; {
		resp := roundTrip(t, c, fetchReq("zc", 0, off, 8<<20, 1, 0), 11, int32(off)).(*kmsg.FetchResponse)
		fp := resp.Topics[0].Partitions[0]
		if fp.ErrorCode != 0 || len(fp.RecordBatches) == 0 {
			t.Fatalf("fetch at %d: %+v", off, fp)
		}
		fetched += int64(len(fp.RecordBatches))
		for b := fp.RecordBatches; len(b) > 0; {
			h, err := proto.ValidateRecordBatch(b, len(b))
			if err != nil {
				t.Fatalf("fetched a bad batch: %v", err)
			}
			off = h.NextOffset()
			b = b[h.Size():]
		}
	}
	sent := s.fetchCounters.Sendfile.Load() - before
	if fetched < 64<<20 || float64(sent) < 0.99*float64(fetched) || s.fetchCounters.Copied.Load() != 0 {
		t.Fatalf("fetched %d bytes, %d by sendfile, %d copied", fetched, sent, s.fetchCounters.Copied.Load())
	}
	rec := httptest.NewRecorder()
	s.HTTPHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), fmt.Sprintf(`gregor_fetch_bytes_total{path="sendfile"} %d`, s.fetchCounters.Sendfile.Load())) {
		t.Fatalf("metric does not show the sendfile bytes:\n%s", rec.Body.String())
	}
}

// TestGarbageBodiesCloseTheConnection sends well-framed requests with bodies that lie —
// array counts far beyond the bytes, negative lengths, varints longer than 5 bytes,
// trailing garbage — for every API; each closes its connection or gets an error code,
// and the node keeps serving.
func TestGarbageBodiesCloseTheConnection(t *testing.T) {
	s := startServer(t, Config{})
	if err := s.BecomeLeader("g", 0, 0, 1, 1); err != nil {
		t.Fatal(err)
	}
	bodies := [][]byte{
		{0x7f, 0xff, 0xff, 0xff},                         // an array count of 2^31-1
		{0xff, 0xff, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe}, // negative lengths
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},       // an over-long varint
		bytes.Repeat([]byte{0xee}, 300),                  // garbage
	}
	for _, a := range apis {
		for i, body := range bodies {
			t.Run(fmt.Sprintf("%s/%d", kmsg.NameForKey(a.key), i), func(t *testing.T) {
				c := dial(t, s)
				req := kmsg.RequestForKey(a.key)
				frame := frameRequest(req, a.max, 5)
				hdr, err := proto.ParseRequestHeader(frame[4:])
				if err != nil {
					t.Fatal(err)
				}
				frame = append(frame[:4+hdr.Size], body...)
				binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
				if _, err := c.Write(frame); err != nil {
					t.Fatal(err)
				}
				// Either the connection closes, or an answer with the right correlation id
				// arrives; never a hang or a crash.
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				var size [4]byte
				if _, err := io.ReadFull(c, size[:]); err == nil {
					rest := make([]byte, binary.BigEndian.Uint32(size[:]))
					if _, err := io.ReadFull(c, rest); err != nil || binary.BigEndian.Uint32(rest) != 5 {
						t.Fatalf("answer to garbage: err %v", err)
					}
				} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("no answer and no close")
				}
			})
		}
	}
	checkServes(t, s)
}

// TestBadHeadersAndBatches covers the rest of the bad input a node must survive, at the
// request level: a version above the maximum closes the connection; a flexible request
// whose header lacks its tag buffer, or a non-flexible one that carries one, closes it or
// is refused; an unknown compression codec gets its code (stale producer epochs and
// out-of-order sequences: TestIdempotentProducer).
func TestBadHeadersAndBatches(t *testing.T) {
	s := startServer(t, Config{})
	if err := s.BecomeLeader("b", 0, 0, 1, 1); err != nil {
		t.Fatal(err)
	}
	t.Run("version above the maximum", func(t *testing.T) {
		c := dial(t, s)
		frame := frameRequest(kmsg.NewPtrMetadataRequest(), 8, 1)
		binary.BigEndian.PutUint16(frame[6:], 13)
		if _, err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, c)
	})
	t.Run("flexible version without a tag buffer", func(t *testing.T) {
		c := dial(t, s)
		// ApiVersions v3 is flexible; cut the header's tag buffer and the body's.
		frame := frameRequest(kmsg.NewPtrApiVersionsRequest(), 3, 1)
		hdr, _ := proto.ParseRequestHeader(frame[4:])
		frame = frame[:4+hdr.Size-1]
		binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
		if _, err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, c)
	})
	t.Run("non-flexible version with a tag buffer", func(t *testing.T) {
		c := dial(t, s)
		frame := frameRequest(kmsg.NewPtrMetadataRequest(), 8, 1)
		hdr, _ := proto.ParseRequestHeader(frame[4:])
		frame = append(frame[:4+hdr.Size], append([]byte{0}, frame[4+hdr.Size:]...)...)
		binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
		if _, err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, c)
	})
	t.Run("unknown codec", func(t *testing.T) {
		c := dial(t, s)
		b := batch(1, "codec", -1, -1, -1)
		b[22] |= 7
		proto.SealRecordBatch(b)
		if rp := produce(t, c, 7, "b", 0, 1, b); rp.ErrorCode != kerr.UnsupportedCompressionType.Code {
			t.Fatalf("unknown codec: %+v", rp)
		}
	})
	checkServes(t, s)
}

// TestPipelinedProducesShareOneAppend: produce requests for one partition that arrive
// together are appended with one write, and each is answered with its own offsets, in
// order — acks=0 ones included (no answer, but their records land).
func TestPipelinedProducesShareOneAppend(t *testing.T) {
	s := startServer(t, Config{})
	if err := s.BecomeLeader("co", 0, 0, 1, 1); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	var wire []byte
	for i := range 10 {
		acks := int16(1)
		if i == 4 {
			acks = 0
		}
		wire = append(wire, frameRequest(produceReq("co", 0, acks, batch(2, fmt.Sprint(i), -1, -1, -1)), 7, int32(i))...)
	}
	before := s.metrics.appends.Get()
	if _, err := c.Write(wire); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if i == 4 {
			continue
		}
		req := produceReq("co", 0, 1, nil)
		req.SetVersion(7)
		resp := readAnswer(t, c, req, int32(i)).(*kmsg.ProduceResponse)
		if rp := resp.Topics[0].Partitions[0]; rp.ErrorCode != 0 || rp.BaseOffset != int64(2*i) {
			t.Fatalf("request %d: %+v", i, rp)
		}
	}
	if appends := s.metrics.appends.Get() - before; appends >= 10 || appends == 0 {
		t.Fatalf("%d appends for 10 pipelined requests", appends)
	}
	resp := roundTrip(t, c, fetchReq("co", 0, 0, 1<<20, 1, 0), 11, 99).(*kmsg.FetchResponse)
	n := 0
	for b := resp.Topics[0].Partitions[0].RecordBatches; len(b) > 0; n++ {
		h, err := proto.ValidateRecordBatch(b, len(b))
		if err != nil || h.BaseOffset != int64(2*n) {
			t.Fatalf("batch %d: %+v %v", n, h, err)
		}
		b = b[h.Size():]
	}
	if n != 10 {
		t.Fatalf("%d batches in the log, want 10", n)
	}
}

// TestPipelinedIdempotentBatches: sequence checks within one coalesced pass see the
// batches staged before them — a retry in the same pass is a duplicate, a gap is refused.
func TestPipelinedIdempotentBatches(t *testing.T) {
	s := startServer(t, Config{})
	if err := s.BecomeLeader("pi", 0, 0, 1, 1); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	seqs := []int32{0, 2, 2, 7, 4}
	var wire []byte
	for i, seq := range seqs {
		wire = append(wire, frameRequest(produceReq("pi", 0, -1, batch(2, "x", 9, 0, seq)), 7, int32(i))...)
	}
	if _, err := c.Write(wire); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		code   int16
		offset int64
	}{{0, 0}, {0, 2}, {0, 2}, {kerr.OutOfOrderSequenceNumber.Code, -1}, {0, 4}}
	for i := range seqs {
		req := produceReq("pi", 0, -1, nil)
		req.SetVersion(7)
		rp := readAnswer(t, c, req, int32(i)).(*kmsg.ProduceResponse).Topics[0].Partitions[0]
		if rp.ErrorCode != want[i].code || (want[i].code == 0 && rp.BaseOffset != want[i].offset) {
			t.Fatalf("request %d (seq %d): %+v, want %+v", i, seqs[i], rp, want[i])
		}
	}
	if leo := s.replicas.Partition("pi", 0).Log().LogEndOffset(); leo != 6 {
		t.Fatalf("log end offset %d, want 6 (three batches of two)", leo)
	}
}

// TestFencedLeaderAcknowledgesNothing: once the node's lease may have expired (its
// registration's safe-until time has passed), produce answers NOT_LEADER_OR_FOLLOWER and
// nothing is appended; once renewed, produce works again.
func TestFencedLeaderAcknowledgesNothing(t *testing.T) {
	var safeUntil atomic.Int64
	safeUntil.Store(time.Now().Add(time.Hour).UnixNano())
	s := startServer(t, Config{LeaseSafeUntil: func() time.Time { return time.Unix(0, safeUntil.Load()) }})
	if err := s.BecomeLeader("f", 0, 0, 1, 1); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	if rp := produce(t, c, 7, "f", 0, -1, batch(1, "a", -1, -1, -1)); rp.ErrorCode != 0 {
		t.Fatalf("before the fence: %+v", rp)
	}
	safeUntil.Store(time.Now().Add(-time.Millisecond).UnixNano())
	if rp := produce(t, c, 7, "f", 0, -1, batch(1, "b", -1, -1, -1)); rp.ErrorCode != kerr.NotLeaderForPartition.Code {
		t.Fatalf("fenced: %+v", rp)
	}
	if leo := s.replicas.Partition("f", 0).Log().LogEndOffset(); leo != 1 {
		t.Fatalf("a fenced produce was appended: log end offset %d", leo)
	}
	safeUntil.Store(time.Now().Add(time.Hour).UnixNano())
	if rp := produce(t, c, 7, "f", 0, -1, batch(1, "c", -1, -1, -1)); rp.ErrorCode != 0 || rp.BaseOffset != 1 {
		t.Fatalf("after renewal: %+v", rp)
	}
}
