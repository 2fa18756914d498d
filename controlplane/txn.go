package controlplane

// Transactions. The active controller runs the transaction coordinator (package txn)
// beside the group coordinator, one per term of controllership: its store is fenced on
// the election like the groups', its producer ids come from the blocks every node takes
// from, its markers go to the partitions' leaders (txn_markers.go), and the offsets a
// transaction commits are the group coordinator's (groups.Coordinator.CompleteTxn).
// Data-plane nodes forward the transaction requests to the internal listener like the
// group requests (txn_server.go).

import (
	"context"
	"errors"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/controller"
	"github.com/gregor-streaming/gregor/controlplane/groups"
	"github.com/gregor-streaming/gregor/controlplane/txn"
)

// TxnConfig holds the transaction coordinator's settings (Kafka's transaction.* and
// transactional.id.* broker configs); see txn.Config.
type TxnConfig = txn.Config

// Defaults of TxnConfig.
const (
	DefaultTxnMaxTimeout      = txn.DefaultMaxTimeout
	DefaultTxnIDExpiration    = txn.DefaultIDExpiration
	DefaultTxnAbortInterval   = txn.DefaultAbortInterval
	DefaultTxnRemoveInterval  = txn.DefaultRemoveInterval
	DefaultTxnMarkerRetryWait = txn.DefaultMarkerRetryBackoff
	DefaultTxnEndWait         = txn.DefaultEndTxnCompleteWait
)

// runTerm is what a term of controllership runs beside the reconcile loop: the group
// and the transaction coordinators. It returns when ctx ends and both have stopped.
func (s *Server) runTerm(ctx context.Context, term controller.Term) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.runTxn(ctx, term)
	}()
	s.runGroups(ctx, term)
	wg.Wait()
}

// runTxn is the transaction coordinator for the term held by term.Election: its
// writes, its coordinator epoch and its producer-id blocks are fenced on the election
// key. It returns when ctx ends, the coordinator stopped.
func (s *Server) runTxn(ctx context.Context, term controller.Term) {
	e := term.Election
	txnf := func(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) (*clientv3.TxnResponse, error) {
		return s.cli.Txn(ctx, "txn_store", cmps, ops)
	}
	fence := clientv3.Compare(clientv3.CreateRevision(e.Key()), "=", e.Rev())
	alloc := func(ctx context.Context) (int64, int64, error) {
		b, err := s.cli.AllocateProducerIDsAsController(ctx, e.Key(), e.Rev())
		if errors.Is(err, client.ErrElectionLost) {
			return 0, 0, txn.ErrNotActive
		}
		return b.First, b.Size, err
	}
	co := txn.New(txn.Options{
		Config:  s.cfg.Transactions,
		Store:   txn.NewEtcdStore(s.ec, txnf, fence, alloc, s.txnMetrics.ObserveStore),
		Markers: s.markers,
		Leader:  s.partitionLeader,
		Groups:  txnGroups{s},
		Logger:  s.logger,
		Metrics: s.txnMetrics,
	})
	s.txnRT.Store(co)
	defer s.txnRT.CompareAndSwap(co, nil)
	co.Run(ctx, nil)
}

// partitionLeader is the transaction coordinator's view of a partition
// (txn.Options.Leader): its leader, and whether it exists. Without a view yet, every
// partition exists and has no leader (its markers wait).
func (s *Server) partitionLeader(topic string, partition int32) (int32, bool) {
	snap := s.snapshot()
	if snap == nil {
		return cluster.NoLeader, true
	}
	st, ok := snap.Partitions[cluster.TopicPartition{Topic: topic, Partition: partition}]
	if !ok {
		return cluster.NoLeader, false
	}
	return st.Leader, true
}

// verifyTxn is the group coordinator's question to the transaction coordinator
// (groups.Options.VerifyTxn).
func (s *Server) verifyTxn(id string, producerID int64, epoch int16, group string) int16 {
	co := s.txnRT.Load()
	if co == nil {
		return kerr.CoordinatorLoadInProgress.Code
	}
	return co.VerifyOffsets(id, producerID, epoch, group)
}

// txnGroups hands a transaction's end to the group coordinator of the term
// (txn.Options.Groups).
type txnGroups struct{ s *Server }

func (g txnGroups) CompleteTxn(group string, producerID int64, commit bool, done func(error)) {
	co := g.s.groupRT.Load()
	if co == nil {
		go done(groups.ErrNotActive) // tried again: the group coordinator is starting
		return
	}
	co.CompleteTxn(group, producerID, commit, done)
}
