package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/texgrid/texgrid/trainer/poll"
	"github.com/texgrid/texgrid/volunteer-client/internal/cli"
	"github.com/texgrid/texgrid/volunteer-client/internal/fakeserver"
	"github.com/texgrid/texgrid/volunteer-client/internal/prefs"
	"github.com/texgrid/texgrid/volunteer-client/internal/state"
)

// runCLI runs the command line in-process.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = cli.Main(context.Background(), args, &cli.Env{Stdout: &o, Stderr: &e, Getenv: func(string) string { return "" }})
	return code, o.String(), e.String()
}

func attached(t *testing.T) (string, *fakeserver.Server) {
	t.Helper()
	srv, err := fakeserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	dir := filepath.Join(t.TempDir(), "state")
	code, out, errs := runCLI("attach", "--server", srv.URL(), "--account-key", fakeserver.AccountKey, "--state-dir", dir, "--bench", "50ms")
	if code != 0 || !strings.Contains(out, "attached to") {
		t.Fatalf("attach: %d %s %s", code, out, errs)
	}
	return dir, srv
}

func TestAttachRecordsHost(t *testing.T) {
	t.Parallel()
	dir, srv := attached(t)
	srv.Snapshot(func(s *fakeserver.Server) {
		if len(s.Registered) != 1 {
			t.Fatalf("registered %d hosts", len(s.Registered))
		}
		r := s.Registered[0]
		if r.Cores < 1 || r.MemoryBytes <= 0 || r.GFLOPS <= 0 || r.OS == "" || r.ClientVersion != cli.Version {
			t.Errorf("registration %+v: want cores, memory, GFLOP/s, OS and version", r)
		}
	})
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %04o, want 0700", fi.Mode().Perm())
	}
	code, _, errs := runCLI("attach", "--server", srv.URL(), "--account-key", fakeserver.AccountKey, "--state-dir", dir, "--bench", "50ms")
	if code != 1 || !strings.Contains(errs, "already attached") {
		t.Errorf("second attach: %d %s", code, errs)
	}
	code, out, errs := runCLI("detach", "--state-dir", dir)
	if code != 0 || !strings.Contains(out, "detached host 1") {
		t.Errorf("detach: %d %s %s", code, out, errs)
	}
	srv.Snapshot(func(s *fakeserver.Server) {
		if s.Detached != 1 {
			t.Errorf("server saw %d detaches", s.Detached)
		}
	})
	if code, _, errs := runCLI("run", "--state-dir", dir, "--headless"); code != 1 || !strings.Contains(errs, "not attached") {
		t.Errorf("run after detach: %d %s", code, errs)
	}
}

