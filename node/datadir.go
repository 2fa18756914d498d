package node

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// Files of the data directory besides the partition directories (which the data plane
// owns and which these never look like: they hold no '-').
const (
	// lockFileName is the data directory's lock (flock), held for the life of the
	// process, as Kafka locks its log directories. Two processes on one directory would
	// corrupt its logs; and a process that holds the lock knows that no earlier process
	// of the node still runs on the directory, which is what lets it take the node's
	// registration over at once (see loadIncarnation).
	lockFileName = ".lock"
	// incarnationFileName holds the data directory's random id: one line, written once
	// (atomically, synced) when the directory is first used.
	incarnationFileName = "incarnation"
	// bootIDPath names the running kernel: it changes at every boot.
	bootIDPath = "/proc/sys/kernel/random/boot_id"
)

// lockDataDir creates dir if needed and takes its lock, or fails at once if another
// process holds it. The lock lasts until release or the end of the process: the kernel
// drops it with the process, also on SIGKILL.
func lockDataDir(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFileName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data directory lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("data directory %s is in use by another process (a gregor-dp still running, or stopped, on it)", dir)
		}
		return nil, fmt.Errorf("data directory lock %s: %w", f.Name(), err)
	}
	return func() { _ = f.Close() }, nil
}

// loadIncarnation returns the incarnation id the node registers with (client.Broker's
// Incarnation), reading the data directory's id or creating it (created reports that).
// Call it with the directory locked.
//
// The incarnation is the directory's id bound to where the directory is: its device and
// inode, and the host's current boot. A later process that presents the incarnation of
// the node's live registration takes it over at once, so presenting it must prove the
// earlier process is gone; with the lock held it does, for a process on this very
// directory of this host since its last boot. A copy of the directory, the same volume
// mounted on another host, or the same host after a reboot gives another incarnation —
// there an earlier process may still run (on the copy, on the other host) or the proof
// does not reach (a reboot) — and the node waits for the old registration's lease to
// expire instead, as a node on a new disk does.
func loadIncarnation(dir string) (incarnation string, created bool, err error) {
	path := filepath.Join(dir, incarnationFileName)
	b, err := os.ReadFile(path)
	id := strings.TrimSpace(string(b))
	switch {
	case errors.Is(err, os.ErrNotExist) || (err == nil && uuid.Validate(id) != nil):
		// Missing, or not written by us: a new id only costs the fast takeover once.
		id = uuid.NewString()
		if err := writeFileSynced(dir, incarnationFileName, []byte(id+"\n")); err != nil {
			return "", false, fmt.Errorf("incarnation: %w", err)
		}
		created = true
	case err != nil:
		return "", false, fmt.Errorf("incarnation: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return "", false, fmt.Errorf("incarnation: stat %s: %w", dir, err)
	}
	boot, err := os.ReadFile(bootIDPath)
	if err != nil {
		boot = nil // no boot id (not Linux /proc): the directory alone binds it
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\n%d:%d\n%s", id, st.Dev, st.Ino, strings.TrimSpace(string(boot))))
	return hex.EncodeToString(sum[:16]), created, nil
}

// writeFileSynced writes dir/name atomically and durably: a temporary file, synced,
// renamed over name, then the directory synced, so that a crash leaves the old content
// or the new, never a torn file.
func writeFileSynced(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
