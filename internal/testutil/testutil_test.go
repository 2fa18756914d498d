package testutil

import (
	"errors"
	"testing"
	"time"
)

func TestEventually(t *testing.T) {
	calls := 0
	if err := Eventually(time.Second, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || calls != 3 {
		t.Fatalf("Eventually = %v after %d calls, want nil after 3", err, calls)
	}
	errNever := errors.New("never")
	err := Eventually(50*time.Millisecond, func() error { return errNever })
	var te *TimeoutError
	if !errors.As(err, &te) || !errors.Is(err, errNever) {
		t.Fatalf("Eventually = %v, want a TimeoutError wrapping %v", err, errNever)
	}
}
