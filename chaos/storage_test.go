package chaos

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/chaos/history"
	"github.com/gregor-streaming/gregor/internal/powerloss"
	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// Storage faults (issue #14): a power loss of every data-plane node, under a flush mode
// that promises survival and under the default one, and damage to one replica's files
// while its node is down (R14). The damage is made on the files the way a crash or a
// disk leaves them; the node must recover its log (the storage engine's recovery: see
// segment/recovery.go), refetch what it cut from the leader and rejoin the ISR, and
// nothing acknowledged may be lost, since the other replicas hold it.

// killAllDPs SIGKILLs every data-plane node at once.
func (r *run) killAllDPs(why string) []testcluster.Node {
	var all []testcluster.Node
	for _, d := range r.c.DPs {
		all = append(all, d)
	}
	r.fault("kill", "dp1,dp2,dp3", why)
	for _, d := range r.c.DPs {
		r.c.Kill(d)
	}
	return all
}

// powerLoss simulates a power loss on killed data-plane nodes: each data directory
// loses every segment write that was never fsynced (package internal/powerloss, from
// the fsync journal the nodes keep with runOptions.fsyncJournal). It returns the log
// bytes dropped.
func (r *run) powerLoss(ds ...*testcluster.DP) int64 {
	r.t.Helper()
	if !r.opts.fsyncJournal {
		r.t.Fatal("powerLoss needs runOptions.fsyncJournal")
	}
	var total int64
	for _, d := range ds {
		if d.Running() {
			r.t.Fatalf("power loss of %s, which runs", d.Name())
		}
		rep, err := powerloss.Apply(d.Dir())
		if err != nil {
			r.t.Fatalf("power loss of %s: %v", d.Name(), err)
		}
		r.fault("power-loss", d.Name(), rep.String())
		total += rep.Bytes()
	}
	return total
}

// TestR4PowerLoss: every data-plane node loses power at once under acks=all load on a
// topic with flush.messages=1, which fsyncs every append before it is acknowledged (on
// the leader, and on each follower before its next fetch lets the high watermark pass
// it): nothing acknowledged may be lost, although every write not yet fsynced is.
func TestR4PowerLoss(t *testing.T) {
	r := newRun(t, "R4-power-loss", runOptions{fsyncJournal: true,
		topicConfigs: map[string]string{"flush.messages": "1"}})
	r.waitProgress(mainTopic, -1, 600)
	all := r.killAllDPs("every data-plane node at once, then their power")
	dropped := r.powerLoss(r.c.DPs...)
	r.restart(all...)
	r.waitHealthy(90 * time.Second)
	r.waitProgress(mainTopic, -1, 300)
	r.finish()
	t.Logf("the power loss dropped %d unsynced log bytes", dropped)
}

// TestR4PowerLossDefaultFlush: the same power loss with the default flush mode (no
// fsync before acknowledging: replication is the durability, as Kafka's default), which
// cannot survive the loss of every replica at once: acknowledged writes may be lost,
// as Kafka documents. What must hold is that the logs recover: the nodes restart, every
// partition leads again with its whole ISR, and the replicas agree below the high
// watermark (the checker's replica checks). The acknowledged writes lost are counted.
func TestR4PowerLossDefaultFlush(t *testing.T) {
	r := newRun(t, "R4-power-loss-default", runOptions{fsyncJournal: true, lossAllowed: true})
	r.waitProgress(mainTopic, -1, 600)
	all := r.killAllDPs("every data-plane node at once, then their power")
	dropped := r.powerLoss(r.c.DPs...)
	r.restart(all...)
	r.waitHealthy(90 * time.Second)
	r.waitProgress(mainTopic, -1, 300)
	h := r.finish()
	lost, read := lostAcks(h)
	t.Logf("the power loss dropped %d unsynced log bytes; %d of %d acknowledged acks=all writes lost (%d of them read by a consumer before the loss): flush.messages and flush.ms at their defaults, Kafka's documented trade-off",
		dropped, lost, r.okSends(), read)
}

