package workload

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/chaos/history"
)

// partitionsPrefix is the control plane's prefix of the partition state keys,
// <prefix><topic>/<partition> (controlplane/cluster's PartitionsPrefix; this package
// does not import the control plane).
const partitionsPrefix = "/gregor/meta/partitions/"

// partitionValue is a partition key's value (controlplane/cluster's PartitionState).
type partitionValue struct {
	Replicas    []int32 `json:"replicas"`
	Leader      int32   `json:"leader"`
	LeaderEpoch int32   `json:"leaderEpoch"`
	ISR         []int32 `json:"isr"`
}

// decodeState turns a partition key and value into a state; ok is false for another
// key or a value that does not decode.
func decodeState(key string, value []byte, rev int64, at time.Time, topics map[string]bool) (history.PartitionState, bool) {
	rest, ok := strings.CutPrefix(key, partitionsPrefix)
	i := strings.LastIndexByte(rest, '/')
	if !ok || i <= 0 || !topics[rest[:i]] {
		return history.PartitionState{}, false
	}
	p, err := strconv.ParseInt(rest[i+1:], 10, 32)
	var v partitionValue
	if err != nil || json.Unmarshal(value, &v) != nil {
		return history.PartitionState{}, false
	}
	return history.PartitionState{Topic: rest[:i], Partition: int32(p), Leader: v.Leader, LeaderEpoch: v.LeaderEpoch,
		ISR: v.ISR, Replicas: v.Replicas, Revision: rev, Time: at}, true
}

// StateRecorder watches the control plane's partition keys of some topics into a
// history: every state the watch delivers (h.States, with its revision), and a
// linearizable read of them every interval (h.Control, read operations with their call
// and return times).
//
// The writes are made inside the control plane (the controller, the partition leaders'
// AlterISR), so h.Control has them as the watch shows them: each a compare-and-swap from
// the state before it (the watch delivers every revision of a key in order), called at
// any time since the run began — their writers are not observed — and returned by the
// time the watch delivered it. The check is then that every read returns a state of the
// chain no older than the last one delivered before the read began.
type StateRecorder struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// RecordStates starts recording the partition states of topics through etcd client ec
// (which it does not close), reading them every readEvery (0: no reads).
func RecordStates(ctx context.Context, rec *Recorder, ec *clientv3.Client, readEvery time.Duration, topics ...string) *StateRecorder {
	want := map[string]bool{}
	for _, t := range topics {
		want[t] = true
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &StateRecorder{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		done := make(chan struct{})
		if readEvery > 0 {
			go func() {
				defer close(done)
				reads(ctx, rec, ec, readEvery, want)
			}()
		} else {
			close(done)
		}
		watchStates(ctx, rec, ec, want)
		<-done
	}()
	return s
}

// Stop stops the recorder and waits for it.
func (s *StateRecorder) Stop() {
	s.cancel()
	<-s.done
}

// watchStates records every partition state from the current ones on, resuming after
// the last revision seen when the watch breaks (a compacted revision starts over from
// a read).
func watchStates(ctx context.Context, rec *Recorder, ec *clientv3.Client, want map[string]bool) {
	var from int64
	began := rec.History().Start
	last := map[string]history.PartitionState{}
	// write records st as a write; blind (no compare) when states may have been
	// skipped since the last one (a read, not the watch, delivered it).
	write := func(st history.PartitionState, at time.Time, blind bool) {
		key := st.Topic + "/" + strconv.Itoa(int(st.Partition))
		op := history.ControlOp{Client: "watch", Topic: st.Topic, Partition: st.Partition, Write: true, Ok: true,
			State: st, Call: began, Return: at}
		if prev, ok := last[key]; ok {
			if prev.Revision >= st.Revision {
				return // seen already (a read after a broken watch)
			}
			if !blind {
				op.Expect = &prev
			}
		}
		last[key] = st
		rec.Control(op)
	}
	for ctx.Err() == nil {
		if from == 0 {
			gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := ec.Get(gctx, partitionsPrefix, clientv3.WithPrefix())
			cancel()
			if err != nil {
				sleepCtx(ctx, 100*time.Millisecond)
				continue
			}
			now := time.Now()
			for _, kv := range resp.Kvs {
				if st, ok := decodeState(string(kv.Key), kv.Value, kv.ModRevision, now, want); ok {
					rec.State(st)
					write(st, now, true)
				}
			}
			from = resp.Header.Revision + 1
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range ec.Watch(wctx, partitionsPrefix, clientv3.WithPrefix(), clientv3.WithRev(from)) {
			if wr.CompactRevision != 0 {
				from = 0
				break
			}
			if wr.Err() != nil {
				break
			}
			now := time.Now()
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				if st, ok := decodeState(string(ev.Kv.Key), ev.Kv.Value, ev.Kv.ModRevision, now, want); ok {
					rec.State(st)
					write(st, now, false)
				}
				from = ev.Kv.ModRevision + 1
			}
			if wr.Header.Revision >= from {
				from = wr.Header.Revision + 1
			}
		}
		cancel()
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

// reads reads the partition states every interval, linearizably, each one a read
// operation of client "state-reader".
func reads(ctx context.Context, rec *Recorder, ec *clientv3.Client, every time.Duration, want map[string]bool) {
	for ctx.Err() == nil {
		call := time.Now()
		gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := ec.Get(gctx, partitionsPrefix, clientv3.WithPrefix())
		cancel()
		ret := time.Now()
		if err == nil {
			for _, kv := range resp.Kvs {
				if st, ok := decodeState(string(kv.Key), kv.Value, kv.ModRevision, ret, want); ok {
					rec.Control(history.ControlOp{Client: "state-reader", Topic: st.Topic, Partition: st.Partition,
						Ok: true, State: st, Call: call, Return: ret})
				}
			}
		}
		sleepCtx(ctx, every)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
