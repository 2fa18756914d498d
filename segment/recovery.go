package segment

import (
	"fmt"
	"sync/atomic"

	"github.com/gregor-streaming/gregor/proto"
	"golang.org/x/sys/unix"
)

// recoveryBufferBytes is the read size of the recovery scan: large sequential preads
// keep it near the page cache's copy speed. Batches larger than this are checked in
// pieces.
const recoveryBufferBytes = 1 << 20

// segmentScans counts full segment scans (recoveries and index rebuilds), so tests can
// show that a clean open scans nothing.
var segmentScans atomic.Int64

// recoveryReader reads a segment file sequentially for the recovery scan.
type recoveryReader struct {
	fd     int
	buf    []byte
	bufPos int64
	bufLen int
}

// view returns the n bytes at pos (n ≤ len(buf)), or fewer at end of file.
func (r *recoveryReader) view(pos int64, n int) ([]byte, error) {
	if pos < r.bufPos || pos+int64(n) > r.bufPos+int64(r.bufLen) {
		got, err := preadFull(r.fd, r.buf, pos)
		if err != nil {
			return nil, err
		}
		r.bufPos, r.bufLen = pos, got
	}
	start := int(pos - r.bufPos)
	end := min(start+n, r.bufLen)
	return r.buf[start:end], nil
}

// recoveryResult reports what a segment's recovery scan found.
type recoveryResult struct {
	validBytes int64  // bytes of whole, valid batches from the segment start
	cutBytes   int64  // bytes cut off after them
	reason     string // why the cut (empty when nothing was cut)
	batches    int
}

// recover validates every batch of the segment from its start — length, magic, CRC,
// record count, offsets increasing from prevNextOffset — rebuilds both indexes from them,
// and truncates the file at the first bad byte. It never trusts a length before checking
// it against the file size, so a corrupt length cannot make it allocate or read past
// the end.
func (s *LogSegment) recover(buf []byte, prevNextOffset int64, cfg *Config) (recoveryResult, error) {
	var res recoveryResult
	segmentScans.Add(1)
	s.offsetIndex.truncateEntries(0)
	s.timeIndex.truncateEntries(0)
	if err := s.offsetIndex.resize(cfg.IndexMaxBytes); err != nil {
		return res, err
	}
	if err := s.timeIndex.resize(cfg.IndexMaxBytes); err != nil {
		return res, err
	}
	s.nextOffset, s.maxTimestamp, s.offsetOfMaxTimestamp = s.baseOffset, -1, s.baseOffset
	s.bytesSinceIndexEntry = 0
	minOffset := max(s.baseOffset, prevNextOffset)

	rd := recoveryReader{fd: s.file.fd, buf: buf}
	var pos int64
	for pos < s.size {
		hb, err := rd.view(pos, proto.RecordBatchHeaderSize)
		if err != nil {
			return res, fmt.Errorf("segment: recover %s: %w", s.file.path, err)
		}
		reason := ""
		h, perr := proto.ParseRecordBatchHeader(hb)
		size := int64(h.Size())
		switch {
		case perr != nil:
			reason = perr.Error()
		case pos+size > s.size:
			reason = fmt.Sprintf("batch of %d bytes passes the end of the file", size)
		case h.BaseOffset < minOffset:
			reason = fmt.Sprintf("batch offset %d not above the previous %d", h.BaseOffset, minOffset-1)
		case !s.fitsOffsets(h.LastOffset()):
			reason = fmt.Sprintf("batch offset %d too far from the segment base", h.LastOffset())
		default:
			crc, err := rd.crc(pos+21, size-21)
			if err != nil {
				return res, fmt.Errorf("segment: recover %s: %w", s.file.path, err)
			}
			if crc != h.CRC {
				reason = "CRC mismatch"
			}
		}
		if reason != "" {
			res.reason = fmt.Sprintf("at byte %d: %s", pos, reason)
			break
		}
		s.trackBatch(&h, pos, int(size), cfg.IndexIntervalBytes)
		minOffset = h.NextOffset()
		res.batches++
		pos += size
	}
	res.validBytes = pos
	if pos < s.size {
		if err := unix.Ftruncate(s.file.fd, pos); err != nil {
			return res, fmt.Errorf("segment: truncate %s: %w", s.file.path, err)
		}
		if j := syncJournal; j != nil {
			j.truncated(s.file.path, pos)
		}
		res.cutBytes = s.size - pos
		s.size = pos
	}
	return res, s.trimTxnIndex()
}

// crc computes CRC-32C of n bytes at pos, reading in buffer-sized pieces.
func (r *recoveryReader) crc(pos, n int64) (uint32, error) {
	var crc uint32
	for n > 0 {
		chunk := int(min(n, int64(len(r.buf))))
		b, err := r.view(pos, chunk)
		if err != nil {
			return 0, err
		}
		if len(b) < chunk {
			return 0, fmt.Errorf("short read at %d", pos)
		}
		crc = proto.CRC32C(crc, b)
		pos += int64(chunk)
		n -= int64(chunk)
	}
	return crc, nil
}
