package segment

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Small files beside the segments, each written whole to a temporary file, fsynced and
// renamed over the old one (then the directory is fsynced), so that a crash leaves the
// old version or the new, never a mix:
//
//	recovery-point           "0\n<offset>\n": every byte of the log below <offset> was
//	                         fsynced; recovery after an unclean stop starts at the
//	                         segment holding it.
//	clean-shutdown           present only between a clean Close and the next Open: the
//	                         indexes were trimmed and flushed and no recovery is needed.
//	leader-epoch-checkpoint  "0\n<n>\n" then n lines "<epoch> <startOffset>" (Kafka's).
//	log-start-offset         "0\n<offset>\n": the log start offset when a DeleteRecords
//	                         request (or a leader's, for a follower) moved it past the
//	                         first segment's base offset (Kafka's
//	                         log-start-offset-checkpoint, one file per log). Open takes
//	                         the larger of it and the first segment's base offset.
const (
	recoveryPointFile     = "recovery-point"
	logStartOffsetFile    = "log-start-offset"
	cleanShutdownFile     = "clean-shutdown"
	leaderEpochFile       = "leader-epoch-checkpoint"
	checkpointVersion     = 0
	tmpSuffix             = ".tmp"
	maxCheckpointFileSize = 1 << 20 // a leader-epoch file of ~50k epochs; more is corrupt
)

// WriteFileAtomic replaces path with data durably: written whole to a temporary file,
// fsynced, renamed over path, and path's directory fsynced, so that a crash leaves the
// old contents or the new.
func WriteFileAtomic(path string, data []byte) error {
	tmp := path + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("segment: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("segment: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("segment: fsync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("segment: close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("segment: rename %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// syncDir fsyncs a directory so that creations, renames and removals in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("segment: open dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("segment: fsync dir %s: %w", dir, err)
	}
	if j := syncJournal; j != nil {
		j.dirSynced(dir)
	}
	return nil
}

// readCheckpointLines reads a checkpoint file's lines after checking its version line.
// A missing file returns (nil, nil).
func readCheckpointLines(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("segment: read %s: %w", path, err)
	}
	if len(data) > maxCheckpointFileSize {
		return nil, fmt.Errorf("segment: %s is %d bytes, larger than any checkpoint", path, len(data))
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			lines = append(lines, line)
		}
	}
	if len(lines) == 0 || lines[0] != strconv.Itoa(checkpointVersion) {
		return nil, fmt.Errorf("segment: %s: unknown version", path)
	}
	return lines[1:], nil
}

// readOffsetCheckpoint returns the offset a one-offset checkpoint file (the recovery
// point, the log start offset) holds, or 0 when it is missing or unreadable.
func readOffsetCheckpoint(path string) int64 {
	lines, err := readCheckpointLines(path)
	if err != nil || len(lines) != 1 {
		return 0
	}
	v, err := strconv.ParseInt(lines[0], 10, 64)
	if err != nil || v < 0 {
		return 0
	}
	return v
}

// writeOffsetCheckpoint writes offset as a one-offset checkpoint file, atomically.
func writeOffsetCheckpoint(path string, offset int64) error {
	return WriteFileAtomic(path, fmt.Appendf(nil, "%d\n%d\n", checkpointVersion, offset))
}

// readRecoveryPoint returns the recovery point, or 0 (recover everything) when the file
// is missing or unreadable.
func readRecoveryPoint(dir string) int64 {
	return readOffsetCheckpoint(filepath.Join(dir, recoveryPointFile))
}

func writeRecoveryPoint(dir string, offset int64) error {
	return writeOffsetCheckpoint(filepath.Join(dir, recoveryPointFile), offset)
}

// readLogStartOffset returns the checkpointed log start offset, or 0 when the file is
// missing or unreadable (the first segment's base offset then stands).
func readLogStartOffset(dir string) int64 {
	return readOffsetCheckpoint(filepath.Join(dir, logStartOffsetFile))
}

func writeLogStartOffset(dir string, offset int64) error {
	return writeOffsetCheckpoint(filepath.Join(dir, logStartOffsetFile), offset)
}
