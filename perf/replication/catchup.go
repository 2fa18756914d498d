package replication

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gregor-streaming/gregor/perf"
	"github.com/gregor-streaming/gregor/perf/drivers"
)

// catchUpTopic is the follower catch-up's topic.
const catchUpTopic = "bench-catchup"

// catchUpSecondsMin is the shortest catch-up a rate is given for: polled every 10 ms, a
// shorter one is mostly the polls' error.
const catchUpSecondsMin = 0.2

// Metrics the catch-up reads.
const (
	logEndOffsetMetric     = "gregor_partition_log_end_offset"
	highWatermarkMetric    = "gregor_partition_high_watermark"
	followerFetchMetric    = "gregor_fetch_records_bytes_total"
	replicationBytesMetric = "gregor_replication_bytes_in_total"
)

// CatchUp is a follower catching up a backlog written while it was down: the follower is
// killed (SIGKILL), the backlog produced at acks=1 to the partitions' leaders — the two
// other nodes — and the follower restarted on its data directory.
type CatchUp struct {
	Partitions int   `json:"partitions"`
	FollowerID int32 `json:"followerId"`
	// BacklogBytes is the payload produced while the follower was down.
	BacklogBytes int64   `json:"backlogBytes"`
	FillSeconds  float64 `json:"fillSeconds"`
	// FillRegistrationsLost counts the other nodes' registrations lost while the
	// backlog was written (false fencing under load).
	FillRegistrationsLost int `json:"fillRegistrationsLost"`
	// ReplicatedBytes is what the follower appended (its replication-bytes-in counter;
	// the payload when the node does not export it).
	ReplicatedBytes       float64 `json:"replicatedBytes"`
	ReplicatedBytesSource string  `json:"replicatedBytesSource"`
	// Seconds runs from the follower's first replicated message (its log end offsets
	// moving, polled every 10 ms) to its log end offsets reaching the leaders' on every
	// partition; GBps is ReplicatedBytes over it.
	Seconds float64 `json:"seconds"`
	GBps    float64 `json:"gbps"`
	// LeaderCPUSeconds is the two leaders' CPU from the restart to the end of the
	// catch-up; FollowerCPUSeconds the restarted follower's whole process.
	LeaderCPUSeconds   float64 `json:"leaderCpuSeconds"`
	FollowerCPUSeconds float64 `json:"followerCpuSeconds"`
	LeaderCPUPerGB     float64 `json:"leaderCpuPerGB"`
	FollowerCPUPerGB   float64 `json:"followerCpuPerGB"`
	// LeaderFetch is how the leaders sent fetched bytes meanwhile (only the follower
	// fetched): sendfile or copy.
	LeaderFetch *perf.ZeroCopy `json:"leaderFetch,omitempty"`
	// LeaderFollowerBytes is the leaders' records bytes sent to followers
	// (gregor_fetch_records_bytes_total{reader="follower"}).
	LeaderFollowerBytes float64 `json:"leaderFollowerBytes"`
	// FollowerAppendByPath is the follower's replication-bytes-in counter by its path
	// label ("" for a counter without one); empty when the node exports none.
	FollowerAppendByPath map[string]float64 `json:"followerAppendByPath,omitempty"`
	// RestartToListeningSec, RestartToFirstByteSec, RestartToCaughtUpSec and
	// RestartToISRSec run from the restart (exec) to the Kafka port answering, to the
	// first message replicated, to the logs caught up, and to the node back in the ISR
	// of every partition it replicates (as metadata shows it).
	RestartToListeningSec float64 `json:"restartToListeningSec"`
	RestartToFirstByteSec float64 `json:"restartToFirstByteSec"`
	RestartToCaughtUpSec  float64 `json:"restartToCaughtUpSec"`
	RestartToISRSec       float64 `json:"restartToIsrSec"`
}

