package dataplane

// Fetch, key 1, versions 4-15 served, 4-12 listed (fetchAdvertisedMax: clients have no
// topic ids); hand-written codec in proto, v12+ flexible. Consumers
// read below the high watermark; followers (replica id >= 0, an assigned replica) read
// up to the log end, and each of their fetches records their progress, which moves the
// high watermark (replica's UpdateFollowerFetchState); their answers carry it, and their
// bytes are counted apart. read_committed (isolation level 1) consumers read below the
// last stable offset instead, and get the aborted transactions overlapping the records
// returned (from the segments' aborted-transaction indexes, in memory: the records
// still go out as file regions); every answer carries the partition's LSO. max_bytes
// and the partition limits hold except for the first batch of the first non-empty
// partition, which is always whole (KIP-74).
// min_bytes/max_wait_ms long-poll in the fetch purgatory, woken by appends. Fetch
// sessions (KIP-227) are declined: session id 0 in every answer,
// FETCH_SESSION_ID_NOT_FOUND for a session id we never gave. The records go out as file
// regions, zero-copy.
//
// v12 (KIP-595): a partition's LastFetchedEpoch is checked against this log's epochs as
// OffsetForLeaderEpoch would answer it; a fetch whose log diverges from this one is
// answered with DivergingEpoch and no records, and does not count as progress. v13
// (KIP-516): topics by id, resolved in the metadata view last reconciled
// (UNKNOWN_TOPIC_ID when not there). v14 adds nothing the node uses (an error code of
// tiered storage). v15 (KIP-903): a follower's id and broker epoch come in
// ReplicaState; a fetch from an earlier incarnation of the follower (an epoch below
// the one registered in the view) is answered NOT_LEADER_OR_FOLLOWER and records no
// progress, as Kafka's Replica.updateFetchStateOrThrow fences it.

