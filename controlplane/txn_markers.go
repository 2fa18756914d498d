package controlplane

// The transaction coordinator's WriteTxnMarkers requests to the data-plane nodes
// (txn.MarkerSender): a Kafka connection per node, to the address it registered,
// opened when first needed and again after any failure. The coordinator sends at most
// one request to a node at a time, so a connection carries one request and its answer
// at a time.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/proto"
)

// Limits of the marker connections.
const (
	// markerDialTimeout bounds connecting to a node.
	markerDialTimeout = 5 * time.Second
	// markerResponseMax bounds a WriteTxnMarkers answer.
	markerResponseMax = 16 << 20
	// markerClientID is the client id of the coordinator's requests.
	markerClientID = "gregor-txn-coordinator"
)

// writeTxnMarkersResponseV1 is the shape of a WriteTxnMarkers v1 answer's body, checked
// before kmsg decodes it (proto.CheckShape).
var writeTxnMarkersResponseV1 = proto.Shape{proto.CompactArray(proto.Int64,
	proto.CompactArray(proto.CompactString, proto.CompactArray(proto.Int32, proto.Int16, proto.Tags), proto.Tags),
	proto.Tags), proto.Tags}

// errMarkerNode is WriteTxnMarkers' error for a node that is not registered.
var errMarkerNode = errors.New("controlplane: node not registered")

// markerSender holds the connections to the data-plane nodes.
type markerSender struct {
	s      *Server
	format *kmsg.RequestFormatter
	mu     sync.Mutex
	conns  map[int32]*markerConn
	closed bool
}

// markerConn is the connection to one node.
type markerConn struct {
	mu   sync.Mutex
	addr string
	nc   net.Conn
	corr int32
	// dead is set when the sender closed: no new connection is opened.
	dead bool
}

func newMarkerSender(s *Server) *markerSender {
	return &markerSender{s: s, format: kmsg.NewRequestFormatter(kmsg.FormatterClientID(markerClientID)),
		conns: map[int32]*markerConn{}}
}

// close closes every connection (Server.Close).
func (ms *markerSender) close() {
	ms.mu.Lock()
	ms.closed = true
	conns := ms.conns
	ms.conns = map[int32]*markerConn{}
	ms.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		c.dead = true
		if c.nc != nil {
			_ = c.nc.Close()
			c.nc = nil
		}
		c.mu.Unlock()
	}
}

// conn returns node's connection at addr (a new one if the node moved).
func (ms *markerSender) conn(node int32, addr string) (*markerConn, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.closed {
		return nil, net.ErrClosed
	}
	c := ms.conns[node]
	if c == nil || c.addr != addr {
		if c != nil {
			go c.drop()
		}
		c = &markerConn{addr: addr}
		ms.conns[node] = c
	}
	return c, nil
}

func (c *markerConn) drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dead = true
	if c.nc != nil {
		_ = c.nc.Close()
		c.nc = nil
	}
}

// WriteTxnMarkers implements txn.MarkerSender.
func (ms *markerSender) WriteTxnMarkers(ctx context.Context, node int32, req *kmsg.WriteTxnMarkersRequest) (*kmsg.WriteTxnMarkersResponse, error) {
	snap := ms.s.snapshot()
	if snap == nil {
		return nil, errMarkerNode
	}
	b, ok := snap.Brokers[node]
	if !ok {
		return nil, fmt.Errorf("%w: %d", errMarkerNode, node)
	}
	c, err := ms.conn(node, net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))))
	if err != nil {
		return nil, err
	}
	return c.roundTrip(ctx, ms.format, req)
}

// roundTrip sends req and reads its answer; any failure closes the connection.
func (c *markerConn) roundTrip(ctx context.Context, format *kmsg.RequestFormatter, req *kmsg.WriteTxnMarkersRequest) (resp *kmsg.WriteTxnMarkersResponse, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return nil, net.ErrClosed
	}
	if c.nc == nil {
		d := net.Dialer{Timeout: markerDialTimeout}
		if c.nc, err = d.DialContext(ctx, "tcp", c.addr); err != nil {
			c.nc = nil
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			_ = c.nc.Close()
			c.nc = nil
		}
	}()
	// The context bounds the exchange: its deadline, or its end closing the socket.
	if dl, ok := ctx.Deadline(); ok {
		_ = c.nc.SetDeadline(dl)
	} else {
		_ = c.nc.SetDeadline(time.Time{})
	}
	nc := c.nc
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c.corr++
	if _, err = nc.Write(format.AppendRequest(nil, req, c.corr)); err != nil {
		return nil, err
	}
	var size [4]byte
	if _, err = io.ReadFull(nc, size[:]); err != nil {
		return nil, err
	}
	n := int32(binary.BigEndian.Uint32(size[:]))
	if n < 4 || n > markerResponseMax {
		return nil, fmt.Errorf("controlplane: WriteTxnMarkers answer of %d bytes", n)
	}
	buf := make([]byte, n)
	if _, err = io.ReadFull(nc, buf); err != nil {
		return nil, err
	}
	return decodeMarkersResponse(buf, c.corr, req.Version)
}

// decodeMarkersResponse reads a WriteTxnMarkers answer (after its size): the response
// header (with tags from the first flexible version) and the body at version.
func decodeMarkersResponse(b []byte, corr int32, version int16) (*kmsg.WriteTxnMarkersResponse, error) {
	r := kbin.Reader{Src: b}
	if got := r.Int32(); got != corr {
		return nil, fmt.Errorf("controlplane: WriteTxnMarkers answer for correlation id %d, want %d", got, corr)
	}
	resp := kmsg.NewPtrWriteTxnMarkersResponse()
	resp.SetVersion(version)
	if resp.IsFlexible() {
		for n := r.Uvarint(); n > 0 && r.Ok(); n-- {
			r.Uvarint()
			r.Span(int(r.Uvarint()))
		}
	}
	if err := r.Complete(); err != nil {
		return nil, fmt.Errorf("controlplane: WriteTxnMarkers answer header: %w", err)
	}
	if resp.IsFlexible() {
		if err := proto.CheckShape(r.Src, writeTxnMarkersResponseV1); err != nil {
			return nil, fmt.Errorf("controlplane: WriteTxnMarkers answer: %w", err)
		}
	}
	if err := resp.ReadFrom(r.Src); err != nil {
		return nil, fmt.Errorf("controlplane: WriteTxnMarkers answer: %w", err)
	}
	return resp, nil
}
