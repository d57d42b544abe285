package poll

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWait(t *testing.T) {
	t.Parallel()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name    string
		ctx     context.Context
		timeout time.Duration
		trueAt  int64 // the call from which cond holds; 0 = never
		wantErr error
	}{
		{"true at once", context.Background(), time.Second, 1, nil},
		{"true on the fifth call", context.Background(), 10 * time.Second, 5, nil},
		{"never true", context.Background(), 30 * time.Millisecond, 0, ErrTimeout},
		{"context ended", cancelled, 10 * time.Second, 0, context.Canceled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int64
			start := time.Now()
			err := Wait(c.ctx, c.timeout, func() error {
				if n := calls.Add(1); c.trueAt > 0 && n >= c.trueAt {
					return nil
				}
				return fmt.Errorf("call %d: not yet", calls.Load())
			})
			if !errors.Is(err, c.wantErr) || (c.wantErr == nil) != (err == nil) {
				t.Fatalf("Wait = %v, want %v", err, c.wantErr)
			}
			if c.trueAt > 0 && calls.Load() != c.trueAt {
				t.Errorf("cond called %d times, want %d", calls.Load(), c.trueAt)
			}
			if err != nil && !strings.Contains(err.Error(), "not yet") {
				t.Errorf("error %q does not carry the last reason", err)
			}
			if c.wantErr == ErrTimeout && time.Since(start) < c.timeout {
				t.Errorf("gave up after %s, before the %s timeout", time.Since(start), c.timeout)
			}
		})
	}
}

// TestWaitSeesAConditionThatBecomesTrue flips the condition from another goroutine.
func TestWaitSeesAConditionThatBecomesTrue(t *testing.T) {
	t.Parallel()
	var flag atomic.Bool
	go func() {
		time.Sleep(20 * time.Millisecond) // the thing under test is noticing a later change
		flag.Store(true)
	}()
	if err := Wait(context.Background(), time.Minute, func() error {
		if flag.Load() {
			return nil
		}
		return errors.New("flag down")
	}); err != nil {
		t.Fatal(err)
	}
}

// recorder is a testing.TB that records a failure instead of ending the test.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestUntilAndFor(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		run     func(tb testing.TB)
		wantMsg string // "" = no failure
	}{
		{"Until true", func(tb testing.TB) { Until(tb, time.Second, "x", func() bool { return true }) }, ""},
		{"Until false", func(tb testing.TB) { Until(tb, 20*time.Millisecond, "the lights", func() bool { return false }) }, "waiting for the lights"},
		{"For nil", func(tb testing.TB) { For(tb, time.Second, "x", func() error { return nil }) }, ""},
		{"For error", func(tb testing.TB) {
			For(tb, 20*time.Millisecond, "the door", func() error { return errors.New("still shut") })
		}, "waiting for the door: condition not met before the deadline after 20ms: still shut"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := &recorder{TB: t}
			done := make(chan struct{})
			go func() { defer close(done); c.run(r) }()
			<-done
			if (c.wantMsg == "") != (r.msg == "") || !strings.Contains(r.msg, c.wantMsg) {
				t.Errorf("failure %q, want %q", r.msg, c.wantMsg)
			}
		})
	}
}
