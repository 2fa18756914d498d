package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/gregor-streaming/gregor/sendfile"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// spliceView gives node s the view where leader (at addrs[leader]) leads topic "f"
// (one partition) at epoch, with replicas the keys of addrs.
func spliceView(t testing.TB, s *Server, rev int64, addrs map[int32]string, leader, epoch int32) {
	spliceViewN(t, s, rev, addrs, leader, epoch, 1)
}

// spliceViewN is spliceView for a topic "f" of the given partitions.
func spliceViewN(t testing.TB, s *Server, rev int64, addrs map[int32]string, leader, epoch int32, partitions int32) {
	t.Helper()
	brokers := map[int32]cluster.Broker{}
	var replicas []int32
	for id, addr := range addrs {
		host, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		brokers[id] = cluster.Broker{ID: id, Host: host, Port: int32(p)}
		replicas = append(replicas, id)
	}
	snap := &client.Snapshot{
		Revision: rev,
		Brokers:  brokers,
		Topics: map[string]cluster.Topic{"f": {Name: "f", ID: "id", Partitions: partitions,
			ReplicationFactor: int16(len(addrs))}},
		Partitions: map[cluster.TopicPartition]cluster.PartitionState{},
	}
	for i := range partitions {
		tp := cluster.TopicPartition{Topic: "f", Partition: i}
		snap.Partitions[tp] = cluster.PartitionState{Topic: "f", Partition: i, Replicas: replicas,
			Leader: leader, LeaderEpoch: epoch, ISR: replicas}
	}
	if err := s.Reconcile(snap); err != nil {
		t.Fatal(err)
	}
}

// bigBatch is a batch of n records of size bytes each, large enough to be spliced.
func bigBatch(n, size int, tag string, pid int64, seq int32) []byte {
	recs := make([]proto.Record, n)
	for i := range recs {
		v := bytes.Repeat([]byte{byte(len(tag) + i)}, size)
		copy(v, fmt.Sprintf("%s-%d", tag, i))
		recs[i] = proto.Record{Key: []byte(tag), Value: v}
	}
	return proto.AppendRecordBatch(nil, proto.RecordBatchHeader{
		PartitionLeaderEpoch: -1, BaseTimestamp: time.Now().UnixMilli(), ProducerID: pid, ProducerEpoch: 0, BaseSequence: seq,
	}, recs)
}

