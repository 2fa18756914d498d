package proto

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// The Kafka framing and headers, hand-written because every request passes through them
// (message bodies are kmsg's):
//
//	frame            size int32 (bytes after this field), then header and body
//	request header   v1: apiKey int16 · apiVersion int16 · correlationId int32 ·
//	                     clientId nullable string (int16 length, -1 = null)
//	                 v2: v1 then a tag buffer (flexible requests, KIP-482); the client id
//	                     stays a non-compact nullable string
//	response header  v0: correlationId int32
//	                 v1: v0 then a tag buffer (flexible responses), except ApiVersions,
//	                     whose response header is always v0 (so a client can read it
//	                     before it knows what the broker speaks)
//
// A tag buffer is an unsigned varint count, then per field an unsigned varint tag, an
// unsigned varint size and that many bytes.

// DefaultMaxFrameBytes is the largest request accepted by default (Kafka's
// socket.request.max.bytes is 100 MiB).
const DefaultMaxFrameBytes = 100 << 20

// FrameSizeBytes is the size of the length prefix of every frame.
const FrameSizeBytes = 4

// Framing and header errors. A connection that sends one is closed.
var (
	// ErrFrameSize: a frame size that is zero, negative or over the limit.
	ErrFrameSize = errors.New("proto: frame size out of range")
	// ErrHeaderTruncated: the frame ends inside the request header.
	ErrHeaderTruncated = errors.New("proto: request header truncated")
	// ErrBadTagBuffer: a malformed tag buffer.
	ErrBadTagBuffer = errors.New("proto: malformed tagged fields")
)

// FrameSize reads the size prefix at the start of b. ok is false while fewer than 4 bytes
// are there. A size below 1 or above maxBytes is ErrFrameSize: the caller closes the
// connection before allocating anything for it.
func FrameSize(b []byte, maxBytes int) (size int, ok bool, err error) {
	if len(b) < FrameSizeBytes {
		return 0, false, nil
	}
	n := int32(binary.BigEndian.Uint32(b))
	if n < 1 || int64(n) > int64(maxBytes) {
		return 0, true, fmt.Errorf("%w: %d (limit %d)", ErrFrameSize, n, maxBytes)
	}
	return int(n), true, nil
}

// RequestHeader is a decoded request header.
type RequestHeader struct {
	APIKey        int16
	APIVersion    int16
	CorrelationID int32
	// ClientID views the frame's bytes (nil for a null client id); copy it to keep it.
	ClientID []byte
	// Flexible reports a v2 header (a tag buffer followed it).
	Flexible bool
	// Size is the header's length: the body starts at frame[Size:].
	Size int
}

// firstFlexibleVersion[key] is the first version at which the request with that key is
// flexible (KIP-482), or -1 for never; computed once from kmsg so that parsing a header
// allocates nothing.
var firstFlexibleVersion = func() []int16 {
	const maxKey = 512 // far above any key Kafka has assigned
	table := make([]int16, maxKey)
	for key := range int16(maxKey) {
		table[key] = -1
		r := kmsg.RequestForKey(key)
		if r == nil {
			continue
		}
		for v := int16(0); v <= r.MaxVersion(); v++ {
			r.SetVersion(v)
			if r.IsFlexible() {
				table[key] = v
				break
			}
		}
	}
	return table
}()

// IsFlexibleRequest reports whether the request key at version uses header v2 and
// compact encodings. Unknown keys are not flexible.
func IsFlexibleRequest(key, version int16) bool {
	if key < 0 || int(key) >= len(firstFlexibleVersion) {
		return false
	}
	first := firstFlexibleVersion[key]
	return first >= 0 && version >= first
}

// ParseRequestHeader decodes the request header at the start of frame (the bytes after
// the size prefix). Whether a tag buffer follows is decided by the key and version
// (IsFlexibleRequest). It never allocates: ClientID views frame.
func ParseRequestHeader(frame []byte) (RequestHeader, error) {
	var h RequestHeader
	if len(frame) < 10 {
		return h, ErrHeaderTruncated
	}
	h.APIKey = int16(binary.BigEndian.Uint16(frame))
	h.APIVersion = int16(binary.BigEndian.Uint16(frame[2:]))
	h.CorrelationID = int32(binary.BigEndian.Uint32(frame[4:]))
	n := int16(binary.BigEndian.Uint16(frame[8:]))
	pos := 10
	switch {
	case n == -1:
	case n < -1 || pos+int(n) > len(frame):
		return h, ErrHeaderTruncated
	default:
		h.ClientID = frame[pos : pos+int(n) : pos+int(n)]
		pos += int(n)
	}
	if IsFlexibleRequest(h.APIKey, h.APIVersion) {
		h.Flexible = true
		end, err := SkipTagBuffer(frame, pos)
		if err != nil {
			return h, err
		}
		pos = end
	}
	h.Size = pos
	return h, nil
}

// SkipTagBuffer returns the position after the tag buffer starting at b[pos].
func SkipTagBuffer(b []byte, pos int) (int, error) {
	count, pos, err := readUvarint(b, pos)
	if err != nil {
		return pos, err
	}
	// Each field takes at least two bytes: a count beyond the rest is a lie, refused
	// before looping on it.
	if count > uint64(len(b)-pos)/2 {
		return pos, ErrBadTagBuffer
	}
	for range count {
		if _, pos, err = readUvarint(b, pos); err != nil { // tag
			return pos, err
		}
		var size uint64
		if size, pos, err = readUvarint(b, pos); err != nil {
			return pos, err
		}
		if size > uint64(len(b)-pos) {
			return pos, ErrBadTagBuffer
		}
		pos += int(size)
	}
	return pos, nil
}

// readUvarint reads an unsigned varint of at most 5 bytes (Kafka's are 32-bit).
func readUvarint(b []byte, pos int) (uint64, int, error) {
	var v uint64
	for i := 0; i < 5; i++ {
		if pos >= len(b) {
			return 0, pos, ErrBadTagBuffer
		}
		c := b[pos]
		pos++
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, pos, nil
		}
	}
	return 0, pos, ErrBadTagBuffer
}

// IsFlexibleResponse reports whether the response to key at version carries header v1.
// ApiVersions (key 18) never does.
func IsFlexibleResponse(key, version int16) bool {
	return key != int16(kmsg.ApiVersions) && IsFlexibleRequest(key, version)
}

// BeginFrame appends a placeholder size prefix and the response header for
// correlationID (with an empty tag buffer if flexible) to dst. EndFrame fills the size
// once the body follows. start is where the frame begins in dst.
func BeginFrame(dst []byte, correlationID int32, flexible bool) (out []byte, start int) {
	start = len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(correlationID))
	if flexible {
		dst = append(dst, 0)
	}
	return dst, start
}

// EndFrame writes the size of the frame that BeginFrame started at start, with extra
// bytes that will follow dst on the wire (file regions sent separately) counted in.
func EndFrame(dst []byte, start int, extra int) {
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-FrameSizeBytes+extra))
}
