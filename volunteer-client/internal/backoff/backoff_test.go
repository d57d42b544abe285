package backoff_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/texgrid/texgrid/volunteer-client/internal/backoff"
)

func TestDelayBounds(t *testing.T) {
	t.Parallel()
	p := backoff.Policy{Base: 100 * time.Millisecond, Max: time.Second}
	for attempt := 0; attempt < 12; attempt++ {
		ceil := 100 * time.Millisecond << attempt
		if ceil > time.Second {
			ceil = time.Second
		}
		seen := map[time.Duration]bool{}
		for i := 0; i < 200; i++ {
			d := p.Delay(attempt)
			if d < 25*time.Millisecond || d > ceil {
				t.Fatalf("attempt %d: delay %s outside [25ms, %s]", attempt, d, ceil)
			}
			seen[d] = true
		}
		if len(seen) < 50 {
			t.Errorf("attempt %d: only %d distinct delays in 200: no jitter", attempt, len(seen))
		}
	}
}

func TestRetry(t *testing.T) {
	t.Parallel()
	fast := backoff.Policy{Base: time.Millisecond, Max: 2 * time.Millisecond}
	errFlaky := errors.New("flaky")
	cases := []struct {
		name     string
		policy   backoff.Policy
		failures int
		perm     bool
		wantN    int
		wantErr  error
	}{
		{"succeeds after failures", fast, 3, false, 4, nil},
		{"permanent stops at once", fast, 10, true, 1, errFlaky},
		{"attempts run out", backoff.Policy{Base: time.Millisecond, MaxAttempts: 3}, 10, false, 3, errFlaky},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			n, notified := 0, 0
			err := backoff.Retry(context.Background(), c.policy, func(context.Context) error {
				n++
				if n <= c.failures {
					if c.perm {
						return backoff.Permanent(errFlaky)
					}
					return errFlaky
				}
				return nil
			}, func(error, time.Duration) { notified++ })
			if n != c.wantN || !errors.Is(err, c.wantErr) || (c.wantErr == nil && err != nil) {
				t.Errorf("calls %d err %v; want %d calls, err %v", n, err, c.wantN, c.wantErr)
			}
			if c.wantErr == nil && notified != c.failures {
				t.Errorf("notified %d times, want %d", notified, c.failures)
			}
		})
	}
}

func TestRetryStopsWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- backoff.Retry(ctx, backoff.Policy{Base: time.Hour, Min: time.Hour}, func(context.Context) error { return errors.New("down") }, nil)
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Retry after cancel = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Retry kept sleeping after its context ended")
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	t.Parallel()
	var waits []time.Duration
	n := 0
	backoff.Retry(context.Background(), backoff.Policy{Base: time.Millisecond, Max: 30 * time.Millisecond}, func(context.Context) error {
		n++
		if n == 1 {
			return &backoff.After{Err: errors.New("429"), Delay: 20 * time.Millisecond}
		}
		if n == 2 {
			return &backoff.After{Err: errors.New("429"), Delay: time.Hour}
		}
		return nil
	}, func(_ error, d time.Duration) { waits = append(waits, d) })
	if len(waits) != 2 || waits[0] != 20*time.Millisecond || waits[1] != 30*time.Millisecond {
		t.Errorf("waits %v, want [20ms 30ms] (Retry-After, capped by Max)", waits)
	}
}