// partitionFiles is every file of a replica's directory, by name.
func partitionFiles(t *testing.T, s *Server, partition int32) map[string][]byte {
	t.Helper()
	dir := filepath.Join(s.cfg.DataDir, fmt.Sprintf("f-%d", partition))
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".log", ".index", ".timeindex":
		default:
			if e.Name() != "leader-epoch-checkpoint" {
				continue
			}
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

// TestFollowerSpliceMatchesCopy: two followers catch up a leader's backlog of two
// partitions, one splicing, one copying, with segments small enough to roll between
// and inside fetch responses (each response carries both partitions), and batches of
// two epochs and idempotent producers. Both end with the leader's bytes, and with the
// same files: segments rolled at the same offsets, indexes, leader-epoch checkpoint.
// The splicing follower counts its bytes as spliced, but for answers too small to
// splice; the other counts all as copied.
func TestFollowerSpliceMatchesCopy(t *testing.T) {
	const partitions = 2
	logCfg := func(string) segment.Config { return segment.Config{SegmentBytes: 300 << 10} }
	base := Config{ReplicaFetchBackoff: 50 * time.Millisecond, ReplicaFetchMaxWait: 100 * time.Millisecond, LogConfig: logCfg}
	nodes := map[int32]*Server{}
	for id, path := range map[int32]string{1: ReplicaAppendCopy, 2: ReplicaAppendSplice, 3: ReplicaAppendCopy} {
		cfg := base
		cfg.NodeID, cfg.ReplicaAppend = id, path
		nodes[id] = startServer(t, cfg)
	}
	addrs := map[int32]string{}
	for id, s := range nodes {
		addrs[id] = s.Addr()
	}
	spliceViewN(t, nodes[1], 1, addrs, 1, 1, partitions)
	c := dial(t, nodes[1])
	var end [partitions]int64
	var seq [partitions]int32
	produceTo := func(part int32, b []byte) {
		t.Helper()
		if rp := produce(t, c, 7, "f", part, 1, b); rp.ErrorCode != 0 {
			t.Fatalf("produce to %d: %+v", part, rp)
		}
		h, _ := proto.ParseRecordBatchHeader(b)
		end[part] += int64(h.RecordCount)
	}
	for i := range 60 {
		if i == 40 {
			spliceViewN(t, nodes[1], 2, addrs, 1, 2, partitions) // a new epoch for the rest
		}
		part := int32(i % partitions)
		switch i / partitions % 3 {
		case 0:
			produceTo(part, bigBatch(4, 20<<10, "big", 7+int64(part), seq[part]))
			seq[part] += 4
		case 1:
			produceTo(part, batch(3, fmt.Sprint("small", i), -1, -1, -1)) // copied even when splicing
		default:
			produceTo(part, bigBatch(1, 70<<10, "one", -1, -1))
		}
	}
	caughtUp := func() {
		t.Helper()
		testutil.CheckFor(t, 20*time.Second, func() error {
			for _, id := range []int32{2, 3} {
				for part := range int32(partitions) {
					p := nodes[id].replicas.Partition("f", part)
					if p == nil || p.Log().LogEndOffset() != end[part] {
						return fmt.Errorf("follower %d not caught up on %d", id, part)
					}
				}
			}
			return nil
		})
	}
	spliceViewN(t, nodes[2], 3, addrs, 1, 2, partitions)
	spliceViewN(t, nodes[3], 3, addrs, 1, 2, partitions)
	caughtUp()
	// Caught up, the followers fetch the next small batch alone: copied on both paths.
	produceTo(0, batch(3, "tail", -1, -1, -1))
	caughtUp()
	var total int
	for part := range int32(partitions) {
		want := logBytes(t, nodes[1].replicas.Partition("f", part))
		total += len(want)
		for _, id := range []int32{2, 3} {
			p := nodes[id].replicas.Partition("f", part)
			if got := logBytes(t, p); !bytes.Equal(got, want) {
				t.Fatalf("follower %d holds %d bytes of %d, not the leader's %d", id, len(got), part, len(want))
			}
			if e := p.Log().LeaderEpochs(); len(e) != 2 || e[1].Epoch != 2 {
				t.Fatalf("follower %d epochs of %d: %+v", id, part, e)
			}
		}
		spliced, copied := partitionFiles(t, nodes[2], part), partitionFiles(t, nodes[3], part)
		if len(spliced) != len(copied) || len(spliced) < 2*3+1 { // rolled at least once
			t.Fatalf("partition %d: splicing follower has %d files, copying %d", part, len(spliced), len(copied))
		}
		for name, b := range copied {
			if !bytes.Equal(spliced[name], b) {
				t.Fatalf("partition %d: %s differs between the splicing and the copying follower", part, name)
			}
		}
	}
	m2, m3 := nodes[2].metrics, nodes[3].metrics
	if m2.replicationSpliceIn.Get() == 0 || m2.replicationBytesIn.Get() == 0 || m3.replicationSpliceIn.Get() != 0 ||
		m2.replicationSpliceIn.Get()+m2.replicationBytesIn.Get() != uint64(total) || m3.replicationBytesIn.Get() != uint64(total) {
		t.Fatalf("bytes by path: splicing follower %d spliced %d copied, copying follower %d spliced %d copied (logs %d)",
			m2.replicationSpliceIn.Get(), m2.replicationBytesIn.Get(), m3.replicationSpliceIn.Get(), m3.replicationBytesIn.Get(), total)
	}
}

// fakeLeader is a leader that answers a follower's Fetch requests from a script: for
// each request, its log's batches from the fetch offset (up to 1 MiB), which answer
// may change (corrupt them, or send only a part and close the connection).
type fakeLeader struct {
	t  *testing.T
	ln net.Listener
	// log is the leader's batches, back to back from offset 0.
	log   []byte
	epoch int32

	mu sync.Mutex
	// answer edits the frame answering a fetch at offset (nil: unchanged); cut > 0
	// sends only that many bytes of it and closes the connection.
	answer  func(offset int64, frame []byte) (out []byte, cut int)
	fetches int
	// hold: answer every fetch with no records, as a leader with nothing new does.
	hold bool
}

func startFakeLeader(t *testing.T, log []byte, epoch int32) *fakeLeader {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &fakeLeader{t: t, ln: ln, log: log, epoch: epoch}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fl.serve(c)
			}()
		}
	}()
	return fl
}

