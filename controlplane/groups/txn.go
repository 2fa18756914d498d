package groups

// Offsets committed in transactions (TxnOffsetCommit, KIP-98/KIP-447). A producer
// commits a consumer group's offsets inside its transaction: the transaction
// coordinator (package txn) must know the group is in the producer's ongoing
// transaction (AddOffsetsToTxn), which VerifyTxn asks. The offsets are then held
// pending, per producer id, both here and in etcd (cluster.TxnOffsetKey), so that they
// survive a change of controller; they are not shown by OffsetFetch. When the
// transaction ends, the transaction coordinator calls CompleteTxn (its marker for the
// group): on commit the pending offsets become the group's committed offsets, in the
// same etcd transaction that drops them as pending; on abort they are dropped.

import (
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// txnPending reports whether a transaction not ended yet holds an offset of tp pending.
func (g *group) txnPending(tp topicPartition) bool {
	for _, pending := range g.txnOffsets {
		if _, ok := pending[tp]; ok {
			return true
		}
	}
	return false
}

// handleTxnOffsetCommit answers TxnOffsetCommit (Kafka's handleTxnCommitOffsets): the
// member checks of an OffsetCommit, for a group-aware producer (v3: generation,
// member id, instance id), then the offsets held pending for the producer.
func (co *Coordinator) handleTxnOffsetCommit(req *kmsg.TxnOffsetCommitRequest, send func(kmsg.Response), notActive func()) {
	resp := req.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
	answer := func(all int16, codes map[topicPartition]int16) {
		if all == notActiveCode {
			notActive()
			return
		}
		for _, t := range req.Topics {
			rt := kmsg.NewTxnOffsetCommitResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, all
				if all == 0 {
					rp.ErrorCode = codes[topicPartition{t.Topic, p.Partition}]
				}
				if rp.ErrorCode == kerr.ProducerFenced.Code && req.Version < 2 {
					rp.ErrorCode = kerr.InvalidProducerEpoch.Code // before KIP-588
				}
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		send(resp)
	}
	n := 0
	for _, t := range req.Topics {
		n += len(t.Partitions)
	}
	switch {
	case n > groupOffsetsPerCommitMax:
		answer(kerr.InvalidRequest.Code, nil)
		return
	case !validGroupID(req.Group):
		answer(kerr.InvalidGroupID.Code, nil)
		return
	}
	if code := co.verifyTxn(req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Group); code != 0 {
		answer(code, nil)
		return
	}
	g := co.getGroup(req.Group, true)
	defer co.maybeForget(g)
	switch {
	case g.state == stateDead:
		answer(kerr.CoordinatorNotAvailable.Code, nil)
		return
	case req.Generation < 0 && g.state == stateEmpty:
		// Not relying on the group for assignment: commits freely.
	case req.Generation >= 0 || req.MemberID != "" || req.InstanceID != nil:
		switch {
		case !g.instanceMatches(req.InstanceID, req.MemberID):
			answer(kerr.FencedInstanceID.Code, nil)
			return
		case req.MemberID != "" && g.members[req.MemberID] == nil:
			answer(kerr.UnknownMemberID.Code, nil)
			return
		case req.Generation >= 0 && req.Generation != g.generation:
			answer(kerr.IllegalGeneration.Code, nil)
			return
		}
	}
	now := co.clock.Now().UnixMilli()
	codes := map[topicPartition]int16{}
	recs := map[topicPartition]offsetRecord{}
	var order []topicPartition
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			tp := topicPartition{t.Topic, p.Partition}
			meta, code := co.checkOffset(t.Topic, p.Partition, p.Metadata)
			if code != 0 {
				codes[tp] = code
				continue
			}
			leaderEpoch := int32(-1)
			if req.Version >= 2 {
				leaderEpoch = p.LeaderEpoch
			}
			if _, dup := recs[tp]; !dup {
				order = append(order, tp)
			}
			recs[tp] = offsetRecord{Offset: p.Offset, LeaderEpoch: leaderEpoch, Metadata: meta, CommitMs: now}
		}
	}
	if len(order) == 0 {
		answer(0, codes)
		return
	}
	ops := make([]Op, len(order))
	for i, tp := range order {
		ops[i] = Op{Key: cluster.TxnOffsetKey(g.id, req.ProducerID, tp.topic, tp.partition), Value: cluster.MustJSON(recs[tp])}
	}
	pid := req.ProducerID
	co.writeOffsets(g, ops, order, codes, func(tp topicPartition) {
		if co.groups[g.id] == g {
			if g.txnOffsets[pid] == nil {
				g.txnOffsets[pid] = map[topicPartition]offsetRecord{}
			}
			g.txnOffsets[pid][tp] = recs[tp]
		}
	}, func(code int16, codes map[topicPartition]int16) {
		answer(code, codes)
		if code == 0 {
			co.maybeForget(g)
		}
	})
}

