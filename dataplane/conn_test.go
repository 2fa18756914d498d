package dataplane

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/internal/reserve"
)

// listenAddr reserves a loopback port for a listener the test starts (package reserve:
// no window in which another process takes it); the reservation is given up at the
// test's end, the listener holding the port by then.
func listenAddr(t testing.TB) string {
	t.Helper()
	r, err := reserve.TCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r.Addr()
}

// startServer runs a data-plane listener for the test's duration.
func startServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	cfg.Listen = listenAddr(t)
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return s
}

func dial(t testing.TB, s *Server) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// frameRequest encodes req as a full frame the way franz-go does.
func frameRequest(req kmsg.Request, version int16, corr int32) []byte {
	req.SetVersion(version)
	return kmsg.NewRequestFormatter(kmsg.FormatterClientID("test")).AppendRequest(nil, req, corr)
}

// readResponse reads one response frame and returns its correlation id and body (after
// the header for the given key and version).
func readResponse(t testing.TB, c net.Conn, flexibleHeader bool) (int32, []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(c, size[:]); err != nil {
		t.Fatalf("read response size: %v", err)
	}
	b := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read response: %v", err)
	}
	corr := int32(binary.BigEndian.Uint32(b))
	b = b[4:]
	if flexibleHeader {
		b = b[1:]
	}
	return corr, b
}

// expectClosed asserts that the server closes c (EOF or reset) within a few seconds.
func expectClosed(t testing.TB, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1024)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("connection still open")
		}
		return
	}
}

// checkServes asserts that a fresh connection still gets an ApiVersions answer.
func checkServes(t testing.TB, s *Server) {
	t.Helper()
	c := dial(t, s)
	if _, err := c.Write(frameRequest(kmsg.NewPtrApiVersionsRequest(), 3, 99)); err != nil {
		t.Fatal(err)
	}
	corr, body := readResponse(t, c, false)
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(3)
	if err := resp.ReadFrom(body); err != nil || corr != 99 || resp.ErrorCode != 0 {
		t.Fatalf("node stopped serving: corr %d err %v code %d", corr, err, resp.ErrorCode)
	}
}

func TestApiVersionsWithFranzGo(t *testing.T) {
	s := startServer(t, Config{})
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Addr()), kgo.RequestRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// franz-go opens with ApiVersions v4+, which we answer per KIP-511; it then retries
	// with v3 and this request goes through.
	resp, err := cl.Request(ctx, kmsg.NewPtrApiVersionsRequest())
	if err != nil {
		t.Fatal(err)
	}
	av := resp.(*kmsg.ApiVersionsResponse)
	if av.ErrorCode != 0 || len(av.ApiKeys) != len(apis) {
		t.Fatalf("response %+v", av)
	}
	for _, k := range av.ApiKeys {
		a := lookupAPI(k.ApiKey)
		if a == nil || a.advertisedMin() != k.MinVersion || a.advertisedMax() != k.MaxVersion {
			t.Fatalf("advertised %+v, table %+v", k, a)
		}
	}
}

func TestApiVersionsKIP511(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s)
	// A version from the future with a body we cannot know: answered from the header.
	frame := frameRequest(kmsg.NewPtrApiVersionsRequest(), 3, 7)
	binary.BigEndian.PutUint16(frame[6:], 42)
	if _, err := c.Write(frame); err != nil {
		t.Fatal(err)
	}
	corr, body := readResponse(t, c, false)
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(0)
	if err := resp.ReadFrom(body); err != nil {
		t.Fatal(err)
	}
	if corr != 7 || resp.ErrorCode != kerr.UnsupportedVersion.Code || len(resp.ApiKeys) != 1 ||
		resp.ApiKeys[0].ApiKey != 18 || resp.ApiKeys[0].MinVersion != 0 || resp.ApiKeys[0].MaxVersion != 3 {
		t.Fatalf("corr %d resp %+v", corr, resp)
	}
}

// TestPipelinedResponsesInOrder sends many requests in one write (clients pipeline) and
// expects the answers in request order, also with an in-flight limit of one, which makes
// the node hold back reading until each answer is written.
func TestPipelinedResponsesInOrder(t *testing.T) {
	for _, inflight := range []int{1, 100} {
		s := startServer(t, Config{MaxInFlightPerConnection: inflight})
		c := dial(t, s)
		var batch []byte
		for i := range 50 {
			batch = append(batch, frameRequest(kmsg.NewPtrApiVersionsRequest(), int16(i%4), int32(1000+i))...)
		}
		if _, err := c.Write(batch); err != nil {
			t.Fatal(err)
		}
		for i := range 50 {
			if corr, _ := readResponse(t, c, false); corr != int32(1000+i) {
				t.Fatalf("in-flight %d: response %d has correlation id %d", inflight, i, corr)
			}
		}
	}
}

