package segment

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/gregor-streaming/gregor/proto"
)

// benchBatch builds one batch of about size bytes from records of recordBytes.
func benchBatch(size, recordBytes int) []byte {
	n := max(size/(recordBytes+10), 1)
	recs := make([]proto.Record, n)
	v := make([]byte, recordBytes)
	for i := range v {
		v[i] = byte(i)
	}
	for i := range recs {
		recs[i] = proto.Record{Value: v}
	}
	return proto.AppendRecordBatch(nil, proto.RecordBatchHeader{BaseTimestamp: 1_700_000_000_000, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1}, recs)
}

func benchConfig() Config {
	return Config{
		SegmentBytes:  256 << 20,
		MaxBatchBytes: 2 << 20,
		RetentionAge:  -1,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// BenchmarkAppend measures Append of one batch per call into the page cache: validation
// (one CRC-32C), in-place offset assignment, one pwrite, index upkeep. Retention runs
// with the timer stopped every 512 MiB so the dirty set stays bounded.
func BenchmarkAppend(b *testing.B) {
	for _, bc := range []struct {
		name        string
		size, recSz int
	}{
		{"16KiB", 16 << 10, 1024},
		{"1MiB", 1 << 20, 1024},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l, err := Open(b.TempDir(), benchConfig())
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			batch := benchBatch(bc.size, bc.recSz)
			b.SetBytes(int64(len(batch)))
			b.ReportAllocs()
			var sinceRetention int
			for b.Loop() {
				if _, err := l.Append(batch, 0); err != nil {
					b.Fatal(err)
				}
				if sinceRetention += len(batch); sinceRetention > 512<<20 {
					b.StopTimer()
					if err := l.Roll(); err != nil {
						b.Fatal(err)
					}
					if err := l.TruncateFullyAndStartAt(l.LogEndOffset()); err != nil {
						b.Fatal(err)
					}
					sinceRetention = 0
					b.StartTimer()
				}
			}
		})
	}
}

// fillLog appends batches until the log holds about bytes.
func fillLog(b *testing.B, l *Log, bytes int64, batchSize int) {
	b.Helper()
	for l.Size() < bytes {
		if _, err := l.Append(benchBatch(batchSize, 100), 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOffsetIndexLookup measures one binary search of a full segment's offset index
// (1 GiB of log at one entry per 4 KiB: 262,144 entries).
func BenchmarkOffsetIndexLookup(b *testing.B) {
	dir := b.TempDir()
	const entries = 1 << 18
	x, err := openOffsetIndex(filepath.Join(dir, "x.index"), 1000, entries*offsetIndexEntrySize, true)
	if err != nil {
		b.Fatal(err)
	}
	defer x.close()
	for i := range entries {
		x.append(1000+int64(i)*40, int64(i)*4096)
	}
	b.ReportAllocs()
	var i int64
	for b.Loop() {
		target := 1000 + (i*7919)%(entries*40)
		if off, _ := x.lookup(target); off > target {
			b.Fatal("lookup past target")
		}
		i++
	}
}

// BenchmarkRead measures a fetch's storage work: find the batch holding a random offset
// (index lookup plus a header scan), bound the read by the high watermark and 1 MiB, and
// return the region — what the data plane then hands to sendfile.
func BenchmarkRead(b *testing.B) {
	l, err := Open(b.TempDir(), benchConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	fillLog(b, l, 64<<20, 16<<10)
	leo := l.LogEndOffset()
	regions := make([]Region, 0, 4)
	b.ReportAllocs()
	var i int64
	var bytes int64
	for b.Loop() {
		off := (i * 104729) % leo
		i++
		rs, err := l.Read(regions[:0], off, 1<<20, leo, true)
		if err != nil || len(rs) == 0 {
			b.Fatalf("read %d: %v", off, err)
		}
		for _, r := range rs {
			bytes += r.Length
		}
		ReleaseRegions(rs)
	}
	b.ReportMetric(float64(bytes)/float64(b.N), "region-bytes/op")
}

// BenchmarkRecoveryScan measures recovery after an unclean stop of a 1 GiB log with no
// recovery point: every batch read, CRC-checked and indexed. Bytes/s is the scan rate.
func BenchmarkRecoveryScan(b *testing.B) {
	if testing.Short() {
		b.Skip("writes 1 GiB")
	}
	dir := b.TempDir()
	cfg := benchConfig()
	l, err := Open(dir, cfg)
	if err != nil {
		b.Fatal(err)
	}
	fillLog(b, l, 1<<30, 64<<10)
	size := l.Size()
	l.crash()
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		if err := os.Remove(filepath.Join(dir, recoveryPointFile)); err != nil && !os.IsNotExist(err) {
			b.Fatal(err)
		}
		b.StartTimer()
		l, err := Open(dir, cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if l.Size() != size {
			b.Fatalf("recovered %d bytes of %d", l.Size(), size)
		}
		l.crash()
		b.StartTimer()
	}
}

// BenchmarkAppendSync measures fsync-before-acknowledge appends (Flush.Sync) of 4 KiB
// batches from several goroutines: group commit lets concurrent appends share one
// fdatasync. syncs/op below 1 is the sharing.
func BenchmarkAppendSync(b *testing.B) {
	for _, perCPU := range []int{1, 8} {
		b.Run(fmt.Sprintf("appenders=%d", perCPU*runtime.GOMAXPROCS(0)), func(b *testing.B) {
			cfg := benchConfig()
			cfg.Flush.Sync = true
			l, err := Open(b.TempDir(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			batch := benchBatch(4<<10, 100)
			b.SetBytes(int64(len(batch)))
			b.ReportAllocs()
			syncs := groupSyncs.Load()
			b.SetParallelism(perCPU)
			b.RunParallel(func(pb *testing.PB) {
				mine := append([]byte(nil), batch...)
				for pb.Next() {
					if _, err := l.Append(mine, 0); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(groupSyncs.Load()-syncs)/float64(b.N), "syncs/op")
		})
	}
}
