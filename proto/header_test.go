package proto

import (
	"bytes"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestRequestHeaderMatchesKmsg parses frames that franz-go's request formatter writes,
// flexible and not, with and without a client id.
func TestRequestHeaderMatchesKmsg(t *testing.T) {
	meta := kmsg.NewPtrMetadataRequest()
	produce := kmsg.NewPtrProduceRequest()
	apiv := kmsg.NewPtrApiVersionsRequest()
	cases := []struct {
		name     string
		req      kmsg.Request
		version  int16
		clientID *string
		flexible bool
	}{
		{"metadata v0 null client", meta, 0, nil, false},
		{"metadata v8", meta, 8, kmsg.StringPtr("kafka-python"), false},
		{"metadata v9 flexible", meta, 9, kmsg.StringPtr("franz-go"), true},
		{"produce v3", produce, 3, kmsg.StringPtr("rdkafka"), false},
		{"produce v9 flexible", produce, 9, kmsg.StringPtr(""), true},
		{"apiversions v3 flexible", apiv, 3, kmsg.StringPtr("sarama"), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.SetVersion(tc.version)
			var f *kmsg.RequestFormatter
			if tc.clientID != nil {
				f = kmsg.NewRequestFormatter(kmsg.FormatterClientID(*tc.clientID))
			} else {
				f = kmsg.NewRequestFormatter()
			}
			frame := f.AppendRequest(nil, tc.req, 12345)
			size, ok, err := FrameSize(frame, DefaultMaxFrameBytes)
			if !ok || err != nil || size != len(frame)-4 {
				t.Fatalf("frame size %d ok %v err %v, want %d", size, ok, err, len(frame)-4)
			}
			h, err := ParseRequestHeader(frame[4:])
			if err != nil {
				t.Fatal(err)
			}
			if h.APIKey != tc.req.Key() || h.APIVersion != tc.version || h.CorrelationID != 12345 || h.Flexible != tc.flexible {
				t.Fatalf("header %+v", h)
			}
			if (tc.clientID == nil) != (h.ClientID == nil) || (tc.clientID != nil && string(h.ClientID) != *tc.clientID) {
				t.Fatalf("client id %q", h.ClientID)
			}
			// The body starts right after the header: kmsg reads it back.
			body := kmsg.RequestForKey(h.APIKey)
			body.SetVersion(h.APIVersion)
			if err := body.ReadFrom(frame[4+h.Size:]); err != nil {
				t.Fatalf("body after the header does not decode: %v", err)
			}
		})
	}
}

// TestResponseFrameMatchesKmsg: a response framed with BeginFrame/EndFrame is what
// franz-go's client reads (size, correlation id, tag buffer only when flexible, never for
// ApiVersions).
func TestResponseFrameMatchesKmsg(t *testing.T) {
	for _, tc := range []struct {
		resp    kmsg.Response
		version int16
	}{
		{kmsg.NewPtrMetadataResponse(), 8}, {kmsg.NewPtrMetadataResponse(), 12}, {kmsg.NewPtrApiVersionsResponse(), 3},
	} {
		tc.resp.SetVersion(tc.version)
		flexible := IsFlexibleResponse(tc.resp.Key(), tc.version)
		if tc.resp.Key() == int16(kmsg.ApiVersions) && flexible {
			t.Fatal("ApiVersions response header must be v0")
		}
		dst, start := BeginFrame([]byte("junk"), 77, flexible)
		dst = tc.resp.AppendTo(dst)
		EndFrame(dst, start, 0)
		frame := dst[start:]
		want := []byte{0, 0, 0, 77}
		if flexible {
			want = append(want, 0)
		}
		want = tc.resp.AppendTo(want)
		if size, _, _ := FrameSize(frame, DefaultMaxFrameBytes); size != len(want) || !bytes.Equal(frame[4:], want) {
			t.Fatalf("key %d v%d: frame differs", tc.resp.Key(), tc.version)
		}
	}
}

