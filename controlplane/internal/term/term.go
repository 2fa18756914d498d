// Package term is what the control plane's coordinators (package groups, package txn)
// share to run one term of controllership: loading their state with retries on the
// coordinator's clock, and the mapping of a store error to the code a request is
// answered with.
package term

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/gregor-streaming/gregor/controlplane/internal/kvstore"
)

// NotActiveCode is an internal marker inside a coordinator's rules, never sent to a
// client: the request is answered "not active" and the data-plane node resends it to
// the next coordinator.
const NotActiveCode int16 = -32768

// StoreCode maps a store error to what the client is told: 0, NotActiveCode once the
// term is over (kvstore.ErrNotActive), or COORDINATOR_NOT_AVAILABLE (etcd trouble:
// retriable).
func StoreCode(err error) int16 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, kvstore.ErrNotActive):
		return NotActiveCode
	default:
		return kerr.CoordinatorNotAvailable.Code // etcd trouble: retriable
	}
}

// Sleep waits d on clock, or until ctx ends.
func Sleep(ctx context.Context, clock clockwork.Clock, d time.Duration) {
	t := clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.Chan():
	}
}

// Load calls load until it succeeds, waiting between attempts on clock from retryMin,
// doubling up to retryMax, and logging each failed attempt with msg. It gives up and
// returns kvstore.ErrNotActive once ctx ends, or at once on an error giveUp reports
// (nil: none).
func Load(ctx context.Context, clock clockwork.Clock, logger *slog.Logger, msg string,
	retryMin, retryMax time.Duration, giveUp func(error) bool, load func(context.Context) error) error {
	backoff := retryMin
	for {
		err := load(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || (giveUp != nil && giveUp(err)) {
			return kvstore.ErrNotActive
		}
		logger.Warn(msg, "err", err)
		Sleep(ctx, clock, backoff)
		backoff = min(2*backoff, retryMax)
		if ctx.Err() != nil {
			return kvstore.ErrNotActive
		}
	}
}