// lostAcks counts the acknowledged sends whose value no final log holds, and how many
// of them a poll had read (the checker counts only those that no poll read as lost:
// acknowledged, read, then lost is inconsistent offsets to it once the offsets are
// written again).
func lostAcks(h *history.History) (lost, read int) {
	final, polled := map[string]bool{}, map[string]bool{}
	for _, p := range h.Polls {
		for _, rec := range p.Records {
			polled[rec.Value] = true
		}
	}
	for _, f := range h.Finals {
		for _, rec := range f.Records {
			final[rec.Value] = true
		}
	}
	for _, s := range h.Sends {
		if s.Outcome == history.OK && !final[s.Value] {
			lost++
			if polled[s.Value] {
				read++
			}
		}
	}
	return lost, read
}

// okSends counts the acknowledged sends so far.
func (r *run) okSends() int64 {
	ok, _, _ := r.rec.Counts()
	return ok
}

// TestR14StorageFaults: one replica's files damaged while its node is down (SIGKILL),
// one fault after another, each followed by the node's restart and its return to every
// ISR: a torn tail, a flipped bit, deleted indexes, what a crash leaves in the middle of
// an append, a roll and a checkpoint, lost leader-epoch checkpoints, and a power loss of
// one node (the default flush mode: the other replicas hold what it loses). Each damaged node must recover and refetch;
// nothing acknowledged may be lost.
func TestR14StorageFaults(t *testing.T) {
	r := newRun(t, "R14", runOptions{fsyncJournal: true})
	r.waitProgress(mainTopic, -1, 300)
	follower := func(p int32) *testcluster.DP {
		fs := r.others(r.leaderOf(mainTopic, p))
		return fs[r.rng.Intn(len(fs))]
	}
	// step kills d, damages its files, restarts it and waits for every ISR to be whole
	// again and the load to go on; recovered, if set, is a segment whose recovery the
	// node must log (the damage was seen, not skipped).
	step := func(d *testcluster.DP, what string, damage func() string, recovered string) {
		t.Helper()
		before := countLines(d, "recovery truncated the log", recovered)
		r.kill(d, what)
		r.fault("damage", d.Name(), damage())
		r.restart(d)
		r.waitHealthy(60 * time.Second)
		if recovered != "" {
			r.c.CheckFor(t, 10*time.Second, func() error {
				if countLines(d, "recovery truncated the log", recovered) == before {
					return fmt.Errorf("%s logged no recovery of %s", d.Name(), recovered)
				}
				return nil
			})
		}
		r.waitProgress(mainTopic, -1, 100)
	}

	// A torn tail: the active segment cut in the middle of its last batch.
	d := follower(0)
	seg := activeSegment(t, partitionDir(d, mainTopic, 0))
	step(d, "follower of t-0: torn tail", func() string { return seg.tearTail(t) }, seg.path)

	// A flipped bit in a batch of the leader's active segment (under the high watermark:
	// acknowledged), the leader killed first: recovery cuts the log at that batch, and
	// the node, a follower now, fetches it back.
	old := r.leaderOf(mainTopic, 1)
	crcs := countLines(old, "CRC mismatch", "")
	r.kill(old, "leader of t-1, for a flipped bit")
	r.waitNewLeader(mainTopic, 1, old)
	seg = activeSegment(t, partitionDir(old, mainTopic, 1))
	r.fault("damage", old.Name(), seg.flipBit(t))
	r.restart(old)
	r.waitHealthy(60 * time.Second)
	r.c.CheckFor(t, 10*time.Second, func() error {
		if countLines(old, "CRC mismatch", seg.path) == crcs {
			return fmt.Errorf("%s logged no CRC mismatch in %s", old.Name(), seg.path)
		}
		return nil
	})
	r.waitProgress(mainTopic, -1, 100)

	// Deleted indexes: rebuilt.
	d = follower(2)
	dir := partitionDir(d, mainTopic, 2)
	step(d, "follower of t-2: indexes deleted", func() string { return deleteIndexes(t, dir) }, "")

	// A crash in the middle of an append: the next batch's first half at the tail.
	d = follower(0)
	seg = activeSegment(t, partitionDir(d, mainTopic, 0))
	step(d, "follower of t-0: crash mid-append", func() string { return seg.appendPartial(t) }, seg.path)

	// A crash in the middle of a roll: the next segment's file created, empty, without
	// its indexes (t-1) and with them, preallocated (t-2).
	d = follower(1)
	step(d, "follower: crash mid-roll", func() string {
		return strings.Join([]string{
			activeSegment(t, partitionDir(d, mainTopic, 1)).startNext(t, false),
			activeSegment(t, partitionDir(d, mainTopic, 2)).startNext(t, true),
		}, "; ")
	}, "")

	// A crash in the middle of checkpoints: the temporary files left half written, and
	// a half-written recovery point (which only costs a longer recovery).
	d = follower(2)
	hwFile := filepath.Join(d.Dir(), "replication-offset-checkpoint")
	r.c.CheckFor(t, 15*time.Second, func() error { _, err := os.Stat(hwFile); return err }) // every 5 s
	step(d, "follower: crash mid-checkpoint", func() string { return halfCheckpoints(t, d) }, "")

	// The leader-epoch checkpoint lost (t-0) and damaged (t-1): rebuilt from the
	// batches' epochs, so that the node still truncates by epoch when it follows.
	d = follower(0)
	before := countLines(d, "leader-epoch checkpoint unreadable or missing", "")
	step(d, "follower: leader-epoch checkpoints lost", func() string {
		p0 := filepath.Join(partitionDir(d, mainTopic, 0), "leader-epoch-checkpoint")
		p1 := filepath.Join(partitionDir(d, mainTopic, 1), "leader-epoch-checkpoint")
		if err := os.Remove(p0); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p1, []byte("0\n9\n1 "), 0o644); err != nil {
			t.Fatal(err)
		}
		return "t-0/leader-epoch-checkpoint removed, t-1/leader-epoch-checkpoint garbled"
	}, "")
	if got := countLines(d, "leader-epoch checkpoint unreadable or missing", ""); got < before+2 {
		t.Errorf("%s logged %d leader-epoch rebuilds, want 2", d.Name(), got-before)
	}

	// A power loss of one node, the leader of t-2, restarted at once: it takes its
	// registration over with a log that lost its unsynced tail (the default flush mode),
	// below the high watermark its followers hold. The controller must not let it lead
	// on that log; the others hold everything acknowledged.
	old = r.leaderOf(mainTopic, 2)
	r.kill(old, "leader of t-2, then its power")
	r.powerLoss(old)
	r.restart(old)
	r.waitHealthy(60 * time.Second)
	r.waitProgress(mainTopic, -1, 200)
	r.finish()
}

