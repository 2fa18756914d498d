package replication

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// failoverTopic is the failover trials' topic: one partition, RF 3,
// min.insync.replicas 2, written at acks=all by the probe.
const failoverTopic = "bench-failover"

// Probe settings: one record at a time, retried quickly, so the client adds little to
// what is measured (franz-go's defaults back off for up to a second and keep metadata
// for five).
const (
	probeRetryBackoff  = 5 * time.Millisecond
	probeMetadataAge   = pollEvery
	probeValueBytes    = 64
	probeRecentAckMax  = 500 * time.Millisecond
	probeDeliveryLimit = waitMax
)

// Failover is the leader failover trials: each kills (SIGKILL) the leader of the
// failover topic's partition while a probe writes to it at acks=all, then restarts the
// killed node and waits for it to rejoin the ISR before the next trial.
type Failover struct {
	Trials []FailoverTrial `json:"trials"`
	// The medians and maxima over the trials.
	ElectedP50Sec      float64 `json:"electedP50Sec"`
	ElectedMaxSec      float64 `json:"electedMaxSec"`
	FirstAckP50Sec     float64 `json:"firstAckP50Sec"`
	FirstAckMaxSec     float64 `json:"firstAckMaxSec"`
	RestartToISRP50Sec float64 `json:"restartToIsrP50Sec"`
	RestartToISRMaxSec float64 `json:"restartToIsrMaxSec"`
	// ProbeErrors counts the probe's writes that failed (the client gave up on them);
	// ProbeAcks those acknowledged, over all trials.
	ProbeErrors int64 `json:"probeErrors"`
	ProbeAcks   int64 `json:"probeAcks"`
}

// FailoverTrial is one leader killed.
type FailoverTrial struct {
	Killed    int32 `json:"killed"`
	Successor int32 `json:"successor"`
	// ElectedSec runs from the SIGKILL to metadata naming another leader; FirstAckSec to
	// the first write the probe had acknowledged after it (by the successor: the killed
	// process was reaped before the probe's acks were counted).
	ElectedSec  float64 `json:"electedSec"`
	FirstAckSec float64 `json:"firstAckSec"`
	// RestartToISRSec runs from the killed node's restart to it being back in the ISR,
	// with what the probe wrote while it was down as its backlog.
	RestartToISRSec float64 `json:"restartToIsrSec"`
}

// probe writes one record at a time at acks=all to partition 0 of topic and notes the
// first acknowledgement after a time it is armed with.
type probe struct {
	cl         *kgo.Client
	armNs      atomic.Int64
	firstNs    atomic.Int64
	lastAckNs  atomic.Int64
	acks, errs atomic.Int64
	stop       context.CancelFunc
	wg         sync.WaitGroup
}

func (c *cluster) startProbe(topic string) (*probe, error) {
	var seeds []string
	for _, n := range c.g.Nodes {
		seeds = append(seeds, n.Addr)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ClientID("gregor-bench-failover-probe"),
		kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DisableIdempotentWrite(), kgo.ProducerLinger(0),
		kgo.RetryBackoffFn(func(int) time.Duration { return probeRetryBackoff }),
		kgo.MetadataMinAge(probeMetadataAge), kgo.RecordDeliveryTimeout(probeDeliveryLimit))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &probe{cl: cl, stop: cancel}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		value := make([]byte, probeValueBytes)
		for ctx.Err() == nil {
			err := cl.ProduceSync(ctx, &kgo.Record{Partition: 0, Value: value}).FirstErr()
			now := time.Now().UnixNano()
			if err != nil {
				if ctx.Err() == nil {
					p.errs.Add(1)
				}
				continue
			}
			p.acks.Add(1)
			p.lastAckNs.Store(now)
			if a := p.armNs.Load(); a > 0 && now > a {
				p.firstNs.CompareAndSwap(0, now)
			}
		}
	}()
	return p, nil
}

func (p *probe) close() {
	p.stop()
	p.wg.Wait()
	p.cl.Close()
}

// arm makes the next acknowledgement after at the one firstAck returns.
func (p *probe) arm(at time.Time) {
	p.firstNs.Store(0)
	p.armNs.Store(at.UnixNano())
}