func TestCommandErrors(t *testing.T) {
	t.Parallel()
	dir, srv := attached(t)
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
		args  []string
		code  int
		want  string
	}{
		{"no command", nil, nil, 2, "usage"},
		{"unknown command", nil, []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"attach without key", nil, []string{"attach", "--server", "http://127.0.0.1:1"}, 2, "--server and --account-key are required"},
		{"attach bad key", nil, []string{"attach", "--server", srv.URL(), "--account-key", "wrong", "--state-dir", "NEW", "--bench", "10ms"}, 1, "refused the account key"},
		{"attach bad url", nil, []string{"attach", "--server", "localhost:80", "--account-key", "k", "--state-dir", "NEW"}, 1, "want http(s)://host"},
		{"state dir too open", func(t *testing.T, d string) { os.Chmod(d, 0o755) }, []string{"run", "--state-dir", "DIR", "--headless"}, 1, "has mode 0755"},
		{"token too open", func(t *testing.T, d string) { os.Chmod(filepath.Join(d, "host.token"), 0o644) }, []string{"run", "--state-dir", "DIR", "--headless"}, 1, "a token file must be 0600"},
		{"bad prefs file", func(t *testing.T, d string) {
			os.WriteFile(filepath.Join(d, prefs.FileName), []byte(`{"cpu_limit_percent": 0}`), 0o600)
		}, []string{"run", "--state-dir", "DIR", "--headless"}, 1, "preferences file prefs.json: bad preference: cpu_limit_percent = 0, want 1..100"},
		{"unknown prefs field", func(t *testing.T, d string) {
			os.WriteFile(filepath.Join(d, prefs.FileName), []byte(`{"threads": 2}`), 0o600)
		}, []string{"run", "--state-dir", "DIR", "--headless"}, 1, `unknown field "threads"`},
		{"bad cpu flag", nil, []string{"run", "--state-dir", "DIR", "--headless", "--cpu-limit", "150"}, 1, "command-line flags: bad preference: cpu_limit_percent = 150"},
		{"bad window flag", nil, []string{"run", "--state-dir", "DIR", "--headless", "--time-window", "late"}, 1, `time_window = "late"`},
		{"bad log level", nil, []string{"run", "--state-dir", "DIR", "--log-level", "loud"}, 2, "--log-level"},
		{"status without client", nil, []string{"status", "--state-dir", "DIR"}, 1, "no volunteer-client is running"},
		{"pause without client", nil, []string{"pause", "--state-dir", "DIR"}, 1, "no volunteer-client is running"},
		{"prefs without client", nil, []string{"prefs", "--state-dir", "DIR", "--set", "cpu_limit_percent"}, 1, "no volunteer-client is running"},
		{"second client on one dir", func(t *testing.T, d string) {
			sd, err := state.Open(d, false)
			if err != nil {
				t.Fatal(err)
			}
			if err := sd.Lock(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(sd.Unlock)
		}, []string{"run", "--state-dir", "DIR", "--headless"}, 1, "another volunteer-client is using this state directory"},
		{"stray argument", nil, []string{"status", "--state-dir", "DIR", "extra"}, 2, `unexpected argument "extra"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := filepath.Join(t.TempDir(), "copy")
			copyDir(t, dir, d)
			if c.setup != nil {
				c.setup(t, d)
			}
			args := make([]string, len(c.args))
			for i, a := range c.args {
				switch a {
				case "DIR":
					a = d
				case "NEW":
					a = filepath.Join(t.TempDir(), "new")
				}
				args[i] = a
			}
			code, _, errs := runCLI(args...)
			if code != c.code || !strings.Contains(errs, c.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, errs, c.code, c.want)
			}
		})
	}
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dst, 0o700)
	ents, _ := os.ReadDir(src)
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(src, e.Name()))
		fi, _ := e.Info()
		os.WriteFile(filepath.Join(dst, e.Name()), b, fi.Mode().Perm())
	}
}

func TestParseSets(t *testing.T) {
	t.Parallel()
	p, err := cli.ParseSets([]string{"cpu_limit_percent=50", "time_window=22:00-07:00", "run_only_when_idle=true"})
	if err != nil || *p.CPULimitPercent != 50 || *p.TimeWindow != "22:00-07:00" || !*p.RunOnlyWhenIdle {
		t.Fatalf("ParseSets = %+v %v", p, err)
	}
	if p, err := cli.ParseSets([]string{`time_window=""`}); err != nil || *p.TimeWindow != "" {
		t.Errorf("empty window: %+v %v", p, err)
	}
	for _, bad := range [][]string{{"nope=1"}, {"cpu_limit_percent=abc"}, {"novalue"}, {"=3"}} {
		if _, err := cli.ParseSets(bad); err == nil {
			t.Errorf("ParseSets(%v) accepted", bad)
		}
	}
}

// TestRunServesLocalAPIAndStops runs the client in-process with no work queued: it
// refreshes the host's description, serves the local API (status and prefs commands
// work against it) and exits 0 when its context ends (SIGINT/SIGTERM in main).
func TestRunServesLocalAPIAndStops(t *testing.T) {
	t.Parallel()
	dir, srv := attached(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	var errs bytes.Buffer
	go func() {
		done <- cli.Main(ctx, []string{"run", "--state-dir", dir, "--headless", "--cpu-limit", "70"}, &cli.Env{Stdout: io.Discard, Stderr: &errs, Getenv: func(string) string { return "" }})
	}()
	poll.For(t, 30*time.Second, "status to answer with the CPU limit", func() error {
		code, out, _ := runCLI("status", "--state-dir", dir)
		if code == 0 && strings.Contains(out, "CPU limit 70%") {
			return nil
		}
		return fmt.Errorf("status %d: %s\n%s", code, out, errs.String())
	})
	code, out, stderr := runCLI("prefs", "--state-dir", dir, "--set", "cpu_limit_percent=40", "--set", "time_window=22:00-07:00")
	if code != 0 || !strings.Contains(out, `"cpu_limit_percent": 40`) || !strings.Contains(out, `"time_window": "22:00-07:00"`) {
		t.Errorf("prefs --set: %d %s %s", code, out, stderr)
	}
	if code, _, stderr := runCLI("prefs", "--state-dir", dir, "--set", "cpu_limit_percent=0"); code != 1 || !strings.Contains(stderr, "cpu_limit_percent = 0") {
		t.Errorf("prefs --set bad value: %d %s", code, stderr)
	}
	srv.Snapshot(func(s *fakeserver.Server) {
		if len(s.Updates) != 1 || s.Updates[0].Cores < 1 || s.Updates[0].ClientVersion != cli.Version {
			t.Errorf("host updates %+v, want one with cores and version", s.Updates)
		}
	})
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("run exited %d after cancel:\n%s", code, errs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop after its context ended")
	}
	if b, err := os.ReadFile(filepath.Join(dir, prefs.OverrideName)); err != nil || !strings.Contains(string(b), "40") {
		t.Errorf("local change not persisted: %s %v", b, err)
	}
}
