package prefs_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/volunteer-client/internal/prefs"
	"github.com/texgrid/texgrid/volunteer-client/internal/state"
	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

func dir(t *testing.T, file, override string) *state.Dir {
	t.Helper()
	d, err := state.Open(filepath.Join(t.TempDir(), "s"), true)
	if err != nil {
		t.Fatal(err)
	}
	if file != "" {
		os.WriteFile(d.File(prefs.FileName), []byte(file), 0o600)
	}
	if override != "" {
		os.WriteFile(d.File(prefs.OverrideName), []byte(override), 0o600)
	}
	return d
}

func flags(t *testing.T, args ...string) localapi.PrefsPatch {
	t.Helper()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	f := prefs.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f.Patch()
}

func TestPrecedence(t *testing.T) {
	t.Parallel()
	d := dir(t, `{"max_threads": 3, "cpu_limit_percent": 60, "time_window": "22:00-07:00"}`, `{"cpu_limit_percent": 20}`)
	s, err := prefs.Load(d, prefs.Defaults(8, 8<<30), flags(t, "--max-threads", "2", "--cpu-limit", "40"))
	if err != nil {
		t.Fatal(err)
	}
	p := s.Get()
	// defaults < file < flags < local changes
	if p.MaxThreads != 2 || p.CPULimitPercent != 20 || p.TimeWindow != "22:00-07:00" || p.MaxMemoryMB != 4096 {
		t.Errorf("effective %+v: want threads 2 (flag over file), cpu 20 (local over flag), window from the file, memory default 4096", p)
	}
	// A local change persists and survives a reload; reset drops it.
	if _, err := s.Set(localapi.PrefsPatch{MaxThreads: ptr(1)}); err != nil {
		t.Fatal(err)
	}
	s2, err := prefs.Load(d, prefs.Defaults(8, 8<<30), flags(t, "--max-threads", "2"))
	if err != nil {
		t.Fatal(err)
	}
	if p := s2.Get(); p.MaxThreads != 1 || p.CPULimitPercent != 20 {
		t.Errorf("after reload: %+v, want the local changes threads 1 and cpu 20", p)
	}
	if p, err := s2.Reset(); err != nil || p.MaxThreads != 2 || p.CPULimitPercent != 60 {
		t.Errorf("after reset: %+v %v, want flag threads 2 and file cpu 60", p, err)
	}
	if _, err := os.Stat(d.File(prefs.OverrideName)); !os.IsNotExist(err) {
		t.Error("reset left the override file")
	}
}

func TestBadValues(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, file string
		args       []string
		want       string
	}{
		{"file cpu 0", `{"cpu_limit_percent": 0}`, nil, "preferences file prefs.json: bad preference: cpu_limit_percent = 0, want 1..100"},
		{"file unknown field", `{"cpu_limit": 50}`, nil, `unknown field "cpu_limit"`},
		{"file wrong type", `{"max_threads": "four"}`, nil, "max_threads"},
		{"file not json", `max_threads=4`, nil, "prefs.json"},
		{"flag cpu 150", "", []string{"--cpu-limit", "150"}, "command-line flags: bad preference: cpu_limit_percent = 150"},
		{"flag threads 0", "", []string{"--max-threads", "0"}, "max_threads = 0"},
		{"flag window", "", []string{"--time-window", "25:00-07:00"}, "time_window"},
		{"flag window words", "", []string{"--time-window", "nights"}, `"HH:MM-HH:MM"`},
		{"flag memory", "", []string{"--max-memory-mb", "1"}, "max_memory_mb = 1, want at least 16"},
		{"flag load", "", []string{"--idle-max-load", "-1"}, "idle_max_load"},
		{"flag checkpoint", "", []string{"--checkpoint-seconds", "0"}, "checkpoint_seconds = 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := prefs.Load(dir(t, c.file, ""), prefs.Defaults(4, 4<<30), flags(t, c.args...))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Load = %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestSetRejectsBadValueAndKeepsOld(t *testing.T) {
	t.Parallel()
	d := dir(t, "", "")
	s, err := prefs.Load(d, prefs.Defaults(4, 4<<30), localapi.PrefsPatch{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Set(localapi.PrefsPatch{CPULimitPercent: ptr(50)}); err != nil {
		t.Fatal(err)
	}
	changed := s.Changed()
	_, err = s.Set(localapi.PrefsPatch{CPULimitPercent: ptr(0), MaxThreads: ptr(2)})
	if !errors.Is(err, localapi.ErrBadPrefs) {
		t.Fatalf("Set cpu 0: %v, want ErrBadPrefs", err)
	}
	if p := s.Get(); p.CPULimitPercent != 50 || p.MaxThreads != 4 {
		t.Errorf("a rejected patch changed the preferences: %+v", p)
	}
	select {
	case <-changed:
		t.Error("a rejected patch signalled a change")
	default:
	}
	b, _ := os.ReadFile(d.File(prefs.OverrideName))
	if !strings.Contains(string(b), `"cpu_limit_percent": 50`) || strings.Contains(string(b), "max_threads") {
		t.Errorf("override file after the rejected patch: %s", b)
	}
	s.Set(localapi.PrefsPatch{MaxThreads: ptr(1)})
	select {
	case <-changed:
	default:
		t.Error("an accepted patch did not signal a change")
	}
}

func ptr[T any](v T) *T { return &v }

// TestExampleFile: configs/volunteer.example.json is a valid preferences file that
// sets every field.
func TestExampleFile(t *testing.T) {
	t.Parallel()
	p, err := prefs.ReadPatch(filepath.Join("..", "..", "..", "configs", "volunteer.example.json"))
	if err != nil {
		t.Fatal(err)
	}
	got := p.Apply(localapi.Prefs{})
	if err := got.Validate(); err != nil {
		t.Fatalf("the example leaves a field unset or invalid: %v", err)
	}
}
