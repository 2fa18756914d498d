package dataplane

// WriteTxnMarkers, key 27, versions 0-1 (v1 flexible): the transaction coordinator (the
// control plane) asks each partition's leader to end a producer's transaction there
// with a commit or abort marker (KIP-98). For each marker and partition this node
// leads, the leader appends the marker's control batch through the same append as
// produce (replica.Partition.AppendTxnMarker: Kafka's checks, the producer's open
// transaction closed, an abort's entry in the aborted-transaction index), and answers
// once the high watermark passes it, as acks=all produce is answered (Kafka appends
// markers with acks=-1): per partition NOT_LEADER_OR_FOLLOWER,
// UNKNOWN_TOPIC_OR_PARTITION, NOT_ENOUGH_REPLICAS (under min.insync.replicas),
// INVALID_PRODUCER_EPOCH (an epoch below the producer's), TRANSACTION_COORDINATOR_FENCED
// (a coordinator epoch below the producer's last marker's),
// NOT_ENOUGH_REPLICAS_AFTER_APPEND, REQUEST_TIMED_OUT, KAFKA_STORAGE_ERROR.
//
// Also here: what the data plane keeps for transactions (txnSupport): the verification
// seam the produce path sends KIP-890 checks through, and the metrics.

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/replica"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const writeTxnMarkersKey = int16(kmsg.WriteTxnMarkers)

// markerTimeout bounds the wait for a marker's replication (Kafka's
// request.timeout.ms, with which its coordinator's marker appends wait), in
// nanoseconds. An atomic for tests, which shorten it.
var markerTimeout = func() *atomic.Int64 {
	var d atomic.Int64
	d.Store(int64(30 * time.Second))
	return &d
}()

// txnSupport is the data plane's share of transactions.
type txnSupport struct {
	// verify, when set, replaces the control plane as the transaction coordinator that
	// answers the produce path's verifications (tests): it gets a whole
	// AddPartitionsToTxn v4 request frame and returns the response body.
	verify func(ctx context.Context, frame []byte) ([]byte, error)
	// verifications counts the verifications sent, verifyFailures the partitions they
	// did not verify (refused, or no answer).
	verifications  *metrics.Counter
	verifyFailures *metrics.Counter
	// commits and aborts count the markers written.
	commits, aborts *metrics.Counter
	// markersWaiting is how many WriteTxnMarkers requests wait for replication.
	markersWaiting atomic.Int64
}

// init registers the transaction metrics: the counters, and at each scrape the open
// transactions and the largest high watermark − LSO gap over the partitions this node
// leads, and the aborted-index entries over its replicas.
func (t *txnSupport) init(set *metrics.Set, s *Server) {
	t.verifications = set.NewCounter("gregor_txn_verifications_total")
	t.verifyFailures = set.NewCounter("gregor_txn_verification_failures_total")
	t.commits = set.NewCounter(`gregor_txn_markers_total{type="commit"}`)
	t.aborts = set.NewCounter(`gregor_txn_markers_total{type="abort"}`)
	set.NewGauge(`gregor_purgatory_size{purgatory="txn_markers"}`, func() float64 { return float64(t.markersWaiting.Load()) })
	set.NewGauge("gregor_txn_ongoing", func() float64 {
		n := 0
		for _, p := range s.replicas.Partitions() {
			if p.IsLeader() {
				n += p.OngoingTxns()
			}
		}
		return float64(n)
	})
	set.NewGauge("gregor_txn_lso_lag_max", func() float64 {
		var lag int64
		for _, p := range s.replicas.Partitions() {
			if p.IsLeader() {
				lag = max(lag, p.HighWatermark()-p.LastStableOffset())
			}
		}
		return float64(lag)
	})
	set.NewGauge("gregor_txn_aborted_index_entries", func() float64 {
		n := 0
		for _, p := range s.replicas.Partitions() {
			n += p.Log().AbortedTxnCount()
		}
		return float64(n)
	})
}

