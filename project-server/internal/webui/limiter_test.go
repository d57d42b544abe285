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
	fullCases := []struct {
		name string
		key  string
		at   time.Duration
		want bool
	}{
		{"one event in the window", "a", 3*time.Hour + time.Minute, false},
		{"unknown key", "c", 3 * time.Hour, false},
	}
	for _, tc := range fullCases {
		if got := l.full(tc.key, t0.Add(tc.at)); got != tc.want {
			t.Errorf("%s: full = %v, want %v", tc.name, got, tc.want)
		}
	}
	m := newLimiter(2, time.Minute)
	m.allow("x", t0)
	m.allow("x", t0)
	if !m.full("x", t0.Add(time.Second)) || m.full("x", t0.Add(time.Minute)) {
		t.Error("full does not follow the window")
	}
	if len(l.seen) != 1 {
		t.Fatalf("limiter keeps %d keys after the window, want only the recent one", len(l.seen))
	}
}