// errNotLoaded is CompleteTxn's answer before the coordinator has loaded.
var errNotLoaded = errors.New("groups: not loaded yet")

// verifyTxn asks the transaction coordinator (Options.VerifyTxn).
func (co *Coordinator) verifyTxn(id string, pid int64, epoch int16, group string) int16 {
	if co.verify == nil {
		return kerr.CoordinatorNotAvailable.Code
	}
	return co.verify(id, pid, epoch, group)
}

// CompleteTxn ends producerID's transaction for group (the transaction coordinator's
// marker for the group): on commit the offsets it committed in it become the group's
// committed offsets, on abort they are dropped; done gets nil once that is stored
// (also when there is nothing to do: a marker may come twice). It runs behind every
// write queued before it, so a TxnOffsetCommit of the transaction still being written
// is included. done runs with the coordinator's lock held.
func (co *Coordinator) CompleteTxn(group string, producerID int64, commit bool, done func(error)) {
	select {
	case <-co.loaded:
	default:
		go done(errNotLoaded) // the groups are not known yet: the marker comes again
		return
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.stopped || co.loadErr != nil {
		go done(ErrNotActive)
		return
	}
	co.store.Submit(nil, func(err error) {
		co.mu.Lock()
		defer co.mu.Unlock()
		if err != nil {
			done(err)
			return
		}
		g := co.groups[group]
		if g == nil || len(g.txnOffsets[producerID]) == 0 {
			done(nil)
			return
		}
		pending := g.txnOffsets[producerID]
		var puts []Op
		var tps []topicPartition
		if commit {
			for tp, rec := range pending {
				tps = append(tps, tp)
				puts = append(puts, Op{Key: cluster.OffsetKey(g.id, tp.topic, tp.partition), Value: cluster.MustJSON(rec)})
			}
		}
		drop := Op{Key: cluster.TxnOffsetsProducerPrefix(g.id, producerID), Delete: true, Prefix: true}
		applied := func() {
			for _, tp := range tps {
				g.offsets[tp] = pending[tp]
			}
			delete(g.txnOffsets, producerID)
			co.metrics.offsetCommits.Add(len(tps))
		}
		g.offsetWrites++
		finish := func(err error) {
			g.offsetWrites--
			if err == nil && co.groups[g.id] == g {
				applied()
			}
			co.maybeForget(g)
			done(err)
		}
		if all := append(puts, drop); len(chunkOps(all)) == 1 {
			// One transaction: the offsets become committed as they stop being pending.
			co.store.Submit(all, func(err error) {
				co.mu.Lock()
				defer co.mu.Unlock()
				finish(err)
			})
			return
		}
		// Too many for one transaction: the commits first, then the drop (a failure in
		// between leaves them pending, and the marker comes again).
		co.submitChunked(puts, func(errs []error) {
			for _, err := range errs {
				if err != nil {
					co.mu.Lock()
					defer co.mu.Unlock()
					finish(err)
					return
				}
			}
			co.store.Submit([]Op{drop}, func(err error) {
				co.mu.Lock()
				defer co.mu.Unlock()
				finish(err)
			})
		})
	})
}
