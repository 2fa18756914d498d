package dataplane

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/gregor-streaming/gregor/proto"
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
				return nil
			})
			for _, v := range views {
				got = append(got, bytes.Clone(v))
			}
			// The pass's views are compared before the pass ends, then their buffers are
			// released and may be reused.
			for i, v := range views {
				if !bytes.Equal(v, got[len(got)-len(views)+i]) {
					t.Fatal("a frame's bytes changed during its pass")
				}
			}
			in.endPass()
			return err
		}
		var err error
		for rest := stream; len(rest) > 0 && err == nil; {
			n := min(len(rest), 1+rng.IntN(3*maxFrame/2))
			if rng.IntN(3) == 0 {
				n = min(len(rest), 1+rng.IntN(5))
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

// TestBufferPool: buffers come back by class, within the idle bound, and foreign or
// oversize slices are not kept.
func TestBufferPool(t *testing.T) {
	p := bufferPool{idleMaxBytes: 64 << 10}
	b := p.Get(5000)
	if len(b) != 5000 || cap(b) != 8192 {
		t.Fatalf("Get(5000): len %d cap %d, want 5000 and 8192", len(b), cap(b))
	}
	b[0] = 42
	p.Put(b)
	if c := p.Get(6000); cap(c) != 8192 || c[0] != 42 {
		t.Fatalf("Get(6000) did not reuse the 8 KiB buffer (cap %d)", cap(c))
	}
	if c := p.Get(100); cap(c) != 1<<bufferClassMin {
		t.Fatalf("Get(100): cap %d, want the smallest class %d", cap(c), 1<<bufferClassMin)
	}
	p.Put(make([]byte, 10, 5000)) // not a class size
	p.Put(make([]byte, 0, 1<<(bufferClassMax+1)))
	if p.idleBytes != 0 {
		t.Fatalf("kept %d bytes of foreign buffers", p.idleBytes)
	}
	for range 20 {
		p.Put(make([]byte, 0, 8192))
	}
	if p.idleBytes > p.idleMaxBytes {
		t.Fatalf("%d bytes idle, bound %d", p.idleBytes, p.idleMaxBytes)
	}
	if big := p.Get(64 << 20); len(big) != 64<<20 {
		t.Fatalf("Get of an unpooled size: len %d", len(big))
	}
}
