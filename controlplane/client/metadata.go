package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// Watch retry bounds.
const (
	watchRetryMin = 50 * time.Millisecond
	watchRetryMax = 2 * time.Second
	// watchProgressEvery is how often the watch asks its member for a progress
	// notification, and watchStallAfter how long it waits to hear anything (an event or
	// a progress notification) before it takes the member for stalled and re-creates the
	// watch elsewhere: a view is stale for at most about watchStallAfter plus a probe
	// (endpointProbeTimeout) when its member stops answering.
	watchProgressEvery = 500 * time.Millisecond
	watchStallAfter    = 2 * time.Second
)

// ChangeKind says what a Change is about.
type ChangeKind int

// Change kinds.
const (
	BrokerPut ChangeKind = iota + 1
	BrokerDeleted
	TopicPut
	TopicDeleted
	PartitionPut
	PartitionDeleted
	// Resync: the view was reloaded (after etcd compacted past the watch); individual
	// changes in between were not seen, and the snapshot is the whole truth.
	Resync
	// ShutdownPut and ShutdownDeleted: a node entered controlled shutdown, or its
	// controlled-shutdown key went (with its registration).
	ShutdownPut
	ShutdownDeleted
	// DecommissionPut and DecommissionDeleted: a node's decommission was asked for or
	// changed state, or it was recommissioned.
	DecommissionPut
	DecommissionDeleted
)

// String returns the kind's name.
func (k ChangeKind) String() string {
	names := [...]string{"?", "BrokerPut", "BrokerDeleted", "TopicPut", "TopicDeleted", "PartitionPut", "PartitionDeleted", "Resync", "ShutdownPut", "ShutdownDeleted", "DecommissionPut", "DecommissionDeleted"}
	if k < 0 || int(k) >= len(names) {
		return "ChangeKind(" + strconv.Itoa(int(k)) + ")"
	}
	return names[k]
}

// Change is one metadata change seen on the watch, in etcd revision order.
type Change struct {
	Kind     ChangeKind
	Revision int64
	// BrokerID is set for broker and shutdown changes; Broker holds the new value of a
	// BrokerPut.
	BrokerID int32
	Broker   cluster.Broker
	// TopicName is set for topic changes; Topic holds the new value of a TopicPut.
	TopicName string
	Topic     cluster.Topic
	// TopicPartition is set for partition changes; State holds the value of a PartitionPut.
	TopicPartition cluster.TopicPartition
	State          cluster.PartitionState
}

// Snapshot is an immutable view of the metadata at one etcd revision. Never modify it.
type Snapshot struct {
	// Revision is the etcd revision the snapshot reflects: every metadata change up to it
	// is included.
	Revision   int64
	Brokers    map[int32]cluster.Broker
	Topics     map[string]cluster.Topic
	Partitions map[cluster.TopicPartition]cluster.PartitionState
	// ShuttingDown holds, for each node that asked for a controlled shutdown, the broker
	// epoch of the registration that asked (see InControlledShutdown).
	ShuttingDown map[int32]int64
	// Decommissions holds the nodes being decommissioned or decommissioned, registered
	// or not (see Decommissioning).
	Decommissions map[int32]cluster.Decommission

	superseded chan struct{}
}

// Decommissioning reports whether node id is being decommissioned or is decommissioned:
// no new replica may be placed on it.
func (s *Snapshot) Decommissioning(id int32) bool {
	_, ok := s.Decommissions[id]
	return ok
}

// InControlledShutdown reports whether node id is registered and its current
// registration asked for a controlled shutdown: the controller elects it nowhere and
// moves its leaderships away.
func (s *Snapshot) InControlledShutdown(id int32) bool {
	epoch, ok := s.ShuttingDown[id]
	if !ok {
		return false
	}
	b, ok := s.Brokers[id]
	return ok && b.Epoch == epoch
}

// Superseded is closed when a newer snapshot replaces this one, so a caller can wait
// for the next change without polling.
func (s *Snapshot) Superseded() <-chan struct{} { return s.superseded }

// Metadata is a view of brokers, topics and partition states kept current by one etcd
// watch on MetaPrefix. Reads (Snapshot) are a single atomic load.
type Metadata struct {
	c        *Client
	onChange func(Change)
	cur      atomic.Pointer[Snapshot]
	cancel   context.CancelFunc
	done     chan struct{}
	closeMu  sync.Once
	// progressEvery and stallAfter are watchProgressEvery and watchStallAfter (zero:
	// those).
	progressEvery, stallAfter time.Duration
}

