// Package poll waits for a condition with a deadline. Tests and test harnesses use it
// instead of sleeping a fixed time and hoping the condition holds by then: a fixed
// sleep is too short on a busy machine and too long on a quiet one.
package poll

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// Interval is the longest pause between two checks; the first checks come sooner
// (1 ms, doubling), so a condition that is almost true costs almost nothing.
const Interval = 50 * time.Millisecond

// ErrTimeout is wrapped by Wait's error when the deadline passes first.
var ErrTimeout = errors.New("condition not met before the deadline")

// Wait calls cond until it returns nil, ctx ends or timeout passes, whichever comes
// first. cond's error says why the condition does not hold yet; the last one is
// wrapped in the returned error with ErrTimeout (or ctx's error).
func Wait(ctx context.Context, timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("%w after %s: %w", ErrTimeout, timeout, err)
		}
		timer.Reset(min(pause, left)) // the last check falls on the deadline
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ctx.Err(), err)
		case <-timer.C:
		}
		pause = min(2*pause, Interval)
	}
}

// Until fails t when cond does not return true within timeout; what names the
// condition in the failure ("the server to listen", "checkpoint written").
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	err := Wait(context.Background(), timeout, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
	if err != nil {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// For is Until for a condition that says why it does not hold yet: the last reason is
// in the failure message.
func For(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	if err := Wait(context.Background(), timeout, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

var errNotYet = errors.New("not yet")
