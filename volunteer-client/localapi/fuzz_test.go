package localapi_test

import (
	"testing"
	"time"

	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// FuzzParseWindow: a window either fails to parse or answers Contains and Next
// consistently for any time of day.
func FuzzParseWindow(f *testing.F) {
	for _, s := range []string{"", "22:00-07:00", "09:30-17:00", "00:00-24:00", "7:5-8:00", "23:59-00:00"} {
		f.Add(s, 600)
	}
	f.Fuzz(func(t *testing.T, s string, minute int) {
		w, err := localapi.ParseWindow(s)
		if err != nil {
			return
		}
		at := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC).Add(time.Duration(((minute%1440)+1440)%1440) * time.Minute)
		n := w.Next(at)
		if !w.Contains(n) || n.Before(at) || n.Sub(at) > 24*time.Hour {
			t.Errorf("%q: next after %s is %s", s, at.Format("15:04"), n)
		}
	})
}
