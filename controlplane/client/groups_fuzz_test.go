package client

import (
	"bytes"
	"testing"
)

// FuzzGroupFrames: the internal protocol's decoders never panic, never read past their
// input, and decode what the encoders wrote.
func FuzzGroupFrames(f *testing.F) {
	f.Add(AppendGroupRequest(nil, 7, "10.0.0.1", []byte{0, 12, 0, 3, 0, 0, 0, 1, 0, 0}))
	f.Add(AppendGroupResponse(nil, 9, GroupStatusOK, []byte("body")))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 6, 0, 0, 0, 1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ReadGroupFrame(bytes.NewReader(b), nil)
		if err == nil && (len(p) < 5 || len(p) > GroupFrameMax || len(p) > len(b)) {
			t.Fatalf("frame of %d bytes from %d input bytes", len(p), len(b))
		}
		id, host, req, err := ParseGroupRequest(b)
		if err != nil {
			return
		}
		round := AppendGroupRequest(nil, id, host, req)
		id2, host2, req2, err := ParseGroupRequest(round[4:])
		if err != nil || id2 != id || host2 != host || !bytes.Equal(req2, req) {
			t.Fatalf("round trip: %v %d/%d %q/%q", err, id, id2, host, host2)
		}
	})
}
