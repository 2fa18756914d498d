package proto

import (
	"bytes"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestTxnMarkerBatch: a marker's control batch is what Kafka writes — attributes
// transactional|control, base sequence -1, one record whose key is version 0 and the
// type, whose value is version 0 and the coordinator epoch — and reads back.
func TestTxnMarkerBatch(t *testing.T) {
	for _, m := range []TxnMarker{{Commit: true, CoordinatorEpoch: 7}, {Commit: false, CoordinatorEpoch: 0x01020304}} {
		b := AppendTxnMarkerBatch(nil, 42, 3, m, 1234)
		h, err := ValidateRecordBatch(b, len(b))
		if err != nil || h.Size() != len(b) {
			t.Fatalf("%+v: %v", m, err)
		}
		var kb kmsg.RecordBatch
		if err := kb.ReadFrom(b); err != nil {
			t.Fatal(err)
		}
		if kb.Attributes != AttrTransactional|AttrControl || kb.ProducerID != 42 || kb.ProducerEpoch != 3 ||
			kb.FirstSequence != -1 || kb.NumRecords != 1 || kb.FirstTimestamp != 1234 {
			t.Fatalf("%+v: batch %+v", m, kb)
		}
		typ := byte(0)
		if m.Commit {
			typ = 1
		}
		key := []byte{0, 0, 0, typ}
		value := []byte{0, 0, byte(m.CoordinatorEpoch >> 24), byte(m.CoordinatorEpoch >> 16), byte(m.CoordinatorEpoch >> 8), byte(m.CoordinatorEpoch)}
		// One record: length, attributes, timestamp delta, offset delta, key, value,
		// no headers.
		rec := append([]byte{byte(2 * (1 + 1 + 1 + 1 + 4 + 1 + 6 + 1)), 0, 0, 0, 8}, key...)
		rec = append(append(rec, 12), value...)
		rec = append(rec, 0)
		if !bytes.Equal(kb.Records, rec) {
			t.Fatalf("%+v: record %x, want %x", m, kb.Records, rec)
		}
		got, err := ParseTxnMarker(b)
		if err != nil || got != m {
			t.Fatalf("ParseTxnMarker = %+v, %v; want %+v", got, err, m)
		}
	}
	data := AppendRecordBatch(nil, RecordBatchHeader{ProducerID: 1, BaseSequence: 0}, []Record{{Value: []byte("v")}})
	if _, err := ParseTxnMarker(data); !errors.Is(err, ErrMalformedMarker) {
		t.Fatalf("a data batch: %v", err)
	}
	ctl := AppendRecordBatch(nil, RecordBatchHeader{Attributes: AttrControl, BaseSequence: -1}, []Record{{Key: []byte{0, 0, 0, 5}, Value: make([]byte, 6)}})
	if _, err := ParseTxnMarker(ctl); !errors.Is(err, ErrMalformedMarker) {
		t.Fatalf("a control record of another type: %v", err)
	}
}

// FuzzParseTxnMarker: any bytes are read without a panic or a read past them; a marker
// read is one that, written again, reads the same.
func FuzzParseTxnMarker(f *testing.F) {
	f.Add(AppendTxnMarkerBatch(nil, 1, 0, TxnMarker{Commit: true, CoordinatorEpoch: 3}, 0))
	f.Add(AppendTxnMarkerBatch(nil, 9, 2, TxnMarker{CoordinatorEpoch: -1}, 99))
	short := AppendTxnMarkerBatch(nil, 1, 0, TxnMarker{}, 0)
	f.Add(short[:len(short)-3])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseTxnMarker(b)
		if err != nil {
			return
		}
		again, err := ParseTxnMarker(AppendTxnMarkerBatch(nil, 1, 0, m, 0))
		if err != nil || again != m {
			t.Fatalf("%+v written again reads %+v, %v", m, again, err)
		}
	})
}
