package segment

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// The fsync journal: a fault-injection hook for tests that simulate a power loss. Off by
// default; a process turns it on once, before it opens any log (gregor-dp does when
// GREGOR_DP_FSYNC_JOURNAL=1). While on, the storage engine appends one line to the
// journal file for each event that decides what a power loss would keep of a segment
// file, before the operation that waited for it returns:
//
//	sync <path> <size>    the file's first <size> bytes are on disk (after a successful
//	                      fdatasync, fsync or msync; <size> taken before the sync)
//	trunc <path> <size>   the file was cut to <size> (ftruncate, or a copy renamed over
//	                      it): until the next sync, a power loss may keep it that short
//	create <path>         the file (or a partition directory) was created, empty: its
//	                      name survives a power loss only after its directory is synced
//	dirsync <dir>         the directory was fsynced: every name created in it so far is
//	                      on disk
//
// The journal is written with write(2), so a SIGKILL loses none of it. The tests' power
// loss (chaos's powerLoss) replays it after killing the process: every segment and index
// file is cut to what its last sync made durable, lowered by any truncation since, and
// a file or partition directory created after its directory's last sync is removed.
// Nothing else writes segment or index files, so nothing fsynced is ever dropped, and
// nothing a real power loss must keep is lost. Only the segment layer's own files are
// journaled: checkpoints (recovery point, leader epochs, high watermarks) are written
// whole and renamed (WriteFileAtomic) and are old or new after any crash.
//
// When off, each hook is one nil check.

// FsyncJournalFile is the journal's name in a data directory.
const FsyncJournalFile = "fsync-journal"

// syncJournal is the open journal, or nil (off).
var syncJournal *fsyncJournal

type fsyncJournal struct {
	mu sync.Mutex
	f  *os.File
	// seq numbers the truncations and creations; truncs keeps, per path, the size each
	// one left, so that a sync whose size was read before a truncation records no more
	// than the truncation left (truncations are rare: the list stays short).
	seq    uint64
	truncs map[string][]journalTrunc
	err    error
}

type journalTrunc struct {
	seq  uint64
	size int64
}

// EnableFsyncJournal turns the fsync journal on, appending to the file at path. It is a
// test-only fault-injection hook (see above): call it once, before any log opens.
func EnableFsyncJournal(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("segment: fsync journal: %w", err)
	}
	syncJournal = &fsyncJournal{f: f, truncs: map[string][]journalTrunc{}}
	return nil
}

// line appends one journal line; a failure is kept and reported by every later line,
// since a journal with a gap would make a simulated power loss wrong. The caller holds mu.
func (j *fsyncJournal) line(format string, args ...any) {
	if j.err != nil {
		panic(j.err)
	}
	if _, err := fmt.Fprintf(j.f, format+"\n", args...); err != nil {
		j.err = fmt.Errorf("segment: fsync journal: %w", err)
		panic(j.err)
	}
}

// syncToken is taken before the size of a file about to be synced is read.
func (j *fsyncJournal) syncToken() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.seq
}

// synced records that the first size bytes of path are on disk, size having been read
// after token was taken and before the sync started. With ino not 0 (the synced file's
// inode), nothing is recorded if path now names another file or none: a truncation by
// copy renamed a new file over it, or the segment was deleted, while the old one was
// being synced. The check is made under the journal's lock, which that rename's own
// line takes after the rename: a sync found still current is journaled before it.
func (j *fsyncJournal) synced(path string, size int64, token, ino uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if ino != 0 {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil || st.Ino != ino {
			return
		}
	}
	for _, t := range j.truncs[path] {
		if t.seq > token {
			size = min(size, t.size)
		}
	}
	j.line("sync %s %d", path, size)
}

func (j *fsyncJournal) truncated(path string, size int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.seq++
	j.truncs[path] = append(j.truncs[path], journalTrunc{j.seq, size})
	j.line("trunc %s %d", path, size)
}

func (j *fsyncJournal) created(path string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.seq++
	j.truncs[path] = append(j.truncs[path], journalTrunc{j.seq, 0})
	j.line("create %s", path)
}

func (j *fsyncJournal) dirSynced(dir string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.line("dirsync %s", filepath.Clean(dir))
}

// fdatasyncJournaled is unix.Fdatasync(fd) of the file at path, journaled.
func fdatasyncJournaled(fd int, path string) error {
	j := syncJournal
	if j == nil {
		return unix.Fdatasync(fd)
	}
	tok := j.syncToken()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if err := unix.Fdatasync(fd); err != nil {
		return err
	}
	j.synced(path, st.Size, tok, st.Ino)
	return nil
}
