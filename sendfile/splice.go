package sendfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// The other direction, for followers: bytes from a socket into a file without copying
// them through user space, by splice(2) through a pipe — socket → pipe, which takes
// references to the socket buffer's pages, then pipe → file, the one copy, into the page
// cache. Where a file system does not take splice writes (EINVAL), what is in the pipe
// can still be read out of it, so a caller falls back to copying without losing bytes.

// ErrSpliceUnsupported: the file refused a splice write (EINVAL: some tmpfs and overlay
// kernels). The bytes are still in the pipe (Splicer.Buffered), to be read out with
// Splicer.ReadPipe.
var ErrSpliceUnsupported = errors.New("sendfile: the file system does not take splice writes")

// DefaultPipeBytes is the pipe size a Splicer asks for (F_SETPIPE_SZ): Linux's default
// /proc/sys/fs/pipe-max-size, and a follower's default partition fetch size, so that a
// partition's records usually move in one or two fills.
const DefaultPipeBytes = 1 << 20

// Splicer moves bytes from a socket to files through its own pipe. It is not safe for
// concurrent use. After an error other than ErrSpliceUnsupported the pipe may hold
// bytes of an unknown stream position: Close it and make another.
type Splicer struct {
	r, w int
	// pipeBytes is the pipe's capacity as the kernel set it.
	pipeBytes int
	// buffered is the bytes spliced into the pipe and not yet out of it.
	buffered int
	// fill is s.fillPipe, bound once so that a transfer allocates nothing; the state of
	// the transfer in progress, which it reads and advances, follows.
	fill      func(fd uintptr) bool
	fillWant  int64
	fillTaken int64
	fillErr   error
}

// NewSplicer makes a pipe pair of about pipeBytes (less if the kernel allows less).
func NewSplicer(pipeBytes int) (*Splicer, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, &os.SyscallError{Syscall: "pipe2", Err: err}
	}
	s := &Splicer{r: p[0], w: p[1]}
	if pipeBytes > 0 {
		// Unprivileged processes are capped at pipe-max-size: keep what the kernel gives.
		_, _ = unix.FcntlInt(uintptr(s.w), unix.F_SETPIPE_SZ, pipeBytes)
	}
	n, err := unix.FcntlInt(uintptr(s.w), unix.F_GETPIPE_SZ, 0)
	if err != nil || n <= 0 {
		s.Close()
		return nil, &os.SyscallError{Syscall: "fcntl F_GETPIPE_SZ", Err: err}
	}
	s.pipeBytes = n
	s.fill = s.fillPipe
	return s, nil
}

// PipeBytes is the pipe's capacity.
func (s *Splicer) PipeBytes() int { return s.pipeBytes }

// Buffered is the bytes in the pipe: taken from the socket, not yet moved out.
func (s *Splicer) Buffered() int { return s.buffered }

// Close closes the pipe.
func (s *Splicer) Close() {
	_ = unix.Close(s.r)
	_ = unix.Close(s.w)
	s.r, s.w = -1, -1
}

// Transfer takes n bytes from the socket behind rc (a non-blocking socket registered
// with the Go poller: a net.Conn's SyscallConn) into the pipe, waiting for the socket in
// the poller under the connection's read deadline. Whenever the pipe holds bytes and the
// socket has none ready, or the pipe is full, it calls sink with the pipe's count; sink
// moves them all out (DrainTo) and returns nil, or an error that ends the transfer.
// taken is the bytes that left the socket: on an error, those not moved out are still
// Buffered. A socket closed early is io.ErrUnexpectedEOF.
func (s *Splicer) Transfer(rc syscall.RawConn, n int64, sink func(buffered int) error) (taken int64, err error) {
	s.fillWant, s.fillTaken = n, 0
	defer func() { s.fillErr = nil }()
	for s.fillTaken < n {
		if err := rc.Read(s.fill); err != nil {
			return s.fillTaken, err
		}
		if s.fillErr != nil {
			return s.fillTaken, s.fillErr
		}
		if s.buffered > 0 {
			if err := sink(s.buffered); err != nil {
				return s.fillTaken, err
			}
			if s.buffered != 0 {
				return s.fillTaken, fmt.Errorf("sendfile: sink left %d bytes in the pipe", s.buffered)
			}
		}
	}
	return s.fillTaken, nil
}

// fillPipe splices from the socket fd into the pipe until the transfer's bytes are
// all taken, the pipe is full or the socket is empty; it returns false (wait for the
// socket) only when it moved nothing and the pipe is empty.
func (s *Splicer) fillPipe(fd uintptr) bool {
	for s.fillTaken < s.fillWant && s.buffered < s.pipeBytes {
		want := int(min(s.fillWant-s.fillTaken, int64(s.pipeBytes-s.buffered)))
		m, err := unix.Splice(int(fd), nil, s.w, nil, want, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			// The socket is empty, or the pipe has no free slot left (a socket buffer's
			// pages can fill slots before bytes): empty the pipe first if it holds
			// anything, else wait for the socket.
			return s.buffered > 0
		case err != nil:
			s.fillErr = &os.SyscallError{Syscall: "splice", Err: err}
			return true
		case m == 0:
			s.fillErr = io.ErrUnexpectedEOF
			return true
		}
		s.fillTaken += m
		s.buffered += int(m)
	}
	return true
}

// DrainTo moves k bytes from the pipe into file fd at *off (advanced), in the kernel.
// ErrSpliceUnsupported if the file takes no splice writes (nothing moved then).
func (s *Splicer) DrainTo(fd int, off *int64, k int) error {
	if k > s.buffered {
		panic("sendfile: DrainTo of more than the pipe holds")
	}
	for k > 0 {
		m, err := unix.Splice(s.r, nil, fd, off, k, unix.SPLICE_F_MOVE)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EINVAL:
			return ErrSpliceUnsupported
		case err != nil:
			return &os.SyscallError{Syscall: "splice", Err: err}
		case m == 0:
			return fmt.Errorf("sendfile: splice from the pipe moved nothing with %d bytes in it", s.buffered)
		}
		k -= int(m)
		s.buffered -= int(m)
	}
	return nil
}

// ReadPipe copies the pipe's bytes into b (len(b) ≥ Buffered) and returns how many:
// the fallback when a file refuses splice writes.
func (s *Splicer) ReadPipe(b []byte) (int, error) {
	if len(b) < s.buffered {
		panic("sendfile: ReadPipe into a buffer smaller than the pipe's bytes")
	}
	total := 0
	for s.buffered > 0 {
		m, err := unix.Read(s.r, b[total:total+s.buffered])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return total, &os.SyscallError{Syscall: "read", Err: err}
		case m == 0:
			return total, io.ErrUnexpectedEOF
		}
		total += m
		s.buffered -= m
	}
	return total, nil
}
