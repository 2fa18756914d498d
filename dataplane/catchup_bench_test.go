package dataplane

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/proto"
)

// BenchmarkFollowerCatchUp's settings: the leader's backlog, and the paths measured in
// order (alternate the order between runs: the first one meets whatever the machine
// still does after the leader's fill).
var (
	catchUpMiB   = flag.Int("catchup-mib", 256, "BenchmarkFollowerCatchUp: the leader's backlog in MiB")
	catchUpPaths = flag.String("catchup-paths", "copy,splice", "BenchmarkFollowerCatchUp: the append paths measured, in order")
)

// The leader of BenchmarkFollowerCatchUp runs in a process of its own (this test
// binary, running TestCatchUpLeaderProcess), so that its CPU time and the follower's
// are measured apart.
const catchUpLeaderEnv = "GREGOR_CATCHUP_LEADER_DIR"

// TestCatchUpLeaderProcess is BenchmarkFollowerCatchUp's leader: it fills partition
// "f"-0 with the backlog, prints "leader <addr> <log end offset>" and serves until its
// standard input closes. Skipped unless started by the benchmark.
func TestCatchUpLeaderProcess(t *testing.T) {
	dir := os.Getenv(catchUpLeaderEnv)
	if dir == "" {
		t.Skip("the leader process of BenchmarkFollowerCatchUp")
	}
	mib, _ := strconv.Atoi(os.Getenv("GREGOR_CATCHUP_MIB"))
	s := startServer(t, Config{NodeID: 1, DataDir: dir})
	spliceView(t, s, 1, map[int32]string{1: s.Addr(), 2: "127.0.0.1:1"}, 1, 1)
	// 512 KiB batches of 1 KiB records, as a producer batching hard would send.
	recs := make([]proto.Record, 512)
	for i := range recs {
		recs[i] = proto.Record{Value: make([]byte, 1000)}
	}
	b := proto.AppendRecordBatch(nil, proto.RecordBatchHeader{BaseTimestamp: time.Now().UnixMilli(), ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1}, recs)
	rc := &rawClient{c: dial(t, s)}
	frame := frameRequest(produceReq("f", 0, 1, b), 7, 1)
	for written := 0; written < mib<<20; written += len(b) {
		rc.roundTripT(t, frame)
	}
	// The backlog goes to disk before the followers come: its writeback must not run
	// under the first measurement only. The leader serves it from the page cache.
	if err := s.replicas.Partition("f", 0).Log().Flush(); err != nil {
		t.Fatal(err)
	}
	p := s.replicas.Partition("f", 0)
	fmt.Printf("leader %s %d\n", s.Addr(), p.Log().LogEndOffset())
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// roundTripT is rawClient.roundTrip for a test.
func (rc *rawClient) roundTripT(t *testing.T, frame []byte) {
	if _, err := rc.c.Write(frame); err != nil {
		t.Fatal(err)
	}
	var size [4]byte
	if _, err := io.ReadFull(rc.c, size[:]); err != nil {
		t.Fatal(err)
	}
	n := int(uint32(size[0])<<24 | uint32(size[1])<<16 | uint32(size[2])<<8 | uint32(size[3]))
	if cap(rc.buf) < n {
		rc.buf = make([]byte, n)
	}
	if _, err := io.ReadFull(rc.c, rc.buf[:n]); err != nil {
		t.Fatal(err)
	}
}

// catchUpLeader is the leader process as the benchmark sees it.
type catchUpLeader struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
	end   int64
	bytes int64
}

func startCatchUpLeader(b *testing.B) *catchUpLeader {
	dir := b.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCatchUpLeaderProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), catchUpLeaderEnv+"="+dir, "GREGOR_CATCHUP_MIB="+strconv.Itoa(*catchUpMiB))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	l := &catchUpLeader{cmd: cmd, stdin: stdin}
	b.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "leader" {
			l.addr = f[1]
			l.end, _ = strconv.ParseInt(f[2], 10, 64)
			break
		}
	}
	if l.addr == "" {
		b.Fatalf("the leader process printed no address: %v", sc.Err())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	fi, err := os.ReadDir(dir + "/f-0")
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range fi {
		if strings.HasSuffix(e.Name(), ".log") {
			info, err := e.Info()
			if err != nil {
				b.Fatal(err)
			}
			l.bytes += info.Size()
		}
	}
	return l
}

// cpuTime is the leader process's user plus system time so far (/proc, clock ticks of
// 10 ms).
func (l *catchUpLeader) cpuTime(b *testing.B) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", l.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses: utime and stime are the
	// 14th and 15th fields of the line.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// BenchmarkFollowerCatchUp measures a follower catching up a leader's backlog (256 MiB
// by default, -catchup-mib) from the page cache over loopback, appending by copy and
// by splice: one op is one whole catch-up into an empty follower, from its view naming
// the leader to its log end reaching the leader's. The leader is a process of its own
// (the same for both paths). GB/s is the backlog over the catch-up's time;
// follower-core-s/GB the test process's CPU time (the follower; nothing else runs in
// it meanwhile) per GB, leader-core-s/GB the leader process's (10 ms ticks).
//
//	go test -run '^$' -bench BenchmarkFollowerCatchUp -benchtime 1x ./dataplane/ -catchup-mib=1024 -catchup-paths=copy,splice
//
// run several times, alternating -catchup-paths=splice,copy.
func BenchmarkFollowerCatchUp(b *testing.B) {
	leader := startCatchUpLeader(b)
	// One catch-up first, not measured: the first after the leader's fill was measured
	// slower whatever its path (page allocation after the fill's), which would favour
	// the path measured second.
	catchUp(b, leader, ReplicaAppendCopy)
	for _, path := range strings.Split(*catchUpPaths, ",") {
		b.Run(path, func(b *testing.B) {
			b.SetBytes(leader.bytes)
			b.ReportAllocs()
			var elapsed, followerCPU, leaderCPU time.Duration
			for range b.N {
				b.StopTimer()
				m := catchUp(b, leader, path)
				elapsed += m.elapsed
				followerCPU += m.followerCPU
				leaderCPU += m.leaderCPU
				b.StartTimer()
			}
			gb := float64(leader.bytes) * float64(b.N) / 1e9
			b.ReportMetric(gb/elapsed.Seconds(), "GB/s")
			b.ReportMetric(followerCPU.Seconds()/gb, "follower-core-s/GB")
			b.ReportMetric(leaderCPU.Seconds()/gb, "leader-core-s/GB")
		})
	}
}

// catchUpRun is what one catch-up measured.
type catchUpRun struct{ elapsed, followerCPU, leaderCPU time.Duration }

// catchUp replicates the leader's backlog into a new follower appending by path, and
// measures it from the follower's view naming the leader to its log end reaching the
// leader's. The benchmark's timer runs only during that.
func catchUp(b *testing.B, leader *catchUpLeader, path string) catchUpRun {
	dir, err := os.MkdirTemp("", "catchup")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	s, err := New(Config{NodeID: 2, Listen: listenAddr(b), DataDir: dir, ReplicaAppend: path,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			b.Error(err)
		}
	}()
	f0, l0, t0 := cpuTime(), leader.cpuTime(b), time.Now()
	b.StartTimer()
	spliceView(b, s, 1, map[int32]string{1: leader.addr, 2: s.Addr()}, 1, 1)
	for {
		if p := s.replicas.Partition("f", 0); p != nil && p.Log().LogEndOffset() >= leader.end {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	return catchUpRun{elapsed: time.Since(t0), followerCPU: cpuTime() - f0, leaderCPU: leader.cpuTime(b) - l0}
}
