package dataplane

// InitProducerId, key 22, versions 0-1, for idempotent producers: a producer id from a
// block this node holds (blocks come from the control plane and are never handed out
// twice), epoch 0. Transactional ids are refused (transactions are not served).

import (
	"context"
	"sync"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/twmb/franz-go/pkg/kerr"
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
	if err := req.ReadFrom(r.body); err != nil {
		return err
	}
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.SetVersion(r.hdr.APIVersion)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	if req.TransactionalID != nil {
		resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
		writeResponse(r, resp)
		return nil
	}
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
