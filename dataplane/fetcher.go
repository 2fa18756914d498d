package dataplane

// Replica fetchers (Kafka's ReplicaFetcherManager and ReplicaFetcherThread): for the
// partitions this node follows, one fetcher per leader node, each a goroutine with one
// connection that fetches all of that leader's partitions in one Fetch request (v15:
// topic ids, ReplicaState with this node's id and broker epoch), appends what comes back
// byte for byte (replica's AppendAsFollower: the leader's offsets and epochs) and takes
// the leader's high watermark. Each partition's fetch carries the latest epoch of this
// node's log (LastFetchedEpoch): where the logs diverge the leader answers where that
// epoch ended in its log (DivergingEpoch) and the fetcher truncates there and fetches
// again (KIP-595's truncation on fetch, as Kafka's fetchers do since 2.7; KIP-101 and
// KIP-279's rules), never to its own high watermark. OffsetForLeaderEpoch is asked only
// when a fetch finds its offset out of the leader's range or an append fails. Reconcile
// tells the fetchers what to follow; nothing on their path calls the control plane.
//
// The follower appends the records by one of two paths (Config.ReplicaAppend,
// fetcher_splice.go): copied once through user space, or spliced from the socket into
// the segment and validated there.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/replica"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/gregor-streaming/gregor/sendfile"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Defaults of the replica fetchers' settings, Kafka's replica.* defaults.
const (
	// DefaultReplicaFetchMaxWait is how long the leader may hold a fetch that finds no
	// data (replica.fetch.wait.max.ms).
	DefaultReplicaFetchMaxWait = 500 * time.Millisecond
	// DefaultReplicaFetchMinBytes is the data a fetch waits for (replica.fetch.min.bytes).
	DefaultReplicaFetchMinBytes = 1
	// DefaultReplicaFetchMaxBytes bounds each partition of a fetch
	// (replica.fetch.max.bytes).
	DefaultReplicaFetchMaxBytes = 1 << 20
	// DefaultReplicaFetchResponseMaxBytes bounds a whole fetch
	// (replica.fetch.response.max.bytes).
	DefaultReplicaFetchResponseMaxBytes = 10 << 20
	// DefaultReplicaFetchBackoff is the pause after an error (replica.fetch.backoff.ms).
	DefaultReplicaFetchBackoff = time.Second
	// DefaultReplicaSocketTimeout bounds a fetch's round trip beyond its max wait
	// (replica.socket.timeout.ms).
	DefaultReplicaSocketTimeout = 30 * time.Second
)

// replicaFetchVersion is the Fetch version fetchers send (v15: ReplicaState, topic ids),
// replicaFetchVersionNoIDs the one they send when a partition's topic id is unknown
// (v12, as Kafka's fetchers do); replicaEpochVersion the OffsetForLeaderEpoch version
// (v3: with the replica id).
const (
	replicaFetchVersion      = proto.FetchVersionReplicaState
	replicaFetchVersionNoIDs = proto.FetchVersionFlexible
	replicaEpochVersion      = 3
	replicaClientID          = "gregor-replica-fetcher"
)

// tpKey names a partition.
type tpKey struct {
	topic     string
	partition int32
}

// followTarget is a partition this node follows, as Reconcile found it: its replica,
// its leader, the leader's address and the leader epoch.
type followTarget struct {
	tpKey
	topicID uuid.UUID // zero when the view's is not a UUID
	p       *replica.Partition
	leader  int32
	addr    string
	epoch   int32
}

// replicaFetchers holds the node's fetchers, one per leader node.
type replicaFetchers struct {
	s *Server
	// mu serialises set, remove and closeAll.
	mu       sync.Mutex
	byLeader map[int32]*fetcher
	closed   bool
}

