package tray_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/volunteer-client/internal/tray"
)

// fakeSystemctl writes a stand-in for systemctl that records its arguments and
// answers `show` with the given properties (exit 1 when props is "").
func fakeSystemctl(t *testing.T, props string) (path, calls string) {
	t.Helper()
	dir := t.TempDir()
	path, calls = filepath.Join(dir, "systemctl"), filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho \"$*\" >> " + calls + "\n"
	if props == "" {
		script += "echo 'Failed to connect to bus: No medium found' >&2\nexit 1\n"
	} else {
		script += "case \"$*\" in *show*) printf '" + props + "' ;; esac\n"
	}
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, calls
}

func TestService(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		props string
		want  tray.ServiceState
	}{
		{"running", "LoadState=loaded\\nActiveState=active\\n", tray.ServiceState{Installed: true, Active: true}},
		{"stopped", "LoadState=loaded\\nActiveState=inactive\\n", tray.ServiceState{Installed: true}},
		{"starting", "LoadState=loaded\\nActiveState=activating\\n", tray.ServiceState{Installed: true, Active: true}},
		{"no such unit", "LoadState=not-found\\nActiveState=inactive\\n", tray.ServiceState{}},
		{"no user manager", "", tray.ServiceState{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			bin, calls := fakeSystemctl(t, c.props)
			s := tray.NewService(bin, tray.UnitName)
			if got := s.State(context.Background()); got != c.want {
				t.Errorf("State = %+v, want %+v", got, c.want)
			}
			errStart, errStop := s.Start(context.Background()), s.Stop(context.Background())
			if (c.props == "") != (errStart != nil) || (c.props == "") != (errStop != nil) {
				t.Errorf("start, stop = %v, %v; want errors only without a user manager", errStart, errStop)
			}
			if errStart != nil && !strings.Contains(errStart.Error(), "No medium found") {
				t.Errorf("start error %q does not carry systemctl's message", errStart)
			}
			b, _ := os.ReadFile(calls)
			for _, want := range []string{"--user --no-ask-password show --property=LoadState,ActiveState " + tray.UnitName,
				"--user --no-ask-password start " + tray.UnitName, "--user --no-ask-password stop " + tray.UnitName} {
				if !strings.Contains(string(b), want) {
					t.Errorf("systemctl was not called with %q; calls:\n%s", want, b)
				}
			}
		})
	}
}