// markerWait is a written marker waiting for the high watermark to pass it.
type markerWait struct {
	p    *replica.Partition
	need int64
	code *int16
	done bool
}

func handleWriteTxnMarkers(s *Server, r *request) error {
	req := kmsg.NewPtrWriteTxnMarkersRequest()
	req.SetVersion(r.hdr.APIVersion)
	if req.IsFlexible() {
		if err := proto.CheckShape(r.body, proto.WriteTxnMarkersRequestV1); err != nil {
			return err
		}
	}
	if err := req.ReadFrom(r.body); err != nil {
		return err
	}
	resp := req.ResponseKind().(*kmsg.WriteTxnMarkersResponse)
	resp.SetVersion(r.hdr.APIVersion)
	fenced := s.fenced()
	var scratch []byte
	var waits []markerWait
	for _, m := range req.Markers {
		rm := kmsg.NewWriteTxnMarkersResponseMarker()
		rm.ProducerID = m.ProducerID
		marker := proto.TxnMarker{Commit: m.Committed, CoordinatorEpoch: m.CoordinatorEpoch}
		for _, t := range m.Topics {
			rt := kmsg.NewWriteTxnMarkersResponseMarkerTopic()
			rt.Topic = t.Topic
			for _, index := range t.Partitions {
				rp := kmsg.NewWriteTxnMarkersResponseMarkerTopicPartition()
				rp.Partition = index
				p := s.replicas.Partition(t.Topic, index)
				switch {
				case p == nil:
					rp.ErrorCode = s.notHostedCode([]byte(t.Topic), index)
				case !p.IsLeader() || fenced:
					rp.ErrorCode = kerr.NotLeaderForPartition.Code
				case p.UnderMinISR():
					rp.ErrorCode = kerr.NotEnoughReplicas.Code
				default:
					var res replica.MarkerResult
					res, scratch = p.AppendTxnMarker(m.ProducerID, m.ProducerEpoch, marker, scratch)
					rp.ErrorCode = res.ErrorCode
					if res.Err != nil {
						s.logger.Error("transaction marker append failed", "topic", t.Topic, "partition", index, "err", res.Err)
					}
					if res.ErrorCode == 0 {
						if m.Committed {
							s.txn.commits.Inc()
						} else {
							s.txn.aborts.Inc()
						}
						waits = append(waits, markerWait{p: p, need: res.Offset + 1})
					}
				}
				rt.Partitions = append(rt.Partitions, rp)
			}
			rm.Topics = append(rm.Topics, rt)
		}
		resp.Markers = append(resp.Markers, rm)
	}
	// The codes to patch, once resp's slices stop growing.
	k := 0
	for i := range resp.Markers {
		for j := range resp.Markers[i].Topics {
			parts := resp.Markers[i].Topics[j].Partitions
			for n := range parts {
				if parts[n].ErrorCode == 0 && k < len(waits) {
					waits[k].code = &parts[n].ErrorCode
					k++
				}
			}
		}
	}
	try := func() bool {
		all := true
		for i := range waits {
			w := &waits[i]
			if w.done {
				continue
			}
			code, decided := replicatedCode(w.p, w.need)
			if !decided {
				all = false
				continue
			}
			*w.code, w.done = code, true
		}
		return all
	}
	if try() {
		writeResponse(r, resp)
		return nil
	}
	r.retained = true
	w := &waiter{cs: r.conn}
	for i := range waits {
		if !waits[i].done {
			w.parts = append(w.parts, waits[i].p)
		}
	}
	w.try = func() bool {
		if !try() {
			return false
		}
		writeResponse(r, resp)
		return true
	}
	w.expire = func() {
		try()
		for i := range waits {
			if !waits[i].done {
				*waits[i].code = kerr.RequestTimedOut.Code
			}
		}
		writeResponse(r, resp)
	}
	w.park(time.Duration(markerTimeout.Load()), &s.txn.markersWaiting)
	return nil
}
