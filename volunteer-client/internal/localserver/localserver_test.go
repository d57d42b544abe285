package localserver_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/texgrid/texgrid/volunteer-client/internal/localserver"
	"github.com/texgrid/texgrid/volunteer-client/internal/prefs"
	"github.com/texgrid/texgrid/volunteer-client/internal/state"
	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// ctl is a controller recording pause and resume.
type ctl struct {
	mu     sync.Mutex
	paused bool
}

func (c *ctl) Status() localapi.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused {
		return localapi.Status{State: localapi.StatePaused}
	}
	return localapi.Status{State: localapi.StateWorking}
}
func (c *ctl) Pause()  { c.mu.Lock(); c.paused = true; c.mu.Unlock() }
func (c *ctl) Resume() { c.mu.Lock(); c.paused = false; c.mu.Unlock() }

func start(t *testing.T) (*state.Dir, *prefs.Store, *localserver.Server) {
	t.Helper()
	d, err := state.Open(filepath.Join(t.TempDir(), "s"), true)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := prefs.Load(d, prefs.Defaults(4, 4<<30), localapi.PrefsPatch{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := localserver.Start(d, &ctl{}, ps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return d, ps, srv
}

func TestLocalAPI(t *testing.T) {
	t.Parallel()
	d, ps, srv := start(t)
	if !strings.HasPrefix(srv.Addr, "127.0.0.1:") {
		t.Errorf("listening on %s, want 127.0.0.1", srv.Addr)
	}
	fi, err := os.Stat(d.File(localapi.TokenFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v, want mode 0600", fi, err)
	}
	c, err := localapi.Dial(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if st, err := c.Pause(ctx); err != nil || st.State != localapi.StatePaused {
		t.Errorf("pause = %+v %v", st, err)
	}
	if st, err := c.State(ctx); err != nil || st.State != localapi.StatePaused {
		t.Errorf("state = %+v %v", st, err)
	}
	if st, err := c.Resume(ctx); err != nil || st.State != localapi.StateWorking {
		t.Errorf("resume = %+v %v", st, err)
	}
	p, err := c.SetPrefs(ctx, localapi.PrefsPatch{CPULimitPercent: ptr(30), TimeWindow: ptr("22:00-07:00")})
	if err != nil || p.CPULimitPercent != 30 || ps.Get().TimeWindow != "22:00-07:00" {
		t.Errorf("set prefs = %+v %v", p, err)
	}
	// Bad values: a clear error and nothing changed.
	for _, patch := range []localapi.PrefsPatch{{CPULimitPercent: ptr(0)}, {TimeWindow: ptr("evenings")}, {MaxThreads: ptr(-1)}} {
		if _, err := c.SetPrefs(ctx, patch); err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "bad preference") {
			t.Errorf("bad patch %+v: %v, want a 400 naming the preference", patch, err)
		}
	}
	if p := ps.Get(); p.CPULimitPercent != 30 {
		t.Errorf("a rejected patch changed the preferences: %+v", p)
	}
	if p, err := c.ResetPrefs(ctx); err != nil || p.CPULimitPercent != 100 {
		t.Errorf("reset = %+v %v", p, err)
	}
}

func TestLocalAPINeedsToken(t *testing.T) {
	t.Parallel()
	d, _, srv := start(t)
	cases := []struct{ name, auth string }{{"none", ""}, {"wrong", "Bearer 00"}, {"prefix only", "Bearer "}}
	for _, c := range cases {
		req, _ := http.NewRequest(http.MethodPost, "http://"+srv.Addr+localapi.PathPause, nil)
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s token: %d, want 401", c.name, resp.StatusCode)
		}
	}
	lc := localapi.New(srv.Addr, "wrong")
	if _, err := lc.Pause(context.Background()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("client with a wrong token: %v", err)
	}
	c, _ := localapi.Dial(d.Path)
	if st, _ := c.State(context.Background()); st.State == localapi.StatePaused {
		t.Error("an unauthenticated pause took effect")
	}
	srv.Close()
	if _, err := localapi.Dial(d.Path); err == nil {
		t.Error("Dial found a client after Close removed its files")
	}
}

func ptr[T any](v T) *T { return &v }