// set makes the fetchers follow exactly targets: a fetcher per leader (a new one when
// the leader's address changed), each with its partitions; a partition new to its
// fetcher, or at a new leader epoch, is truncated by epoch before it is fetched.
func (rf *replicaFetchers) set(targets []followTarget) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if rf.closed {
		return
	}
	groups := map[int32][]followTarget{}
	for _, t := range targets {
		groups[t.leader] = append(groups[t.leader], t)
	}
	for id, f := range rf.byLeader {
		if g, ok := groups[id]; !ok || g[0].addr != f.addr {
			f.close()
			delete(rf.byLeader, id)
		}
	}
	for id, g := range groups {
		f := rf.byLeader[id]
		if f == nil {
			f = newFetcher(rf.s, id, g[0].addr)
			if rf.byLeader == nil {
				rf.byLeader = map[int32]*fetcher{}
			}
			rf.byLeader[id] = f
		}
		f.setPartitions(g)
	}
}

// remove stops fetching a partition; once it returns no fetcher appends to it. Reconcile
// calls it before the node leads the partition.
func (rf *replicaFetchers) remove(k tpKey) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	for _, f := range rf.byLeader {
		f.removePartition(k)
	}
}

// closeAll stops every fetcher, for good.
func (rf *replicaFetchers) closeAll() {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	rf.closed = true
	for id, f := range rf.byLeader {
		f.close()
		delete(rf.byLeader, id)
	}
}

// fetcher fetches one leader's partitions for this node.
type fetcher struct {
	s      *Server
	leader int32
	addr   string

	// mu guards parts and is held while a response is applied, so that a partition
	// removed is appended to no more.
	mu    sync.Mutex
	parts map[string]map[int32]*fetchPartition

	kick      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	cancel    context.CancelFunc
	ctx       context.Context
	closeOnce sync.Once

	connMu sync.Mutex
	conn   net.Conn

	// Owned by the fetcher's goroutine: reused for every request.
	list []*fetchPartition
	req  []byte
	resp []byte
	corr int32
	// The splice path's (fetcher_splice.go): the pipe, a scratch buffer for records
	// read and dropped, whether the data directory refused splice writes, and the
	// splice in progress with its sink and writer bound once.
	splicer           *sendfile.Splicer
	scratch           []byte
	spliceUnsupported bool
	splice            spliceState
	spliceSink        func(int) error
	spliceDrain       func(int, *int64) error
}

// fetchPartition is one partition of a fetcher, at one leader epoch.
type fetchPartition struct {
	tpKey
	topicID uuid.UUID
	p       *replica.Partition
	epoch   int32
	// truncating: the partition is truncated by epoch before it is fetched. Guarded by
	// the fetcher's mu.
	truncating bool
	// delayedUntil: after an error the partition waits (the fetch backoff) before it
	// is fetched again. Guarded by the fetcher's mu.
	delayedUntil time.Time
	// staged: its records of the answer being read, spliced into its log and not yet
	// committed (fetcher_splice.go). Owned by the fetcher's goroutine.
	staged *segment.StagedAppend
}

func newFetcher(s *Server, leader int32, addr string) *fetcher {
	ctx, cancel := context.WithCancel(context.Background())
	f := &fetcher{s: s, leader: leader, addr: addr, parts: map[string]map[int32]*fetchPartition{},
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), ctx: ctx, cancel: cancel}
	go f.run()
	return f
}

// setPartitions makes the fetcher's partitions exactly targets, keeping the state of
// those at the same replica, topic id and leader epoch.
func (f *fetcher) setPartitions(targets []followTarget) {
	f.mu.Lock()
	parts := map[string]map[int32]*fetchPartition{}
	for _, t := range targets {
		fp := f.parts[t.topic][t.partition]
		if fp == nil || fp.p != t.p || fp.epoch != t.epoch || fp.topicID != t.topicID {
			// Fetched at once: divergence from the leader's log shows in the fetch.
			fp = &fetchPartition{tpKey: t.tpKey, topicID: t.topicID, p: t.p, epoch: t.epoch}
		}
		if parts[t.topic] == nil {
			parts[t.topic] = map[int32]*fetchPartition{}
		}
		parts[t.topic][t.partition] = fp
	}
	f.parts = parts
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

func (f *fetcher) removePartition(k tpKey) {
	f.mu.Lock()
	delete(f.parts[k.topic], k.partition)
	f.mu.Unlock()
}

// close stops the fetcher and waits for its goroutine.
func (f *fetcher) close() {
	f.closeOnce.Do(func() {
		close(f.stop)
		f.cancel()
		f.connMu.Lock()
		if f.conn != nil {
			_ = f.conn.Close()
		}
		f.connMu.Unlock()
	})
	<-f.done
}

// stopped reports whether close was called.
func (f *fetcher) stopped() bool {
	select {
	case <-f.stop:
		return true
	default:
		return false
	}
}

// pause waits d, or until a partition is added or the fetcher stops; false once stopped.
func (f *fetcher) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-f.stop:
		return false
	case <-f.kick:
	case <-t.C:
	}
	return true
}