// countLines counts the lines of a process node's log so far that hold both strings.
func countLines(n testcluster.Node, a, b string) int {
	l, ok := n.(interface{ Log() string })
	if !ok {
		return 0
	}
	c := 0
	for _, line := range strings.Split(l.Log(), "\n") {
		if strings.Contains(line, a) && strings.Contains(line, b) {
			c++
		}
	}
	return c
}

func partitionDir(d *testcluster.DP, topic string, p int32) string {
	return filepath.Join(d.Dir(), fmt.Sprintf("%s-%d", topic, p))
}

// segFile is the active (last) segment file of a partition directory, read whole, and
// its batches.
type segFile struct {
	dir, path string
	data      []byte
	batches   []batchAt
}

// batchAt is one batch of a segment: its position and size, base and last offsets.
type batchAt struct {
	pos, size  int
	base, last int64
}

// batchHeaderSize is a RecordBatch v2 header's size; the CRC covers the bytes from
// offset 21 (attributes) on.
const batchHeaderSize = 61

func activeSegment(t *testing.T, dir string) *segFile {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no segment in %s: %v", dir, err)
	}
	slices.Sort(logs)
	s := &segFile{dir: dir, path: logs[len(logs)-1]}
	if s.data, err = os.ReadFile(s.path); err != nil {
		t.Fatal(err)
	}
	for pos := 0; pos+batchHeaderSize <= len(s.data); {
		size := 12 + int(binary.BigEndian.Uint32(s.data[pos+8:]))
		if pos+size > len(s.data) {
			break
		}
		base := int64(binary.BigEndian.Uint64(s.data[pos:]))
		last := base + int64(binary.BigEndian.Uint32(s.data[pos+23:]))
		s.batches = append(s.batches, batchAt{pos, size, base, last})
		pos += size
	}
	if len(s.batches) < 4 {
		t.Fatalf("%s holds %d batches: too few to damage", s.path, len(s.batches))
	}
	return s
}