func (fl *fakeLeader) setAnswer(f func(offset int64, frame []byte) ([]byte, int)) {
	fl.mu.Lock()
	fl.answer = f
	fl.mu.Unlock()
}

func (fl *fakeLeader) serve(c net.Conn) {
	for {
		var size [4]byte
		if _, err := io.ReadFull(c, size[:]); err != nil {
			return
		}
		frame := make([]byte, binary.BigEndian.Uint32(size[:]))
		if _, err := io.ReadFull(c, frame); err != nil {
			return
		}
		h, err := proto.ParseRequestHeader(frame)
		if err != nil {
			return
		}
		var resp kmsg.Response
		var offset int64
		switch h.APIKey {
		case 1:
			req := kmsg.NewPtrFetchRequest()
			req.SetVersion(h.APIVersion)
			if err := req.ReadFrom(frame[h.Size:]); err != nil {
				return
			}
			offset = req.Topics[0].Partitions[0].FetchOffset
			r := req.ResponseKind().(*kmsg.FetchResponse)
			rt := kmsg.NewFetchResponseTopic()
			rt.Topic, rt.TopicID = req.Topics[0].Topic, req.Topics[0].TopicID
			rp := kmsg.NewFetchResponseTopicPartition()
			rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = fl.end(), fl.end(), 0
			fl.mu.Lock()
			if !fl.hold {
				rp.RecordBatches = fl.from(offset, 1<<20)
			}
			fl.mu.Unlock()
			rt.Partitions = append(rt.Partitions, rp)
			r.Topics = append(r.Topics, rt)
			resp = r
			if len(rp.RecordBatches) == 0 {
				time.Sleep(20 * time.Millisecond) // as a leader's max wait would
			}
		case 23:
			req := kmsg.NewPtrOffsetForLeaderEpochRequest()
			req.SetVersion(h.APIVersion)
			if err := req.ReadFrom(frame[h.Size:]); err != nil {
				return
			}
			r := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
			for _, qt := range req.Topics {
				rt := kmsg.NewOffsetForLeaderEpochResponseTopic()
				rt.Topic = qt.Topic
				for _, qp := range qt.Partitions {
					rp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
					rp.Partition, rp.LeaderEpoch, rp.EndOffset = qp.Partition, fl.epoch, fl.end()
					rt.Partitions = append(rt.Partitions, rp)
				}
				r.Topics = append(r.Topics, rt)
			}
			resp = r
		default:
			return
		}
		resp.SetVersion(h.APIVersion)
		out, start := proto.BeginFrame(nil, h.CorrelationID, proto.IsFlexibleResponse(h.APIKey, h.APIVersion))
		out = resp.AppendTo(out)
		proto.EndFrame(out, start, 0)
		cut := 0
		fl.mu.Lock()
		if h.APIKey == 1 {
			fl.fetches++
			if fl.answer != nil {
				out, cut = fl.answer(offset, out)
			}
		}
		fl.mu.Unlock()
		if cut > 0 {
			_, _ = c.Write(out[:cut])
			return
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// waitFetches waits until the leader has answered n more fetches.
func (fl *fakeLeader) waitFetches(t *testing.T, n int) {
	t.Helper()
	fl.mu.Lock()
	want := fl.fetches + n
	fl.mu.Unlock()
	testutil.CheckFor(t, 10*time.Second, func() error {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		if fl.fetches < want {
			return errors.New("fewer fetches")
		}
		return nil
	})
}

// end is the offset after the fake log's last batch.
func (fl *fakeLeader) end() int64 {
	var end int64
	for pos := 0; pos < len(fl.log); {
		h, _ := proto.ParseRecordBatchHeader(fl.log[pos:])
		end = h.NextOffset()
		pos += h.Size()
	}
	return end
}

// from is the fake log's whole batches from offset, at most maxBytes (one at least).
func (fl *fakeLeader) from(offset int64, maxBytes int) []byte {
	start := -1
	for pos := 0; pos < len(fl.log); {
		h, _ := proto.ParseRecordBatchHeader(fl.log[pos:])
		if start < 0 && h.BaseOffset >= offset {
			start = pos
		}
		if start >= 0 && pos+h.Size()-start > maxBytes && pos > start {
			return fl.log[start:pos]
		}
		pos += h.Size()
	}
	if start < 0 {
		return nil
	}
	return fl.log[start:]
}

// fakeLog is batches of ~100 KiB at epoch, offsets assigned from 0.
func fakeLog(batches int, epoch int32) []byte {
	var log []byte
	var next int64
	for i := range batches {
		b := bigBatch(2, 50<<10, fmt.Sprint("fake", i), -1, -1)
		proto.SetBaseOffset(b, next)
		proto.SetPartitionLeaderEpoch(b, epoch)
		next += 2
		log = append(log, b...)
	}
	return log
}

// followFake starts a splicing follower of topic "f" led by fl.
func followFake(t *testing.T, fl *fakeLeader) *Server {
	s := startServer(t, Config{NodeID: 2, ReplicaAppend: ReplicaAppendSplice,
		ReplicaFetchBackoff: 20 * time.Millisecond, ReplicaFetchMaxWait: 100 * time.Millisecond, ReplicaSocketTimeout: 2 * time.Second})
	spliceView(t, s, 1, map[int32]string{1: fl.ln.Addr().String(), 2: s.Addr()}, 1, fl.epoch)
	return s
}

// checkBoundary: the follower's log ends at a batch boundary at or below want's
// offsets, its active segment's file holds nothing past the log, and what it holds is
// the leader's prefix.
func checkBoundary(t *testing.T, s *Server, fl *fakeLeader) int64 {
	t.Helper()
	p := s.replicas.Partition("f", 0)
	got := logBytes(t, p)
	if !bytes.HasPrefix(fl.log, got) {
		t.Fatalf("follower's %d bytes are not a prefix of the leader's log", len(got))
	}
	var size int64
	dir := filepath.Join(s.cfg.DataDir, "f-0")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if filepath.Ext(e.Name()) == ".log" {
			st, err := os.Stat(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			size += st.Size()
		}
	}
	if size != int64(len(got)) {
		t.Fatalf("segment files hold %d bytes, the log %d: bytes past the log's end", size, len(got))
	}
	return p.Log().LogEndOffset()
}

// TestFollowerSpliceRefusesCorruptBatch: a batch damaged on the wire is spliced into
// the segment but refused before it is part of the log — the log end, the file and
// what readers see stay at the last good batch — and the follower retries (after
// asking the leader where its epoch ends) and completes the log once the leader sends
// good bytes.
func TestFollowerSpliceRefusesCorruptBatch(t *testing.T) {
	fl := startFakeLeader(t, fakeLog(30, 3), 3)
	const badFrom = 20 // fetches from this offset get a flipped byte in their last batch
	var corrupted sync.WaitGroup
	corrupted.Add(1)
	var once sync.Once
	fl.setAnswer(func(offset int64, frame []byte) ([]byte, int) {
		if offset < badFrom || len(frame) < 1000 { // not answers without records
			return frame, 0
		}
		out := append([]byte(nil), frame...)
		out[len(out)-10] ^= 0xff
		once.Do(corrupted.Done)
		return out, 0
	})
	s := followFake(t, fl)
	corrupted.Wait()
	testutil.CheckFor(t, 10*time.Second, func() error {
		if leo := s.replicas.Partition("f", 0).Log().LogEndOffset(); leo != badFrom {
			return fmt.Errorf("log end %d", leo)
		}
		return nil
	})
	fl.waitFetches(t, 2) // retried, refused again
	// Answered with nothing new, the follower holds no staged bytes: the file must end
	// where the log does.
	fl.mu.Lock()
	fl.hold = true
	fl.mu.Unlock()
	fl.waitFetches(t, 2)
	if leo := checkBoundary(t, s, fl); leo != badFrom {
		t.Fatalf("log end %d after corrupt answers, want %d", leo, badFrom)
	}
	fl.mu.Lock()
	fl.hold = false
	fl.mu.Unlock()
	fl.setAnswer(nil)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if leo := s.replicas.Partition("f", 0).Log().LogEndOffset(); leo != fl.end() {
			return fmt.Errorf("log end %d", leo)
		}
		return nil
	})
	checkBoundary(t, s, fl)
	if s.metrics.replicationSpliceIn.Get() != uint64(len(fl.log)) {
		t.Fatalf("%d bytes spliced, log %d", s.metrics.replicationSpliceIn.Get(), len(fl.log))
	}
}

// TestFollowerSpliceConnectionDropped: a leader whose connection drops in the middle of
// a partition's records (after some of them were spliced) leaves the follower's log at
// a batch boundary with nothing past it in the file; the follower reconnects and
// completes the log.
func TestFollowerSpliceConnectionDropped(t *testing.T) {
	fl := startFakeLeader(t, fakeLog(30, 3), 3)
	drops := 0
	fl.setAnswer(func(offset int64, frame []byte) ([]byte, int) {
		if offset >= 10 && drops < 3 {
			drops++
			return frame, len(frame) / (1 + drops) // past the head, inside the records
		}
		return frame, 0
	})
	s := followFake(t, fl)
	testutil.CheckFor(t, 10*time.Second, func() error {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		if drops < 3 {
			return fmt.Errorf("%d drops", drops)
		}
		return nil
	})
	testutil.CheckFor(t, 10*time.Second, func() error {
		if leo := s.replicas.Partition("f", 0).Log().LogEndOffset(); leo != fl.end() {
			return fmt.Errorf("log end %d", leo)
		}
		return nil
	})
	checkBoundary(t, s, fl)
}

// TestFollowerSpliceFallsBackToCopy: on a data directory that refuses splice writes
// (EINVAL, made here by the drain's stand-in; some tmpfs and overlay kernels do it),
// the bytes already in the pipe are read out and the records copied: the log is
// complete, and every byte counted as copied.
func TestFollowerSpliceFallsBackToCopy(t *testing.T) {
	t.Cleanup(func() { drainPipeTo = (*sendfile.Splicer).DrainTo }) // after the node stops
	drainPipeTo = func(*sendfile.Splicer, int, *int64, int) error { return sendfile.ErrSpliceUnsupported }
	fl := startFakeLeader(t, fakeLog(12, 3), 3)
	s := followFake(t, fl)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if leo := s.replicas.Partition("f", 0).Log().LogEndOffset(); leo != fl.end() {
			return fmt.Errorf("log end %d", leo)
		}
		return nil
	})
	checkBoundary(t, s, fl)
	if m := s.metrics; m.replicationSpliceIn.Get() != 0 || m.replicationBytesIn.Get() != uint64(len(fl.log)) {
		t.Fatalf("%d bytes spliced, %d copied, log %d", m.replicationSpliceIn.Get(), m.replicationBytesIn.Get(), len(fl.log))
	}
}
