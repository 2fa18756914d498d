package workload

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/chaos/history"
)

// ConsumerConfig configures one consumer.
type ConsumerConfig struct {
	// Name names the consumer in the history.
	Name    string
	Brokers []string
	Topic   string
	// Partitions is the topic's partition count (an assigned consumer reads them all
	// from their start).
	Partitions int32
	// Group, if set, makes a group-subscribed consumer committing what it read after
	// every poll; otherwise the consumer is assigned every partition.
	Group string
}

// Consumer is a running consumer.
type Consumer struct {
	cfg    ConsumerConfig
	rec    *Recorder
	cl     *kgo.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	next map[int32]int64 // the offset expected next, per partition (-1: unknown)
	read map[int32]int64 // the offset after the last record read, per partition

	commits   atomic.Int64
	abort     chan struct{}
	abortOnce sync.Once

	// net holds the client's connections, so that Abort can drop them all.
	net gate
}

// gate is a dialer whose connections can all be dropped at once, and which then dials
// no more: a consumer process's crash, as its group's coordinator sees it.
type gate struct {
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func (g *gate) dial(ctx context.Context, network, host string) (net.Conn, error) {
	g.mu.Lock()
	closed := g.closed
	g.mu.Unlock()
	if closed {
		return nil, errors.New("workload: consumer aborted")
	}
	var d net.Dialer
	cn, err := d.DialContext(ctx, network, host)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		cn.Close()
		return nil, errors.New("workload: consumer aborted")
	}
	if g.conns == nil {
		g.conns = map[net.Conn]struct{}{}
	}
	g.conns[cn] = struct{}{}
	return cn, nil
}

// drop closes every connection and refuses new ones.
func (g *gate) drop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for cn := range g.conns {
		cn.Close()
	}
	g.conns = nil
}

func (g *gate) dropped() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// StartConsumer starts a consumer recording every poll into rec (and, in a group,
// every acknowledged commit) until Stop or ctx ends.
func StartConsumer(ctx context.Context, rec *Recorder, cfg ConsumerConfig) (*Consumer, error) {
	c := &Consumer{cfg: cfg, rec: rec, done: make(chan struct{}), abort: make(chan struct{}), next: map[int32]int64{}, read: map[int32]int64{}}
	// Control records (transaction markers) are kept, not recorded: they move the
	// consumer's position, so that a partition ending with a marker is read to its end.
	opts := []kgo.Opt{kgo.SeedBrokers(cfg.Brokers...), kgo.FetchMaxWait(500 * time.Millisecond), kgo.Dialer(c.net.dial),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords()}
	if cfg.Group == "" {
		parts := map[int32]kgo.Offset{}
		for p := range cfg.Partitions {
			parts[p] = kgo.NewOffset().AtStart()
			c.next[p] = 0
		}
		opts = append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{cfg.Topic: parts}))
	} else {
		opts = append(opts, kgo.ConsumerGroup(cfg.Group), kgo.ConsumeTopics(cfg.Topic), kgo.DisableAutoCommit(),
			kgo.BlockRebalanceOnPoll(), kgo.SessionTimeout(6*time.Second), kgo.HeartbeatInterval(time.Second),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				c.mu.Lock()
				for _, p := range m[cfg.Topic] {
					c.next[p] = -1 // where the committed offset puts it
				}
				c.mu.Unlock()
			}),
			// Where each assigned partition really starts: the committed offset fetched
			// from the coordinator. A poll is then judged against it (a commit this
			// history missed — answered after a fault cut the connection — would
			// otherwise look like a skip), and it is recorded as a fetched commit, which
			// must not be below any acknowledged one.
			kgo.AdjustFetchOffsetsFn(func(_ context.Context, m map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
				at := time.Now()
				c.mu.Lock()
				for p, o := range m[cfg.Topic] {
					if eo := o.EpochOffset(); eo.Offset >= 0 {
						c.next[p] = eo.Offset
						c.rec.Commit(history.Commit{Group: cfg.Group, Topic: cfg.Topic, Partition: p, Offset: eo.Offset,
							Fetched: true, Time: at})
					}
				}
				c.mu.Unlock()
				return m, nil
			}),
			kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				c.mu.Lock()
				for _, p := range m[cfg.Topic] {
					delete(c.next, p)
				}
				c.mu.Unlock()
			}),
			kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				c.mu.Lock()
				for _, p := range m[cfg.Topic] {
					delete(c.next, p)
				}
				c.mu.Unlock()
			}))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	c.cl = cl
	ctx, c.cancel = context.WithCancel(ctx)
	go c.run(ctx)
	return c, nil
}

