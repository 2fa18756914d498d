package dataplane

// InitProducerId, key 22, versions 0-4. For idempotent producers (no transactional id)
// this node answers: a producer id from a block it holds (blocks come from the control
// plane and are never handed out twice), epoch 0 — also when a v3+ producer names the
// id and epoch it had (KIP-360), as Kafka does without a transactional id. With a
// transactional id it is forwarded to the transaction coordinator (txn_forward.go),
// which bumps the id's epoch and fences the producer that had it.

import (
	"bytes"
	"context"
	"sync"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const initProducerIDKey = int16(kmsg.InitProducerID)

// producerIDs hands out ids from the node's current block.
type producerIDs struct {
	mu    sync.Mutex
	block client.ProducerIDBlock
	used  int64
}

// next returns the next id, taking a new block from the control plane when the current
// one is used up (at most once per thousand producers).
func (s *Server) nextProducerID(ctx context.Context) (int64, error) {
	ids := &s.producerIDs
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if ids.used >= ids.block.Size {
		block, err := s.cp.AllocateProducerIDs(ctx)
		if err != nil {
			return -1, err
		}
		ids.block, ids.used = block, 0
	}
	id := ids.block.First + ids.used
	ids.used++
	return id, nil
}

func handleInitProducerID(s *Server, r *request) error {
	req := kmsg.NewPtrInitProducerIDRequest()
	req.SetVersion(r.hdr.APIVersion)
	// Decoded from a copy: a transactional one is forwarded (and its strings view it).
	frame := bytes.Clone(r.frame)
	body := frame[r.hdr.Size:]
	if req.IsFlexible() {
		shape, _ := client.TxnRequestShape(initProducerIDKey, r.hdr.APIVersion)
		if err := proto.CheckShape(body, shape); err != nil {
			return err
		}
	}
	if err := req.ReadFrom(body); err != nil {
		return err
	}
	if req.TransactionalID != nil {
		s.forwardGroupRequest(r, frame, req)
		return nil
	}
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.SetVersion(r.hdr.APIVersion)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	var id int64
	s.async(r, 0, func(ctx context.Context) (err error) {
		id, err = s.nextProducerID(ctx)
		return err
	}, func(err error) {
		if err != nil {
			resp.ErrorCode = errorCode(err)
		} else {
			resp.ProducerID, resp.ProducerEpoch = id, 0
		}
		writeResponse(r, resp)
	})
	return nil
}
