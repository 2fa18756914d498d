package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
)

// Producer-state snapshots (Kafka's <offset>.snapshot files): the producer state as of
// an offset, so that a replica opening replays the log only from there, not from its
// start. One is written when an append rolled the log to a new segment (as Kafka takes
// one at each roll) and one when the log closes; the two newest are kept. A snapshot is
// used only at or below the offset the log's recovery scanned from (segment.Log's
// RecoveredFrom), because the replay from it also restores the aborted-transaction
// index entries a crash may have lost, and only if a batch starts exactly there. One
// above the log end (cut by a truncation or by recovery) is deleted.
//
// The file, <offset:020d>.producer-snapshot in the log's directory, is written whole and
// renamed into place (segment.WriteFileAtomic), big-endian:
//
//	magic "GPS\x01" · crc uint32 (CRC-32C of what follows) · offset int64 ·
//	producers int32 · [producerId int64 · epoch int16 · coordinatorEpoch int32 ·
//	  txnFirst int64 · lastTimestamp int64 · batches int8 (≤5) ·
//	  [firstSeq int32 · lastSeq int32 · firstOffset int64 · lastOffset int64] (oldest
//	  first)] ·
//	completed int32 · [producerId int64 · firstOffset int64 · markerOffset int64]

const (
	snapshotSuffix = ".producer-snapshot"
	snapshotMagic  = "GPS\x01"
	// maxSnapshotBytes bounds the file read at open: ten million producers.
	maxSnapshotBytes      = 1 << 30
	snapshotProducerBytes = 8 + 2 + 4 + 8 + 8 + 1
	snapshotBatchBytes    = 4 + 4 + 8 + 8
	snapshotCompleted     = 8 + 8 + 8
	snapshotsKept         = 2
)

var errBadSnapshot = errors.New("replica: bad producer snapshot")

func snapshotName(dir string, offset int64) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", offset, snapshotSuffix))
}

// encodeSnapshot encodes ps as of offset.
func encodeSnapshot(ps *producerStates, offset int64) []byte {
	b := make([]byte, 0, 4+4+8+4+len(ps.m)*(snapshotProducerBytes+2*snapshotBatchBytes)+4+len(ps.completed)*snapshotCompleted)
	b = append(b, snapshotMagic...)
	b = append(b, 0, 0, 0, 0) // crc
	b = binary.BigEndian.AppendUint64(b, uint64(offset))
	b = binary.BigEndian.AppendUint32(b, uint32(len(ps.m)))
	ids := make([]int64, 0, len(ps.m))
	for id := range ps.m {
		ids = append(ids, id)
	}
	slices.Sort(ids) // the same state, the same bytes
	for _, id := range ids {
		st := ps.m[id]
		b = binary.BigEndian.AppendUint64(b, uint64(id))
		b = binary.BigEndian.AppendUint16(b, uint16(st.epoch))
		b = binary.BigEndian.AppendUint32(b, uint32(st.coordinatorEpoch))
		b = binary.BigEndian.AppendUint64(b, uint64(st.txnFirst))
		b = binary.BigEndian.AppendUint64(b, uint64(st.lastTimestamp))
		b = append(b, byte(st.n))
		for i := range st.n {
			pb := &st.batches[(st.next-st.n+i+producerBatchesKept)%producerBatchesKept]
			b = binary.BigEndian.AppendUint32(b, uint32(pb.firstSeq))
			b = binary.BigEndian.AppendUint32(b, uint32(pb.lastSeq))
			b = binary.BigEndian.AppendUint64(b, uint64(pb.firstOffset))
			b = binary.BigEndian.AppendUint64(b, uint64(pb.lastOffset))
		}
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(ps.completed)))
	for _, c := range ps.completed {
		b = binary.BigEndian.AppendUint64(b, uint64(c.producerID))
		b = binary.BigEndian.AppendUint64(b, uint64(c.first))
		b = binary.BigEndian.AppendUint64(b, uint64(c.marker))
	}
	binary.BigEndian.PutUint32(b[4:], proto.CRC32C(0, b[8:]))
	return b
}