import (
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/replica"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/gregor-streaming/gregor/sendfile"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const fetchKey = int16(kmsg.Fetch)

// fetchAdvertisedMax is the highest Fetch version ApiVersions lists: 12, although v13-15
// are served (replica fetchers send v15). From v13 a client names topics by the ids
// Metadata v10+ gives it, and Metadata is served up to v8: a client offered v13 with no
// topic ids either stays at v12 by itself (franz-go, the Java client) or sends zero ids
// and gets UNKNOWN_TOPIC_ID for ever (librdkafka's fetcher writes whatever id its
// metadata holds). Replica fetchers learn topic ids from the control plane's view and
// know their peers serve v15. Raise it with Metadata v10+.
const fetchAdvertisedMax = proto.FetchVersionFlexible

// maxFetchWait bounds max_wait_ms (Kafka clients send 500 ms by default).
const maxFetchWait = 30 * time.Second

func handleFetch(s *Server, r *request) error {
	req, err := proto.ParseFetchRequest(r.body, r.hdr.APIVersion)
	if err != nil {
		return err
	}
	f := fetchPool.Get().(*fetch)
	f.s, f.r, f.req = s, r, req
	if req.SessionID != 0 {
		f.sessionErr = kerr.FetchSessionIDNotFound.Code
		f.answer()
		f.free()
		return nil
	}
	if f.collect() >= int(req.MinBytes) || req.MaxWaitMs <= 0 {
		f.answer()
		f.free()
		return nil
	}
	f.release()
	// Wait in the purgatory. The request's bytes view the connection's inbound buffer:
	// keep a copy (the one allocation of a parked fetch).
	r.retained = true
	f.owned = append(f.owned[:0], r.body...)
	f.req, _ = proto.ParseFetchRequest(f.owned, r.hdr.APIVersion)
	w := &waiter{cs: r.conn}
	walk := f.req.Walk()
	for range f.req.Topics {
		name, parts, _ := walk.NextTopic()
		for range parts {
			fp, _ := walk.NextPartition()
			if p, _ := f.partition(name, walk.TopicID, fp.Partition); p != nil {
				w.parts = append(w.parts, p)
			}
		}
	}
	w.try = func() bool {
		if f.collect() < int(f.req.MinBytes) {
			f.release()
			return false
		}
		f.answer()
		return true
	}
	w.expire = func() {
		f.collect()
		f.answer()
	}
	s.metrics.delayedFetch.Inc()
	w.park(min(time.Duration(f.req.MaxWaitMs)*time.Millisecond, maxFetchWait), &s.metrics.fetchWaiting)
	return nil
}

// fetch is one fetch request being answered. Answered at once (the common case) it goes
// back to fetchPool with its slices, so steady-state fetches allocate nothing.
type fetch struct {
	s          *Server
	r          *request
	req        proto.FetchRequest
	sessionErr int16
	// staleReplica: the fetch comes from an earlier incarnation of the follower (its
	// broker epoch is below the registered one).
	staleReplica bool
	// owned holds the request's bytes while it waits in the purgatory.
	owned []byte
	// parts are the per-partition answers in request order; the regions of parts[k] are
	// regions[spans[k]:spans[k+1]].
	parts   []proto.FetchPartition
	spans   []int
	regions []segment.Region
	cuts    []int
	// aborted backs the parts' aborted transactions (read_committed).
	aborted []proto.AbortedTransaction
}

var fetchPool = sync.Pool{New: func() any { return new(fetch) }}

func (f *fetch) free() {
	f.s, f.r, f.req, f.sessionErr, f.staleReplica = nil, nil, proto.FetchRequest{}, 0, false
	f.parts, f.spans, f.cuts, f.aborted = f.parts[:0], f.spans[:0], f.cuts[:0], f.aborted[:0]
	clear(f.regions)
	f.regions = f.regions[:0]
	fetchPool.Put(f)
}

// collect reads every requested partition and returns the bytes found.
func (f *fetch) collect() int {
	f.parts, f.spans, f.regions, f.aborted = f.parts[:0], append(f.spans[:0], 0), f.regions[:0], f.aborted[:0]
	remaining := int(f.req.MaxBytes)
	if remaining <= 0 {
		remaining = 1 << 30
	}
	total := 0
	// A replica id >= 0 is a follower (replica fetchers): it reads up to the log end,
	// not the high watermark, and its fetch offset is its progress.
	var nowNs int64
	if f.req.ReplicaID >= 0 {
		nowNs = time.Now().UnixNano()
		f.staleReplica = f.s.staleReplicaEpoch(f.req.ReplicaID, f.req.ReplicaEpoch)
	}
	walk := f.req.Walk()
	for range f.req.Topics {
		name, partitions, _ := walk.NextTopic() // ParseFetchRequest checked the walk
		for range partitions {
			rp, _ := walk.NextPartition()
			part := proto.FetchPartition{Partition: rp.Partition, HighWatermark: -1, LastStableOffset: -1, LogStartOffset: -1}
			if p, code := f.partition(name, walk.TopicID, rp.Partition); p == nil {
				part.ErrorCode = code
			} else {
				f.read(p, &rp, &part, min(int(rp.PartitionMaxBytes), remaining), total == 0, nowNs)
			}
			total += int(part.RecordsBytes)
			remaining = max(remaining-int(part.RecordsBytes), 0)
			f.parts = append(f.parts, part)
			f.spans = append(f.spans, len(f.regions))
		}
	}
	return total
}

// partition finds a requested partition's replica: by topic name (v≤12) or id (v13+).
// nil comes with the error code to answer.
func (f *fetch) partition(name []byte, id [16]byte, partition int32) (*replica.Partition, int16) {
	if f.r.hdr.APIVersion < proto.FetchVersionTopicIDs {
		if p := f.s.replicas.PartitionBytes(name, partition); p != nil {
			return p, 0
		}
		return nil, kerr.UnknownTopicOrPartition.Code
	}
	topic, ok := f.s.topicName(id)
	if !ok {
		return nil, kerr.UnknownTopicID.Code
	}
	if p := f.s.replicas.Partition(topic, partition); p != nil {
		return p, 0
	}
	return nil, kerr.UnknownTopicOrPartition.Code
}

// read answers one partition into part, as Kafka's Partition.fetchRecords does: the
// leader-epoch check; for a follower, that it is an assigned replica of a partition
// this node leads, and of the incarnation registered; the last fetched epoch's check
// (v12+), which answers DivergingEpoch where the fetcher's log diverges from this one;
// then a follower's progress, which may move the high watermark; then the records,
// their regions appended to f.regions.
func (f *fetch) read(p *replica.Partition, rp *proto.FetchPartitionRequest, part *proto.FetchPartition, limit int, minOne bool, nowNs int64) {
	if part.ErrorCode = p.CheckLeaderEpoch(rp.CurrentLeaderEpoch); part.ErrorCode != 0 {
		return
	}
	follower := f.req.ReplicaID >= 0
	if follower && (f.staleReplica || p.Follower(f.req.ReplicaID) == nil) {
		// Not an assigned follower (yet), or an earlier incarnation of one.
		part.ErrorCode = kerr.NotLeaderForPartition.Code
		return
	}
	log := p.Log()
	hw, logStart := p.HighWatermark(), log.LogStartOffset()
	lso := min(p.LastStableOffset(), hw) // loaded after hw: at most it
	part.HighWatermark, part.LastStableOffset, part.LogStartOffset = hw, lso, logStart
	if rp.LastFetchedEpoch >= 0 {
		// Kafka's Partition.readRecords: where the fetcher's last epoch ended here.
		epoch, end := p.EndOffsetForEpoch(rp.LastFetchedEpoch)
		switch {
		case epoch < 0 || end < 0 || rp.FetchOffset < logStart:
			part.ErrorCode = kerr.OffsetOutOfRange.Code
			return
		case epoch < rp.LastFetchedEpoch || end < rp.FetchOffset:
			part.Diverging, part.DivergingEpoch = true, proto.EpochEndOffset{Epoch: epoch, EndOffset: end}
			return
		}
	}
	bound := hw
	readCommitted := f.req.IsolationLevel == 1 && !follower
	if readCommitted {
		bound, part.ReadCommitted = lso, true
	}
	if follower {
		if !p.UpdateFollowerFetchState(f.req.ReplicaID, f.req.ReplicaEpoch, rp.FetchOffset, nowNs) {
			part.ErrorCode = kerr.NotLeaderForPartition.Code // it stopped leading meanwhile
			return
		}
		if p.TakeISRExpansionDue() {
			f.s.kickISR()
		}
		if rp.LogStartOffset >= 0 { // v5+
			p.UpdateFollowerLogStartOffset(f.req.ReplicaID, rp.LogStartOffset)
		}
		hw = p.HighWatermark() // after the follower's progress moved it
		part.HighWatermark, part.LastStableOffset = hw, min(p.LastStableOffset(), hw)
		bound = log.LogEndOffset()
	}
	from := len(f.regions)
	var err error
	f.regions, err = log.Read(f.regions, rp.FetchOffset, limit, bound, minOne)
	switch {
	case errors.Is(err, segment.ErrOffsetOutOfRange):
		part.ErrorCode = kerr.OffsetOutOfRange.Code
	case err != nil:
		part.ErrorCode = kerr.KafkaStorageError.Code
	}
	for _, rg := range f.regions[from:] {
		part.RecordsBytes += int32(rg.Length)
	}
	if readCommitted && len(f.regions) > from {
		// Kafka's addAbortedTransactions: those overlapping the fetch offset up to the
		// offset after the last batch returned.
		a := len(f.aborted)
		f.aborted = log.CollectAbortedTxns(f.aborted, rp.FetchOffset, f.regions[len(f.regions)-1].NextOffset)
		part.Aborted = f.aborted[a:len(f.aborted):len(f.aborted)]
	}
}

// staleReplicaEpoch reports whether a follower's fetch comes from an earlier
// incarnation: it gives a broker epoch (v15+) below the one of the follower's
// registration in the view last reconciled (Kafka's Replica.updateFetchStateOrThrow).
func (s *Server) staleReplicaEpoch(id int32, epoch int64) bool {
	snap := s.cluster.Load()
	if epoch < 0 || snap == nil {
		return false
	}
	b, ok := snap.Brokers[id]
	return ok && b.Epoch > epoch
}

// topicIDIndex resolves topic ids (Fetch v13+) in one metadata view.
type topicIDIndex struct {
	snap  *client.Snapshot
	names map[[16]byte]string
}

// topicName resolves a topic id in the view last reconciled. The index is rebuilt,
// once, whenever that view changes.
func (s *Server) topicName(id [16]byte) (string, bool) {
	snap := s.cluster.Load()
	idx := s.topicIDs.Load()
	if idx == nil || idx.snap != snap {
		idx = &topicIDIndex{snap: snap, names: map[[16]byte]string{}}
		if snap != nil {
			for name, t := range snap.Topics {
				if u, err := uuid.Parse(t.ID); err == nil {
					idx.names[u] = name
				}
			}
		}
		s.topicIDs.Store(idx)
	}
	name, ok := idx.names[id]
	return name, ok
}

// release gives back the regions of a collect that will not be sent.
func (f *fetch) release() {
	segment.ReleaseRegions(f.regions)
	f.regions = f.regions[:0]
}

// answer encodes the response: the bytes before each partition's records, then its
// regions, as pieces of the connection's response, which now owns the regions.
func (f *fetch) answer() {
	resp, buf := f.r.resp, f.r.resp.buf
	v := f.r.hdr.APIVersion
	var start int
	buf.B, start = proto.BeginFrame(buf.B[:0], f.r.hdr.CorrelationID, proto.IsFlexibleResponse(fetchKey, v))
	if f.sessionErr != 0 {
		buf.B = proto.AppendFetchResponseStart(buf.B, v, 0, f.sessionErr, 0, 0)
		buf.B = proto.AppendFetchResponseEnd(buf.B, v)
		proto.EndFrame(buf.B, start, 0)
		resp.setBytes()
		return
	}
	buf.B = proto.AppendFetchResponseStart(buf.B, v, 0, 0, 0, f.req.Topics)
	// cuts[k] is where partition k's header bytes end in buf.B: its regions go there,
	// and the bytes after them (its tag buffer, v12+) open the next piece.
	f.cuts = f.cuts[:0]
	var extra int
	k := 0
	walk := f.req.Walk()
	for range f.req.Topics {
		name, partitions, _ := walk.NextTopic()
		buf.B = proto.AppendFetchTopicStart(buf.B, v, name, walk.TopicID, partitions)
		for range partitions {
			_, _ = walk.NextPartition()
			buf.B = proto.AppendFetchPartition(buf.B, v, &f.parts[k])
			f.cuts = append(f.cuts, len(buf.B))
			extra += int(f.parts[k].RecordsBytes)
			buf.B = proto.AppendFetchPartitionEnd(buf.B, v, &f.parts[k])
			k++
		}
		buf.B = proto.AppendFetchTopicEnd(buf.B, v)
	}
	buf.B = proto.AppendFetchResponseEnd(buf.B, v)
	proto.EndFrame(buf.B, start, extra)
	if f.req.ReplicaID >= 0 {
		f.s.countFollowerFetch(f.regions, extra)
	} else {
		f.s.metrics.consumerBytesOut.Add(extra)
	}
	resp.pieces = resp.pieces[:0]
	prev := 0
	for k, cut := range f.cuts {
		regions := f.regions[f.spans[k]:f.spans[k+1]]
		if len(regions) == 0 {
			continue
		}
		resp.pieces = append(resp.pieces, sendfile.Bytes(buf.B[prev:cut]))
		for _, rg := range regions {
			resp.pieces = append(resp.pieces, sendfile.Region(rg.File.Fd(), rg.Position, rg.Length))
		}
		prev = cut
	}
	resp.pieces = append(resp.pieces, sendfile.Bytes(buf.B[prev:]))
	resp.regions = append(resp.regions, f.regions...)
	clear(f.regions)
	f.regions = f.regions[:0]
	resp.ready = true
}
