package segment

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/proto"
	"golang.org/x/sys/unix"
)

// makeBatch builds an uncompressed batch of n records whose values are derived from tag,
// each value size bytes, with base timestamp ts.
func makeBatch(tag string, n, size int, ts int64) []byte {
	recs := make([]proto.Record, n)
	for i := range recs {
		v := bytes.Repeat([]byte{byte('a' + i%26)}, size)
		copy(v, fmt.Sprintf("%s/%d", tag, i))
		recs[i] = proto.Record{TimestampDelta: int64(i), Key: []byte(tag), Value: v}
	}
	return proto.AppendRecordBatch(nil, proto.RecordBatchHeader{BaseTimestamp: ts, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1}, recs)
}

// testConfig is a small-segment configuration with a fixed clock.
func testConfig(clock *testClock) Config {
	return Config{
		SegmentBytes:       64 << 10,
		IndexIntervalBytes: 512,
		IndexMaxBytes:      4 << 10,
		MaxBatchBytes:      1 << 20,
		RetentionAge:       -1,
		Now:                clock.Now,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// testClock is an injectable clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.UnixMilli(1_700_000_000_000)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *testClock) Ms() int64 { return c.Now().UnixMilli() }

func openLog(t testing.TB, dir string, cfg Config) *Log {
	t.Helper()
	l, err := Open(dir, cfg)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	return l
}

func mustAppend(t testing.TB, l *Log, b []byte, epoch int32) AppendInfo {
	t.Helper()
	info, err := l.Append(b, epoch)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return info
}

// readAll reads the whole log below upperBound through Read and returns the batches.
func readAll(t testing.TB, l *Log, from, upperBound int64) [][]byte {
	t.Helper()
	var out [][]byte
	for from < upperBound {
		regions, err := l.Read(nil, from, 1<<20, upperBound, true)
		if err != nil {
			t.Fatalf("read at %d: %v", from, err)
		}
		if len(regions) == 0 {
			break
		}
		for _, r := range regions {
			out = append(out, splitBatches(t, readRegion(t, r))...)
			from = r.NextOffset
		}
		ReleaseRegions(regions)
	}
	return out
}

func readRegion(t testing.TB, r Region) []byte {
	t.Helper()
	b := make([]byte, r.Length)
	n, err := preadFull(r.File.Fd(), b, r.Position)
	if err != nil || int64(n) != r.Length {
		t.Fatalf("pread region %+v: n=%d err=%v", r, n, err)
	}
	return b
}

func splitBatches(t testing.TB, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		h, err := proto.ValidateRecordBatch(b, len(b))
		if err != nil {
			t.Fatalf("region holds a bad batch: %v", err)
		}
		out = append(out, b[:h.Size()])
		b = b[h.Size():]
	}
	return out
}

func baseOffsetOf(b []byte) int64 { return int64(binary.BigEndian.Uint64(b)) }

// crash abandons the log as a killed process would: no flush, no trim, no marker. The
// page cache keeps what was written, as after SIGKILL.
func (l *Log) crash() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	l.bg.Wait()
	for _, s := range l.segments {
		_ = unix.Munmap(s.offsetIndex.data)
		_ = unix.Munmap(s.timeIndex.data)
		_ = unix.Close(s.offsetIndex.fd)
		_ = unix.Close(s.timeIndex.fd)
		_ = s.txnIndex.close()
		s.file.release()
	}
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}
