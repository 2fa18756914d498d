package replica

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/gregor-streaming/gregor/segment"
)

// The high-watermark checkpoint file (Kafka's replication-offset-checkpoint), one per
// data directory:
//
//	<data-dir>/replication-offset-checkpoint   "0\n<n>\n" then n lines
//	                                           "<topic> <partition> <high watermark>"
//
// written whole to a temporary file, fsynced and renamed over the old one (then the
// directory is fsynced), so a crash leaves the old version or the new. It is written
// every few seconds by the data plane's upkeep (Manager.CheckpointHighWatermarks) and
// when the Manager closes, and read when a replica opens: without it a restarted leader
// whose ISR holds followers would start its high watermark at its log start and show
// consumers nothing until the followers fetched. Topic names hold no spaces (Kafka's
// legal characters), so the lines split on them.
const (
	hwCheckpointFile    = "replication-offset-checkpoint"
	hwCheckpointVersion = 0
	// hwCheckpointLinesMax bounds the file a node reads back (a corrupt count or file).
	hwCheckpointLinesMax = 1 << 20
)

// HighWatermarkHint is a high watermark from elsewhere than this node's own checkpoint
// (the control plane's, written by the partition's leader): the high watermark and the
// leader epoch it was recorded in.
type HighWatermarkHint struct {
	LeaderEpoch   int32
	HighWatermark int64
}

// restoredHighWatermark is the high watermark a replica opening on log starts with:
// its node's own checkpoint if it has one, else the hint (the control plane's
// checkpoint) if the log holds a batch of the hint's leader epoch or a later one —
// otherwise its tail may be an earlier leader's uncommitted records, which the hint's
// offsets do not vouch for —, else none; always within [log start, log end] (data lost
// in a crash is not counted, the high watermark never passes the log end offset).
func restoredHighWatermark(local int64, hasLocal bool, hint HighWatermarkHint, hasHint bool,
	logStart, logEnd int64, latestEpoch int32) int64 {
	hw := int64(0)
	switch {
	case hasLocal:
		hw = local
	case hasHint && latestEpoch >= hint.LeaderEpoch:
		hw = hint.HighWatermark
	}
	return min(max(hw, logStart), logEnd)
}

// readHWCheckpoint reads a data directory's checkpoint file; a missing file is empty.
func readHWCheckpoint(dir string) (map[string]map[int32]int64, error) {
	path := filepath.Join(dir, hwCheckpointFile)
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return map[string]map[int32]int64{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("replica: read %s: %w", path, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	next := func() (string, bool) {
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line != "" {
				return line, true
			}
		}
		return "", false
	}
	bad := func(what string) error { return fmt.Errorf("replica: %s: %s", path, what) }
	if v, ok := next(); !ok || v != strconv.Itoa(hwCheckpointVersion) {
		return nil, bad("unknown version")
	}
	countLine, _ := next()
	count, err := strconv.Atoi(countLine)
	if err != nil || count < 0 || count > hwCheckpointLinesMax {
		return nil, bad("bad entry count")
	}
	out := map[string]map[int32]int64{}
	for range count {
		line, ok := next()
		fields := strings.Fields(line)
		if !ok || len(fields) != 3 {
			return nil, bad("truncated or malformed entry")
		}
		part, err1 := strconv.ParseInt(fields[1], 10, 32)
		hw, err2 := strconv.ParseInt(fields[2], 10, 64)
		if err1 != nil || err2 != nil || part < 0 || hw < 0 {
			return nil, bad("malformed entry " + line)
		}
		if out[fields[0]] == nil {
			out[fields[0]] = map[int32]int64{}
		}
		out[fields[0]][int32(part)] = hw
	}
	return out, nil
}

// writeHWCheckpoint replaces a data directory's checkpoint file with hws, durably.
func writeHWCheckpoint(dir string, hws map[string]map[int32]int64) error {
	var lines []string
	for topic, parts := range hws {
		for part, hw := range parts {
			lines = append(lines, topic+" "+strconv.Itoa(int(part))+" "+strconv.FormatInt(hw, 10))
		}
	}
	slices.Sort(lines)
	data := fmt.Appendf(nil, "%d\n%d\n", hwCheckpointVersion, len(lines))
	for _, l := range lines {
		data = append(data, l...)
		data = append(data, '\n')
	}
	if err := segment.WriteFileAtomic(filepath.Join(dir, hwCheckpointFile), data); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	return nil
}
