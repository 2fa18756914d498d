package controlplane

// The transaction requests on the internal listener: data-plane nodes forward their
// clients' InitProducerId (with a transactional id), AddPartitionsToTxn,
// AddOffsetsToTxn, EndTxn, DescribeTransactions and ListTransactions, and partition
// leaders their AddPartitionsToTxn v4 checks, to the transaction coordinator; the
// clients' TxnOffsetCommit goes to the group coordinator. They are read like the other
// forwarded requests (a flexible version's body checked against its shape first) and
// applied one at a time in the connection's order.

import (
	"encoding/binary"
	"errors"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/groups"
	"github.com/gregor-streaming/gregor/controlplane/txn"
)

// isTxnRequest reports whether a forwarded request is one of the transaction APIs.
func isTxnRequest(kreq []byte) bool {
	if len(kreq) < 2 {
		return false
	}
	_, ok := client.TxnAPIs[int16(binary.BigEndian.Uint16(kreq))]
	return ok
}

// parseTxnRequest reads a forwarded transaction request: its header and body, a
// flexible version's body checked against its shape (client.TxnRequestShape).
func parseTxnRequest(b []byte) (txn.Header, kmsg.Request, error) {
	if len(b) < 4 {
		return txn.Header{}, nil, errors.New("short request")
	}
	h := txn.Header{Key: int16(binary.BigEndian.Uint16(b)), Version: int16(binary.BigEndian.Uint16(b[2:]))}
	maxVersion, ok := client.TxnAPIs[h.Key]
	if !ok {
		return h, nil, errors.New("not a transaction request")
	}
	req := kmsg.RequestForKey(h.Key)
	shape, _ := client.TxnRequestShape(h.Key, h.Version)
	if err := parseForwarded(b, req, maxVersion, shape); err != nil {
		return h, nil, err
	}
	return h, req, nil
}

// handleTxnRequest decodes one forwarded transaction request and runs it on the
// coordinator that serves it. It returns once the request is applied.
func (s *Server) handleTxnRequest(host string, kreq []byte, reply func(status byte, body []byte)) {
	h, req, err := parseTxnRequest(kreq)
	if err != nil {
		s.groupMetrics.BadRequest()
		reply(client.GroupStatusBadRequest, nil)
		return
	}
	notActive := func() { reply(client.GroupStatusNotActive, nil) }
	respond := func(body []byte) { reply(client.GroupStatusOK, body) }
	if h.Key == int16(kmsg.TxnOffsetCommit) {
		co := s.groupRT.Load()
		if co == nil {
			notActive()
			return
		}
		s.groupMetrics.Request(h.Key)
		co.Handle(groups.Header{Key: h.Key, Version: h.Version}, host, req, groups.Answer{Response: respond, NotActive: notActive})
		return
	}
	co := s.txnRT.Load()
	if co == nil {
		notActive()
		return
	}
	co.Handle(h, req, txn.Answer{Response: respond, NotActive: notActive})
}
