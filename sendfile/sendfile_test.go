package sendfile

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair returns a raw non-blocking client socket fd connected over loopback (what gnet
// hands a server) and the accepted peer as a net.Conn to read from.
func pair(t testing.TB, sndbuf int) (int, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if sndbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf); err != nil {
			t.Fatal(err)
		}
	}
	addr := ln.Addr().(*net.TCPAddr)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: addr.Port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close(); unix.Close(fd) })
	return fd, peer
}

// tempFile writes n random bytes to a file and returns its fd and contents.
func tempFile(t testing.TB, n int) (int, []byte) {
	t.Helper()
	data := make([]byte, n)
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	path := filepath.Join(t.TempDir(), "segment.log")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd, data
}

// readN reads exactly n bytes from c in the background.
func readN(c net.Conn, n int) <-chan []byte {
	out := make(chan []byte, 1)
	go func() {
		b := make([]byte, n)
		_, err := io.ReadFull(c, b)
		if err != nil {
			b = nil
		}
		out <- b
	}()
	return out
}

func TestWriteToPiecesInOrder(t *testing.T) {
	fd, data := tempFile(t, 1<<20)
	sock, peer := pair(t, 0)
	var c Counters
	w := &Writer{CopyBelow: 100, Counters: &c}
	pieces := []Piece{
		Bytes([]byte("header-1|")), Region(fd, 10, 5000), Bytes(nil), Bytes([]byte("h2|")), Bytes([]byte("h3|")),
		Region(fd, 7, 50), // copied: below CopyBelow
		Region(fd, 1000, 0),
		Region(fd, 0, 1<<20),
	}
	var want []byte
	want = append(want, "header-1|"...)
	want = append(want, data[10:5010]...)
	want = append(want, "h2|h3|"...)
	want = append(want, data[7:57]...)
	want = append(want, data...)
	got := readN(peer, len(want))
	p, err := Park(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	rest, err := w.WriteTo(sock, pieces)
	if errors.Is(err, unix.EAGAIN) {
		rest, err = p.WriteAll(w, rest, time.Now().Add(10*time.Second))
	}
	if err != nil || len(rest) != 0 {
		t.Fatalf("write: %v, %d pieces left", err, len(rest))
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatal("peer received different bytes")
	}
	if c.Bytes.Load() != 9+6 || c.Copied.Load() != 50 || c.Sendfile.Load() != 5000+1<<20 {
		t.Fatalf("counters: bytes %d copied %d sendfile %d", c.Bytes.Load(), c.Copied.Load(), c.Sendfile.Load())
	}
}

// TestPartialWritesResume fills a small socket buffer so WriteTo stops mid-piece, then
// drains the peer slowly; resuming must continue exactly where it stopped.
func TestPartialWritesResume(t *testing.T) {
	fd, data := tempFile(t, 2<<20)
	sock, peer := pair(t, 4096)
	w := &Writer{}
	header := bytes.Repeat([]byte("H"), 300<<10) // larger than the socket buffer too
	pieces := []Piece{Bytes(header), Region(fd, 3, 2<<20-3), Bytes([]byte("end"))}
	want := append(append(append([]byte(nil), header...), data[3:]...), "end"...)
	rest, err := w.WriteTo(sock, pieces)
	if !errors.Is(err, unix.EAGAIN) || len(rest) == 0 {
		t.Fatalf("expected the socket to fill: err %v, %d left", err, len(rest))
	}
	got := readN(peer, len(want))
	p, err := Park(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	rest, err = p.WriteAll(w, rest, time.Now().Add(20*time.Second))
	if err != nil || len(rest) != 0 {
		t.Fatalf("parked write: %v, %d left", err, len(rest))
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatal("bytes differ after resumed partial writes")
	}
}

// TestStalledReaderHitsDeadline: a peer that never reads cuts the parked writer at its
// deadline, and Close ends it at once when the connection goes first.
func TestStalledReaderHitsDeadline(t *testing.T) {
	fd, _ := tempFile(t, 16<<20)
	sock, _ := pair(t, 4096)
	w := &Writer{}
	rest, err := w.WriteTo(sock, []Piece{Region(fd, 0, 16<<20)})
	if !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("expected EAGAIN, got %v", err)
	}
	p, err := Park(sock)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := p.WriteAll(w, rest, time.Now().Add(100*time.Millisecond)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled reader: got %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("deadline took %v", d)
	}
	done := make(chan error, 1)
	go func() {
		_, err := p.WriteAll(w, rest, time.Time{})
		done <- err
	}()
	p.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the parked writer")
	}
}

func TestShortFile(t *testing.T) {
	fd, _ := tempFile(t, 1000)
	sock, _ := pair(t, 0)
	for _, copyBelow := range []int64{0, 1 << 20} {
		w := &Writer{CopyBelow: copyBelow}
		if _, err := w.WriteTo(sock, []Piece{Region(fd, 900, 200)}); !errors.Is(err, ErrShortFile) {
			t.Fatalf("copyBelow %d: region past the file end: %v", copyBelow, err)
		}
	}
}

// BenchmarkSendRegion compares sendfile with the copy path for 1 MiB regions to a
// loopback socket drained by a goroutine.
func BenchmarkSendRegion(b *testing.B) {
	for _, bc := range []struct {
		name      string
		copyBelow int64
	}{{"sendfile", 0}, {"copy", 1 << 30}} {
		b.Run(bc.name, func(b *testing.B) {
			const regionBytes = 1 << 20
			fd, _ := tempFile(b, 64<<20)
			sock, peer := pair(b, 0)
			go io.Copy(io.Discard, peer)
			p, err := Park(sock)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			w := &Writer{CopyBelow: bc.copyBelow}
			pieces := make([]Piece, 2)
			header := make([]byte, 64)
			b.SetBytes(regionBytes + int64(len(header)))
			b.ReportAllocs()
			var i int64
			for b.Loop() {
				pieces = pieces[:2]
				pieces[0] = Bytes(header)
				pieces[1] = Region(fd, (i%64)*regionBytes, regionBytes)
				i++
				rest, err := w.WriteTo(sock, pieces)
				if errors.Is(err, unix.EAGAIN) {
					rest, err = p.WriteAll(w, rest, time.Time{})
				}
				if err != nil || len(rest) != 0 {
					b.Fatal(err)
				}
			}
		})
	}
}
