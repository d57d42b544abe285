package tray_test

import (
	"bytes"
	"errors"
	"image/png"
	"strings"
	"testing"
	"time"

	"github.com/texgrid/texgrid/volunteer-client/internal/tray"
	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

func TestDescribe(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 15, 0, 0, 0, time.Local)
	until := now.Add(time.Hour)
	prefs := localapi.Prefs{CPULimitPercent: 50, RunOnlyWhenIdle: true}
	training := &localapi.WorkUnit{ID: 9, CampaignID: 4, Round: 12, Phase: localapi.PhaseTraining, Progress: 0.425, Epoch: 1, Epochs: 3, SecondsLeft: 754}
	cases := []struct {
		name      string
		st        *localapi.Status
		err       error
		kind      tray.Kind
		title     string
		tooltip   []string // substrings
		pause     string
		credit    string
		reachable bool
	}{
		{"daemon unreachable", nil, errors.New("connection refused"), tray.DaemonUnreachable, "texgrid: daemon unreachable",
			[]string{"connection refused"}, "Pause", "Credit: unknown", false},
		{"computing", &localapi.Status{State: localapi.StateWorking, WorkUnit: training, Prefs: prefs, Host: &localapi.Host{Credit: 1234.56, ResultsValid: 7}},
			nil, tray.Computing, "texgrid: computing 42%", []string{"campaign 4, round 12, epoch 2/3, 42%", "about 13 min left"}, "Pause", "Credit: 1235", true},
		{"downloading", &localapi.Status{State: localapi.StateWorking, WorkUnit: &localapi.WorkUnit{CampaignID: 4, Round: 1, Phase: localapi.PhaseDownloading}},
			nil, tray.Computing, "texgrid: downloading 0%", []string{"campaign 4, round 1, epoch 1, 0%"}, "Pause", "Credit: unknown yet", true},
		{"paused", &localapi.Status{State: localapi.StatePaused, Reason: "paused by the volunteer", WorkUnit: training},
			nil, tray.Paused, "texgrid: paused 42%", []string{"paused by the volunteer", "epoch 2/3"}, "Resume", "Credit: unknown yet", true},
		{"snoozed", &localapi.Status{State: localapi.StatePaused, PausedUntil: &until},
			nil, tray.Paused, "texgrid: snoozed until 16:00", nil, "Resume", "Credit: unknown yet", true},
		{"waiting for idle", &localapi.Status{State: localapi.StateWaiting, Reason: "the machine is in use"},
			nil, tray.Waiting, "texgrid: waiting", []string{"the machine is in use"}, "Pause", "Credit: unknown yet", true},
		{"no work", &localapi.Status{State: localapi.StateIdle, Reason: "no work: none queued", Host: &localapi.Host{Credit: 2.5}},
			nil, tray.NoWork, "texgrid: no work", []string{"no work: none queued"}, "Pause", "Credit: 2.5", true},
		{"server unreachable", &localapi.Status{State: localapi.StateIdle, ServerError: "ask for work: dial tcp: connection refused"},
			nil, tray.ServerUnreachable, "texgrid: server unreachable", []string{"dial tcp"}, "Pause", "Credit: unknown yet", true},
		{"paused beats server unreachable", &localapi.Status{State: localapi.StatePaused, ServerError: "down"},
			nil, tray.Paused, "texgrid: paused", nil, "Resume", "Credit: unknown yet", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := tray.Describe(c.st, c.err, now)
			if v.Kind != c.kind || v.Title != c.title || v.PauseLabel != c.pause || v.Credit != c.credit || v.Reachable != c.reachable {
				t.Errorf("view = kind %v title %q pause %q credit %q reachable %v; want %v %q %q %q %v",
					v.Kind, v.Title, v.PauseLabel, v.Credit, v.Reachable, c.kind, c.title, c.pause, c.credit, c.reachable)
			}
			for _, s := range c.tooltip {
				if !strings.Contains(v.Tooltip, s) {
					t.Errorf("tooltip %q lacks %q", v.Tooltip, s)
				}
			}
			if c.reachable && (v.CPU != c.st.Prefs.CPULimitPercent || v.IdleOnly != c.st.Prefs.RunOnlyWhenIdle) {
				t.Errorf("preferences in view: cpu %d idle %v", v.CPU, v.IdleOnly)
			}
		})
	}
}

func TestIconsDifferPerKind(t *testing.T) {
	t.Parallel()
	seen := map[string]tray.Kind{}
	for k := tray.Computing; k <= tray.ServerUnreachable; k++ {
		b := tray.Icon(k)
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%v icon: %v", k, err)
		}
		if img.Bounds().Dx() < 16 || img.Bounds().Dx() != img.Bounds().Dy() {
			t.Errorf("%v icon is %v, want square, at least 16 px", k, img.Bounds())
		}
		if other, dup := seen[string(b)]; dup {
			t.Errorf("%v and %v share an icon", k, other)
		}
		seen[string(b)] = k
	}
}
