package segment

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// DeletedSuffix ends the name of a directory being removed (RemoveDir): no log
// directory's name ends so, since a replica directory's name ends with its partition
// number.
const DeletedSuffix = "-delete"

// RemoveDir removes a log directory without making its caller wait for gigabytes of
// files to be unlinked, as Kafka deletes a partition: the directory is renamed at once
// to a sibling whose name ends in DeletedSuffix — from then on nothing finds it under
// its name, and a new log may be made there — and its files are removed in the
// background. A directory left behind by a crash meanwhile is removed by
// RemoveDeletedDirs at the next start.
func RemoveDir(dir string) error {
	var b [8]byte
	_, _ = rand.Read(b[:])
	doomed := dir + "." + hex.EncodeToString(b[:]) + DeletedSuffix
	if err := os.Rename(dir, doomed); err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("segment: delete %s: %w", dir, err)
	}
	go removeDoomed(doomed)
	return nil
}

// RemoveDeletedDirs removes, in the background, the directories under parent that a
// RemoveDir left behind when the process stopped before their files were removed.
func RemoveDeletedDirs(parent string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() && strings.HasSuffix(e.Name(), DeletedSuffix) {
			go removeDoomed(filepath.Join(parent, e.Name()))
		}
	}
}

func removeDoomed(dir string) {
	if err := os.RemoveAll(dir); err != nil {
		slog.Warn("could not remove a deleted log directory", "dir", dir, "err", err)
	}
}
