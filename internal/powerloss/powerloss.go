// Package powerloss simulates a power loss on a data-plane node's data directory, for
// tests: after the node is killed (SIGKILL: its page cache would survive, a power loss's
// would not), Apply drops every write to a segment or index file that was never made
// durable, as the fsync journal of package segment records it (a fault-injection hook
// that gregor-dp turns on with GREGOR_DP_FSYNC_JOURNAL=1; see segment/syncjournal.go).
//
// What is dropped, by the journal's replay:
//
//   - a .log file is cut to the size its last sync made durable, lowered by every
//     truncation since (until the next sync a power loss may keep either length: the
//     shorter is taken); a file never synced is cut to 0;
//   - a file created after its directory's last fsync is removed (its name was never
//     durable), and so is a partition directory created after the data directory's;
//   - an index file (.index, .timeindex) is kept only if its last sync covered its
//     present size and its log file lost nothing; otherwise it is removed, and recovery
//     must rebuild it. What a power loss leaves of unsynced mmap writes is unknown (stale
//     or zeroed entries); removal stands in for it. Such indexes belong to the segments
//     from the recovery point on (a rolled segment's are synced with it), which recovery
//     rebuilds from the log either way.
//
// It never drops a byte that was fsynced: a sync is journaled only after it returned,
// with the size read before it started, and only the storage engine writes these files.
// Checkpoint files (written whole, fsynced and renamed) are left as they are: after a
// crash each is its old version or its new one, and the new one is a possible outcome.
package powerloss

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gregor-streaming/gregor/segment"
)

// Report says what a simulated power loss dropped.
type Report struct {
	// Cut maps each file cut short to the bytes it lost.
	Cut map[string]int64
	// Removed lists the files and directories removed.
	Removed []string
}

// Bytes is the number of log bytes dropped (index files aside).
func (r Report) Bytes() int64 {
	var n int64
	for p, b := range r.Cut {
		if strings.HasSuffix(p, ".log") {
			n += b
		}
	}
	return n
}

func (r Report) String() string {
	return fmt.Sprintf("%d log bytes dropped from %d files, %d files removed", r.Bytes(), len(r.Cut), len(r.Removed))
}

// fileState is what the journal says of one path.
type fileState struct {
	durable int64 // bytes a power loss keeps
	synced  bool  // the last event was a sync
	created int   // line of its last creation (0: none journaled)
}

// Apply simulates a power loss on dataDir, whose node must not be running. The journal
// must exist: a directory written without it cannot be judged.
func Apply(dataDir string) (Report, error) {
	rep := Report{Cut: map[string]int64{}}
	dataDir = filepath.Clean(dataDir)
	files, dirSyncs, err := replay(filepath.Join(dataDir, segment.FsyncJournalFile))
	if err != nil {
		return rep, err
	}
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		return rep, err
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(dataDir, e.Name())
		if st, ok := files[dir]; ok && st.created > dirSyncs[dataDir] {
			rep.Removed = append(rep.Removed, dir)
			if err := os.RemoveAll(dir); err != nil {
				return rep, err
			}
			continue
		}
		if err := applyDir(dir, files, dirSyncs, &rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// applyDir drops what a power loss would in one partition directory.
func applyDir(dir string, files map[string]*fileState, dirSyncs map[string]int, rep *Report) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	lost := map[string]bool{} // segment stems whose log lost bytes or was removed
	remove := func(p string) error {
		rep.Removed = append(rep.Removed, p)
		return os.Remove(p)
	}
	// Logs first, then indexes, which depend on them.
	for _, pass := range []string{"log", "index"} {
		for _, e := range entries {
			name := e.Name()
			p := filepath.Join(dir, name)
			var stem string
			isLog := strings.HasSuffix(name, ".log")
			switch {
			case isLog:
				stem = strings.TrimSuffix(name, ".log")
			case strings.HasSuffix(name, ".timeindex"):
				stem = strings.TrimSuffix(name, ".timeindex")
			case strings.HasSuffix(name, ".index"):
				stem = strings.TrimSuffix(name, ".index")
			default:
				continue
			}
			if isLog != (pass == "log") {
				continue
			}
			st := files[p]
			if st == nil {
				st = &fileState{}
			}
			if st.created > dirSyncs[dir] {
				lost[stem] = true
				if err := remove(p); err != nil {
					return err
				}
				continue
			}
			info, err := os.Stat(p)
			if err != nil {
				return err
			}
			if !isLog {
				if lost[stem] || !st.synced || st.durable != info.Size() {
					if err := remove(p); err != nil {
						return err
					}
				}
				continue
			}
			if info.Size() > st.durable {
				lost[stem] = true
				rep.Cut[p] = info.Size() - st.durable
				if err := os.Truncate(p, st.durable); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// replay reads the journal: each path's state, and the line of each directory's last
// sync.
func replay(path string) (map[string]*fileState, map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("powerloss: the fsync journal (was the node started with it?): %w", err)
	}
	defer f.Close()
	files := map[string]*fileState{}
	dirSyncs := map[string]int{}
	state := func(p string) *fileState {
		st := files[p]
		if st == nil {
			st = &fileState{}
			files[p] = st
		}
		return st
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		op, rest, _ := strings.Cut(line, " ")
		switch op {
		case "sync", "trunc":
			i := strings.LastIndexByte(rest, ' ')
			if i < 0 {
				return nil, nil, fmt.Errorf("powerloss: %s:%d: %q", path, n, line)
			}
			size, err := strconv.ParseInt(rest[i+1:], 10, 64)
			if err != nil {
				return nil, nil, fmt.Errorf("powerloss: %s:%d: %q", path, n, line)
			}
			st := state(filepath.Clean(rest[:i]))
			if op == "sync" {
				st.durable, st.synced = size, true
			} else {
				st.durable, st.synced = min(st.durable, size), false
			}
		case "create":
			st := state(filepath.Clean(rest))
			st.durable, st.synced, st.created = 0, false, n
		case "dirsync":
			dirSyncs[filepath.Clean(rest)] = n
		default:
			return nil, nil, fmt.Errorf("powerloss: %s:%d: %q", path, n, line)
		}
	}
	return files, dirSyncs, sc.Err()
}
