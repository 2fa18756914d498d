package dataplane

// Fetch, key 1, versions 4-11 (non-flexible). Consumers read below the high watermark;
// read_committed sees the last stable offset, which is the high watermark (no
// transactions). max_bytes and the partition limits hold except for the first batch of
// the first non-empty partition, which is always whole (KIP-74). min_bytes/max_wait_ms
// long-poll in the fetch purgatory, woken by appends. Fetch sessions (KIP-227) are
// declined: session id 0 in every answer, FETCH_SESSION_ID_NOT_FOUND for a session id we
// never gave. The records go out as file regions, zero-copy.

import (
	"errors"
	"time"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/gregor-streaming/gregor/sendfile"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const fetchKey = int16(kmsg.Fetch)

// maxFetchWait bounds max_wait_ms (Kafka clients send 500 ms by default).
const maxFetchWait = 30 * time.Second

func handleFetch(s *Server, r *request) error {
	req := kmsg.NewPtrFetchRequest()
	req.SetVersion(r.hdr.APIVersion)
	if err := req.ReadFrom(r.body); err != nil { // copies: a parked fetch outlives the buffer
		return err
	}
	f := &fetch{s: s, r: r, req: req}
	if req.Version >= 7 && req.SessionID != 0 {
		f.sessionErr = kerr.FetchSessionIDNotFound.Code
		f.answer()
		return nil
	}
	if f.collect() >= int(req.MinBytes) || req.MaxWaitMillis <= 0 {
		f.answer()
		return nil
	}
	f.release()
	r.retained = true
	w := &waiter{cs: r.conn}
	for i := range req.Topics {
		for j := range req.Topics[i].Partitions {
			if p := s.replicas.get(req.Topics[i].Topic, req.Topics[i].Partitions[j].Partition); p != nil {
				w.parts = append(w.parts, p)
			}
		}
	}
	w.try = func() bool {
		if f.collect() < int(req.MinBytes) {
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
	w.park(min(time.Duration(req.MaxWaitMillis)*time.Millisecond, maxFetchWait), &s.metrics.fetchWaiting)
	return nil
}

// fetch is one fetch request being answered.
type fetch struct {
	s          *Server
	r          *request
	req        *kmsg.FetchRequest
	sessionErr int16
	// parts are the per-partition answers, in request order; regions[k] the regions of
	// parts[k].
	parts   []proto.FetchPartition
	regions [][]segment.Region
}

// collect reads every requested partition and returns the bytes found.
func (f *fetch) collect() int {
	f.parts = f.parts[:0]
	f.regions = f.regions[:0]
	remaining := int(f.req.MaxBytes)
	if remaining <= 0 {
		remaining = 1 << 30
	}
	total := 0
	for i := range f.req.Topics {
		t := &f.req.Topics[i]
		for j := range t.Partitions {
			rp := &t.Partitions[j]
			part := proto.FetchPartition{Partition: rp.Partition, HighWatermark: -1, LastStableOffset: -1, LogStartOffset: -1}
			var regions []segment.Region
			p := f.s.replicas.get(t.Topic, rp.Partition)
			switch {
			case p == nil:
				part.ErrorCode = kerr.UnknownTopicOrPartition.Code
			case !p.IsLeader():
				part.ErrorCode = kerr.NotLeaderForPartition.Code
			case f.req.Version >= 9 && rp.CurrentLeaderEpoch >= 0 && rp.CurrentLeaderEpoch < p.leaderEpoch.Load():
				part.ErrorCode = kerr.FencedLeaderEpoch.Code
			case f.req.Version >= 9 && rp.CurrentLeaderEpoch > p.leaderEpoch.Load():
				part.ErrorCode = kerr.UnknownLeaderEpoch.Code
			default:
				hw := p.HighWatermark()
				part.HighWatermark, part.LastStableOffset, part.LogStartOffset = hw, hw, p.log.LogStartOffset()
				limit := min(int(rp.PartitionMaxBytes), remaining)
				var err error
				regions, err = p.log.Read(nil, rp.FetchOffset, limit, hw, total == 0)
				switch {
				case errors.Is(err, segment.ErrOffsetOutOfRange):
					part.ErrorCode = kerr.OffsetOutOfRange.Code
				case err != nil:
					part.ErrorCode = kerr.KafkaStorageError.Code
				}
				for _, rg := range regions {
					part.RecordsBytes += int32(rg.Length)
				}
			}
			total += int(part.RecordsBytes)
			remaining = max(remaining-int(part.RecordsBytes), 0)
			f.parts = append(f.parts, part)
			f.regions = append(f.regions, regions)
		}
	}
	return total
}

// release gives back the regions of a collect that will not be sent.
func (f *fetch) release() {
	for _, rs := range f.regions {
		segment.ReleaseRegions(rs)
	}
	f.regions = f.regions[:0]
}

// answer encodes the response: the bytes before each partition's records, then its
// regions, as pieces of the connection's response.
func (f *fetch) answer() {
	resp, buf := f.r.resp, f.r.resp.buf
	v := f.req.Version
	var start int
	buf.B, start = proto.BeginFrame(buf.B[:0], f.r.hdr.CorrelationID, false)
	if f.sessionErr != 0 {
		buf.B = proto.AppendFetchResponseStart(buf.B, v, 0, f.sessionErr, 0, 0)
		proto.EndFrame(buf.B, start, 0)
		resp.setBytes()
		return
	}
	buf.B = proto.AppendFetchResponseStart(buf.B, v, 0, 0, 0, len(f.req.Topics))
	// cuts[k] is where partition k's header bytes end in buf.B: its regions go there.
	cuts := make([]int, 0, len(f.parts))
	var extra int
	k := 0
	for i := range f.req.Topics {
		t := &f.req.Topics[i]
		buf.B = proto.AppendFetchTopicStart(buf.B, t.Topic, len(t.Partitions))
		for range t.Partitions {
			buf.B = proto.AppendFetchPartition(buf.B, v, &f.parts[k])
			cuts = append(cuts, len(buf.B))
			extra += int(f.parts[k].RecordsBytes)
			k++
		}
	}
	proto.EndFrame(buf.B, start, extra)
	resp.pieces = resp.pieces[:0]
	prev := 0
	for k, cut := range cuts {
		if len(f.regions[k]) == 0 {
			continue
		}
		resp.pieces = append(resp.pieces, sendfile.Bytes(buf.B[prev:cut]))
		for _, rg := range f.regions[k] {
			resp.pieces = append(resp.pieces, sendfile.Region(rg.File.Fd(), rg.Position, rg.Length))
			resp.regions = append(resp.regions, rg)
		}
		prev = cut
	}
	resp.pieces = append(resp.pieces, sendfile.Bytes(buf.B[prev:]))
	f.regions = f.regions[:0]
	resp.ready = true
}
