package localapi_test

import (
	"errors"
	"testing"
	"time"

	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

func TestWindow(t *testing.T) {
	t.Parallel()
	at := func(h, m int) time.Time { return time.Date(2026, 11, 21, h, m, 0, 0, time.Local) }
	cases := []struct {
		window string
		t      time.Time
		in     bool
	}{
		{"", at(12, 0), true},
		{"22:00-07:00", at(23, 30), true},
		{"22:00-07:00", at(3, 0), true},
		{"22:00-07:00", at(7, 0), false},
		{"22:00-07:00", at(12, 0), false},
		{"22:00-07:00", at(22, 0), true},
		{"09:30-17:00", at(9, 29), false},
		{"09:30-17:00", at(9, 30), true},
		{"09:30-17:00", at(16, 59), true},
		{"00:00-24:00", at(23, 59), true},
	}
	for _, c := range cases {
		w, err := localapi.ParseWindow(c.window)
		if err != nil {
			t.Fatalf("%q: %v", c.window, err)
		}
		if got := w.Contains(c.t); got != c.in {
			t.Errorf("%q contains %s = %v, want %v", c.window, c.t.Format("15:04"), got, c.in)
		}
		if n := w.Next(c.t); !w.Contains(n) || n.Before(c.t) || n.Sub(c.t) > 24*time.Hour {
			t.Errorf("%q next after %s = %s", c.window, c.t.Format("15:04"), n)
		}
	}
	for _, bad := range []string{"22-07", "24:01-01:00", "10:00-10:00", "7:60-8:00", "always"} {
		if _, err := localapi.ParseWindow(bad); !errors.Is(err, localapi.ErrBadPrefs) {
			t.Errorf("%q: %v, want ErrBadPrefs", bad, err)
		}
	}
}

func TestPatchApplyAndMerge(t *testing.T) {
	t.Parallel()
	base := localapi.Prefs{MaxThreads: 4, CPULimitPercent: 100, TimeWindow: "22:00-07:00"}
	one, fifty, empty := 1, 50, ""
	p := localapi.PrefsPatch{MaxThreads: &one}.Merge(localapi.PrefsPatch{CPULimitPercent: &fifty, TimeWindow: &empty})
	got := p.Apply(base)
	if got.MaxThreads != 1 || got.CPULimitPercent != 50 || got.TimeWindow != "" {
		t.Errorf("Apply(Merge) = %+v", got)
	}
	if base.MaxThreads != 4 {
		t.Error("Apply changed its argument")
	}
}