func (c *cluster) catchUp(ctx context.Context, cfg Config) (*CatchUp, error) {
	f := c.g.Nodes[len(c.g.Nodes)-1]
	cu := &CatchUp{Partitions: catchUpPartitions, FollowerID: f.ID}
	progress(cfg.Progress, "catch-up: topic %s, %d partitions, RF 3; killing node %d", catchUpTopic, catchUpPartitions, f.ID)
	if err := c.createTopic(ctx, catchUpTopic, catchUpPartitions, 3, nil); err != nil {
		return nil, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), settleMax)
		defer cancel()
		_, _ = c.adm.DeleteTopic(dctx, catchUpTopic) // frees three copies of the backlog
	}()
	// A catch-up that fails leaves the follower running again for the next part.
	defer func() {
		if !f.Running() {
			_ = f.Restart()
		}
	}()
	lostBefore := c.registrationsLost()
	f.Kill()
	var leaders []int32
	err := c.waitFor(ctx, waitMax, func() (bool, error) {
		t, err := c.topic(ctx, catchUpTopic)
		if err != nil {
			return false, nil
		}
		leaders = leaders[:0]
		for _, p := range t.Partitions {
			if p.Leader < 0 || p.Leader == f.ID {
				return false, nil
			}
			leaders = append(leaders, p.Leader)
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("node %d's leaderships did not move: %w", f.ID, err)
	}

	// The backlog.
	start := time.Now()
	progress(cfg.Progress, "catch-up: producing %s while node %d is down", mib(cfg.BacklogBytes), f.ID)
	acked, err := c.fill(ctx, catchUpTopic, cfg.BacklogBytes, cfg)
	// The fill is a max-rate load on two nodes: one fenced meanwhile is what to suspect.
	cu.FillRegistrationsLost = c.registrationsLost() - lostBefore
	if err != nil {
		if cu.FillRegistrationsLost > 0 {
			err = fmt.Errorf("%w (%d registrations lost meanwhile)", err, cu.FillRegistrationsLost)
		}
		return nil, err
	}
	cu.FillSeconds = time.Since(start).Seconds()
	cu.BacklogBytes = acked * catchUpMessageSize
	progress(cfg.Progress, "catch-up: backlog of %s written in %.1f s", mib(cu.BacklogBytes), cu.FillSeconds)

	// The leaders' log end offsets, now final: nothing more is produced. The other
	// follower may still be replicating the fill's tail (acks=1 does not wait for it):
	// the leaders' counters are read once every high watermark has reached its log end,
	// so that the catch-up's figures are the restarted follower's alone.
	leaderIDs := unique(leaders)
	leo := map[int32]float64{}
	before := map[int32]perf.Metrics{}
	t, err := c.topic(ctx, catchUpTopic)
	if err != nil {
		return nil, err
	}
	err = c.waitFor(ctx, waitMax, func() (bool, error) {
		for _, id := range leaderIDs {
			m, err := perf.ScrapeMetrics(ctx, c.node(id).MetricsURL)
			if err != nil {
				return false, err
			}
			before[id] = m
		}
		for _, p := range t.Partitions {
			labels := partitionLabels(catchUpTopic, p.Partition)
			v, ok := before[p.Leader].Sum(logEndOffsetMetric, labels...)
			if !ok {
				return false, fmt.Errorf("node %d exports no %s for %s[%d]", p.Leader, logEndOffsetMetric, catchUpTopic, p.Partition)
			}
			leo[p.Partition] = v
			if hw, _ := before[p.Leader].Sum(highWatermarkMetric, labels...); hw < v {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("the other follower did not catch up with the backlog: %w", err)
	}
	leaderCPU := func() float64 {
		var s float64
		for _, id := range leaderIDs {
			v, _ := perf.ProcessCPU(c.node(id).PID())
			s += v
		}
		return s
	}

	// The restart, and the catch-up.
	cpuStart := leaderCPU()
	restartAt := time.Now()
	if err := f.Restart(); err != nil {
		return nil, err
	}
	listening := time.Now()
	cu.RestartToListeningSec = listening.Sub(restartAt).Seconds()
	progress(cfg.Progress, "catch-up: node %d restarted, serving after %.2f s; catching up", f.ID, cu.RestartToListeningSec)
	var last perf.Metrics
	// firstByte is the last poll before the follower's replicated bytes first moved
	// (gregor_replication_bytes_in_total, there from the process's start: its
	// per-partition log-end gauges appear only at its first upkeep tick, after a
	// second): the first message arrived after it, so the rate is a lower bound (by
	// one poll).
	var firstByte, prevPoll time.Time
	lastReport := time.Now()
	err = c.waitFor(ctx, waitMax+time.Duration(cfg.BacklogBytes/(20<<20))*time.Second, func() (bool, error) {
		polled := time.Now()
		m, err := perf.ScrapeMetrics(ctx, f.MetricsURL)
		if err != nil {
			return false, nil
		}
		last = m
		defer func() { prevPoll = polled }()
		done := true
		var behind float64
		for p, want := range leo {
			v, _ := m.Sum(logEndOffsetMetric, partitionLabels(catchUpTopic, p)...)
			if v < want {
				done = false
				behind += want - v
			}
		}
		if in, _ := m.Sum(replicationBytesMetric); firstByte.IsZero() && in > 0 {
			firstByte = prevPoll
			if firstByte.IsZero() { // the first poll already saw bytes
				firstByte = listening
			}
		}
		if !done && time.Since(lastReport) >= time.Second {
			lastReport = time.Now()
			progress(cfg.Progress, "catch-up: %.0f messages behind after %.1f s", behind, time.Since(listening).Seconds())
		}
		return done, nil
	})
	if err != nil {
		return nil, fmt.Errorf("node %d did not catch up: %w", f.ID, err)
	}
	caughtUp := time.Now()
	cu.LeaderCPUSeconds = leaderCPU() - cpuStart
	cu.FollowerCPUSeconds, _ = perf.ProcessCPU(f.PID())
	if firstByte.IsZero() { // caught up before the second poll
		firstByte = listening
	}
	cu.RestartToFirstByteSec = firstByte.Sub(restartAt).Seconds()
	cu.Seconds = caughtUp.Sub(firstByte).Seconds()
	cu.RestartToCaughtUpSec = caughtUp.Sub(restartAt).Seconds()
	err = c.waitFor(ctx, waitMax, func() (bool, error) {
		t, err := c.topic(ctx, catchUpTopic)
		return err == nil && inISR(t, f.ID), nil
	})
	if err != nil {
		return nil, fmt.Errorf("node %d caught up but did not rejoin the ISR: %w", f.ID, err)
	}
	cu.RestartToISRSec = time.Since(restartAt).Seconds()

	// What moved, and how.
	cu.ReplicatedBytes, cu.ReplicatedBytesSource = float64(cu.BacklogBytes), "payload produced (the follower exports no "+replicationBytesMetric+")"
	if by := last.ByLabel(replicationBytesMetric, "path"); len(by) > 0 {
		cu.FollowerAppendByPath = by
		var sum float64
		for _, v := range by {
			sum += v
		}
		cu.ReplicatedBytes, cu.ReplicatedBytesSource = sum, replicationBytesMetric+" of the follower"
	}
	var fetchA, fetchB perf.FetchPathBytes
	for _, id := range leaderIDs {
		m, err := perf.ScrapeMetrics(ctx, c.node(id).MetricsURL)
		if err != nil {
			return nil, err
		}
		a, _ := before[id].FetchPaths()
		b, _ := m.FetchPaths()
		fetchA.Sendfile, fetchA.Copy = fetchA.Sendfile+a.Sendfile, fetchA.Copy+a.Copy
		fetchB.Sendfile, fetchB.Copy = fetchB.Sendfile+b.Sendfile, fetchB.Copy+b.Copy
		x, _ := before[id].Sum(followerFetchMetric, `reader="follower"`)
		y, _ := m.Sum(followerFetchMetric, `reader="follower"`)
		cu.LeaderFollowerBytes += y - x
	}
	cu.LeaderFetch = perf.ZeroCopyBetween(fetchA, fetchB)
	if gb := cu.ReplicatedBytes / 1e9; gb > 0 && cu.Seconds > 0 {
		if cu.Seconds >= catchUpSecondsMin {
			cu.GBps = gb / cu.Seconds
		}
		cu.LeaderCPUPerGB = cu.LeaderCPUSeconds / gb
		cu.FollowerCPUPerGB = cu.FollowerCPUSeconds / gb
	}
	progress(cfg.Progress, "catch-up: %.2f GB/s over %.2f s; leaders %.2f, follower %.2f core-s/GB; back in the ISR %.2f s after the restart",
		cu.GBps, cu.Seconds, cu.LeaderCPUPerGB, cu.FollowerCPUPerGB, cu.RestartToISRSec)
	return cu, nil
}

// fill produces bytes of 1 KiB messages to topic at acks=1 with the kafka-raw producer,
// round-robin over its partitions, and returns how many messages were acknowledged.
func (c *cluster) fill(ctx context.Context, topic string, bytes int64, cfg Config) (int64, error) {
	d, err := drivers.New("kafka-raw", drivers.Options{Bootstrap: c.g.Bootstrap, Log: cfg.Progress})
	if err != nil {
		return 0, err
	}
	defer d.Close()
	w, err := perf.ParseWorkload([]byte(fmt.Sprintf("name: catch-up-backlog\ntopics: 1\npartitionsPerTopic: %d\nmessageSize: %d\nproducersPerTopic: 1\nacks: \"1\"\nbatchSizeBytes: 1048576\nlingerMs: 1\ntestDurationSeconds: 1\n",
		catchUpPartitions, catchUpMessageSize)))
	if err != nil {
		return 0, err
	}
	var acked, failed atomic.Int64
	var firstErr atomic.Value
	p, err := d.NewProducer(ctx, topic, w, func(_ int64, err error) {
		if err != nil {
			if failed.Add(1) == 1 {
				firstErr.Store(err.Error())
			}
			return
		}
		acked.Add(1)
	})
	if err != nil {
		return 0, err
	}
	defer p.Close()
	value := make([]byte, catchUpMessageSize)
	n := bytes / catchUpMessageSize
	for i := int64(0); i < n; i++ {
		now := time.Now().UnixNano()
		perf.StampValue(value, now)
		if err := p.Send(ctx, int(i%catchUpPartitions), nil, value, now); err != nil {
			return acked.Load(), err
		}
	}
	fctx, cancel := context.WithTimeout(ctx, waitMax)
	defer cancel()
	if err := p.Flush(fctx); err != nil {
		return acked.Load(), err
	}
	if failed.Load() > 0 {
		return acked.Load(), fmt.Errorf("%d of %d backlog messages failed, first: %v", failed.Load(), n, firstErr.Load())
	}
	return acked.Load(), nil
}

// partitionLabels are the labels of one partition's gauges.
func partitionLabels(topic string, partition int32) []string {
	return []string{`topic=` + strconv.Quote(topic), `partition="` + strconv.Itoa(int(partition)) + `"`}
}

func unique(ids []int32) []int32 {
	var out []int32
	seen := map[int32]bool{}
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func mib(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 0, 64) + " MiB" }
