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
	"github.com/gregor-streaming/gregor/controlplane/cluster"
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

// adminEach runs op for each of n items of an admin request on a goroutine, waits until
// the node's view includes the last change made, then on the loop gives answer each
// item's error (the item's own, else the wait's) and writes resp.
func (s *Server) adminEach(r *request, timeoutMs int32, n int, resp kmsg.Response, op func(ctx context.Context, i int) (rev int64, err error), answer func(i int, err error)) {
	errs := make([]error, n)
	s.async(r, timeoutMs, func(ctx context.Context) error {
		var last int64
		for i := range n {
			rev, err := op(ctx, i)
			errs[i] = err
			last = max(last, rev)
		}
		if last > 0 {
			return s.awaitRevision(ctx, last)
		}
		return nil
	}, func(err error) {
		for i := range n {
			e := errs[i]
			if e == nil {
				e = err
			}
			answer(i, e)
		}
		writeResponse(r, resp)
	})
}

// errManualAssignment refuses replica assignments chosen by the client.
var errManualAssignment = &client.Error{Code: kerr.InvalidRequest, Message: "manual replica assignment is not supported: the control plane assigns replicas"}

func handleCreateTopics(s *Server, r *request) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	req.SetVersion(r.hdr.APIVersion)
	if err := req.ReadFrom(r.body); err != nil {
		return err
	}
	resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
	resp.SetVersion(r.hdr.APIVersion)
	resp.Topics = make([]kmsg.CreateTopicsResponseTopic, len(req.Topics))
	seen := map[string]int{}
	for _, t := range req.Topics {
		seen[t.Topic]++
	}
	s.adminEach(r, req.TimeoutMillis, len(req.Topics), resp, func(ctx context.Context, i int) (int64, error) {
		t := &req.Topics[i]
		switch {
		case seen[t.Topic] > 1:
			return 0, &client.Error{Code: kerr.InvalidRequest, Message: "topic named more than once in the request"}
		case len(t.ReplicaAssignment) > 0:
			return 0, errManualAssignment
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
		if req.ValidateOnly {
			rev = 0 // nothing changed: nothing to wait for
		}
		return rev, err
	}, func(i int, err error) {
		rt := &resp.Topics[i]
		rt.Default()
		rt.Topic = req.Topics[i].Topic
		rt.ErrorCode = errorCode(err)
		if resp.Version >= 1 {
			rt.ErrorMessage = errorMessage(err)
		}
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
	resp.Topics = make([]kmsg.DeleteTopicsResponseTopic, len(req.TopicNames))
	s.adminEach(r, req.TimeoutMillis, len(req.TopicNames), resp, func(ctx context.Context, i int) (int64, error) {
		return s.cp.DeleteTopic(ctx, req.TopicNames[i])
	}, func(i int, err error) {
		rt := &resp.Topics[i]
		rt.Default()
		rt.Topic = kmsg.StringPtr(req.TopicNames[i])
		rt.ErrorCode = errorCode(err)
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
	resp.Topics = make([]kmsg.CreatePartitionsResponseTopic, len(req.Topics))
	s.adminEach(r, req.TimeoutMillis, len(req.Topics), resp, func(ctx context.Context, i int) (int64, error) {
		t := &req.Topics[i]
		switch {
		case len(t.Assignment) > 0:
			return 0, errManualAssignment
		case req.ValidateOnly:
			return 0, validatePartitionCount(s.cp.Snapshot(), t.Topic, t.Count)
		}
		return s.cp.CreatePartitions(ctx, t.Topic, t.Count)
	}, func(i int, err error) {
		rt := &resp.Topics[i]
		rt.Default()
		rt.Topic = req.Topics[i].Topic
		rt.ErrorCode, rt.ErrorMessage = errorCode(err), errorMessage(err)
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
	case total > cluster.PartitionsPerTopicMax:
		return &client.Error{Code: kerr.InvalidPartitions, Message: fmt.Sprintf("at most %d partitions", cluster.PartitionsPerTopicMax)}
	}
	return nil
}
