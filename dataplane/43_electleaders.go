package dataplane

// ElectLeaders, key 43, versions 0-2 (v1: election type, top-level error, KIP-460; v2:
// flexible). Election type PREFERRED (0) or UNCLEAN (1); null topics mean every
// partition.
//
// The elections are the controller's: the request is forwarded as the client sent it
// to the active controller's internal listener, the way group requests go
// (11_groups.go), from a goroutine, and the controller answers with the response body
// (controlplane/elect_server.go; the per-partition codes are Kafka's:
// ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE, ELIGIBLE_LEADERS_NOT_AVAILABLE,
// UNKNOWN_TOPIC_OR_PARTITION, INVALID_REQUEST for an unknown election type). A
// successful answer is given once this node's view shows the new leaders (within a
// bound), so the client's next Metadata request here sees them. No controller to
// answer: every partition asked for, and from v1 the request, get REQUEST_TIMED_OUT.

import (
	"context"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const electLeadersKey = int16(kmsg.ElectLeaders)

// electLeadersViewWaitMax bounds the wait for this node's view to show the leaders an
// ElectLeaders request elected.
const electLeadersViewWaitMax = 5 * time.Second

func handleElectLeaders(s *Server, r *request) error {
	req := kmsg.NewPtrElectLeadersRequest()
	frame, err := decodeForwarded(r, req, proto.ElectLeadersRequestV2)
	if err != nil {
		return err
	}
	before := s.cp.Snapshot() // the view the elected leaders' epochs must pass
	s.forwardToController(r, frame, req.TimeoutMillis, "ElectLeaders", func(ctx context.Context, body []byte) {
		s.awaitElected(ctx, before, body, r.hdr.APIVersion)
	}, func(msg string) kmsg.Response {
		resp := req.ResponseKind().(*kmsg.ElectLeadersResponse)
		code := kerr.RequestTimedOut.Code
		resp.ErrorCode = code // encoded from v1
		for _, t := range req.Topics {
			rt := kmsg.NewElectLeadersResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewElectLeadersResponseTopicPartition()
				rp.Partition, rp.ErrorCode, rp.ErrorMessage = p, code, &msg
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	})
	return nil
}

// awaitElected waits, within electLeadersViewWaitMax, until the node's view shows a
// leader epoch newer than before's for every partition the controller's answer (body,
// at version) says it elected.
func (s *Server) awaitElected(ctx context.Context, before *client.Snapshot, body []byte, version int16) {
	resp := kmsg.NewPtrElectLeadersResponse()
	resp.SetVersion(version)
	if resp.ReadFrom(body) != nil {
		return // the client gets the answer as it is
	}
	var elected []cluster.TopicPartition
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode == 0 {
				elected = append(elected, cluster.TopicPartition{Topic: t.Topic, Partition: p.Partition})
			}
		}
	}
	if len(elected) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, electLeadersViewWaitMax)
	defer cancel()
	for snap := s.cp.Snapshot(); ; {
		done := true
		for _, tp := range elected {
			if st, ok := snap.Partitions[tp]; ok && st.LeaderEpoch <= before.Partitions[tp].LeaderEpoch {
				done = false
				break
			}
		}
		if done {
			return
		}
		next, err := s.cp.WaitRevision(ctx, snap.Revision+1)
		if err != nil {
			return
		}
		snap = next
	}
}
