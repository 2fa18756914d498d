// Package sendfile moves responses made of byte pieces and file regions to sockets
// without copying the file bytes through user space: header bytes go out with sendmsg
// (MSG_MORE when a region follows, so they share packets with it) and regions with
// sendfile(2). Partial writes are resumed exactly where they stopped. Tiny regions may
// take the copy path (pread + write), counted apart.
//
// The fast path (Writer.WriteTo) writes to a non-blocking socket until it is done or the
// socket is full. What is left then goes to a Parked writer: a duplicate of the socket
// driven from a goroutine that waits for writability in the Go runtime poller, under a
// write deadline. Closing the Parked writer (the connection closed) ends that goroutine.
//
// The other way, for followers, Splicer moves bytes from a socket into files through a
// pipe with splice(2) (splice.go).
//
// It is a leaf package: it knows file descriptors, not Gregor's logs or connections.
package sendfile

import (
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Piece is one part of a response: bytes (File < 0) or Length bytes of file File from
// Position. Writers consume pieces in place: a partly sent piece is advanced.
type Piece struct {
	Bytes    []byte
	File     int
	Position int64
	Length   int64
}

// Bytes makes a byte piece.
func Bytes(b []byte) Piece { return Piece{Bytes: b, File: -1} }

// Region makes a file-region piece.
func Region(fd int, position, length int64) Piece {
	return Piece{File: fd, Position: position, Length: length}
}

func (p *Piece) isBytes() bool { return p.File < 0 }

// Counters counts the bytes a writer moved, by path. Fields are updated atomically, so a
// parked goroutine and the event loop may share one.
type Counters struct {
	// Sendfile is file bytes sent by sendfile(2), never copied to user space.
	Sendfile atomic.Int64
	// Copied is file bytes sent through pread + write.
	Copied atomic.Int64
	// Bytes is the byte pieces (headers) written.
	Bytes atomic.Int64
}

// ErrShortFile says a region reached the end of its file before its length: the file was
// cut under the reader. The response is broken; the connection must be closed.
var ErrShortFile = errors.New("sendfile: region passes the end of its file")

// maxIovecs bounds the byte pieces gathered into one sendmsg.
const maxIovecs = 16

// maxSendfileChunk bounds one sendfile call, so a huge region cannot hold a loop long
// even on a fast socket (the kernel also caps a call near 2 GiB).
const maxSendfileChunk = 1 << 30

// Writer writes pieces to sockets. It is not safe for concurrent use; Counters may be
// shared.
type Writer struct {
	// CopyBelow sends regions shorter than this by pread + write (0: never).
	CopyBelow int64
	// Counters receives the byte counts (may be nil).
	Counters *Counters
	// copyBuf is the copy path's buffer, allocated on first use.
	copyBuf []byte
}

// copyBufferBytes is the copy path's buffer size.
const copyBufferBytes = 64 << 10

// WriteTo writes pieces in order to the non-blocking socket sock until all are written
// (rest is empty, err nil) or the socket is full (rest holds what is left, the first piece
// possibly advanced, and err is unix.EAGAIN). Any other error breaks the connection.
func (w *Writer) WriteTo(sock int, pieces []Piece) (rest []Piece, err error) {
	for len(pieces) > 0 {
		if pieces[0].isBytes() {
			pieces, err = w.writeBytes(sock, pieces)
		} else if pieces[0].Length < w.CopyBelow {
			err = w.copyRegion(sock, &pieces[0])
		} else {
			err = w.sendRegion(sock, &pieces[0])
		}
		if err != nil {
			return pieces, err
		}
		if len(pieces) > 0 && !pieces[0].isBytes() && pieces[0].Length == 0 {
			pieces = pieces[1:]
		}
	}
	return pieces, nil
}

// writeBytes sends the run of byte pieces at the head of pieces with one sendmsg, with
// MSG_MORE when more follows, and drops what was fully sent.
func (w *Writer) writeBytes(sock int, pieces []Piece) ([]Piece, error) {
	var iovs [maxIovecs]unix.Iovec
	k, total := 0, 0
	for k < len(pieces) && k < maxIovecs && pieces[k].isBytes() {
		if b := pieces[k].Bytes; len(b) > 0 {
			iovs[k].Base = &b[0]
			iovs[k].SetLen(len(b))
			total += len(b)
		}
		k++
	}
	if total == 0 {
		return pieces[k:], nil
	}
	flags := unix.MSG_NOSIGNAL | unix.MSG_DONTWAIT
	if k < len(pieces) {
		flags |= unix.MSG_MORE
	}
	var msg unix.Msghdr
	msg.Iov = &iovs[0]
	msg.SetIovlen(k)
	var n uintptr
	var errno syscall.Errno
	for {
		n, _, errno = unix.Syscall(unix.SYS_SENDMSG, uintptr(sock), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
		if errno != unix.EINTR {
			break
		}
	}
	if errno != 0 {
		return pieces, errno
	}
	if w.Counters != nil {
		w.Counters.Bytes.Add(int64(n))
	}
	left := int(n)
	for left > 0 {
		if l := len(pieces[0].Bytes); l <= left {
			left -= l
			pieces = pieces[1:]
		} else {
			pieces[0].Bytes = pieces[0].Bytes[left:]
			left = 0
		}
	}
	// Drop empty byte pieces so the caller sees progress.
	for len(pieces) > 0 && pieces[0].isBytes() && len(pieces[0].Bytes) == 0 {
		pieces = pieces[1:]
	}
	if int(n) < total {
		return pieces, unix.EAGAIN
	}
	return pieces, nil
}

// sendRegion sends the region with sendfile(2) until done or EAGAIN.
func (w *Writer) sendRegion(sock int, p *Piece) error {
	for p.Length > 0 {
		n, err := unix.Sendfile(sock, p.File, &p.Position, int(min(p.Length, maxSendfileChunk)))
		if n > 0 {
			p.Length -= int64(n)
			if w.Counters != nil {
				w.Counters.Sendfile.Add(int64(n))
			}
		}
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return err
		case n == 0:
			return ErrShortFile
		}
	}
	return nil
}

// copyRegion sends the region by pread into a buffer and write, until done or EAGAIN. A
// short write re-reads the unsent part next time.
func (w *Writer) copyRegion(sock int, p *Piece) error {
	if w.copyBuf == nil {
		w.copyBuf = make([]byte, copyBufferBytes)
	}
	for p.Length > 0 {
		chunk := w.copyBuf[:min(p.Length, int64(len(w.copyBuf)))]
		r, err := unix.Pread(p.File, chunk, p.Position)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if r == 0 {
			return ErrShortFile
		}
		n, err := unix.SendmsgN(sock, chunk[:r], nil, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
		if n > 0 {
			p.Position += int64(n)
			p.Length -= int64(n)
			if w.Counters != nil {
				w.Counters.Copied.Add(int64(n))
			}
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Parked is the slow path for one connection: a duplicate of its socket registered with
// the Go runtime poller, so a goroutine can wait for writability without holding an event
// loop. Close it when the connection closes: a WriteAll in progress then returns.
type Parked struct {
	f      *os.File
	rc     syscall.RawConn
	closed atomic.Bool
}

// Park duplicates sock for a goroutine to write to.
func Park(sock int) (*Parked, error) {
	fd, err := unix.Dup(sock)
	if err != nil {
		return nil, &os.SyscallError{Syscall: "dup", Err: err}
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, &os.SyscallError{Syscall: "fcntl", Err: err}
	}
	// A non-blocking descriptor given to os.NewFile is registered with the poller.
	f := os.NewFile(uintptr(fd), "parked-socket")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Parked{f: f, rc: rc}, nil
}

// WriteAll writes every piece, waiting for writability as needed, until done, the
// deadline passes (os.ErrDeadlineExceeded: a stalled reader) or the Parked writer is
// closed (os.ErrClosed). It returns what is left unsent.
func (p *Parked) WriteAll(w *Writer, pieces []Piece, deadline time.Time) ([]Piece, error) {
	err := p.f.SetWriteDeadline(deadline)
	var werr error
	if err == nil {
		err = p.rc.Write(func(fd uintptr) bool {
			pieces, werr = w.WriteTo(int(fd), pieces)
			return werr != unix.EAGAIN // false: wait until writable, then call again
		})
	}
	if err != nil && p.closed.Load() {
		// The poller says "file closing" or "already closed" depending on timing.
		err = os.ErrClosed
	}
	if err != nil {
		return pieces, err
	}
	return pieces, werr
}

// Close closes the duplicate socket; a WriteAll in progress returns os.ErrClosed. The
// connection's own descriptor is not affected.
func (p *Parked) Close() error {
	p.closed.Store(true)
	return p.f.Close()
}