// WatchMetadata loads the metadata and keeps it current until Close. onChange, if not
// nil, is called for every change in revision order, from the watch goroutine, after
// the snapshot including it is published; it must return quickly.
func (c *Client) WatchMetadata(ctx context.Context, onChange func(Change)) (*Metadata, error) {
	m := &Metadata{c: c, onChange: onChange, done: make(chan struct{}), progressEvery: watchProgressEvery, stallAfter: watchStallAfter}
	snap, err := m.load(ctx)
	if err != nil {
		return nil, err
	}
	m.cur.Store(snap)
	wctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go m.run(wctx)
	return m, nil
}

// Snapshot returns the current view.
func (m *Metadata) Snapshot() *Snapshot { return m.cur.Load() }

// WaitRevision waits until the view reflects revision rev (returned by a write) or ctx ends.
func (m *Metadata) WaitRevision(ctx context.Context, rev int64) (*Snapshot, error) {
	for {
		s := m.cur.Load()
		if s.Revision >= rev {
			return s, nil
		}
		select {
		case <-s.superseded:
		case <-m.done:
			return nil, errors.New("client: metadata view closed")
		case <-ctx.Done():
			return nil, fmt.Errorf("client: wait for metadata revision %d (at %d): %w", rev, s.Revision, ctx.Err())
		}
	}
}

// Close stops the watch.
func (m *Metadata) Close() {
	m.closeMu.Do(func() {
		m.cancel()
		<-m.done
	})
}

// load reads the whole metadata prefix at one revision.
func (m *Metadata) load(ctx context.Context) (*Snapshot, error) {
	resp, err := m.c.get(ctx, "get_metadata", cluster.MetaPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("client: load metadata: %w", err)
	}
	s := &Snapshot{
		Revision:      resp.Header.Revision,
		Brokers:       map[int32]cluster.Broker{},
		Topics:        map[string]cluster.Topic{},
		Partitions:    map[cluster.TopicPartition]cluster.PartitionState{},
		ShuttingDown:  map[int32]int64{},
		Decommissions: map[int32]cluster.Decommission{},
		superseded:    make(chan struct{}),
	}
	for _, kv := range resp.Kvs {
		if _, err := applyPut(s, kv); err != nil {
			return nil, fmt.Errorf("client: load metadata: %w", err)
		}
	}
	return s, nil
}

// publish makes next current and wakes the waiters on the previous snapshot.
func (m *Metadata) publish(next *Snapshot) {
	prev := m.cur.Swap(next)
	close(prev.superseded)
}

// run follows the watch, re-establishing it (from the next revision, or by a reload
// after a compaction) whenever it breaks, with bounded backoff.
func (m *Metadata) run(ctx context.Context) {
	defer close(m.done)
	backoff := watchRetryMin
	for ctx.Err() == nil {
		err := m.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errStalled) {
			// Not the etcd client's fault to retry with a backoff: a new watch, on a new
			// stream, at once (the guard is taking the member out meanwhile).
			backoff = watchRetryMin
			continue
		}
		if errors.Is(err, errCompacted) {
			snap, lerr := m.load(ctx)
			if lerr == nil {
				m.publish(snap)
				if m.onChange != nil {
					m.onChange(Change{Kind: Resync, Revision: snap.Revision})
				}
				backoff = watchRetryMin
				continue
			}
			err = lerr
		}
		m.c.logger.Warn("metadata watch broke; retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, watchRetryMax)
	}
}

var (
	errCompacted = errors.New("watch revision compacted")
	errStalled   = errors.New("watch stalled: its member answers nothing")
)

// follow watches from the revision after the current snapshot's until the watch ends
// (see watchBounded: a member that stops answering ends it within about stallAfter).
func (m *Metadata) follow(ctx context.Context) error {
	from := m.cur.Load().Revision + 1
	err := m.c.watchBounded(ctx, "metadata", cmp.Or(m.progressEvery, watchProgressEvery), cmp.Or(m.stallAfter, watchStallAfter), func(wr clientv3.WatchResponse) error {
		if wr.CompactRevision != 0 {
			return errCompacted
		}
		if err := wr.Err(); err != nil {
			return fmt.Errorf("watch from %d: %w", from, err)
		}
		return m.apply(wr)
	}, cluster.MetaPrefix, clientv3.WithPrefix(), clientv3.WithRev(from))
	if errors.Is(err, errStalled) {
		m.c.logger.Warn("metadata watch heard nothing: its member stalled; watching elsewhere",
			slog.Int64("revision", m.cur.Load().Revision))
		m.c.event(EventWatchStalled)
	}
	return err
}