// TestBadFramingClosesConnection: each case closes the offending connection, and the node
// goes on serving others.
func TestBadFramingClosesConnection(t *testing.T) {
	s := startServer(t, Config{MaxFrameBytes: 1 << 20})
	unknownKey := frameRequest(kmsg.NewPtrApiVersionsRequest(), 3, 1)
	binary.BigEndian.PutUint16(unknownKey[4:], 999)
	truncatedHeader := []byte{0, 0, 0, 6, 0, 18, 0, 3, 0, 0}
	// A flexible body whose last tag buffer claims 2³²−1 fields: kmsg alone would loop
	// on it for a minute, holding the event loop.
	hugeTagCount := frameRequest(kmsg.NewPtrApiVersionsRequest(), 3, 1)
	hugeTagCount = append(hugeTagCount[:len(hugeTagCount)-1], 0xff, 0xff, 0xff, 0xff, 0x0f)
	binary.BigEndian.PutUint32(hugeTagCount, uint32(len(hugeTagCount)-4))
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"negative size", []byte{0xff, 0xff, 0xff, 0xfe}},
		{"zero size", []byte{0, 0, 0, 0}},
		{"over the limit", []byte{0, 0x10, 0, 1}},
		{"2^31-1", []byte{0x7f, 0xff, 0xff, 0xff}},
		{"HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"TLS ClientHello", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}},
		{"unknown API key", unknownKey},
		{"truncated header", truncatedHeader},
		{"tag count past the body", hugeTagCount},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, s)
			if _, err := c.Write(tc.b); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, c)
			checkServes(t, s)
		})
	}
}

// TestSlowDripAndStall: a client that sends part of a frame and stalls, or drips it a byte
// at a time, is cut at the frame-read deadline; one that sends nothing at all is cut at
// the idle deadline. A truncated frame followed by EOF leaves the node serving.
func TestSlowDripAndStall(t *testing.T) {
	s := startServer(t, Config{FrameReadTimeout: 500 * time.Millisecond, IdleTimeout: 2 * time.Second})
	frame := frameRequest(kmsg.NewPtrApiVersionsRequest(), 3, 1)

	stalled := dial(t, s)
	if _, err := stalled.Write(frame[:7]); err != nil {
		t.Fatal(err)
	}
	drip := dial(t, s)
	idle := dial(t, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < len(frame)-1; i++ {
			if _, err := drip.Write(frame[i : i+1]); err != nil {
				return // closed by the node: expected
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	start := time.Now()
	expectClosed(t, stalled)
	expectClosed(t, drip)
	<-done
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("slow clients cut after %v", d)
	}
	expectClosed(t, idle)

	eof := dial(t, s)
	if _, err := eof.Write(frame[:len(frame)-3]); err != nil {
		t.Fatal(err)
	}
	eof.Close()
	checkServes(t, s)
}

func TestConnectionLimits(t *testing.T) {
	s := startServer(t, Config{MaxConnectionsPerIP: 3})
	var conns []net.Conn
	for range 3 {
		c := dial(t, s)
		conns = append(conns, c)
	}
	// Make sure the three are admitted before the fourth arrives.
	for _, c := range conns {
		if _, err := c.Write(frameRequest(kmsg.NewPtrApiVersionsRequest(), 0, 1)); err != nil {
			t.Fatal(err)
		}
		readResponse(t, c, false)
	}
	extra := dial(t, s)
	expectClosed(t, extra)
	conns[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for s.nconns.Load() > 2 {
		if time.Now().After(deadline) {
			t.Fatal("closed connection still counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	checkServes(t, s)
}

func TestMetricsEndpoint(t *testing.T) {
	s := startServer(t, Config{})
	checkServes(t, s)
	rec := httptest.NewRecorder()
	s.HTTPHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{`gregor_requests_total{api="ApiVersions"} 1`, "gregor_connections ", `gregor_fetch_bytes_total{path="sendfile"}`, `gregor_request_duration_seconds_bucket{api="ApiVersions"`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		rec := httptest.NewRecorder()
		s.HTTPHandler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 {
			t.Errorf("%s: %d", path, rec.Code)
		}
	}
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