func (f *fetcher) run() {
	defer close(f.done)
	defer f.dropConn()
	cfg := &f.s.cfg
	for !f.stopped() {
		truncating, next := f.snapshot()
		if len(f.list) == 0 {
			wait := time.Minute
			if !next.IsZero() {
				wait = time.Until(next)
			}
			if !f.pause(wait) {
				return
			}
			continue
		}
		if err := f.connect(); err != nil {
			f.s.logger.Debug("replica fetcher: dial", "leader", f.leader, "addr", f.addr, "err", err)
			if !f.pause(cfg.ReplicaFetchBackoff) {
				return
			}
			continue
		}
		var err error
		if truncating {
			err = f.truncate()
		} else {
			err = f.fetch()
		}
		if err != nil {
			if !f.stopped() {
				f.s.logger.Debug("replica fetcher: request", "leader", f.leader, "addr", f.addr, "err", err)
			}
			f.dropConn()
			if !f.pause(cfg.ReplicaFetchBackoff) {
				return
			}
		}
	}
}

// snapshot fills f.list with the partitions to work on now: those to truncate if any
// (truncating is then true), else those to fetch. next is when the earliest delayed
// partition is due, if the list is empty because of delays.
func (f *fetcher) snapshot() (truncating bool, next time.Time) {
	f.list = f.list[:0]
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, parts := range f.parts {
		for _, fp := range parts {
			if now.Before(fp.delayedUntil) {
				if next.IsZero() || fp.delayedUntil.Before(next) {
					next = fp.delayedUntil
				}
				continue
			}
			if fp.truncating && !truncating {
				truncating, f.list = true, f.list[:0]
			}
			if fp.truncating == truncating {
				f.list = append(f.list, fp)
			}
		}
	}
	return truncating, next
}

// connect dials the leader if the fetcher has no connection.
func (f *fetcher) connect() error {
	f.connMu.Lock()
	has := f.conn != nil
	f.connMu.Unlock()
	if has {
		return nil
	}
	ctx, cancel := context.WithTimeout(f.ctx, f.s.cfg.ReplicaSocketTimeout)
	defer cancel()
	var c net.Conn
	var err error
	if dial := f.s.cfg.DialReplica; dial != nil {
		c, err = dial(ctx, f.leader, f.addr)
	} else {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", f.addr)
	}
	if err != nil {
		return err
	}
	f.connMu.Lock()
	defer f.connMu.Unlock()
	if f.stopped() {
		_ = c.Close()
		return errors.New("fetcher stopped")
	}
	f.conn = c
	return nil
}

func (f *fetcher) dropConn() {
	f.closeSplicer()
	f.connMu.Lock()
	if f.conn != nil {
		_ = f.conn.Close()
		f.conn = nil
	}
	f.connMu.Unlock()
}

// roundTrip sends the request frame f.req and reads the answer's body into f.resp,
// within wait plus the socket timeout.
func (f *fetcher) roundTrip(wait time.Duration) ([]byte, error) {
	c, err := f.currentConn()
	if err != nil {
		return nil, err
	}
	size, err := f.sendRequest(c, wait)
	if err != nil {
		return nil, err
	}
	if cap(f.resp) < size-4 {
		f.resp = make([]byte, size-4)
	}
	body := f.resp[:size-4]
	if _, err := io.ReadFull(c, body); err != nil {
		return nil, err
	}
	return body, nil
}

