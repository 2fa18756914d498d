package replica

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/twmb/franz-go/pkg/kerr"
)

// logBatches reads the headers of every batch of p's log, in offset order.
func logBatches(t *testing.T, p *Partition) []proto.RecordBatchHeader {
	t.Helper()
	log := p.Log()
	regions, err := log.Read(nil, log.LogStartOffset(), 1<<30, log.LogEndOffset(), true)
	if err != nil && !errors.Is(err, segment.ErrOffsetOutOfRange) {
		t.Fatal(err)
	}
	defer segment.ReleaseRegions(regions)
	var out []proto.RecordBatchHeader
	for _, rg := range regions {
		b := make([]byte, rg.Length)
		if _, err := syscall.Pread(rg.File.Fd(), b, rg.Position); err != nil {
			t.Fatal(err)
		}
		for len(b) > 0 {
			h, err := proto.ParseRecordBatchHeader(b)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, h)
			b = b[h.Size():]
		}
	}
	return out
}

// TestLeaderAppendRacesLossOfLeadership: appends running while the node stops and
// starts leading, again and again, either land at the epoch the node leads with or are
// refused NOT_LEADER_OR_FOLLOWER. Checked against the model of what a leader may
// write: nothing while it follows, and during the leadership of epoch e (from the log
// end when it began to the log end once MakeFollower returned) only batches of epoch e.
// Meant for -race.
func TestLeaderAppendRacesLossOfLeadership(t *testing.T) {
	m := newManager(t, t.TempDir())
	p := lead(t, m, "t", leaderState(1, local))
	var landed, refused atomic.Int64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		var a LeaderAppend
		for {
			select {
			case <-stop:
				return
			default:
			}
			a.Begin(p)
			as := a.Add(testBatch(hdr(-1, -1, -1, 1, 0)))
			if _, err := a.Commit(); err != nil {
				t.Error(err)
				return
			}
			switch as.ErrorCode {
			case 0:
				landed.Add(1)
			case kerr.NotLeaderForPartition.Code:
				refused.Add(1)
			default:
				t.Errorf("append answered %d", as.ErrorCode)
				return
			}
		}
	}()
	// One leadership of the model: epoch, and the log end at its start and end.
	type leadership struct {
		epoch      int32
		start, end int64
	}
	var model []leadership
	cur := leadership{epoch: 1, start: 0}
	const rounds = 30
	for round := range rounds {
		// Lead until an append lands, then stop leading.
		n := landed.Load()
		testutil.CheckFor(t, 10*time.Second, func() error {
			if landed.Load() == n {
				return fmt.Errorf("round %d: no append landed at epoch %d", round, cur.epoch)
			}
			return nil
		})
		fst := leaderState(cur.epoch+1, 2, local)
		fst.Leader = 2
		p.MakeFollower(fst)
		cur.end = p.Log().LogEndOffset()
		model = append(model, cur)
		// Follow until an append is refused: the log must not have moved.
		r := refused.Load()
		testutil.CheckFor(t, 10*time.Second, func() error {
			if refused.Load() == r {
				return fmt.Errorf("round %d: no append refused while following", round)
			}
			return nil
		})
		if leo := p.Log().LogEndOffset(); leo != cur.end {
			t.Fatalf("round %d: the log grew from %d to %d while the node followed", round, cur.end, leo)
		}
		cur = leadership{epoch: cur.epoch + 2, start: cur.end}
		if _, err := m.MakeLeader("t", 0, leaderState(cur.epoch, local), nil, logConfig); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	<-done
	cur.end = p.Log().LogEndOffset()
	model = append(model, cur)

	k := 0
	for _, h := range logBatches(t, p) {
		for k < len(model) && h.BaseOffset >= model[k].end {
			k++
		}
		if k == len(model) || h.BaseOffset < model[k].start || h.PartitionLeaderEpoch != model[k].epoch {
			t.Fatalf("batch at %d with epoch %d outside the model's leaderships %+v", h.BaseOffset, h.PartitionLeaderEpoch, model)
		}
	}
	checkInvariants(t, p)
}