func TestFrameSizeLimits(t *testing.T) {
	for _, tc := range []struct {
		b    []byte
		ok   bool
		fail bool
	}{
		{[]byte{0, 0, 0}, false, false},
		{[]byte{0, 0, 0, 0}, true, true},             // zero
		{[]byte{0xff, 0xff, 0xff, 0xff}, true, true}, // negative
		{[]byte{0x7f, 0xff, 0xff, 0xff}, true, true}, // 2^31-1
		{[]byte{0x06, 0x40, 0x00, 0x01}, true, true}, // 100 MiB + 1
		{[]byte{0x06, 0x40, 0x00, 0x00}, true, false},
		{[]byte{'G', 'E', 'T', ' '}, true, true},     // HTTP on the Kafka port
		{[]byte{0x16, 0x03, 0x01, 0x02}, true, true}, // a TLS ClientHello
	} {
		_, ok, err := FrameSize(tc.b, DefaultMaxFrameBytes)
		if ok != tc.ok || (err != nil) != tc.fail || (err != nil && !errors.Is(err, ErrFrameSize)) {
			t.Errorf("%x: ok %v err %v", tc.b, ok, err)
		}
	}
}

func TestRequestHeaderBadInput(t *testing.T) {
	// Metadata v9 is flexible: its header needs a tag buffer.
	base := []byte{0, 3, 0, 9, 0, 0, 0, 1, 0, 2, 'i', 'd'}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"short", base[:9], ErrHeaderTruncated},
		{"client id past the end", []byte{0, 3, 0, 1, 0, 0, 0, 1, 0, 9, 'x'}, ErrHeaderTruncated},
		{"negative client id length", []byte{0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xf0}, ErrHeaderTruncated},
		{"flexible without tag buffer", base, ErrBadTagBuffer},
		{"varint longer than 5 bytes", append(append([]byte(nil), base...), 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), ErrBadTagBuffer},
		{"tag count beyond the bytes", append(append([]byte(nil), base...), 0x7f, 1, 1), ErrBadTagBuffer},
		{"tag size beyond the bytes", append(append([]byte(nil), base...), 1, 5, 100, 1), ErrBadTagBuffer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseRequestHeader(tc.b); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	ok := append(append([]byte(nil), base...), 1, 5, 1, 0xaa, 0xbb)
	h, err := ParseRequestHeader(ok)
	if err != nil || h.Size != len(ok)-1 || string(h.ClientID) != "id" {
		t.Fatalf("tagged header: %+v %v", h, err)
	}
}

// FuzzParseRequestHeader feeds arbitrary frames to the header decoder. Invariants: no
// panic; a parsed header's size lies within the frame; the client id views the frame's
// bytes. (BenchmarkParseRequestHeader shows it allocates nothing.)
func FuzzParseRequestHeader(f *testing.F) {
	meta := kmsg.NewPtrMetadataRequest()
	for _, v := range []int16{0, 8, 9, 12} {
		meta.SetVersion(v)
		f.Add(kmsg.NewRequestFormatter(kmsg.FormatterClientID("c")).AppendRequest(nil, meta, 1)[4:])
	}
	f.Add([]byte{0, 18, 0, 3, 0, 0, 0, 1, 0xff, 0xff, 0})
	f.Fuzz(func(t *testing.T, frame []byte) {
		h, err := ParseRequestHeader(frame)
		if err != nil {
			return
		}
		if h.Size < 10 || h.Size > len(frame) {
			t.Fatalf("header size %d outside the frame of %d", h.Size, len(frame))
		}
		if h.ClientID != nil && (len(h.ClientID) > len(frame) || cap(h.ClientID) != len(h.ClientID)) {
			t.Fatalf("client id %d bytes", len(h.ClientID))
		}
	})
}

func BenchmarkParseRequestHeader(b *testing.B) {
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(9)
	frame := kmsg.NewRequestFormatter(kmsg.FormatterClientID("franz-go")).AppendRequest(nil, req, 1)[4:]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRequestHeader(frame); err != nil {
			b.Fatal(err)
		}
	}
}