// currentConn is the fetcher's connection to its leader.
func (f *fetcher) currentConn() (net.Conn, error) {
	f.connMu.Lock()
	defer f.connMu.Unlock()
	if f.conn == nil {
		return nil, errors.New("no connection")
	}
	return f.conn, nil
}

// sendRequest sends the request frame f.req on c and reads the answer's size and
// correlation id, checked, with the round trip's deadline set: within wait plus the
// socket timeout. The answer's body follows on c.
func (f *fetcher) sendRequest(c net.Conn, wait time.Duration) (size int, err error) {
	if err := c.SetDeadline(time.Now().Add(wait + f.s.cfg.ReplicaSocketTimeout)); err != nil {
		return 0, err
	}
	if _, err := c.Write(f.req); err != nil {
		return 0, err
	}
	var head [8]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return 0, err
	}
	size = int(int32(binary.BigEndian.Uint32(head[:])))
	if size < 4 || size > f.s.cfg.MaxFrameBytes {
		return 0, fmt.Errorf("response size %d", size)
	}
	if corr := int32(binary.BigEndian.Uint32(head[4:])); corr != f.corr {
		return 0, fmt.Errorf("correlation id %d, want %d", corr, f.corr)
	}
	return size, nil
}

// fetch sends one Fetch for f.list and applies the answer.
func (f *fetcher) fetch() error {
	cfg := &f.s.cfg
	f.corr++
	version := int16(replicaFetchVersion)
	topics := 0
	for i, fp := range f.list {
		if i == 0 || fp.topic != f.list[i-1].topic {
			topics++
		}
		if fp.topicID == (uuid.UUID{}) {
			version = replicaFetchVersionNoIDs
		}
	}
	brokerEpoch := cfg.BrokerEpoch
	if brokerEpoch == 0 {
		brokerEpoch = -1 // not known: the leader checks none
	}
	b, start := proto.BeginRequestFrame(f.req[:0], fetchKey, version, f.corr, replicaClientID)
	b = proto.AppendFetchRequestStart(b, version, cfg.NodeID, int32(cfg.ReplicaFetchMaxWait.Milliseconds()),
		cfg.ReplicaFetchMinBytes, cfg.ReplicaFetchResponseMaxBytes, topics)
	for i := 0; i < len(f.list); {
		j := i + 1
		for j < len(f.list) && f.list[j].topic == f.list[i].topic {
			j++
		}
		b = proto.AppendFetchTopicStart(b, version, []byte(f.list[i].topic), f.list[i].topicID, j-i)
		for _, fp := range f.list[i:j] {
			log := fp.p.Log()
			b = proto.AppendFetchRequestPartition(b, version, &proto.FetchPartitionRequest{
				Partition: fp.partition, CurrentLeaderEpoch: fp.epoch, FetchOffset: log.LogEndOffset(),
				LastFetchedEpoch: fp.p.LatestEpoch(), LogStartOffset: log.LogStartOffset(),
				PartitionMaxBytes: cfg.ReplicaFetchMaxBytes,
			})
		}
		b = proto.AppendFetchTopicEnd(b, version)
		i = j
	}
	b = proto.AppendFetchRequestEnd(b, version, cfg.NodeID, brokerEpoch)
	proto.EndFrame(b, start, 0)
	f.req = b
	defer f.abortStaged()
	body, err := f.roundTripFetch(cfg.ReplicaFetchMaxWait, version)
	if err != nil {
		return err
	}
	if proto.IsFlexibleResponse(fetchKey, version) { // the response header's tag buffer
		n, err := proto.SkipTagBuffer(body, 0)
		if err != nil {
			return err
		}
		body = body[n:]
	}
	resp, err := proto.ParseFetchResponse(body, version)
	if err != nil {
		return err
	}
	if resp.ErrorCode != 0 {
		return kerr.ErrorForCode(resp.ErrorCode)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := 0
	for range resp.Topics {
		name, parts, err := resp.NextTopic()
		if err != nil {
			return err
		}
		for range parts {
			rp, err := resp.NextPartition()
			if err != nil {
				return err
			}
			if k >= len(f.list) || f.list[k].partition != rp.Partition ||
				(version < proto.FetchVersionTopicIDs && f.list[k].topic != string(name)) ||
				(version >= proto.FetchVersionTopicIDs && f.list[k].topicID != resp.TopicID) {
				return fmt.Errorf("fetch answer out of order at %s%x-%d", name, resp.TopicID, rp.Partition)
			}
			fp := f.list[k]
			k++
			switch {
			case f.parts[fp.topic][fp.partition] != fp: // no longer followed at that epoch
			case rp.ErrorCode == 0 && rp.Diverging:
				// No records, and the high watermark is left for the next fetch, after
				// the truncation (Kafka's processFetchRequest).
				f.truncateToEpochEnd(fp, rp.DivergingEpoch.Epoch, rp.DivergingEpoch.EndOffset)
			default:
				f.apply(fp, &rp)
			}
		}
	}
	return resp.End()
}

// apply takes one partition's answer: appends its records and the leader's high
// watermark, or handles its error. The caller holds f.mu.
func (f *fetcher) apply(fp *fetchPartition, rp *proto.FetchResponsePartition) {
	switch rp.ErrorCode {
	case 0:
		if _, err := f.appendRecords(fp, rp); err != nil {
			f.s.logger.Warn("replica fetcher: append", "topic", fp.topic, "partition", fp.partition, "err", err)
			fp.truncating = true
			f.delay(fp)
			return
		}
		fp.p.UpdateFollowerHighWatermark(rp.HighWatermark)
		f.followLogStart(fp, rp.LogStartOffset)
	case kerr.OffsetOutOfRange.Code:
		// Below the leader's log start: start over there. Else past its end: the logs
		// diverge, truncate by epoch.
		if leo := fp.p.Log().LogEndOffset(); rp.LogStartOffset > leo {
			if err := fp.p.TruncateFullyAndStartAt(rp.LogStartOffset); err != nil {
				f.s.logger.Warn("replica fetcher: truncate", "topic", fp.topic, "partition", fp.partition, "err", err)
				f.delay(fp)
			}
		} else {
			fp.truncating = true
		}
	default:
		// Not (yet) the leader at this epoch, or an unknown partition there: wait for
		// the next reconcile or the leader to catch up with the control plane.
		f.delay(fp)
	}
}

// followLogStart moves a follower's log start up to its leader's, as a fetch response
// carries it (Kafka's follower does so on every fetch: records a DeleteRecords removed
// on the leader go on its followers too), but never past this replica's high
// watermark. The leader learns the new start from the next fetch, which a DeleteRecords
// waiting for its followers needs.
func (f *fetcher) followLogStart(fp *fetchPartition, leaderLogStart int64) {
	log := fp.p.Log()
	target := min(leaderLogStart, fp.p.HighWatermark())
	if target <= log.LogStartOffset() {
		return
	}
	if _, err := log.IncrementLogStartOffset(target); err != nil {
		f.s.logger.Warn("replica fetcher: log start", "topic", fp.topic, "partition", fp.partition, "logStartOffset", target, "err", err)
	}
}

func (f *fetcher) delay(fp *fetchPartition) {
	fp.delayedUntil = time.Now().Add(f.s.cfg.ReplicaFetchBackoff)
}

// truncate asks the leader where the last epoch of each partition of f.list ended
// there and truncates each partition's log accordingly (Kafka's truncateToEpochEndOffsets).
func (f *fetcher) truncate() error {
	req := kmsg.NewPtrOffsetForLeaderEpochRequest()
	req.SetVersion(replicaEpochVersion)
	req.ReplicaID = f.s.cfg.NodeID
	var asked []*fetchPartition
	byTopic := map[string]int{}
	for _, fp := range f.list {
		latest := fp.p.LatestEpoch()
		if latest < 0 {
			// No batch has an epoch: the log is empty (or holds nothing a leader
			// wrote), nothing to compare.
			f.finishTruncation(fp)
			continue
		}
		i, ok := byTopic[fp.topic]
		if !ok {
			i = len(req.Topics)
			byTopic[fp.topic] = i
			t := kmsg.NewOffsetForLeaderEpochRequestTopic()
			t.Topic = fp.topic
			req.Topics = append(req.Topics, t)
		}
		q := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
		q.Partition, q.CurrentLeaderEpoch, q.LeaderEpoch = fp.partition, fp.epoch, latest
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, q)
		asked = append(asked, fp)
	}
	if len(asked) == 0 {
		return nil
	}
	f.corr++
	b, start := proto.BeginRequestFrame(f.req[:0], offsetForLeaderEpochKey, replicaEpochVersion, f.corr, replicaClientID)
	b = req.AppendTo(b)
	proto.EndFrame(b, start, 0)
	f.req = b
	body, err := f.roundTrip(0)
	if err != nil {
		return err
	}
	resp := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
	resp.SetVersion(replicaEpochVersion)
	if err := resp.ReadFrom(body); err != nil {
		return err
	}
	byKey := map[tpKey]*fetchPartition{}
	for _, fp := range asked {
		byKey[fp.tpKey] = fp
	}
	for _, t := range resp.Topics {
		for _, rp := range t.Partitions {
			fp := byKey[tpKey{t.Topic, rp.Partition}]
			if fp == nil {
				continue
			}
			f.applyEpochEnd(fp, rp.ErrorCode, rp.LeaderEpoch, rp.EndOffset)
		}
	}
	return nil
}