// decodeSnapshot decodes a snapshot's bytes into a producer state and its offset. Every
// count is checked against the bytes left before anything is allocated for it.
func decodeSnapshot(b []byte) (producerStates, int64, error) {
	var ps producerStates
	if len(b) < 8+8+4+4 || string(b[:4]) != snapshotMagic {
		return ps, 0, fmt.Errorf("%w: header", errBadSnapshot)
	}
	if binary.BigEndian.Uint32(b[4:]) != proto.CRC32C(0, b[8:]) {
		return ps, 0, fmt.Errorf("%w: checksum", errBadSnapshot)
	}
	offset := int64(binary.BigEndian.Uint64(b[8:]))
	n := int(binary.BigEndian.Uint32(b[16:]))
	b = b[20:]
	if offset < 0 || n < 0 || n > len(b)/snapshotProducerBytes {
		return ps, 0, fmt.Errorf("%w: offset %d, %d producers", errBadSnapshot, offset, n)
	}
	ps.m = make(map[int64]*producerState, n)
	prev := int64(-1) // ids ascend, as written
	for range n {
		if len(b) < snapshotProducerBytes {
			return ps, 0, fmt.Errorf("%w: producer truncated", errBadSnapshot)
		}
		id := int64(binary.BigEndian.Uint64(b))
		st := newProducerState(int16(binary.BigEndian.Uint16(b[8:])))
		st.coordinatorEpoch = int32(binary.BigEndian.Uint32(b[10:]))
		st.txnFirst = int64(binary.BigEndian.Uint64(b[14:]))
		st.lastTimestamp = int64(binary.BigEndian.Uint64(b[22:]))
		batches := int(b[30])
		b = b[snapshotProducerBytes:]
		if id <= prev || batches > producerBatchesKept || len(b) < batches*snapshotBatchBytes || st.txnFirst < -1 ||
			st.txnFirst >= offset {
			return ps, 0, fmt.Errorf("%w: producer %d", errBadSnapshot, id)
		}
		for range batches {
			st.add(producerBatch{
				firstSeq: int32(binary.BigEndian.Uint32(b)), lastSeq: int32(binary.BigEndian.Uint32(b[4:])),
				firstOffset: int64(binary.BigEndian.Uint64(b[8:])), lastOffset: int64(binary.BigEndian.Uint64(b[16:])),
			})
			b = b[snapshotBatchBytes:]
		}
		ps.m[id] = st
		prev = id
		if st.txnFirst >= 0 {
			if ps.ongoing == nil {
				ps.ongoing = map[int64]int64{}
			}
			ps.ongoing[id] = st.txnFirst
		}
	}
	if len(b) < 4 {
		return ps, 0, fmt.Errorf("%w: completed transactions truncated", errBadSnapshot)
	}
	c := int(binary.BigEndian.Uint32(b))
	b = b[4:]
	if c < 0 || c != len(b)/snapshotCompleted || len(b)%snapshotCompleted != 0 {
		return ps, 0, fmt.Errorf("%w: %d completed transactions in %d bytes", errBadSnapshot, c, len(b))
	}
	for range c {
		ct := completedTxn{producerID: int64(binary.BigEndian.Uint64(b)), first: int64(binary.BigEndian.Uint64(b[8:])),
			marker: int64(binary.BigEndian.Uint64(b[16:]))}
		if ct.first < 0 || ct.marker < ct.first || ct.marker >= offset {
			return ps, 0, fmt.Errorf("%w: completed transaction %+v", errBadSnapshot, ct)
		}
		ps.completed = append(ps.completed, ct)
		b = b[snapshotCompleted:]
	}
	ps.txnChanged = true
	return ps, offset, nil
}

// snapshotOffsets lists the offsets of the snapshots in dir, ascending.
func snapshotOffsets(dir string) []int64 {
	entries, _ := os.ReadDir(dir)
	var out []int64
	for _, e := range entries {
		stem, ok := strings.CutSuffix(e.Name(), snapshotSuffix)
		if !ok || len(stem) != 20 {
			continue
		}
		if off, err := strconv.ParseInt(stem, 10, 64); err == nil && off >= 0 {
			out = append(out, off)
		}
	}
	slices.Sort(out)
	return out
}

