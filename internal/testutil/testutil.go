// Package testutil holds the helpers every Gregor test shares: waiting for a condition
// instead of sleeping, and a quiet logger. It imports nothing of Gregor's, so the
// in-package tests of any package (controlplane, dataplane, segment) can use it without
// an import cycle; the cluster harness (internal/testcluster) builds on it.
package testutil

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

// CheckInterval is how often CheckFor and Eventually call their condition: short enough
// that a test waits little past the moment the condition holds, long enough that polling
// an HTTP endpoint or etcd is not a load of its own.
const CheckInterval = 20 * time.Millisecond

// CheckFor calls cond every CheckInterval until it returns nil, and fails the test with
// cond's last error once timeout has passed. It must be called from the test's own
// goroutine (it calls t.Fatalf); from another goroutine use Eventually and report the
// error.
func CheckFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Eventually(timeout, cond); err != nil {
		t.Fatal(err)
	}
}

// Eventually calls cond every CheckInterval until it returns nil (then Eventually returns
// nil) or timeout has passed (then it returns cond's last error, with the time waited).
// It is safe from any goroutine.
func Eventually(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return &TimeoutError{After: timeout, Last: err}
		}
		time.Sleep(CheckInterval)
	}
}

// TimeoutError is Eventually's failure: the condition still failed after After.
type TimeoutError struct {
	After time.Duration
	Last  error
}

func (e *TimeoutError) Error() string {
	return "not within " + e.After.String() + ": " + e.Last.Error()
}

// Unwrap returns the condition's last error.
func (e *TimeoutError) Unwrap() error { return e.Last }

// Quiet is a logger that drops everything: tests pass it to nodes they start, so that
// only failures speak. Set GREGOR_TEST_LOG=1 to see the nodes' logs at debug level.
func Quiet() *slog.Logger {
	if testLogs {
		return slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