// applyEpochEnd truncates a partition from the leader's answer for its last epoch
// (Kafka's getOffsetTruncationState, KIP-279): when the leader knows that epoch, cut
// where it ended there; when it answers an earlier epoch this log also has, cut where
// that epoch ended in the leader's log or this one, whichever is first; when it answers
// one this log lacks, cut at the end of this log's largest epoch below it and ask
// again. A leader with no epoch up to this log's last has none of its batches: the
// log is emptied. Never to this node's own high watermark.
func (f *fetcher) applyEpochEnd(fp *fetchPartition, code int16, leaderEpoch int32, leaderEnd int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.parts[fp.topic][fp.partition] != fp {
		return
	}
	if code != 0 {
		f.delay(fp)
		return
	}
	if done, ok := f.truncateToEpochEnd(fp, leaderEpoch, leaderEnd); ok {
		fp.truncating = !done
	}
}

// truncateToEpochEnd truncates a partition's log where the leader says its epoch
// leaderEpoch ended (leaderEnd), by applyEpochEnd's rules, for an OffsetForLeaderEpoch
// answer or a fetch's DivergingEpoch. done is false when the log must be compared
// again, at its new latest epoch; ok false when the truncation failed (logged, and the
// partition delayed). The caller holds f.mu.
func (f *fetcher) truncateToEpochEnd(fp *fetchPartition, leaderEpoch int32, leaderEnd int64) (done, ok bool) {
	leo := fp.p.Log().LogEndOffset()
	target, done := leo, true
	switch {
	case leaderEnd < 0:
		target = fp.p.Log().LogStartOffset()
	case leaderEpoch < 0:
		target = min(leaderEnd, leo)
	default:
		switch epoch, end := fp.p.EndOffsetForEpoch(leaderEpoch); {
		case epoch < 0:
			target = min(leaderEnd, leo)
		case epoch != leaderEpoch:
			target, done = min(end, leo), false
		default:
			target = min(end, leaderEnd, leo)
		}
	}
	if target < leo {
		if _, err := fp.p.TruncateTo(target); err != nil {
			f.s.logger.Warn("replica fetcher: truncate", "topic", fp.topic, "partition", fp.partition, "err", err)
			f.delay(fp)
			return false, false
		}
		f.s.logger.Info("replica truncated by leader epoch", "topic", fp.topic, "partition", fp.partition,
			"from", leo, "to", target, "leader", f.leader, "leaderEpoch", leaderEpoch)
	}
	return done, true
}

// finishTruncation ends a partition's truncation without asking the leader.
func (f *fetcher) finishTruncation(fp *fetchPartition) {
	f.mu.Lock()
	if f.parts[fp.topic][fp.partition] == fp {
		fp.truncating = false
	}
	f.mu.Unlock()
}

// brokerAddr is a registered broker's Kafka address.
func brokerAddr(host string, port int32) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}