func (c *cluster) failover(ctx context.Context, cfg Config) (*Failover, error) {
	progress(cfg.Progress, "failover: topic %s, 1 partition, RF 3, min.insync.replicas 2, a probe writing at acks=all; %d trials", failoverTopic, cfg.FailoverTrials)
	minISR := "2"
	if err := c.createTopic(ctx, failoverTopic, 1, 3, map[string]*string{"min.insync.replicas": &minISR}); err != nil {
		return nil, err
	}
	p, err := c.startProbe(failoverTopic)
	if err != nil {
		return nil, err
	}
	defer p.close()
	fo := &Failover{}
	defer func() { fo.ProbeAcks, fo.ProbeErrors = p.acks.Load(), p.errs.Load() }()
	for i := range cfg.FailoverTrials {
		tr, err := c.failoverTrial(ctx, p)
		if err != nil {
			return fo, fmt.Errorf("trial %d: %w", i+1, err)
		}
		fo.Trials = append(fo.Trials, tr)
		progress(cfg.Progress, "failover %d/%d: killed node %d; node %d leads after %.2f s, first acks=all write acknowledged after %.2f s; node %d back in the ISR %.2f s after its restart",
			i+1, cfg.FailoverTrials, tr.Killed, tr.Successor, tr.ElectedSec, tr.FirstAckSec, tr.Killed, tr.RestartToISRSec)
	}
	var el, ack, isr []float64
	for _, t := range fo.Trials {
		el, ack, isr = append(el, t.ElectedSec), append(ack, t.FirstAckSec), append(isr, t.RestartToISRSec)
	}
	fo.ElectedP50Sec, fo.ElectedMaxSec = median(el), slices.Max(el)
	fo.FirstAckP50Sec, fo.FirstAckMaxSec = median(ack), slices.Max(ack)
	fo.RestartToISRP50Sec, fo.RestartToISRMaxSec = median(isr), slices.Max(isr)
	return fo, nil
}

func (c *cluster) failoverTrial(ctx context.Context, p *probe) (FailoverTrial, error) {
	var tr FailoverTrial
	// A settled partition: a leader, a full ISR, and the probe's writes going through.
	err := c.waitFor(ctx, waitMax, func() (bool, error) {
		t, err := c.topic(ctx, failoverTopic)
		if err != nil || len(t.Partitions) != 1 {
			return false, nil
		}
		pd := t.Partitions[0]
		tr.Killed = pd.Leader
		recent := time.Since(time.Unix(0, p.lastAckNs.Load())) < probeRecentAckMax
		return pd.Leader >= 0 && len(pd.ISR) == DataPlanes && recent, nil
	})
	if err != nil {
		return tr, fmt.Errorf("partition not settled before the kill: %w", err)
	}
	n := c.node(tr.Killed)
	killAt := time.Now()
	n.Kill()
	p.arm(time.Now()) // the killed process is reaped: no ack after this is its
	err = c.waitFor(ctx, waitMax, func() (bool, error) {
		t, err := c.topic(ctx, failoverTopic)
		if err != nil || len(t.Partitions) != 1 {
			return false, nil
		}
		l := t.Partitions[0].Leader
		if l >= 0 && l != tr.Killed {
			tr.Successor = l
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return tr, fmt.Errorf("no leader elected after node %d was killed: %w", tr.Killed, err)
	}
	tr.ElectedSec = time.Since(killAt).Seconds()
	err = c.waitFor(ctx, waitMax, func() (bool, error) { return p.firstNs.Load() != 0, nil })
	if err != nil {
		return tr, fmt.Errorf("no write acknowledged after node %d was killed: %w", tr.Killed, err)
	}
	tr.FirstAckSec = time.Unix(0, p.firstNs.Load()).Sub(killAt).Seconds()
	restartAt := time.Now()
	if err := n.Restart(); err != nil {
		return tr, err
	}
	err = c.waitFor(ctx, waitMax, func() (bool, error) {
		t, err := c.topic(ctx, failoverTopic)
		return err == nil && inISR(t, tr.Killed), nil
	})
	if err != nil {
		return tr, fmt.Errorf("node %d did not rejoin the ISR after its restart: %w", tr.Killed, err)
	}
	tr.RestartToISRSec = time.Since(restartAt).Seconds()
	return tr, nil
}

// median of a non-empty slice (sorted in place).
func median(v []float64) float64 {
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}
