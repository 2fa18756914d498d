package workload

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kbin"

	"github.com/gregor-streaming/gregor/chaos/history"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
)

// hwCheckpointFile is a data-plane node's replication-offset-checkpoint, in its data
// directory: "0\n<n>\n" then n lines "<topic> <partition> <high watermark>".
const hwCheckpointFile = "replication-offset-checkpoint"

// ReadHighWatermarks reads the high-watermark checkpoint of a node's data directory
// (empty if it has none).
func ReadHighWatermarks(dataDir string) (map[string]map[int32]int64, error) {
	out := map[string]map[int32]int64{}
	b, err := os.ReadFile(filepath.Join(dataDir, hwCheckpointFile))
	if os.IsNotExist(err) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for i := 0; sc.Scan(); i++ {
		f := strings.Fields(sc.Text())
		if i < 2 || len(f) != 3 {
			continue
		}
		p, err1 := strconv.ParseInt(f[1], 10, 32)
		hw, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("workload: %s: bad line %q", hwCheckpointFile, sc.Text())
		}
		if out[f[0]] == nil {
			out[f[0]] = map[int32]int64{}
		}
		out[f[0]][int32(p)] = hw
	}
	return out, nil
}

// ReadReplicas reads node's replicas of the topics' partitions (topic → partition
// count) from its data directory, which no process may be using: each partition
// directory is copied to scratch (a directory of the caller's) and opened there with
// the storage engine, so that its recovery, if the node stopped uncleanly, leaves the
// node's files alone. A partition the node holds no directory of is skipped. Each log
// is read from its start to its end, with the high watermark of the node's checkpoint
// (-1 if absent).
func ReadReplicas(node int32, dataDir, scratch string, topics map[string]int32) ([]history.ReplicaLog, error) {
	hws, err := ReadHighWatermarks(dataDir)
	if err != nil {
		return nil, err
	}
	var out []history.ReplicaLog
	for topic, n := range topics {
		for p := range n {
			name := fmt.Sprintf("%s-%d", topic, p)
			src := filepath.Join(dataDir, name)
			if _, err := os.Stat(src); os.IsNotExist(err) {
				continue
			}
			dst := filepath.Join(scratch, fmt.Sprintf("node%d", node), name)
			if err := copyDir(src, dst); err != nil {
				return nil, err
			}
			recs, err := ReadLog(dst)
			if err != nil {
				return nil, fmt.Errorf("workload: node %d %s: %w", node, name, err)
			}
			hw := int64(-1)
			if v, ok := hws[topic][p]; ok {
				hw = v
			}
			out = append(out, history.ReplicaLog{Node: node, Topic: topic, Partition: p, HighWatermark: hw, Records: recs})
		}
	}
	return out, nil
}

// ReadLog opens the partition log in dir (which it may modify: recovery) and returns
// every record from the log start to the log end.
func ReadLog(dir string) ([]history.Record, error) {
	l, err := segment.Open(dir, segment.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	recs := []history.Record{}
	end := l.LogEndOffset()
	for off := l.LogStartOffset(); off < end; {
		regions, err := l.Read(nil, off, 4<<20, end, true)
		if err != nil {
			return nil, err
		}
		if len(regions) == 0 {
			break
		}
		for i := range regions {
			r := &regions[i]
			b := make([]byte, r.Length)
			f, err := os.Open(r.File.Path())
			if err == nil {
				_, err = f.ReadAt(b, r.Position)
				f.Close()
			}
			r.Release()
			if err != nil {
				segment.ReleaseRegions(regions)
				return nil, err
			}
			if recs, err = appendBatchRecords(recs, b); err != nil {
				segment.ReleaseRegions(regions)
				return nil, err
			}
			off = r.NextOffset
		}
	}
	return recs, nil
}

// appendBatchRecords decodes the records of the batches in b (control batches skipped).
func appendBatchRecords(recs []history.Record, b []byte) ([]history.Record, error) {
	for len(b) > 0 {
		h, err := proto.ParseRecordBatchHeader(b)
		if err != nil {
			return recs, err
		}
		if h.Size() > len(b) {
			return recs, proto.ErrBatchTruncated
		}
		batch := b[:h.Size()]
		b = b[h.Size():]
		if h.IsControl() {
			continue
		}
		raw, err := proto.DecompressRecords(h.Codec(), batch[proto.RecordBatchHeaderSize:], 64<<20)
		if err != nil {
			return recs, err
		}
		r := kbin.Reader{Src: raw}
		for i := int32(0); i < h.RecordCount; i++ {
			length := r.Varint()
			if !r.Ok() || length < 0 || int(length) > len(r.Src) {
				return recs, fmt.Errorf("%w: batch at %d record %d", proto.ErrMalformedRecords, h.BaseOffset, i)
			}
			rec := kbin.Reader{Src: r.Src[:length]}
			r.Src = r.Src[length:]
			rec.Int8()    // attributes
			rec.Varlong() // timestamp delta
			delta := rec.Varint()
			rec.VarintBytes() // key
			value := rec.VarintBytes()
			if !rec.Ok() {
				return recs, fmt.Errorf("%w: batch at %d record %d", proto.ErrMalformedRecords, h.BaseOffset, i)
			}
			hr := history.Record{Offset: h.BaseOffset + int64(delta), Value: string(value)}
			if h.ProducerID >= 0 {
				hr.Idempotent, hr.ProducerID, hr.ProducerEpoch = true, h.ProducerID, h.ProducerEpoch
			}
			recs = append(recs, hr)
		}
	}
	return recs, nil
}

// copyDir copies the regular files of src into dst (created).
func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// CopyTree copies the directory tree src into dst, regular files only (for keeping a
// failed run's data directories).
func CopyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			return copyFile(path, target)
		}
		return nil
	})
}
