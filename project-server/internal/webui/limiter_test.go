package webui

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		key  string
		at   time.Duration
		want bool
	}{
		{"first", "a", 0, true},
		{"second", "a", time.Minute, true},
		{"third", "a", 2 * time.Minute, true},
		{"over the limit", "a", 3 * time.Minute, false},
		{"another address", "b", 3 * time.Minute, true},
		{"first ages out", "a", time.Hour, true},
		{"still full", "a", time.Hour + time.Second, false},
		{"window passed", "a", 3 * time.Hour, true},
	}
	l := newLimiter(3, time.Hour)
	for _, tc := range cases {
		if got := l.allow(tc.key, t0.Add(tc.at)); got != tc.want {
			t.Fatalf("%s: allow = %v, want %v", tc.name, got, tc.want)
		}
	}
	if len(l.seen) != 1 {
		t.Fatalf("limiter keeps %d keys after the window, want only the recent one", len(l.seen))
	}
}
