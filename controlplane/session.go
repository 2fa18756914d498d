package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// DefaultSessionGrace is how long a data-plane node whose session broke has to open
// another before its registration is revoked (Config.SessionGrace).
const DefaultSessionGrace = time.Second

// Heartbeats the node is asked for: sessionHeartbeatsPerGrace per grace, at most
// sessionHeartbeatMax apart.
const (
	sessionHeartbeatsPerGrace = 5
	sessionHeartbeatMax       = time.Second
)

// sessionOpTimeout bounds each etcd call of a session: recording it, and the check and
// revoke after it broke.
const sessionOpTimeout = 5 * time.Second

// The session service: every member serves the data-plane nodes' session streams on its
// etcd client port (registered into etcd's gRPC server), the crash detector that lets
// a killed node's partitions move without waiting out its lease. See the client
// package's session.go for the node's side.
//
// A session is recorded in etcd under SessionKey(id), bound to the node's registration
// lease, with a nonce of this stream. When the stream ends without the node saying
// goodbye — its process died and its kernel closed the connection, or the connection
// broke — the member waits the grace, then revokes the registration's lease if, in one
// read, the registration is still the epoch the session named and the session key still
// holds this stream's nonce (no later session of the node was opened on any member).

// sessionService is the service description registered on etcd's gRPC server.
func (s *Server) sessionService() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "gregor.v1.Liveness",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    client.SessionStreamDesc.StreamName,
			Handler:       func(_ any, st grpc.ServerStream) error { return s.serveSession(st) },
			ServerStreams: true,
			ClientStreams: true,
		}},
	}
}

// serveSession holds one node's session until its stream ends.
func (s *Server) serveSession(st grpc.ServerStream) error {
	var m wrapperspb.BytesValue
	if err := st.RecvMsg(&m); err != nil {
		return err
	}
	hello, err := client.DecodeSessionHello(&m)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	ec := s.sessionEtcd()
	if ec == nil {
		return status.Error(codes.Unavailable, "control plane starting")
	}
	nonce := newNonce()
	ctx, cancel := context.WithTimeout(st.Context(), sessionOpTimeout)
	resp, err := ec.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(cluster.BrokerKey(hello.ID)), "=", hello.Epoch),
		clientv3.Compare(clientv3.LeaseValue(cluster.BrokerKey(hello.ID)), "=", hello.Lease),
	).Then(clientv3.OpPut(cluster.SessionKey(hello.ID), nonce, clientv3.WithLease(clientv3.LeaseID(hello.Lease)))).Commit()
	cancel()
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	if !resp.Succeeded {
		return status.Errorf(codes.FailedPrecondition, "node %d: registration epoch %d is not the current one", hello.ID, hello.Epoch)
	}
	grace := max(s.cfg.SessionGrace, 0) // off: the node's bound never binds before its lease's
	if grace == 0 {
		grace = 365 * 24 * time.Hour
	}
	terms := client.SessionTerms{Grace: grace, Heartbeat: min(grace/sessionHeartbeatsPerGrace, sessionHeartbeatMax)}
	if err := st.SendMsg(client.EncodeSessionTerms(terms)); err != nil {
		return err
	}
	s.metrics.sessionsOpened.Inc()
	s.metrics.sessionsOpen.Add(1)
	defer s.metrics.sessionsOpen.Add(-1)
	for {
		// Every heartbeat is answered at once, in order; the answer must leave before
		// the break is noticed, which the node's bound on its own safety relies on.
		err = st.RecvMsg(&m)
		if err == nil {
			err = st.SendMsg(&wrapperspb.BytesValue{})
		}
		if err != nil {
			break
		}
	}
	broke := time.Now()
	switch {
	case errors.Is(err, io.EOF):
		// The node closed its side: a goodbye, not a crash.
		return nil
	case s.closing.Load():
		// This member is stopping: its streams end for that reason, not the nodes'.
		return nil
	}
	s.metrics.sessionsBroken.Inc()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.sessionBroken(hello, nonce, broke)
	}()
	return nil
}

// sessionBroken revokes the registration of a node whose session broke, once the grace
// has passed, unless a later session replaced this one or the registration changed.
func (s *Server) sessionBroken(hello client.SessionHello, nonce string, broke time.Time) {
	if s.cfg.SessionGrace < 0 {
		return
	}
	t := time.NewTimer(time.Until(broke.Add(s.cfg.SessionGrace)))
	select {
	case <-t.C:
	case <-s.stopping:
		t.Stop()
		return
	}
	ec := s.sessionEtcd()
	ctx, cancel := context.WithTimeout(context.Background(), sessionOpTimeout)
	defer cancel()
	resp, err := ec.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(cluster.BrokerKey(hello.ID)), "=", hello.Epoch),
		clientv3.Compare(clientv3.LeaseValue(cluster.BrokerKey(hello.ID)), "=", hello.Lease),
		clientv3.Compare(clientv3.Value(cluster.SessionKey(hello.ID)), "=", nonce),
	).Commit()
	if err != nil {
		s.logger.Warn("a data-plane node's session broke; could not check it (its lease will decide)",
			slog.Int("node", int(hello.ID)), slog.Any("err", err))
		return
	}
	if !resp.Succeeded {
		s.metrics.sessionsKept.Inc() // a new session, a new registration, or none
		return
	}
	if _, err := ec.Revoke(ctx, clientv3.LeaseID(hello.Lease)); err != nil {
		s.logger.Warn("a data-plane node's session broke; could not revoke its registration (its lease will decide)",
			slog.Int("node", int(hello.ID)), slog.Any("err", err))
		return
	}
	s.metrics.sessionRevokes.Inc()
	s.logger.Info("a data-plane node's session broke and no other opened: revoked its registration",
		slog.Int("node", int(hello.ID)), slog.Int64("epoch", hello.Epoch), slog.Duration("grace", s.cfg.SessionGrace))
}

// sessionEtcd is the member's own etcd client, once the control loop has opened it.
func (s *Server) sessionEtcd() *clientv3.Client {
	return s.ecReady.Load()
}

func newNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
