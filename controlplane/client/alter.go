package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// AlterISRRequest is a partition leader's request to change the ISR (Kafka's
// AlterPartition): the leader sends the epochs of the state it decided from.
type AlterISRRequest struct {
	cluster.TopicPartition
	// LeaderEpoch and PartitionEpoch are those of the state the leader acts on.
	LeaderEpoch    int32
	PartitionEpoch int32
	// NewISR must contain the leader, be a subset of the replicas, and list only live
	// nodes (a node being added must be registered).
	NewISR []int32
	// BrokerEpochs maps members NewISR adds to the broker epoch the leader saw in their
	// fetches (KIP-903's BrokerState): such a member is added only while that is still
	// its registration's epoch, so a node that registered again since — a restart,
	// which may have lost what its earlier process fetched — is not added on the
	// strength of that process's fetches. A member without an epoch here (or with a
	// negative one) need only be registered.
	BrokerEpochs map[int32]int64
}

// AlterISR shrinks or expands the ISR of a partition this node leads, as a
// compare-and-swap on the partition epoch. It returns the new state.
//
// Refusals: UNKNOWN_TOPIC_OR_PARTITION; NOT_LEADER_FOR_PARTITION (this node does not
// lead it, or not yet: the state was written before this registration);
// FENCED_LEADER_EPOCH (leader epoch mismatch); INVALID_UPDATE_VERSION (partition epoch
// mismatch, or another writer won the race: re-read and decide again); INVALID_REQUEST
// (ISR without the leader, outside the replicas, or with duplicates); INELIGIBLE_REPLICA
// (an added member is not registered, is registered again since the epoch in
// BrokerEpochs, or is in controlled shutdown: Kafka's KIP-841 keeps a node that is
// stopping out of the ISR); STALE_BROKER_EPOCH (this node's registration is lost or was
// taken over — it must not act as leader).
func (r *Registration) AlterISR(ctx context.Context, req AlterISRRequest) (cluster.PartitionState, error) {
	c := r.c
	cur, err := c.GetPartition(ctx, req.TopicPartition)
	if err != nil {
		return cluster.PartitionState{}, err
	}
	me := r.broker.ID
	switch {
	case cur.Leader != me:
		return cur, errorf(kerr.NotLeaderForPartition, "%s: node %d is not the leader (leader %d)", req.TopicPartition, me, cur.Leader)
	case cur.ModRevision < r.broker.Epoch:
		// The state predates this registration: it names an earlier process of this node
		// leader, whose log may have lost unflushed data. This process leads only once the
		// controller has elected it, with a new leader epoch.
		return cur, errorf(kerr.NotLeaderForPartition, "%s: leadership was given to an earlier registration of node %d (epoch %d); waiting for the controller", req.TopicPartition, me, r.broker.Epoch)
	case cur.LeaderEpoch != req.LeaderEpoch:
		return cur, errorf(kerr.FencedLeaderEpoch, "%s: leader epoch %d, current %d", req.TopicPartition, req.LeaderEpoch, cur.LeaderEpoch)
	case cur.PartitionEpoch != req.PartitionEpoch:
		return cur, errorf(kerr.InvalidUpdateVersion, "%s: partition epoch %d, current %d", req.TopicPartition, req.PartitionEpoch, cur.PartitionEpoch)
	}
	if err := validISR(cur, req.NewISR); err != nil {
		return cur, err
	}
	next := cur.Clone()
	next.ISR = append([]int32(nil), req.NewISR...)
	next.PartitionEpoch++
	key := cluster.PartitionKey(req.Topic, req.Partition)
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(key), "=", cur.ModRevision),
		// Fencing: a leader whose registration expired may not change the ISR, or it could
		// shrink it to itself just before the controller moves leadership away.
		brokerEpochIs(me, r.broker.Epoch),
	}
	// Members added must be registered, under the epoch their fetches were made in when
	// the leader knows it.
	var added []int32
	elseOps := []clientv3.Op{clientv3.OpGet(key), clientv3.OpGet(cluster.BrokerKey(me))}
	for _, id := range req.NewISR {
		if slices.Contains(cur.ISR, id) {
			continue
		}
		added = append(added, id)
		if epoch, ok := req.BrokerEpochs[id]; ok && epoch >= 0 {
			cmps = append(cmps, brokerEpochIs(id, epoch))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(cluster.BrokerKey(id)), ">", 0))
		}
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(cluster.ShutdownKey(id)), "=", 0))
		elseOps = append(elseOps, clientv3.OpGet(cluster.BrokerKey(id)), clientv3.OpGet(cluster.ShutdownKey(id)))
	}
	resp, err := c.txn(ctx, "alter_isr", cmps, []clientv3.Op{clientv3.OpPut(key, cluster.MustJSON(next))}, elseOps...)
	if err != nil {
		return cur, fmt.Errorf("client: alter isr %s: %w", req.TopicPartition, err)
	}
	if resp.Succeeded {
		next.ModRevision = resp.Header.Revision
		return next, nil
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 0 || kvs[0].ModRevision != cur.ModRevision {
		return cur, fmt.Errorf("client: alter isr %s: %w", req.TopicPartition, ErrConcurrentUpdate)
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) == 0 || kvs[0].ModRevision != r.broker.Epoch {
		return cur, fmt.Errorf("client: alter isr %s: %w", req.TopicPartition, ErrRegistrationLost)
	}
	var why []string
	for i, id := range added {
		kvs := resp.Responses[2+2*i].GetResponseRange().Kvs
		switch epoch, ok := req.BrokerEpochs[id]; {
		case len(kvs) == 0:
			why = append(why, fmt.Sprintf("%d is not registered", id))
		case ok && epoch >= 0 && kvs[0].ModRevision != epoch:
			why = append(why, fmt.Sprintf("%d fetched under broker epoch %d, registered at %d since", id, epoch, kvs[0].ModRevision))
		case len(resp.Responses[3+2*i].GetResponseRange().Kvs) > 0:
			why = append(why, fmt.Sprintf("%d is in controlled shutdown", id))
		}
	}
	return cur, errorf(kerr.IneligibleReplica, "%s: new ISR members ineligible: %s", req.TopicPartition, strings.Join(why, "; "))
}