// watchBounded watches key with opts, handing every response to handle, until the
// watch ends, handle returns an error (returned), or the watch hears nothing for
// stallAfter (errStalled).
//
// WithRequireLeader makes a member cut off from the quorum end the watch instead of
// leaving it silently stale. A member that answers nothing at all — paused, or behind a
// link that drops bytes — ends nothing, and gRPC's keepalive notices it only after
// some 12 s: so the watch asks for a progress notification every progressEvery, and if
// nothing (no event, no notification) arrives within stallAfter it ends and reports
// the member to the endpoint guard. It runs on a gRPC stream of its own (the etcd
// client shares one stream among watches of equal metadata, which would stay on the
// stalled member), so the caller's next watch gets a new stream, which the balancer
// puts on a member that answers.
func (c *Client) watchBounded(ctx context.Context, name string, progressEvery, stallAfter time.Duration,
	handle func(clientv3.WatchResponse) error, key string, opts ...clientv3.OpOption) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wctx = metadata.AppendToOutgoingContext(wctx, "gregor-watch", name+"-"+strconv.FormatInt(c.watches.Add(1), 10))
	// Watch returns only once the member has answered the creation: on a stalled
	// member it would wait as long as the stream, so it too is bounded by stallAfter.
	var createStalled atomic.Bool
	created := make(chan struct{})
	go func() {
		t := time.NewTimer(stallAfter)
		defer t.Stop()
		select {
		case <-created:
		case <-t.C:
			createStalled.Store(true)
			cancel()
		}
	}()
	wch := c.etcd.Watch(wctx, key, append(opts, clientv3.WithProgressNotify())...)
	close(created)
	if createStalled.Load() && ctx.Err() == nil {
		c.stalled(ctx)
		return errStalled
	}
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	heard := time.Now()
	for {
		select {
		case wr, ok := <-wch:
			if !ok {
				return errors.New("watch channel closed")
			}
			heard = time.Now()
			if err := handle(wr); err != nil {
				return err
			}
		case <-tick.C:
			if time.Since(heard) > stallAfter {
				c.stalled(ctx)
				return errStalled
			}
			// The answer comes on wch as a progress notification. The request goes to
			// this watch's stream (the etcd client finds it by wctx's metadata); it is
			// bounded in case the stream is being re-opened.
			pctx, pcancel := context.WithTimeout(wctx, progressEvery)
			_ = c.etcd.RequestProgress(pctx)
			pcancel()
		}
	}
}

// stalled reports a stalled member to the endpoint guard and waits (until ctx ends)
// for its first probe to take the member out, so that the watch made next does not go
// back to it.
func (c *Client) stalled(ctx context.Context) {
	select {
	case <-c.suspectEndpoints():
	case <-ctx.Done():
	}
}

// apply builds the next snapshot from one watch response (copy-on-write: maps are
// copied, values are shared) and publishes it, then reports the changes.
func (m *Metadata) apply(wr clientv3.WatchResponse) error {
	prev := m.cur.Load()
	if len(wr.Events) == 0 {
		// Progress notification: every change up to the header revision has been sent.
		if wr.IsProgressNotify() && wr.Header.Revision > prev.Revision {
			next := *prev
			next.Revision = wr.Header.Revision
			next.superseded = make(chan struct{})
			m.publish(&next)
		}
		return nil
	}
	// Copy only the maps this response changes: a broker's lease expiring must not copy
	// every partition state.
	next := &Snapshot{
		Revision:      prev.Revision,
		Brokers:       prev.Brokers,
		Topics:        prev.Topics,
		Partitions:    prev.Partitions,
		ShuttingDown:  prev.ShuttingDown,
		Decommissions: prev.Decommissions,
		superseded:    make(chan struct{}),
	}
	var brokers, topics, partitions, shutdown, decommissions bool
	for _, ev := range wr.Events {
		key := string(ev.Kv.Key)
		brokers = brokers || strings.HasPrefix(key, cluster.BrokersPrefix)
		topics = topics || strings.HasPrefix(key, cluster.TopicsPrefix)
		partitions = partitions || strings.HasPrefix(key, cluster.PartitionsPrefix)
		shutdown = shutdown || strings.HasPrefix(key, cluster.ShutdownPrefix)
		decommissions = decommissions || strings.HasPrefix(key, cluster.DecommissionPrefix)
	}
	if brokers {
		next.Brokers = maps.Clone(prev.Brokers)
	}
	if topics {
		next.Topics = maps.Clone(prev.Topics)
	}
	if partitions {
		next.Partitions = maps.Clone(prev.Partitions)
	}
	if shutdown {
		next.ShuttingDown = maps.Clone(prev.ShuttingDown)
		if next.ShuttingDown == nil {
			next.ShuttingDown = map[int32]int64{}
		}
	}
	if decommissions {
		next.Decommissions = maps.Clone(prev.Decommissions)
		if next.Decommissions == nil {
			next.Decommissions = map[int32]cluster.Decommission{}
		}
	}
	changes := make([]Change, 0, len(wr.Events))
	for _, ev := range wr.Events {
		var ch Change
		var err error
		if ev.Type == mvccpb.PUT {
			ch, err = applyPut(next, ev.Kv)
		} else {
			ch, err = applyDelete(next, string(ev.Kv.Key))
		}
		if err != nil {
			// A value we cannot decode is a bug in a writer; skip it rather than stall the view.
			m.c.logger.Error("metadata: bad value skipped", "key", string(ev.Kv.Key), "err", err)
			continue
		}
		ch.Revision = ev.Kv.ModRevision
		next.Revision = max(next.Revision, ev.Kv.ModRevision)
		changes = append(changes, ch)
	}
	m.publish(next)
	if m.onChange != nil {
		for _, ch := range changes {
			m.onChange(ch)
		}
	}
	return nil
}

