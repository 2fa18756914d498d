package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// TestIncarnation: the data directory's incarnation is created once and stays the same
// for every later process on the directory; a copy of the directory's id elsewhere
// gives another incarnation (the copy cannot prove the original's process is gone); a
// file that is not an id is replaced.
func TestIncarnation(t *testing.T) {
	dir := t.TempDir()
	first, created, err := loadIncarnation(dir)
	if err != nil || !created || first == "" {
		t.Fatalf("first load: %q, created %v, %v", first, created, err)
	}
	stored, err := os.ReadFile(filepath.Join(dir, incarnationFileName))
	if err != nil || uuid.Validate(strings.TrimSpace(string(stored))) != nil {
		t.Fatalf("stored id %q, %v", stored, err)
	}
	again, created, err := loadIncarnation(dir)
	if err != nil || created || again != first {
		t.Fatalf("second load: %q (created %v, %v), want %q", again, created, err, first)
	}
	if _, err := os.Stat(filepath.Join(dir, incarnationFileName+".tmp")); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}

	copied := t.TempDir()
	if err := os.WriteFile(filepath.Join(copied, incarnationFileName), stored, 0o644); err != nil {
		t.Fatal(err)
	}
	other, created, err := loadIncarnation(copied)
	if err != nil || created || other == first {
		t.Fatalf("copied id: %q (created %v, %v); want an incarnation other than %q", other, created, err, first)
	}

	if err := os.WriteFile(filepath.Join(dir, incarnationFileName), []byte("not an id\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	replaced, created, err := loadIncarnation(dir)
	if err != nil || !created || replaced == first {
		t.Fatalf("bad file: %q (created %v, %v)", replaced, created, err)
	}
}

// TestDataDirLock: one holder at a time; the lock is free again once released (as when
// the holding process dies).
func TestDataDirLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data") // created by the lock
	release, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockDataDir(dir); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second lock: %v", err)
	}
	release()
	release, err = lockDataDir(dir)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	release()
}
