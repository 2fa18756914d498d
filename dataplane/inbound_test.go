package dataplane

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/gregor-streaming/gregor/proto"
	"golang.org/x/sys/unix"
)

// frameStream frames each body with its size prefix.
func frameStream(bodies ...[]byte) []byte {
	var b []byte
	for _, body := range bodies {
		b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
		b = append(b, body...)
	}
	return b
}

// FuzzInboundFrames: a byte stream fed to inbound in pieces of any size, with the room for
// frames opening and closing between passes, yields the same frames, in the same order,
// as the stream parsed whole — or stops with an error where the whole parse finds a size
// out of range, after handing over only frames that precede it. Bytes handed over stay
// intact until the pass ends (they are compared after it, as staged appends use them).
func FuzzInboundFrames(f *testing.F) {
	f.Add(frameStream([]byte("a"), bytes.Repeat([]byte("b"), 300), []byte("cc")), uint64(1), uint8(2))
	f.Add(frameStream(bytes.Repeat([]byte("x"), 5000), bytes.Repeat([]byte("y"), 70)), uint64(7), uint8(1))
	f.Add(append(frameStream([]byte("ok")), 0xff, 0xff, 0xff, 0xff, 1), uint64(3), uint8(5))
	f.Add(append(frameStream([]byte("ok")), 0, 0, 0x10), uint64(9), uint8(0))
	f.Fuzz(func(t *testing.T, stream []byte, seed uint64, roomMax uint8) {
		const maxFrame = 4096
		// The whole parse.
		var want [][]byte
		wantErr := false
		for rest := stream; ; {
			size, ok, err := proto.FrameSize(rest, maxFrame)
			if err != nil {
				wantErr = true
				break
			}
			if !ok || len(rest) < proto.FrameSizeBytes+size {
				break
			}
			want = append(want, rest[proto.FrameSizeBytes:proto.FrameSizeBytes+size])
			rest = rest[proto.FrameSizeBytes+size:]
		}
		rng := rand.New(rand.NewPCG(seed, seed>>7))
		var in inbound
		defer in.release()
		var got [][]byte
		pass := func(fresh []byte) error {
			budget := int(roomMax%4) + 1 // frames each pass may take
			var views [][]byte
			_, err := in.frames(fresh, maxFrame, func() bool { return budget > 0 }, func(frame []byte) error {
				budget--
				views = append(views, frame)
				got = append(got, bytes.Clone(frame)) // the frame as handed over
				return nil
			})
			// A view handed over early in the pass must still hold its frame at the
			// pass's end, as staged appends read it then; after endPass its buffer may be
			// reused.
			for i, v := range views {
				if !bytes.Equal(v, got[len(got)-len(views)+i]) {
					t.Fatal("a frame's bytes changed during its pass")
				}
			}
			in.endPass()
			return err
		}
		// Some bytes reach inbound the way gnet's reads bring them (fresh), others are
		// left in a socket for readFrom to take while a frame is partial.
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fds[0])
		defer unix.Close(fds[1])
		inSocket := 0 // bytes written to the socket and not yet read from it
		for rest := stream; len(rest) > 0 && err == nil; {
			n := min(len(rest), 1+rng.IntN(3*maxFrame/2))
			if rng.IntN(3) == 0 {
				n = min(len(rest), 1+rng.IntN(5))
			}
			if in.partial != nil && inSocket == 0 && rng.IntN(2) == 0 {
				// The socket holds what follows; readFrom takes what the partial frame
				// lacks and no more.
				w, werr := unix.Write(fds[1], rest[:n])
				if werr != nil {
					t.Fatal(werr)
				}
				before := len(in.partial)
				if err = in.readFrom(fds[0]); err != nil {
					break
				}
				took := w
				if in.partial != nil {
					took = len(in.partial) - before
				} else if len(in.backlog) > 0 {
					last := in.backlog[len(in.backlog)-1]
					took = len(last) - before
				}
				inSocket = w - took
				rest = rest[took:]
				if inSocket > 0 {
					// What readFrom left is gnet's to read: drain it as the next fresh.
					buf := make([]byte, inSocket)
					if r, rerr := unix.Read(fds[0], buf); rerr != nil || r != inSocket {
						t.Fatalf("socket read: %d %v, want %d", r, rerr, inSocket)
					}
					rest = rest[inSocket:]
					inSocket = 0
					err = pass(buf)
					clear(buf)
				} else {
					err = pass(nil)
				}
				continue
			}
			// The loop's buffer is reused by the next read: give frames a copy that is
			// scribbled over once the pass ends.
			fresh := bytes.Clone(rest[:n])
			err = pass(fresh)
			clear(fresh)
			rest = rest[n:]
		}
		for err == nil && in.pending() {
			err = pass(nil)
		}
		if len(got) > len(want) {
			t.Fatalf("%d frames handed over, the stream has %d", len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("frame %d: got %q, want %q", i, got[i], want[i])
			}
		}
		switch {
		case err != nil && !wantErr:
			t.Fatalf("error %v on a stream with every size in range", err)
		case err == nil && len(got) != len(want):
			t.Fatalf("%d frames handed over, want %d", len(got), len(want))
		case err == nil && wantErr && in.partial == nil:
			// Stopped before reading the bad prefix whole: it must wait as a partial frame.
			t.Fatal("a size prefix out of range was neither refused nor pending")
		}
	})
}