// removeSnapshotsAbove deletes the snapshots above offset (the log was cut there).
func removeSnapshotsAbove(dir string, offset int64) {
	for _, off := range snapshotOffsets(dir) {
		if off > offset {
			_ = os.Remove(snapshotName(dir, off))
		}
	}
}

// loadSnapshot returns the newest usable snapshot at or below limit, or false.
func (p *Partition) loadSnapshot(limit int64) (producerStates, int64, bool) {
	dir := p.log.Dir()
	offs := snapshotOffsets(dir)
	for i := len(offs) - 1; i >= 0; i-- {
		if offs[i] > limit {
			continue
		}
		path := snapshotName(dir, offs[i])
		b, err := readSnapshotFile(path)
		var ps producerStates
		var off int64
		if err == nil {
			ps, off, err = decodeSnapshot(b)
		}
		if err == nil && off != offs[i] {
			err = fmt.Errorf("%w: offset %d in %s", errBadSnapshot, off, path)
		}
		if err != nil {
			p.logger.Warn("producer snapshot unusable, deleting it", "path", path, "err", err)
			_ = os.Remove(path)
			continue
		}
		return ps, off, true
	}
	return producerStates{}, 0, false
}

func readSnapshotFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > maxSnapshotBytes {
		return nil, fmt.Errorf("%w: %d bytes", errBadSnapshot, st.Size())
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, err
	}
	return b, nil
}

// writeSnapshot writes the producer state as of the log end offset and deletes all but
// the newest snapshotsKept. The caller holds mu (the state and the log end do not move).
// With sync (at close) the file and its directory entry are fsynced before it returns;
// without (at a roll, on the append path) a goroutine flushes them, so that no produce
// waits for a disk flush: a snapshot a power loss takes is found torn (its checksum) or
// missing at the next open, which then takes an older one or replays the log.
func (p *Partition) writeSnapshot(sync bool) error {
	dir := p.log.Dir()
	offset := p.log.LogEndOffset()
	path, data := snapshotName(dir, offset), encodeSnapshot(&p.producers, offset)
	if sync {
		if err := segment.WriteFileAtomic(path, data); err != nil {
			return err
		}
	} else {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
		go flushSnapshot(path)
	}
	p.snapshotBase = p.log.ActiveBaseOffset()
	offs := snapshotOffsets(dir)
	for _, off := range offs[:max(len(offs)-snapshotsKept, 0)] {
		_ = os.Remove(snapshotName(dir, off))
	}
	return nil
}

// maybeSnapshot writes a snapshot after an append that landed in a segment other than
// the one the last snapshot saw (the log rolled). The caller holds mu.
func (p *Partition) maybeSnapshot(segmentBase int64) {
	if segmentBase == p.snapshotBase {
		return
	}
	if err := p.writeSnapshot(false); err != nil {
		p.logger.Warn("producer snapshot not written", "topic", p.Topic, "partition", p.Index, "err", err)
		p.snapshotBase = segmentBase // not again at every append: at the next roll
	}
}

// replayFrom replays the log from offset into ps and returns the aborted-transaction
// entries its markers make; ok is false if no batch starts at offset (then ps is
// unusable).
func replayFrom(ps *producerStates, log *segment.Log, offset int64) (aborted []segment.AbortedTxn, replayed int, ok bool, err error) {
	ok = true
	err = log.ScanProducerBatches(offset, func(h *proto.RecordBatchHeader, m proto.TxnMarker, merr error) bool {
		if replayed == 0 && h.BaseOffset != offset && offset > log.LogStartOffset() {
			ok = false
			return false
		}
		replayed++
		switch {
		case !h.IsControl():
			ps.update(h, h.BaseOffset)
		case merr == nil:
			if e, abort := ps.applyMarker(h.ProducerID, h.ProducerEpoch, m, h.BaseOffset); abort {
				aborted = append(aborted, e)
			}
		}
		return true
	})
	return aborted, replayed, ok, err
}

// flushSnapshot fsyncs a snapshot written without and its directory, off the append
// path. A snapshot deleted meanwhile (a newer one replaced it) needs nothing.
func flushSnapshot(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	_ = f.Sync()
	_ = f.Close()
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