// validISR checks a proposed ISR against the partition's replicas and leader.
func validISR(cur cluster.PartitionState, isr []int32) error {
	if !slices.Contains(isr, cur.Leader) {
		return errorf(kerr.InvalidRequest, "%s: new ISR %v lacks the leader %d", cur.TopicPartition(), isr, cur.Leader)
	}
	seen := map[int32]bool{}
	for _, id := range isr {
		if seen[id] || !slices.Contains(cur.Replicas, id) {
			return errorf(kerr.InvalidRequest, "%s: new ISR %v is not a set of replicas %v", cur.TopicPartition(), isr, cur.Replicas)
		}
		seen[id] = true
	}
	return nil
}

// Producer-id allocation.
const (
	// ProducerIDBlockSize is how many producer ids one allocation hands a node (Kafka's
	// block size too): one etcd write per thousand idempotent producers.
	ProducerIDBlockSize = 1000
	// producerIDAttemptsMax bounds compare-and-swap retries under contention.
	producerIDAttemptsMax = 32
)

// ProducerIDBlock is a range of producer ids owned by one node: First..First+Size-1.
type ProducerIDBlock struct {
	First int64
	Size  int64
}

// AllocateProducerIDs hands this node the next block of producer ids. Blocks are taken
// by a compare-and-swap on ProducerIDNextKey, which only grows, so no id is handed out twice.
func (r *Registration) AllocateProducerIDs(ctx context.Context) (ProducerIDBlock, error) {
	return r.c.allocateProducerIDs(ctx, brokerEpochIs(r.broker.ID, r.broker.Epoch),
		clientv3.OpGet(cluster.BrokerKey(r.broker.ID)), func(kvs []*mvccpb.KeyValue) bool {
			return len(kvs) == 0 || kvs[0].ModRevision != r.broker.Epoch
		}, ErrRegistrationLost)
}

// ErrElectionLost is AllocateProducerIDsAsController's error once the caller's term of
// controllership is over.
var ErrElectionLost = errors.New("client: the controller election key is gone")

// AllocateProducerIDsAsController hands the active controller (the transaction
// coordinator of its term) the next block of producer ids, from the same counter as the
// nodes' blocks, fenced on its election key (electionKey with create revision
// electionRev): ErrElectionLost once another term has begun.
func (c *Client) AllocateProducerIDsAsController(ctx context.Context, electionKey string, electionRev int64) (ProducerIDBlock, error) {
	return c.allocateProducerIDs(ctx, clientv3.Compare(clientv3.CreateRevision(electionKey), "=", electionRev),
		clientv3.OpGet(electionKey), func(kvs []*mvccpb.KeyValue) bool {
			return len(kvs) == 0 || kvs[0].CreateRevision != electionRev
		}, ErrElectionLost)
}

// allocateProducerIDs takes the next block by a compare-and-swap on ProducerIDNextKey,
// in a transaction that also compares fence; when it fails, check's answer tells
// whether the fence is what failed (lost: lostErr) or the counter moved (try again).
func (c *Client) allocateProducerIDs(ctx context.Context, fence clientv3.Cmp, check clientv3.Op,
	lost func([]*mvccpb.KeyValue) bool, lostErr error) (ProducerIDBlock, error) {
	for attempt := 0; attempt < producerIDAttemptsMax; attempt++ {
		resp, err := c.get(ctx, "get_producer_ids", cluster.ProducerIDNextKey)
		if err != nil {
			return ProducerIDBlock{}, fmt.Errorf("client: allocate producer ids: %w", err)
		}
		var next, modRev int64
		if len(resp.Kvs) > 0 {
			modRev = resp.Kvs[0].ModRevision
			if next, err = strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64); err != nil || next < 0 {
				return ProducerIDBlock{}, fmt.Errorf("client: allocate producer ids: bad %s value %q", cluster.ProducerIDNextKey, resp.Kvs[0].Value)
			}
		}
		block := ProducerIDBlock{First: next, Size: ProducerIDBlockSize}
		tr, err := c.txn(ctx, "allocate_producer_ids",
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(cluster.ProducerIDNextKey), "=", modRev), fence},
			[]clientv3.Op{clientv3.OpPut(cluster.ProducerIDNextKey, strconv.FormatInt(next+ProducerIDBlockSize, 10))},
			check)
		if err != nil {
			return ProducerIDBlock{}, fmt.Errorf("client: allocate producer ids: %w", err)
		}
		if tr.Succeeded {
			return block, nil
		}
		if lost(tr.Responses[0].GetResponseRange().Kvs) {
			return ProducerIDBlock{}, fmt.Errorf("client: allocate producer ids: %w", lostErr)
		}
	}
	return ProducerIDBlock{}, fmt.Errorf("client: allocate producer ids: lost %d races in a row", producerIDAttemptsMax)
}
