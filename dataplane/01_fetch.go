package dataplane

// Fetch, key 1, versions 4-11 (non-flexible; hand-written codec in proto). Consumers read below the high watermark;
// followers (replica id >= 0, an assigned replica) read up to the log end, and each of
// their fetches records their progress, which moves the high watermark (replica's
// UpdateFollowerFetchState); their answers carry it, and their bytes are counted apart.
// read_committed sees the last stable offset, which is the high watermark (no
// transactions). max_bytes and the partition limits hold except for the first batch of
// the first non-empty partition, which is always whole (KIP-74). min_bytes/max_wait_ms
// long-poll in the fetch purgatory, woken by appends. Fetch sessions (KIP-227) are
// declined: session id 0 in every answer, FETCH_SESSION_ID_NOT_FOUND for a session id we
// never gave. The records go out as file regions, zero-copy.

import (
	"errors"
	"sync"
	"time"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/replica"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/gregor-streaming/gregor/sendfile"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const fetchKey = int16(kmsg.Fetch)

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
			if p := s.replicas.PartitionBytes(name, fp.Partition); p != nil {
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
	// owned holds the request's bytes while it waits in the purgatory.
	owned []byte
	// parts are the per-partition answers in request order; the regions of parts[k] are
	// regions[spans[k]:spans[k+1]].
	parts   []proto.FetchPartition
	spans   []int
	regions []segment.Region
	cuts    []int
}

var fetchPool = sync.Pool{New: func() any { return new(fetch) }}

func (f *fetch) free() {
	f.s, f.r, f.req, f.sessionErr = nil, nil, proto.FetchRequest{}, 0
	f.parts, f.spans, f.cuts = f.parts[:0], f.spans[:0], f.cuts[:0]
	clear(f.regions)
	f.regions = f.regions[:0]
	fetchPool.Put(f)
}

// collect reads every requested partition and returns the bytes found.
func (f *fetch) collect() int {
	f.parts, f.spans, f.regions = f.parts[:0], append(f.spans[:0], 0), f.regions[:0]
	remaining := int(f.req.MaxBytes)
	if remaining <= 0 {
		remaining = 1 << 30
	}
	total := 0
	// A replica id >= 0 is a follower (replica fetchers): it reads up to the log end,
	// not the high watermark, and its fetch offset is its progress.
	follower := f.req.ReplicaID >= 0
	var nowNs int64
	if follower {
		nowNs = time.Now().UnixNano()
	}
	walk := f.req.Walk()
	for range f.req.Topics {
		name, partitions, _ := walk.NextTopic() // ParseFetchRequest checked the walk
		for range partitions {
			rp, _ := walk.NextPartition()
			part := proto.FetchPartition{Partition: rp.Partition, HighWatermark: -1, LastStableOffset: -1, LogStartOffset: -1}
			p := f.s.replicas.PartitionBytes(name, rp.Partition)
			if p == nil {
				part.ErrorCode = kerr.UnknownTopicOrPartition.Code
			} else if part.ErrorCode = f.check(p, &rp, nowNs); part.ErrorCode == 0 {
				log := p.Log()
				hw := p.HighWatermark() // after a follower's progress moved it
				bound := hw
				if follower {
					bound = log.LogEndOffset()
				}
				part.HighWatermark, part.LastStableOffset, part.LogStartOffset = hw, hw, log.LogStartOffset()
				limit := min(int(rp.PartitionMaxBytes), remaining)
				from := len(f.regions)
				var err error
				f.regions, err = log.Read(f.regions, rp.FetchOffset, limit, bound, total == 0)
				switch {
				case errors.Is(err, segment.ErrOffsetOutOfRange):
					part.ErrorCode = kerr.OffsetOutOfRange.Code
				case err != nil:
					part.ErrorCode = kerr.KafkaStorageError.Code
				}
				for _, rg := range f.regions[from:] {
					part.RecordsBytes += int32(rg.Length)
				}
			}
			total += int(part.RecordsBytes)
			remaining = max(remaining-int(part.RecordsBytes), 0)
			f.parts = append(f.parts, part)
			f.spans = append(f.spans, len(f.regions))
		}
	}
	return total
}

// check answers whether partition p may be read for rp (0, or the error code to
// answer) and records a follower's progress: the leader-epoch check, then, for a
// follower, that it is an assigned replica of a partition this node leads.
func (f *fetch) check(p *replica.Partition, rp *proto.FetchPartitionRequest, nowNs int64) int16 {
	if code := p.CheckLeaderEpoch(rp.CurrentLeaderEpoch); code != 0 || f.req.ReplicaID < 0 {
		return code
	}
	if !p.UpdateFollowerFetchState(f.req.ReplicaID, replica.BrokerEpochUnknown, rp.FetchOffset, nowNs) {
		return kerr.NotLeaderForPartition.Code // not an assigned follower (yet)
	}
	return 0
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
	buf.B, start = proto.BeginFrame(buf.B[:0], f.r.hdr.CorrelationID, false)
	if f.sessionErr != 0 {
		buf.B = proto.AppendFetchResponseStart(buf.B, v, 0, f.sessionErr, 0, 0)
		proto.EndFrame(buf.B, start, 0)
		resp.setBytes()
		return
	}
	buf.B = proto.AppendFetchResponseStart(buf.B, v, 0, 0, 0, f.req.Topics)
	// cuts[k] is where partition k's header bytes end in buf.B: its regions go there.
	f.cuts = f.cuts[:0]
	var extra int
	k := 0
	walk := f.req.Walk()
	for range f.req.Topics {
		name, partitions, _ := walk.NextTopic()
		buf.B = proto.AppendTopicStart(buf.B, name, partitions)
		for range partitions {
			_, _ = walk.NextPartition()
			buf.B = proto.AppendFetchPartition(buf.B, v, &f.parts[k])
			f.cuts = append(f.cuts, len(buf.B))
			extra += int(f.parts[k].RecordsBytes)
			k++
		}
	}
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
