package drivers

import (
	"errors"
	"strings"
	"testing"

	"github.com/gregor-streaming/gregor/perf"
	"github.com/gregor-streaming/gregor/proto"
)

// TestWalkBatches: the raw consumer finds every value in place — with keys, headers and
// null values — skips records before the fetch offset, leaves a truncated last batch for
// the next fetch, and refuses compressed batches.
func TestWalkBatches(t *testing.T) {
	h := proto.RecordBatchHeader{BaseOffset: 10, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1}
	recs := []proto.Record{
		{Key: []byte("k0"), Value: []byte("v0")},
		{Value: nil, Headers: []proto.RecordHeader{{Key: "h", Value: []byte("x")}}},
		{Key: []byte("k2"), Value: []byte("value-two"), TimestampDelta: 300},
	}
	b := proto.AppendRecordBatch(nil, h, recs)
	h.BaseOffset = 13
	b = proto.AppendRecordBatch(b, h, recs[:1])
	full := len(b)
	b = proto.AppendRecordBatch(b, proto.RecordBatchHeader{BaseOffset: 14}, recs)
	b = b[:full+20] // the third batch is cut off by max bytes

	var got []string
	next, err := walkBatches(b, 11, func(v []byte) { got = append(got, string(v)) })
	if err != nil {
		t.Fatal(err)
	}
	if next != 14 {
		t.Errorf("next offset %d, want 14", next)
	}
	if strings.Join(got, ",") != ",value-two,v0" {
		t.Errorf("values %q", got)
	}

	h.Attributes = proto.CodecGzip
	c := proto.AppendRecordBatch(nil, h, recs[:1])
	if _, err := walkBatches(c, 0, func([]byte) {}); err == nil || !strings.Contains(err.Error(), "compressed") {
		t.Errorf("compressed batch: err = %v", err)
	}
}

// TestRawTemplate: every slot of the pre-encoded batch is where a record's value starts,
// so a stamp written there is what a consumer reads back.
func TestRawTemplate(t *testing.T) {
	w, err := perf.ParseWorkload([]byte("name: t\ntopics: 1\npartitionsPerTopic: 1\nmessageSize: 100\nproducersPerTopic: 1\ntestDurationSeconds: 1\nbatchSizeBytes: 4096\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := &rawProducer{}
	p.buildTemplate(w)
	if p.recordsPerBatch < 30 || len(p.template) > 4096 {
		t.Fatalf("%d records in %d bytes", p.recordsPerBatch, len(p.template))
	}
	buf := append([]byte(nil), p.template...)
	for i, s := range p.slots {
		perf.StampValue(buf[s:], int64(1000+i))
	}
	proto.SealRecordBatch(buf)
	if _, err := proto.ValidateRecordBatch(buf, len(buf)); err != nil {
		t.Fatal(err)
	}
	i := 0
	if _, err := walkBatches(buf, 0, func(v []byte) {
		if ts, _ := perf.ValueStamp(v); ts != int64(1000+i) || len(v) != 100 {
			t.Errorf("record %d: stamp %d, len %d", i, ts, len(v))
		}
		i++
	}); err != nil {
		t.Fatal(err)
	}
	if i != p.recordsPerBatch {
		t.Errorf("walked %d records of %d", i, p.recordsPerBatch)
	}
}

// TestRawPartialBatch: a partial batch is the template's prefix with its header patched,
// and is a valid batch of exactly the records stamped.
func TestRawPartialBatch(t *testing.T) {
	w, err := perf.ParseWorkload([]byte("name: t\ntopics: 1\npartitionsPerTopic: 1\nmessageSize: 64\nproducersPerTopic: 1\ntestDurationSeconds: 1\nbatchSizeBytes: 4096\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := &rawProducer{}
	p.buildTemplate(w)
	for _, n := range []int{1, 2, p.recordsPerBatch - 1, p.recordsPerBatch} {
		b := &rawBatch{buf: append([]byte(nil), p.template...)}
		for i := 0; i < n; i++ {
			perf.StampValue(b.buf[p.slots[i]:], int64(7+i))
			b.intended = append(b.intended, int64(7+i))
		}
		// What sendLocked does before writing.
		pt := &rawPartition{cur: b, conn: &rawConn{queue: make(chan rawInflight, 1)}}
		pt.conn.failed.Store(new(error))
		*pt.conn.failed.Load() = errTest
		_ = p.sendLocked(pt)
		h, err := proto.ValidateRecordBatch(b.out, len(b.out))
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if int(h.RecordCount) != n || h.LastOffsetDelta != int32(n-1) {
			t.Errorf("n=%d: header %+v", n, h)
		}
		var got []int64
		if _, err := walkBatches(b.out, 0, func(v []byte) { ts, _ := perf.ValueStamp(v); got = append(got, ts) }); err != nil {
			t.Fatal(err)
		}
		if len(got) != n || got[n-1] != int64(7+n-1) {
			t.Errorf("n=%d: walked %v", n, got)
		}
	}
}

var errTest = errors.New("test: not sent")