// tearTail cuts the segment in the middle of its last batch.
func (s *segFile) tearTail(t *testing.T) string {
	t.Helper()
	b := s.batches[len(s.batches)-1]
	cut := b.pos + b.size/2
	if err := os.Truncate(s.path, int64(cut)); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s cut at byte %d of %d, inside the batch of offsets %d-%d", filepath.Base(s.path), cut, len(s.data), b.base, b.last)
}

// flipBit flips one bit in the records of a batch in the middle of the segment.
func (s *segFile) flipBit(t *testing.T) string {
	t.Helper()
	b := s.batches[len(s.batches)/2]
	at := b.pos + batchHeaderSize + (b.size-batchHeaderSize)/2
	f, err := os.OpenFile(s.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{s.data[at] ^ 0x10}, int64(at)); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s: bit 4 of byte %d flipped, in the batch of offsets %d-%d (%d of %d batches)",
		filepath.Base(s.path), at, b.base, b.last, len(s.batches)/2, len(s.batches))
}

// appendPartial writes the first half of a next batch at the tail: the last batch's bytes
// renumbered to follow it, as an append cut short by a crash leaves them.
func (s *segFile) appendPartial(t *testing.T) string {
	t.Helper()
	b := s.batches[len(s.batches)-1]
	next := append([]byte(nil), s.data[b.pos:b.pos+b.size]...)
	binary.BigEndian.PutUint64(next, uint64(b.last+1))
	next = next[:len(next)/2]
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(next); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s: %d bytes of a batch at offset %d appended", filepath.Base(s.path), len(next), b.last+1)
}

// startNext creates the next segment after the active one, empty, as a roll cut short
// leaves it: with its indexes (preallocated, as an active segment's are) or without.
func (s *segFile) startNext(t *testing.T, indexes bool) string {
	t.Helper()
	leo := s.batches[len(s.batches)-1].last + 1
	stem := filepath.Join(s.dir, fmt.Sprintf("%020d", leo))
	if err := os.WriteFile(stem+".log", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if !indexes {
		return fmt.Sprintf("%s created empty, without indexes", filepath.Base(stem)+".log")
	}
	for _, suffix := range []string{".index", ".timeindex"} {
		if err := os.WriteFile(stem+suffix, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(stem+suffix, 10<<20); err != nil {
			t.Fatal(err)
		}
	}
	return fmt.Sprintf("%s created empty, with preallocated indexes", filepath.Base(stem)+".log")
}

// deleteIndexes removes every index file of a partition directory.
func deleteIndexes(t *testing.T, dir string) string {
	t.Helper()
	var gone []string
	for _, pattern := range []string{"*.index", "*.timeindex"} {
		files, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, f := range files {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
			gone = append(gone, filepath.Base(f))
		}
	}
	if len(gone) == 0 {
		t.Fatalf("no index in %s", dir)
	}
	return fmt.Sprintf("%s: removed %s", filepath.Base(dir), strings.Join(gone, ", "))
}

// halfCheckpoints leaves, in d's data directory, every checkpoint's temporary file
// holding the first half of the checkpoint (a write cut short before its rename), and
// cuts one recovery-point file itself in half.
func halfCheckpoints(t *testing.T, d *testcluster.DP) string {
	t.Helper()
	var did []string
	half := func(path, to string) {
		data, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			return // not written yet
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, data[:len(data)/2], 0o644); err != nil {
			t.Fatal(err)
		}
		did = append(did, fmt.Sprintf("%s: %d of %d bytes", strings.TrimPrefix(to, d.Dir()+"/"), len(data)/2, len(data)))
	}
	half(filepath.Join(d.Dir(), "replication-offset-checkpoint"), filepath.Join(d.Dir(), "replication-offset-checkpoint.tmp"))
	for p := range int32(3) {
		dir := partitionDir(d, mainTopic, p)
		for _, name := range []string{"recovery-point", "leader-epoch-checkpoint"} {
			half(filepath.Join(dir, name), filepath.Join(dir, name+".tmp"))
		}
	}
	rp := filepath.Join(partitionDir(d, mainTopic, 0), "recovery-point")
	half(rp, rp)
	return strings.Join(did, "; ")
}
