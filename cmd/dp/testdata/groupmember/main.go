// Command groupmember is one consumer-group member for cmd/dp's group tests, run as a
// process of its own so that a test can SIGKILL it: a franz-go (kgo, cooperative-sticky,
// its default balancer) or sarama (range) group consumer of one topic. It lives under
// testdata so that `go build ./...` and `go vet ./...` skip it; the tests build it once.
//
// It reports on stdout, one line per event, in the format every member program of the
// tests shares:
//
//	ASSIGN <generation> <member id> <partition,partition,...|->   the partitions it owns now
//	REC <partition> <offset> <value>                              a record it consumed
//
// It commits what it consumed synchronously (franz-go after every poll and before giving
// partitions up; sarama marks every message and autocommits every 100 ms, and commits at
// the end of each session). SIGTERM (or SIGINT) closes it cleanly: final commit, then
// LeaveGroup.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
)

// out serialises report lines: each is one write to the unbuffered stdout.
var outMu sync.Mutex

func report(format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

func partitionList(ps []int32) string {
	if len(ps) == 0 {
		return "-"
	}
	ps = slices.Clone(ps)
	slices.Sort(ps)
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

type options struct {
	client, brokers, group, topic, instance string
	session, heartbeat, rebalance           time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.client, "client", "franz", "franz or sarama")
	flag.StringVar(&o.brokers, "brokers", "127.0.0.1:9092", "bootstrap brokers, comma-separated")
	flag.StringVar(&o.group, "group", "", "group id")
	flag.StringVar(&o.topic, "topic", "", "topic")
	flag.StringVar(&o.instance, "instance", "", "group.instance.id (static membership); empty: dynamic")
	flag.DurationVar(&o.session, "session", 3*time.Second, "session timeout")
	flag.DurationVar(&o.heartbeat, "heartbeat", 300*time.Millisecond, "heartbeat interval")
	flag.DurationVar(&o.rebalance, "rebalance", 10*time.Second, "rebalance timeout")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var err error
	switch o.client {
	case "franz":
		err = runFranz(ctx, o)
	case "sarama":
		err = runSarama(ctx, o)
	default:
		err = fmt.Errorf("unknown client %q", o.client)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "groupmember:", err)
		os.Exit(1)
	}
}

func runFranz(ctx context.Context, o options) error {
	var (
		mu    sync.Mutex
		owned = map[int32]bool{}
	)
	// change applies an assignment change and reports the partitions owned after it.
	change := func(cl *kgo.Client, ps []int32, add bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range ps {
			if add {
				owned[p] = true
			} else {
				delete(owned, p)
			}
		}
		var now []int32
		for p := range owned {
			now = append(now, p)
		}
		member, gen := cl.GroupMetadata()
		report("ASSIGN %d %s %s", gen, member, partitionList(now))
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(o.brokers, ",")...), kgo.ConsumerGroup(o.group), kgo.ConsumeTopics(o.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100 * time.Millisecond),
		kgo.SessionTimeout(o.session), kgo.HeartbeatInterval(o.heartbeat), kgo.RebalanceTimeout(o.rebalance),
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(func(_ context.Context, cl *kgo.Client, m map[string][]int32) { change(cl, m[o.topic], true) }),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				fmt.Fprintln(os.Stderr, "commit on revoke:", err)
			}
			change(cl, m[o.topic], false)
		}),
		kgo.OnPartitionsLost(func(_ context.Context, cl *kgo.Client, m map[string][]int32) { change(cl, m[o.topic], false) }),
	}
	if o.instance != "" {
		opts = append(opts, kgo.InstanceID(o.instance))
	}
	if os.Getenv("GROUPMEMBER_LOG") != "" { // for debugging a test: the client's log on stderr
		opts = append(opts, kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelInfo, nil)))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := cl.PollRecords(pctx, 1000)
		cancel()
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				fmt.Fprintf(os.Stderr, "fetch %s-%d: %v\n", t, p, err)
			}
		})
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			report("REC %d %d %s", r.Partition, r.Offset, r.Value)
			n++
		})
		if n > 0 {
			cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := cl.CommitUncommittedOffsets(cctx); err != nil {
				fmt.Fprintln(os.Stderr, "commit:", err)
			}
			ccancel()
		}
		cl.AllowRebalance()
	}
	// Leaving revokes everything: the revoke callback commits before the LeaveGroup.
	cl.CloseAllowingRebalance()
	return nil
}

// saramaHandler reports each session's claims and every record; offsets are marked as
// consumed and autocommitted.
type saramaHandler struct{ topic string }

func (h saramaHandler) Setup(s sarama.ConsumerGroupSession) error {
	report("ASSIGN %d %s %s", s.GenerationID(), s.MemberID(), partitionList(s.Claims()[h.topic]))
	return nil
}

func (h saramaHandler) Cleanup(s sarama.ConsumerGroupSession) error {
	s.Commit()
	report("ASSIGN %d %s -", s.GenerationID(), s.MemberID())
	return nil
}

func (h saramaHandler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		report("REC %d %d %s", m.Partition, m.Offset, m.Value)
		s.MarkMessage(m, "")
	}
	return nil
}

func runSarama(ctx context.Context, o options) error {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_1_0_0
	cfg.ClientID = "groupmember-sarama"
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Interval = 100 * time.Millisecond
	cfg.Consumer.MaxWaitTime = 100 * time.Millisecond
	cfg.Consumer.Group.Session.Timeout = o.session
	cfg.Consumer.Group.Heartbeat.Interval = o.heartbeat
	cfg.Consumer.Group.Rebalance.Timeout = o.rebalance
	cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
	cfg.Consumer.Return.Errors = true
	if o.instance != "" {
		cfg.Version = sarama.V2_3_0_0 // static membership needs JoinGroup v5
		cfg.Consumer.Group.InstanceId = o.instance
	}
	g, err := sarama.NewConsumerGroup(strings.Split(o.brokers, ","), o.group, cfg)
	if err != nil {
		return err
	}
	go func() {
		for err := range g.Errors() {
			fmt.Fprintln(os.Stderr, "sarama:", err)
		}
	}()
	for ctx.Err() == nil {
		if err := g.Consume(ctx, []string{o.topic}, saramaHandler{topic: o.topic}); err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "consume:", err)
			time.Sleep(100 * time.Millisecond)
		}
	}
	return g.Close()
}
