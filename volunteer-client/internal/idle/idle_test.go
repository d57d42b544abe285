package idle

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseSession(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	cases := []struct {
		name  string
		props string
		want  time.Duration
		ok    bool
	}{
		{"active local", "IdleHint=no\nIdleSinceHint=0\nRemote=no\n", 0, true},
		{"idle 5 min", "IdleHint=yes\nIdleSinceHint=" + micros(now.Add(-5*time.Minute)) + "\nRemote=no\n", 5 * time.Minute, true},
		{"remote ignored", "IdleHint=no\nRemote=yes\n", 0, false},
		{"no hint", "Remote=no\n", 0, false},
		{"idle without time", "IdleHint=yes\nIdleSinceHint=0\n", 0, false},
	}
	for _, c := range cases {
		d, ok := parseSession([]byte(c.props), now)
		if d != c.want || ok != c.ok {
			t.Errorf("%s: %s %v, want %s %v", c.name, d, ok, c.want, c.ok)
		}
	}
}

func micros(t time.Time) string { return strconv.FormatInt(t.UnixMicro(), 10) }

func TestSystem(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	load, away, ok := 0.1, time.Hour, true
	s := &System{
		Cores: 2, Own: func() float64 { return 1 },
		Load:  func() (float64, error) { return load, nil },
		Input: func(context.Context) (time.Duration, bool) { return away, ok },
		Now:   func() time.Time { return now },
	}
	check := func(what string, want bool, reason string) {
		t.Helper()
		got, why := s.Idle(context.Background(), 3*time.Minute, 0.5)
		if got != want || (reason != "" && !strings.Contains(why, reason)) {
			t.Errorf("%s: idle %v (%q), want %v with %q", what, got, why, want, reason)
		}
	}
	check("quiet machine", true, "")
	load = 3.2 // (3.2 - 1 own) / 2 cores = 1.1 per core
	check("busy", false, "load 1.10 per core")
	load = 1.5 // (1.5 - 1) / 2 = 0.25: the client's own threads do not count
	now = now.Add(time.Minute)
	check("load dropped a minute ago", false, "busy 1m0s ago")
	now = now.Add(3 * time.Minute)
	check("low load for long enough", true, "")
	away = 30 * time.Second
	check("user typing", false, "user active 30s ago")
	ok = false
	check("input unknown", true, "")
}

func TestSystemLoad(t *testing.T) {
	t.Parallel()
	// With a huge own load subtracted the machine counts as quiet; with a negative
	// limit it is always busy. Input idleness is whatever this machine reports.
	busy, reason := (&System{Cores: 1, Own: func() float64 { return 0 }}).Idle(context.Background(), 0, -1)
	if busy || reason == "" {
		t.Errorf("max load -1: idle=%v reason %q, want busy with a reason", busy, reason)
	}
	quiet, reason := (&System{Cores: 1, Own: func() float64 { return 1e6 }}).Idle(context.Background(), 0, 1)
	if !quiet {
		t.Errorf("own load subtracted: busy (%s)", reason)
	}
}
