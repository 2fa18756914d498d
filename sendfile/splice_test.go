package sendfile

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// conns returns both ends of a loopback TCP connection.
func conns(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func rawConn(t *testing.T, c net.Conn) syscall.RawConn {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

func openOut(t *testing.T, flags int) int {
	t.Helper()
	fd, err := unix.Open(filepath.Join(t.TempDir(), "out"), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|flags, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// dribble writes data to c in random pieces with pauses, so that the reader meets an
// empty socket, partial splices and a pipe that fills.
func dribble(c net.Conn, data []byte, seed uint64) <-chan error {
	done := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(seed, 1))
		for len(data) > 0 {
			n := min(len(data), 1+rng.IntN(300<<10))
			if _, err := c.Write(data[:n]); err != nil {
				done <- err
				return
			}
			data = data[n:]
			if rng.IntN(4) == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		done <- nil
	}()
	return done
}

// TestSpliceTransfer: bytes from a socket land in a file exactly, through a pipe smaller
// than the transfer, with partial splices and waits for the socket; the bytes after
// the transfer stay in the socket.
func TestSpliceTransfer(t *testing.T) {
	client, server := conns(t)
	data := make([]byte, 5<<20+12345)
	for i := range data {
		data[i] = byte(i * 7)
	}
	tail := []byte("next frame")
	done := dribble(server, append(append([]byte(nil), data...), tail...), 3)
	s, err := NewSplicer(64 << 10)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fd := openOut(t, 0)
	off := int64(100) // not at the file's start: a segment's end
	sinks := 0
	taken, err := s.Transfer(rawConn(t, client), int64(len(data)), func(k int) error {
		sinks++
		return s.DrainTo(fd, &off, k)
	})
	if err != nil || taken != int64(len(data)) || s.Buffered() != 0 || off != 100+int64(len(data)) {
		t.Fatalf("transfer: %d bytes, %v, %d buffered, offset %d", taken, err, s.Buffered(), off)
	}
	got := make([]byte, len(data))
	if n, err := unix.Pread(fd, got, 100); err != nil || n != len(got) || !bytes.Equal(got, data) {
		t.Fatalf("file holds other bytes (%d, %v)", n, err)
	}
	rest := make([]byte, len(tail))
	if _, err := io.ReadFull(client, rest); err != nil || !bytes.Equal(rest, tail) {
		t.Fatalf("bytes after the transfer: %q %v", rest, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d sinks through a %d-byte pipe", sinks, s.PipeBytes())
}

// TestSpliceTransferEOF: a connection closed mid-transfer ends it with
// io.ErrUnexpectedEOF and says how much was taken; what the sink did not get is still
// in the pipe.
func TestSpliceTransferEOF(t *testing.T) {
	client, server := conns(t)
	if _, err := server.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	server.Close()
	s, err := NewSplicer(DefaultPipeBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fd := openOut(t, 0)
	var off int64
	taken, err := s.Transfer(rawConn(t, client), 5000, func(k int) error { return s.DrainTo(fd, &off, k) })
	if !errors.Is(err, io.ErrUnexpectedEOF) || taken != 1000 || off+int64(s.Buffered()) != 1000 {
		t.Fatalf("transfer of a closed stream: %d bytes, %v, offset %d, %d buffered", taken, err, off, s.Buffered())
	}
}

// TestSpliceTransferDeadline: a stalled sender ends the transfer at the connection's
// read deadline.
func TestSpliceTransferDeadline(t *testing.T) {
	client, _ := conns(t)
	s, err := NewSplicer(DefaultPipeBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_ = client.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = s.Transfer(rawConn(t, client), 10, func(int) error { return nil })
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled transfer: %v", err)
	}
}

// TestSpliceUnsupportedFallsBack: a file that refuses splice writes (O_APPEND does,
// like some tmpfs and overlay kernels) leaves the bytes in the pipe, and ReadPipe
// hands them over.
func TestSpliceUnsupportedFallsBack(t *testing.T) {
	client, server := conns(t)
	data := []byte("batches that must not be lost")
	if _, err := server.Write(data); err != nil {
		t.Fatal(err)
	}
	s, err := NewSplicer(DefaultPipeBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fd := openOut(t, unix.O_APPEND)
	var got []byte
	_, err = s.Transfer(rawConn(t, client), int64(len(data)), func(k int) error {
		var off int64
		if err := s.DrainTo(fd, &off, k); !errors.Is(err, ErrSpliceUnsupported) {
			t.Fatalf("splice to an O_APPEND file: %v", err)
		}
		b := make([]byte, k)
		n, err := s.ReadPipe(b)
		got = append(got, b[:n]...)
		return err
	})
	if err != nil || !bytes.Equal(got, data) || s.Buffered() != 0 {
		t.Fatalf("fallback: %q, %v, %d buffered", got, err, s.Buffered())
	}
}
