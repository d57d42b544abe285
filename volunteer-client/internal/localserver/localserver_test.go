package localserver_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/texgrid/texgrid/volunteer-client/internal/localserver"
	"github.com/texgrid/texgrid/volunteer-client/internal/prefs"
	"github.com/texgrid/texgrid/volunteer-client/internal/state"
	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// ctl is a controller recording pause, resume and snoozes, with a change counter.
type ctl struct {
	mu      sync.Mutex
	paused  bool
	snooze  time.Duration
	seq     uint64
	changed chan struct{}
	waiting chan struct{} // hears each WaitChange call
}

func newCtl() *ctl {
	return &ctl{seq: 1, changed: make(chan struct{}), waiting: make(chan struct{}, 8)}
}

func (c *ctl) Status() localapi.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.statusLocked()
}

func (c *ctl) statusLocked() localapi.Status {
	st := localapi.Status{APIVersion: localapi.Version, Seq: c.seq, State: localapi.StateWorking}
	if c.paused {
		st.State = localapi.StatePaused
	}
	return st
}

func (c *ctl) WaitChange(ctx context.Context, after uint64) localapi.Status {
	select {
	case c.waiting <- struct{}{}:
	default:
	}
	for {
		c.mu.Lock()
		if c.seq > after {
			defer c.mu.Unlock()
			return c.statusLocked()
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return c.Status()
		case <-ch:
		}
	}
}

func (c *ctl) set(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f()
	c.seq++
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *ctl) Pause()                   { c.set(func() { c.paused = true }) }
func (c *ctl) PauseFor(d time.Duration) { c.set(func() { c.paused, c.snooze = true, d }) }
func (c *ctl) Resume()                  { c.set(func() { c.paused = false }) }
func (c *ctl) Touch()                   { c.set(func() {}) }

func start(t *testing.T) (*state.Dir, *prefs.Store, *localserver.Server) {
	t.Helper()
	d, ps, srv, _ := startCtl(t)
	return d, ps, srv
}

func startCtl(t *testing.T) (*state.Dir, *prefs.Store, *localserver.Server, *ctl) {
	t.Helper()
	d, err := state.Open(filepath.Join(t.TempDir(), "s"), true)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := prefs.Load(d, prefs.Defaults(4, 4<<30), localapi.PrefsPatch{})
	if err != nil {
		t.Fatal(err)
	}
	c := newCtl()
	srv, err := localserver.Start(d, c, ps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return d, ps, srv, c
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

func TestWaitState(t *testing.T) {
	t.Parallel()
	d, _, _, ctl := startCtl(t)
	c, err := localapi.Dial(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := c.State(ctx)
	if err != nil || st.APIVersion != localapi.Version || st.Seq == 0 {
		t.Fatalf("state = %+v %v, want api version %d and a seq", st, err, localapi.Version)
	}
	// Nothing changes: the wait ends at its timeout with the same seq.
	start := time.Now()
	same, err := c.WaitState(ctx, st.Seq, time.Second)
	if err != nil || same.Seq != st.Seq || time.Since(start) < 900*time.Millisecond {
		t.Errorf("wait without a change = %+v %v after %s, want seq %d after 1s", same, err, time.Since(start), st.Seq)
	}
	// A change during the wait ends it at once with the new seq.
	type answer struct {
		st  *localapi.Status
		err error
	}
	got := make(chan answer, 1)
	go func() {
		s, err := c.WaitState(ctx, st.Seq, 60*time.Second)
		got <- answer{s, err}
	}()
	time.AfterFunc(100*time.Millisecond, ctl.Pause)
	select {
	case a := <-got:
		if a.err != nil || a.st.Seq <= st.Seq || a.st.State != localapi.StatePaused {
			t.Errorf("wait across a pause = %+v %v, want a higher seq, paused", a.st, a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wait did not return after the pause")
	}
	// A preference change through the API raises the seq too.
	before := ctl.Status().Seq
	if _, err := c.SetPrefs(ctx, localapi.PrefsPatch{CPULimitPercent: ptr(50)}); err != nil {
		t.Fatal(err)
	}
	if after := ctl.Status().Seq; after <= before {
		t.Errorf("seq %d after a preference change, want above %d", after, before)
	}
}

func TestWaitAndSnoozeRejectBadInput(t *testing.T) {
	t.Parallel()
	d, _, srv, ctl := startCtl(t)
	tok, err := os.ReadFile(d.File(localapi.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, method, path, want string
	}{
		{"wait without after", http.MethodGet, localapi.PathWait, "after"},
		{"wait with a negative after", http.MethodGet, localapi.PathWait + "?after=-1", "after"},
		{"wait with a word timeout", http.MethodGet, localapi.PathWait + "?after=1&timeout=soon", "timeout"},
		{"wait too long", http.MethodGet, localapi.PathWait + "?after=1&timeout=3600", "timeout"},
		{"wait zero", http.MethodGet, localapi.PathWait + "?after=1&timeout=0", "timeout"},
		{"snooze not a duration", http.MethodPost, localapi.PathPause + "?for=later", "for"},
		{"snooze too short", http.MethodPost, localapi.PathPause + "?for=10ms", "for"},
		{"snooze over a week", http.MethodPost, localapi.PathPause + "?for=200h", "for"},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, "http://"+srv.Addr+c.path, nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e localapi.Error
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(e.Message, c.want) {
			t.Errorf("%s: %d %q, want 400 naming %q", c.name, resp.StatusCode, e.Message, c.want)
		}
	}
	if st := ctl.Status(); st.State == localapi.StatePaused {
		t.Error("a rejected snooze paused the client")
	}
	c, _ := localapi.Dial(d.Path)
	if st, err := c.PauseFor(context.Background(), time.Hour); err != nil || st.State != localapi.StatePaused {
		t.Errorf("snooze 1h = %+v %v", st, err)
	}
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	if ctl.snooze != time.Hour {
		t.Errorf("snooze reached the controller as %s, want 1h", ctl.snooze)
	}
}

func TestCloseEndsPendingWait(t *testing.T) {
	t.Parallel()
	d, _, srv, ctl := startCtl(t)
	c, err := localapi.Dial(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.WaitState(context.Background(), st.Seq, 60*time.Second)
	}()
	select {
	case <-ctl.waiting:
	case <-time.After(10 * time.Second):
		t.Fatal("the wait never reached the controller")
	}
	start := time.Now()
	srv.Close()
	if took := time.Since(start); took > time.Second {
		t.Errorf("Close took %s with a wait pending, want it to end the wait at once", took)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the pending wait did not return after Close")
	}
}
