package dataplane

// Topic administration, answered by the control plane from a goroutine (never on the
// event loop), then posted back to the connection's loop:
//
//   - CreateTopics, key 19, versions 0-4 (validate_only from v1). Manual replica
//     assignment is refused (INVALID_REQUEST): the control plane assigns replicas.
//   - DeleteTopics, key 20, versions 0-3.
//   - CreatePartitions, key 37, versions 0-1 (manual assignment refused as above).
//
// A successful change is answered once this node's metadata view includes it, so the
// client's next Metadata request sees it.

import (
	"context"
	"fmt"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	createTopicsKey     = int16(kmsg.CreateTopics)
	deleteTopicsKey     = int16(kmsg.DeleteTopics)
	createPartitionsKey = int16(kmsg.CreatePartitions)
)

var errNoControlPlane = fmt.Errorf("no control plane: %w", kerr.RequestTimedOut)

// async runs op on a goroutine bounded by timeoutMs (or adminTimeout) and posts done to
// the connection's loop with op's result.
func (s *Server) async(r *request, timeoutMs int32, op func(ctx context.Context) error, done func(error)) {
	r.retained = true
	timeout := adminTimeout
	if timeoutMs > 0 {
		timeout = time.Duration(timeoutMs) * time.Millisecond
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var err error
		if s.cp == nil {
			err = errNoControlPlane
		} else {
			err = op(ctx)
		}
		_ = r.conn.post(func() { done(err) }) // a closed connection wants no answer
	}()
}

// awaitRevision waits until the node's view and its replicas reflect rev.
func (s *Server) awaitRevision(ctx context.Context, rev int64) error {
	snap, err := s.cp.WaitRevision(ctx, rev)
	if err != nil {
		return err
	}
	return s.Reconcile(snap)
}

func handleCreateTopics(s *Server, r *request) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	req.SetVersion(r.hdr.APIVersion)
	if err := req.ReadFrom(r.body); err != nil {
		return err
	}
	resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
	resp.SetVersion(r.hdr.APIVersion)
	resp.Topics = make([]kmsg.CreateTopicsResponseTopic, len(req.Topics))
	errs := make([]error, len(req.Topics))
	seen := map[string]int{}
	for _, t := range req.Topics {
		seen[t.Topic]++
	}
	s.async(r, req.TimeoutMillis, func(ctx context.Context) error {
		var last int64
		for i, t := range req.Topics {
			switch {
			case seen[t.Topic] > 1:
				errs[i] = &client.Error{Code: kerr.InvalidRequest, Message: "topic named more than once in the request"}
				continue
			case len(t.ReplicaAssignment) > 0:
				errs[i] = &client.Error{Code: kerr.InvalidRequest, Message: "manual replica assignment is not supported: the control plane assigns replicas"}
				continue
			}
			configs := map[string]string{}
			for _, c := range t.Configs {
				if c.Value != nil {
					configs[c.Name] = *c.Value
				}
			}
			_, rev, err := s.cp.CreateTopic(ctx, client.TopicSpec{
				Name: t.Topic, Partitions: t.NumPartitions, ReplicationFactor: t.ReplicationFactor,
				Configs: configs, ValidateOnly: req.ValidateOnly,
			})
			errs[i] = err
			last = max(last, rev)
		}
		if last > 0 && !req.ValidateOnly {
			return s.awaitRevision(ctx, last)
		}
		return nil
	}, func(err error) {
		for i, t := range req.Topics {
			rt := &resp.Topics[i]
			rt.Default()
			rt.Topic = t.Topic
			e := errs[i]
			if e == nil {
				e = err
			}
			rt.ErrorCode = errorCode(e)
			if resp.Version >= 1 {
				rt.ErrorMessage = errorMessage(e)
			}
		}
		writeResponse(r, resp)
	})
	return nil
}

func handleDeleteTopics(s *Server, r *request) error {
	req := kmsg.NewPtrDeleteTopicsRequest()
	req.SetVersion(r.hdr.APIVersion)
	if err := req.ReadFrom(r.body); err != nil {
		return err
	}
	resp := req.ResponseKind().(*kmsg.DeleteTopicsResponse)
	resp.SetVersion(r.hdr.APIVersion)
	errs := make([]error, len(req.TopicNames))
	s.async(r, req.TimeoutMillis, func(ctx context.Context) error {
		var last int64
		for i, name := range req.TopicNames {
			rev, err := s.cp.DeleteTopic(ctx, name)
			errs[i] = err
			last = max(last, rev)
		}
		if last > 0 {
			return s.awaitRevision(ctx, last)
		}
		return nil
	}, func(err error) {
		for i, name := range req.TopicNames {
			rt := kmsg.NewDeleteTopicsResponseTopic()
			rt.Topic = kmsg.StringPtr(name)
			e := errs[i]
			if e == nil {
				e = err
			}
			rt.ErrorCode = errorCode(e)
			resp.Topics = append(resp.Topics, rt)
		}
		writeResponse(r, resp)
	})
	return nil
}

func handleCreatePartitions(s *Server, r *request) error {
	req := kmsg.NewPtrCreatePartitionsRequest()
	req.SetVersion(r.hdr.APIVersion)
	if err := req.ReadFrom(r.body); err != nil {
		return err
	}
	resp := req.ResponseKind().(*kmsg.CreatePartitionsResponse)
	resp.SetVersion(r.hdr.APIVersion)
	errs := make([]error, len(req.Topics))
	s.async(r, req.TimeoutMillis, func(ctx context.Context) error {
		var last int64
		for i, t := range req.Topics {
			if len(t.Assignment) > 0 {
				errs[i] = &client.Error{Code: kerr.InvalidRequest, Message: "manual replica assignment is not supported: the control plane assigns replicas"}
				continue
			}
			if req.ValidateOnly {
				errs[i] = validatePartitionCount(s.cp.Snapshot(), t.Topic, t.Count)
				continue
			}
			rev, err := s.cp.CreatePartitions(ctx, t.Topic, t.Count)
			errs[i] = err
			last = max(last, rev)
		}
		if last > 0 {
			return s.awaitRevision(ctx, last)
		}
		return nil
	}, func(err error) {
		for i, t := range req.Topics {
			rt := kmsg.NewCreatePartitionsResponseTopic()
			rt.Topic = t.Topic
			e := errs[i]
			if e == nil {
				e = err
			}
			rt.ErrorCode, rt.ErrorMessage = errorCode(e), errorMessage(e)
			resp.Topics = append(resp.Topics, rt)
		}
		writeResponse(r, resp)
	})
	return nil
}

// validatePartitionCount checks a CreatePartitions count without making the change.
func validatePartitionCount(snap *client.Snapshot, topic string, total int32) error {
	t, ok := snap.Topics[topic]
	switch {
	case !ok:
		return &client.Error{Code: kerr.UnknownTopicOrPartition, Message: topic}
	case total <= t.Partitions:
		return &client.Error{Code: kerr.InvalidPartitions, Message: fmt.Sprintf("topic has %d partitions; the count must grow", t.Partitions)}
	case total > client.PartitionsPerTopicMax:
		return &client.Error{Code: kerr.InvalidPartitions, Message: fmt.Sprintf("at most %d partitions", client.PartitionsPerTopicMax)}
	}
	return nil
}