// TestBufferClasses: every size maps to the smallest class that holds it, classes grow
// by at most a quarter, and a class size maps to itself.
func TestBufferClasses(t *testing.T) {
	prev := 0
	for i := range bufferClasses {
		_, size, _ := bufferClass(prev + 1)
		if idx, s, ok := bufferClass(size); !ok || idx != i || s != size {
			t.Fatalf("class %d: size %d maps to class %d size %d (ok %v)", i, size, idx, s, ok)
		}
		if prev > 0 && size > prev+prev/4+1 {
			t.Fatalf("class %d: %d after %d, more than a quarter more", i, size, prev)
		}
		if _, s, _ := bufferClass(prev + 1); s != size {
			t.Fatalf("%d bytes get class size %d, want %d", prev+1, s, size)
		}
		prev = size
	}
	if prev != 1<<bufferClassMaxShift {
		t.Fatalf("largest class %d, want %d", prev, 1<<bufferClassMaxShift)
	}
	if _, _, ok := bufferClass(prev + 1); ok {
		t.Fatal("a size above the largest class has a class")
	}
}

// TestBufferPool: buffers come back by class, within the idle bound, and foreign or
// oversize slices are not kept.
func TestBufferPool(t *testing.T) {
	p := bufferPool{idleMaxBytes: 64 << 10}
	b := p.Get(5000)
	if len(b) != 5000 || cap(b) != 5120 {
		t.Fatalf("Get(5000): len %d cap %d, want 5000 and 5120", len(b), cap(b))
	}
	b[0] = 42
	p.Put(b)
	if c := p.Get(5100); cap(c) != 5120 || c[0] != 42 {
		t.Fatalf("Get(5100) did not reuse the 5 KiB buffer (cap %d)", cap(c))
	}
	if c := p.Get(100); cap(c) != 1<<bufferClassMinShift {
		t.Fatalf("Get(100): cap %d, want the smallest class %d", cap(c), 1<<bufferClassMinShift)
	}
	p.Put(make([]byte, 10, 5000)) // not a class size
	p.Put(make([]byte, 0, 1<<(bufferClassMaxShift+1)))
	if p.idleBytes != 0 {
		t.Fatalf("kept %d bytes of foreign buffers", p.idleBytes)
	}
	for range 20 {
		p.Put(make([]byte, 0, 8192))
	}
	if p.idleBytes > p.idleMaxBytes || len(p.free[4]) != 8 {
		t.Fatalf("%d bytes idle in %d 8 KiB buffers, bound %d", p.idleBytes, len(p.free[4]), p.idleMaxBytes)
	}
	// Another size makes room for itself: the idle 8 KiB buffers give way.
	p.Put(make([]byte, 0, 16384))
	p.Put(make([]byte, 0, 16384))
	if c := p.Get(16384); cap(c) != 16384 || p.idleBytes > p.idleMaxBytes || len(p.free[4]) != 4 {
		t.Fatalf("after two 16 KiB buffers: %d bytes idle, %d of 8 KiB (want 4)", p.idleBytes, len(p.free[4]))
	}
	if big := p.Get(200 << 20); len(big) != 200<<20 {
		t.Fatalf("Get of an unpooled size: len %d", len(big))
	}
}
