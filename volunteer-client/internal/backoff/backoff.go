// Package backoff retries an operation with exponential delays and full jitter,
// bounded by a maximum delay and by the caller's context, so a client fleet that lost
// its server does not return in lock-step.
package backoff

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Policy shapes the delays: attempt n waits a random duration in [0, min(Max, Base*2^n)],
// but never less than Min.
type Policy struct {
	Base        time.Duration // first ceiling, default 1s
	Max         time.Duration // largest ceiling, default 5m
	Min         time.Duration // smallest wait, default Base/4
	MaxAttempts int           // 0: until the context ends or the error is permanent
}

// permanent marks an error that retrying cannot fix.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent wraps err so Retry returns it at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// After is an error asking for a specific wait before the next attempt (a 429 or a
// 503 with Retry-After); Retry honours it within the policy's Max.
type After struct {
	Err   error
	Delay time.Duration
}

// Error returns the wrapped error's message.
func (a *After) Error() string { return a.Err.Error() }

// Unwrap returns the wrapped error.
func (a *After) Unwrap() error { return a.Err }

// Delay returns the wait before retry number attempt (0-based).
func (p Policy) Delay(attempt int) time.Duration {
	base, max := p.Base, p.Max
	if base <= 0 {
		base = time.Second
	}
	if max <= 0 {
		max = 5 * time.Minute
	}
	ceil := base
	for i := 0; i < attempt && ceil < max; i++ {
		ceil *= 2
	}
	if ceil > max {
		ceil = max
	}
	min := p.Min
	if min <= 0 {
		min = base / 4
	}
	if min > ceil {
		min = ceil
	}
	return min + rand.N(ceil-min+1)
}

// Retry calls op until it succeeds, returns a Permanent error, the attempts run out or
// ctx ends. notify, when not nil, hears each failure and the wait that follows it.
// The returned error is the last failure (unwrapped from Permanent) or ctx's error.
func Retry(ctx context.Context, p Policy, op func(ctx context.Context) error, notify func(err error, wait time.Duration)) error {
	for attempt := 0; ; attempt++ {
		err := op(ctx)
		if err == nil {
			return nil
		}
		var perm permanent
		if errors.As(err, &perm) {
			return perm.err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p.MaxAttempts > 0 && attempt+1 >= p.MaxAttempts {
			return err
		}
		wait := p.Delay(attempt)
		var after *After
		if errors.As(err, &after) && after.Delay > wait {
			wait = after.Delay
			if p.Max > 0 && wait > p.Max {
				wait = p.Max
			}
		}
		if notify != nil {
			notify(err, wait)
		}
		if err := Sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// Sleep waits d or until ctx ends, returning ctx's error in that case.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
