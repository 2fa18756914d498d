package replica

import (
	"math"
	"testing"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kerr"
)

// hdr is the header of a batch of records records from producer pid at epoch, with
// sequences from seq, written at offset.
func hdr(pid int64, epoch int16, seq int32, records int32, offset int64) proto.RecordBatchHeader {
	return proto.RecordBatchHeader{BaseOffset: offset, ProducerID: pid, ProducerEpoch: epoch, BaseSequence: seq,
		LastOffsetDelta: records - 1, RecordCount: records}
}

// TestProducerStateRules: the KIP-98 rules, each as a history of batches written and one
// more batch checked against it.
func TestProducerStateRules(t *testing.T) {
	const pid = 42
	// five is a producer's history of five batches of two records, sequences 0-9 at
	// offsets 100-109.
	var five []proto.RecordBatchHeader
	for i := range int32(5) {
		five = append(five, hdr(pid, 0, 2*i, 2, 100+int64(2*i)))
	}
	// six adds a sixth batch (sequences 10-11): the first is no longer remembered.
	six := append(append([]proto.RecordBatchHeader(nil), five...), hdr(pid, 0, 10, 2, 110))
	for _, tc := range []struct {
		name     string
		history  []proto.RecordBatchHeader
		probe    proto.RecordBatchHeader
		code     int16
		dupFirst int64 // -1: not a duplicate
	}{
		{"not idempotent", five, hdr(-1, -1, -1, 3, 0), 0, -1},
		{"new producer from 0", nil, hdr(pid, 0, 0, 1, 0), 0, -1},
		{"new producer mid-sequence", nil, hdr(pid, 0, 7, 1, 0), kerr.UnknownProducerID.Code, -1},
		{"next sequence", five, hdr(pid, 0, 10, 1, 0), 0, -1},
		{"gap", five, hdr(pid, 0, 11, 1, 0), kerr.OutOfOrderSequenceNumber.Code, -1},
		{"sequence again but other length", five, hdr(pid, 0, 8, 1, 0), kerr.OutOfOrderSequenceNumber.Code, -1},
		{"retry of the last batch", five, hdr(pid, 0, 8, 2, 0), 0, 108},
		{"retry of the oldest kept batch", five, hdr(pid, 0, 0, 2, 0), 0, 100},
		{"retry of a forgotten batch", six, hdr(pid, 0, 0, 2, 0), kerr.OutOfOrderSequenceNumber.Code, -1},
		{"stale epoch", five, hdr(pid, -1, 10, 1, 0), kerr.InvalidProducerEpoch.Code, -1},
		{"new epoch from 0", five, hdr(pid, 1, 0, 1, 0), 0, -1},
		{"new epoch mid-sequence", five, hdr(pid, 1, 10, 1, 0), kerr.OutOfOrderSequenceNumber.Code, -1},
		{"other producer", five, hdr(pid+1, 0, 0, 1, 0), 0, -1},
		{"sequence wraps past MaxInt32", []proto.RecordBatchHeader{hdr(pid, 0, math.MaxInt32-1, 2, 0)}, hdr(pid, 0, 0, 1, 0), 0, -1},
		{"retry across the wrap", []proto.RecordBatchHeader{hdr(pid, 0, math.MaxInt32-1, 4, 7)}, hdr(pid, 0, math.MaxInt32-1, 4, 0), 0, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ps producerStates
			for i := range tc.history {
				ps.update(&tc.history[i], tc.history[i].BaseOffset)
			}
			dup, code := ps.check(&tc.probe)
			dupFirst := int64(-1)
			if dup != nil {
				dupFirst = dup.firstOffset
				if want := dup.firstOffset + int64(tc.probe.LastOffsetDelta); dup.lastOffset != want {
					t.Errorf("duplicate's last offset %d, want %d", dup.lastOffset, want)
				}
			}
			if code != tc.code || dupFirst != tc.dupFirst {
				t.Fatalf("check = (dup at %d, code %d), want (dup at %d, code %d)", dupFirst, code, tc.dupFirst, tc.code)
			}
		})
	}
}

// TestProducerStateNewEpochForgets: a batch of a new epoch starts the producer's history
// afresh, so a retry of the old epoch's batch is refused, not answered as a duplicate.
func TestProducerStateNewEpochForgets(t *testing.T) {
	var ps producerStates
	old := hdr(1, 0, 0, 2, 0)
	ps.update(&old, 0)
	next := hdr(1, 1, 0, 1, 2)
	ps.update(&next, 2)
	if dup, code := ps.check(&old); dup != nil || code != kerr.InvalidProducerEpoch.Code {
		t.Fatalf("old epoch's retry: dup %v code %d", dup, code)
	}
	if dup, code := ps.check(&next); dup == nil || dup.firstOffset != 2 || code != 0 {
		t.Fatalf("new epoch's retry: dup %v code %d", dup, code)
	}
}

func TestAddSeq(t *testing.T) {
	for _, tc := range []struct{ seq, n, want int32 }{
		{0, 0, 0}, {0, 4, 4}, {math.MaxInt32, 1, 0}, {math.MaxInt32 - 1, 3, 1}, {math.MaxInt32, 0, math.MaxInt32},
	} {
		if got := addSeq(tc.seq, tc.n); got != tc.want {
			t.Errorf("addSeq(%d, %d) = %d, want %d", tc.seq, tc.n, got, tc.want)
		}
	}
}

// TestCheckRecords: the rules over one request's records, which may hold several
// batches.
func TestCheckRecords(t *testing.T) {
	var ps producerStates
	first := testBatch(hdr(9, 0, 0, 2, 0))
	h, _ := proto.ParseRecordBatchHeader(first)
	ps.update(&h, 40)
	for _, tc := range []struct {
		name     string
		records  []byte
		code     int16
		dupFirst int64
	}{
		{"new batches of two producers", concat(testBatch(hdr(9, 0, 2, 1, 0)), testBatch(hdr(8, 0, 0, 1, 0))), 0, -1},
		// Each batch is checked against the state before the request (clients send one
		// batch per partition and request), so a producer's second batch is a gap.
		{"two new batches of one producer", concat(testBatch(hdr(9, 0, 2, 1, 0)), testBatch(hdr(9, 0, 3, 1, 0))), kerr.OutOfOrderSequenceNumber.Code, -1},
		{"a retry alone", first, 0, 40},
		{"a retry beside a new batch", concat(first, testBatch(hdr(9, 0, 2, 1, 0))), kerr.OutOfOrderSequenceNumber.Code, -1},
		{"a refused batch refuses all", concat(testBatch(hdr(-1, -1, -1, 1, 0)), testBatch(hdr(9, 0, 5, 1, 0))), kerr.OutOfOrderSequenceNumber.Code, -1},
		{"a cut batch", first[:len(first)-1], kerr.CorruptMessage.Code, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, dupFirst, _ := ps.checkRecords(tc.records, 0)
			if code != tc.code || dupFirst != tc.dupFirst {
				t.Fatalf("checkRecords = (code %d, dup at %d), want (code %d, dup at %d)", code, dupFirst, tc.code, tc.dupFirst)
			}
		})
	}
}

// testBatch encodes a batch with h's producer fields, offset, leader epoch and record
// count.
func testBatch(h proto.RecordBatchHeader) []byte {
	recs := make([]proto.Record, h.RecordCount)
	for i := range recs {
		recs[i] = proto.Record{Value: []byte("v")}
	}
	return proto.AppendRecordBatch(nil, h, recs)
}

func concat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}
