package segment

import (
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// File is a segment's .log file, shared between the log that writes it and the readers
// that hold regions of it (a fetch being sent with sendfile). It is reference counted:
// the log holds one reference while the segment is live, each Region holds one more, and
// the descriptor is closed when the last is released. So a reader's region stays valid —
// same bytes, same descriptor — while the log appends, rolls, truncates (a truncation
// under readers writes a new file instead of cutting this one) or deletes the segment
// (the name is unlinked, the inode lives until the last reader is done).
type File struct {
	fd   int
	path string
	// refs counts the log's reference plus one per outstanding Region.
	// Invariant: refs > 0 while fd is open.
	refs atomic.Int64
}

func openFile(path string, flags int) (*File, error) {
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("segment: open %s: %w", path, err)
	}
	f := &File{fd: fd, path: path}
	f.refs.Store(1)
	return f, nil
}

// Fd is the file descriptor, for sendfile(2) and pread(2). It is valid while the caller
// holds a reference.
func (f *File) Fd() int { return f.fd }

// Path is the file's name when it was opened (it may have been unlinked since).
func (f *File) Path() string { return f.path }

func (f *File) acquire() {
	if f.refs.Add(1) <= 1 {
		panic("segment: acquire of a released file " + f.path)
	}
}

// release drops one reference and closes the descriptor with the last one.
func (f *File) release() {
	n := f.refs.Add(-1)
	switch {
	case n == 0:
		_ = unix.Close(f.fd)
	case n < 0:
		panic("segment: file released more often than acquired: " + f.path)
	}
}

// shared reports whether anyone besides the log holds the file.
func (f *File) shared() bool { return f.refs.Load() > 1 }

// Region is a run of whole record batches in one segment file: what a fetch sends with
// sendfile(2) from File.Fd() at Position for Length bytes. The holder must call Release
// exactly once when done with it.
type Region struct {
	File     *File
	Position int64
	Length   int64
	// BaseOffset is the base offset of the region's first batch (it may be below the
	// offset asked for: fetches return whole batches).
	BaseOffset int64
	// NextOffset is the offset after the region's last batch.
	NextOffset int64
}

// Release gives the region's file reference back.
func (r *Region) Release() {
	if r.File != nil {
		r.File.release()
		r.File = nil
	}
}

// ReleaseRegions releases every region of rs.
func ReleaseRegions(rs []Region) {
	for i := range rs {
		rs[i].Release()
	}
}

// pwriteFull writes all of b at off, retrying short writes.
func pwriteFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.EIO
		}
		b = b[n:]
		off += int64(n)
	}
	return nil
}

// pwritevFull writes the parts back to back at off with vectored writes, retrying short
// writes.
func pwritevFull(fd int, parts [][]byte, off int64) error {
	for len(parts) > 0 {
		n, err := unix.Pwritev(fd, parts, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.EIO
		}
		off += int64(n)
		for n > 0 {
			if n >= len(parts[0]) {
				n -= len(parts[0])
				parts = parts[1:]
			} else {
				parts = append([][]byte{parts[0][n:]}, parts[1:]...)
				n = 0
			}
		}
		for len(parts) > 0 && len(parts[0]) == 0 {
			parts = parts[1:]
		}
	}
	return nil
}

// preadFull reads len(b) bytes at off, or fewer at end of file; it returns the count.
func preadFull(fd int, b []byte, off int64) (int, error) {
	total := 0
	for total < len(b) {
		n, err := unix.Pread(fd, b[total:], off+int64(total))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return total, err
		}
		if n == 0 {
			break
		}
		total += n
	}
	return total, nil
}