func (c *Consumer) run(ctx context.Context) {
	defer close(c.done)
	defer func() {
		if c.net.dropped() {
			// Aborted: the client must not leave the group (its LeaveGroup could not be
			// sent anyway); it is closed in the background, where it gives up.
			go c.cl.Close()
			return
		}
		c.cl.Close()
	}()
	for ctx.Err() == nil {
		select {
		case <-c.abort:
			c.net.drop()
			return
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := c.cl.PollFetches(pctx)
		cancel()
		now := time.Now()
		var gen int32
		if c.cfg.Group != "" {
			_, gen = c.cl.GroupMetadata()
		}
		commit := map[string]map[int32]kgo.EpochOffset{}
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			if len(fp.Records) == 0 {
				return
			}
			p := history.Poll{Consumer: c.cfg.Name, Group: c.cfg.Group, Generation: gen, Topic: fp.Topic,
				Partition: fp.Partition, Start: -1, Time: now}
			for _, r := range fp.Records {
				if r.Attrs.IsControl() {
					continue
				}
				rec := history.Record{Offset: r.Offset, Value: string(r.Value)}
				if r.ProducerID >= 0 {
					rec.Idempotent, rec.ProducerID, rec.ProducerEpoch = true, r.ProducerID, r.ProducerEpoch
				}
				p.Records = append(p.Records, rec)
			}
			last := fp.Records[len(fp.Records)-1]
			c.mu.Lock()
			if n, ok := c.next[fp.Partition]; ok {
				p.Start = n
			}
			c.next[fp.Partition] = last.Offset + 1
			c.read[fp.Partition] = max(c.read[fp.Partition], last.Offset+1)
			c.mu.Unlock()
			if len(p.Records) > 0 {
				c.rec.Poll(p)
			}
			if c.cfg.Group != "" {
				if commit[fp.Topic] == nil {
					commit[fp.Topic] = map[int32]kgo.EpochOffset{}
				}
				commit[fp.Topic][fp.Partition] = kgo.EpochOffset{Epoch: last.LeaderEpoch, Offset: last.Offset + 1}
			}
		})
		if c.cfg.Group != "" {
			if len(commit) > 0 && ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				call := time.Now()
				c.cl.CommitOffsetsSync(cctx, commit, func(_ *kgo.Client, req *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
					if err != nil || resp == nil {
						return
					}
					at := time.Now()
					for _, t := range resp.Topics {
						for _, pt := range t.Partitions {
							if pt.ErrorCode != 0 {
								continue
							}
							off := commit[t.Topic][pt.Partition].Offset
							c.commits.Add(1)
							c.rec.Commit(history.Commit{Group: c.cfg.Group, Member: req.MemberID, Generation: req.Generation,
								Topic: t.Topic, Partition: pt.Partition, Offset: off, Call: call, Time: at})
						}
					}
				})
				cancel()
			}
			c.cl.AllowRebalance()
		}
	}
}

// Read returns, per partition, the offset after the last record the consumer read.
func (c *Consumer) Read() map[int32]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[int32]int64, len(c.read))
	for p, o := range c.read {
		m[p] = o
	}
	return m
}

// Stop stops the consumer (a group member leaves its group) and waits for it.
func (c *Consumer) Stop() {
	c.cancel()
	<-c.done
}

// Abort stops the consumer as a crash would: its connections are dropped at once and
// it sends nothing more — no LeaveGroup, no last commit — so that its group's
// coordinator learns of it only when its session times out. It waits for the
// consumer's loop to end; the client itself is closed in the background.
//
// The consumer is stopped between two polls, with no commit in flight: a commit the
// coordinator handled but whose answer the crash lost would leave the history a lower
// committed offset than the group's, and the next owner's first read would look like
// a skip.
func (c *Consumer) Abort() {
	c.abortOnce.Do(func() { close(c.abort) })
	<-c.done
}

// Commits is how many commits this consumer had acknowledged (per partition each).
func (c *Consumer) Commits() int { return int(c.commits.Load()) }