// applyPut stores one key's value in s.
func applyPut(s *Snapshot, kv *mvccpb.KeyValue) (Change, error) {
	key := string(kv.Key)
	switch {
	case strings.HasPrefix(key, cluster.BrokersPrefix):
		b, err := cluster.DecodeBroker(key, kv.Value, kv.ModRevision)
		if err != nil {
			return Change{}, err
		}
		s.Brokers[b.ID] = b
		return Change{Kind: BrokerPut, BrokerID: b.ID, Broker: b}, nil
	case strings.HasPrefix(key, cluster.TopicsPrefix):
		t, err := cluster.DecodeTopic(key, kv.Value)
		if err != nil {
			return Change{}, err
		}
		s.Topics[t.Name] = t
		return Change{Kind: TopicPut, TopicName: t.Name, Topic: t}, nil
	case strings.HasPrefix(key, cluster.PartitionsPrefix):
		p, err := cluster.DecodePartition(key, kv.Value, kv.ModRevision)
		if err != nil {
			return Change{}, err
		}
		s.Partitions[p.TopicPartition()] = p
		return Change{Kind: PartitionPut, TopicPartition: p.TopicPartition(), State: p}, nil
	case strings.HasPrefix(key, cluster.ShutdownPrefix):
		id, v, err := cluster.DecodeControlledShutdown(key, kv.Value)
		if err != nil {
			return Change{}, err
		}
		s.ShuttingDown[id] = v.Epoch
		return Change{Kind: ShutdownPut, BrokerID: id}, nil
	case strings.HasPrefix(key, cluster.DecommissionPrefix):
		id, v, err := cluster.DecodeDecommission(key, kv.Value, kv.ModRevision)
		if err != nil {
			return Change{}, err
		}
		s.Decommissions[id] = v
		return Change{Kind: DecommissionPut, BrokerID: id}, nil
	}
	return Change{}, fmt.Errorf("unknown metadata key %q", key)
}

// applyDelete removes one key from s.
func applyDelete(s *Snapshot, key string) (Change, error) {
	switch {
	case strings.HasPrefix(key, cluster.BrokersPrefix):
		id, err := cluster.ParseBrokerKey(key)
		if err != nil {
			return Change{}, err
		}
		delete(s.Brokers, id)
		return Change{Kind: BrokerDeleted, BrokerID: id}, nil
	case strings.HasPrefix(key, cluster.TopicsPrefix):
		name := strings.TrimPrefix(key, cluster.TopicsPrefix)
		delete(s.Topics, name)
		return Change{Kind: TopicDeleted, TopicName: name}, nil
	case strings.HasPrefix(key, cluster.PartitionsPrefix):
		tp, err := cluster.ParsePartitionKey(key)
		if err != nil {
			return Change{}, err
		}
		delete(s.Partitions, tp)
		return Change{Kind: PartitionDeleted, TopicPartition: tp}, nil
	case strings.HasPrefix(key, cluster.ShutdownPrefix):
		id, err := cluster.ParseShutdownKey(key)
		if err != nil {
			return Change{}, err
		}
		delete(s.ShuttingDown, id)
		return Change{Kind: ShutdownDeleted, BrokerID: id}, nil
	case strings.HasPrefix(key, cluster.DecommissionPrefix):
		id, err := cluster.ParseDecommissionKey(key)
		if err != nil {
			return Change{}, err
		}
		delete(s.Decommissions, id)
		return Change{Kind: DecommissionDeleted, BrokerID: id}, nil
	}
	return Change{}, fmt.Errorf("unknown metadata key %q", key)
}
