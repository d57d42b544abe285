package webui_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/project-server/internal/auth"
	"github.com/texgrid/texgrid/project-server/internal/datasets"
	"github.com/texgrid/texgrid/project-server/internal/server"
	"github.com/texgrid/texgrid/project-server/internal/webui"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/data"
)

// serveEnv is a project server answering on a real listener, with a dataset manifest
// (no pixels: nothing here trains) and three researchers who sign in with passwords.
type serveEnv struct {
	t      *testing.T
	srv    *server.Server
	base   string
	stop   context.CancelFunc
	served chan error
}

func writeManifest(t *testing.T, root string) {
	m := &manifest.Manifest{Dataset: "tex", TestFraction: 0.2, Created: time.Unix(0, 0).UTC()}
	for _, cls := range []string{"bark", "brick", "sand"} {
		for i := 0; i < 6; i++ {
			name := fmt.Sprintf("%s-%d.png", cls, i)
			sum := sha256.Sum256([]byte(cls + name))
			m.Images = append(m.Images, manifest.Image{Path: cls + "/" + name, Class: cls, Size: 100,
				SHA256: hex.EncodeToString(sum[:]), Width: 64, Height: 64, Split: data.SplitOf(cls, name, 0.2)})
		}
	}
	m.Finish()
	if err := os.MkdirAll(filepath.Join(root, "tex"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "tex", manifest.FileName), m.Encode(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newServeEnv(t *testing.T) *serveEnv {
	dir, dsRoot := t.TempDir(), t.TempDir()
	writeManifest(t, dsRoot)
	srv, err := server.Open(context.Background(), server.Config{DataDir: dir, DB: filepath.Join(dir, "t.db"),
		ModelsDir: filepath.Join("..", "server", "testdata", "models"), Datasets: datasets.Dir{Root: dsRoot},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &serveEnv{t: t, srv: srv, base: "http://" + ln.Addr().String(), stop: cancel, served: make(chan error, 1)}
	go func() { e.served <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-e.served })
	p := &auth.People{DB: srv.DB}
	for _, r := range []struct{ name, role string }{{"ada", auth.RoleResearcher}, {"grace", auth.RoleResearcher}, {"root", auth.RoleAdmin}} {
		id, _, err := srv.Sched.AddResearcher(ctx, r.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.SetPassword(ctx, id, r.name+"'s password"); err != nil {
			t.Fatal(err)
		}
		if err := p.SetRole(ctx, id, r.role); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// signIn returns a browser-like client signed in as name.
func (e *serveEnv) signIn(name string) *page {
	e.t.Helper()
	jar, _ := cookiejar.New(nil)
	p := &page{t: e.t, base: e.base, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	code, _ := p.post("/signin", url.Values{"csrf": {p.csrf("/signin")}, "name": {name}, "password": {name + "'s password"}})
	if code != http.StatusSeeOther {
		e.t.Fatalf("sign in as %s: HTTP %d", name, code)
	}
	return p
}

func (e *serveEnv) campaigns() int {
	cs, err := e.srv.Sched.Campaigns(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return len(cs)
}

// TestResearcherPages: ownership on the pages (403 for another researcher, an admin
// sees all), the campaign form refusing several bad fields at once with nothing
// created, actions, and the event stream, which ends when the server shuts down.
func TestResearcherPages(t *testing.T) {
	t.Parallel()
	e := newServeEnv(t)
	ada, grace, root := e.signIn("ada"), e.signIn("grace"), e.signIn("root")

	form := url.Values{"csrf": {ada.csrf("/campaigns/new")}, "name": {"mine"}, "dataset": {"tex"}, "model": {"tiny"},
		"fragment_size": {"16"}, "fragments_min": {"10"}, "fragments_max": {"20"}, "work_units_per_round": {"2"},
		"quorum": {"0.95"}, "rounds": {"3"}, "epochs": {"0"}, "learning_rate": {"abc"}, "lr_decay": {"1"},
		"batch_size": {"8"}, "momentum": {"0.9"}, "weight_decay": {"0"}, "delta_dtype": {"float32"}, "mode": {"sync"}}
	code, body := ada.post("/campaigns/new", form)
	for _, want := range []string{`id="quorum-error"`, `id="epochs-error"`, `id="learning_rate-error"`, "&#34;abc&#34; is not a number", "0 is too small; use 1 to 1000"} {
		if !strings.Contains(body, want) {
			t.Errorf("bad form: HTTP %d, page lacks %q", code, want)
		}
	}
	if strings.Contains(body, `id="rounds-error"`) {
		t.Error("a good field (rounds) got an error")
	}
	bad := []struct {
		name, field, value, want string
	}{
		{"unknown dataset", "dataset", "nope", `id="dataset-error"`},
		{"unknown model", "model", "nope", `id="model-error"`},
		{"min over max", "fragments_min", "30", `id="fragments_min-error"`},
	}
	good := func() url.Values {
		f := url.Values{}
		for k, v := range form {
			f[k] = v
		}
		f.Set("quorum", "0.8")
		f.Set("epochs", "1")
		f.Set("learning_rate", "0.01")
		return f
	}
	for _, b := range bad {
		f := good()
		f.Set(b.field, b.value)
		if code, body := ada.post("/campaigns/new", f); code != http.StatusUnprocessableEntity || !strings.Contains(body, b.want) {
			t.Errorf("%s: HTTP %d, want 422 with %q", b.name, code, b.want)
		}
	}
	if n := e.campaigns(); n != 0 {
		t.Fatalf("refused forms created %d campaigns", n)
	}
	if code, _ := ada.post("/campaigns/new", good()); code != http.StatusSeeOther {
		t.Fatalf("good form: HTTP %d", code)
	}
	if n := e.campaigns(); n != 1 {
		t.Fatalf("%d campaigns after the good form, want 1", n)
	}
	async := good()
	async.Set("mode", protocol.ModeAsync)
	if code, _ := ada.post("/campaigns/new", async); code != http.StatusSeeOther {
		t.Fatalf("async campaign from the form: HTTP %d", code)
	}
	if c, err := e.srv.Sched.Campaign(context.Background(), 2); err != nil || c.Spec.Mode != protocol.ModeAsync {
		t.Fatalf("second campaign: %+v, %v; want async", c, err)
	}

	views := []struct {
		who    string
		p      *page
		status int
		want   string
	}{
		{"owner", ada, 200, `id="chart"`},
		{"other researcher", grace, 403, "belongs to another researcher"},
		{"admin", root, 200, `id="chart"`},
	}
	for _, v := range views {
		if code, body := v.p.get("/campaigns/1"); code != v.status || !strings.Contains(body, v.want) {
			t.Errorf("%s opens campaign 1: HTTP %d, want %d with %q", v.who, code, v.status, v.want)
		}
		if code, _ := v.p.get("/campaigns/1/model?format=safetensors"); code != v.status {
			t.Errorf("%s downloads campaign 1's model: HTTP %d, want %d", v.who, code, v.status)
		}
	}
	if _, body := grace.get("/campaigns"); strings.Contains(body, "mine") {
		t.Error("grace's campaigns list shows ada's campaign")
	}
	if _, body := root.get("/campaigns"); !strings.Contains(body, "mine") {
		t.Error("the admin's campaigns list lacks ada's campaign")
	}
	if code, _ := grace.post("/campaigns/1/start", url.Values{"csrf": {grace.csrf("/campaigns")}}); code != http.StatusForbidden {
		t.Errorf("grace starts ada's campaign: HTTP %d, want 403", code)
	}
	if c, _ := e.srv.Sched.Campaign(context.Background(), 1); c.State != protocol.StateDraft {
		t.Fatalf("after grace's refused start the campaign is %s", c.State)
	}
	if code, _ := ada.post("/campaigns/1/start", url.Values{"csrf": {ada.csrf("/campaigns/1")}}); code != http.StatusSeeOther {
		t.Errorf("ada starts her campaign: HTTP %d", code)
	}
	if code, _ := ada.post("/campaigns/1/explode", url.Values{"csrf": {ada.csrf("/campaigns/1")}}); code != http.StatusNotFound {
		t.Errorf("unknown action: HTTP %d, want 404", code)
	}

	// The event stream sends the chart's data at once and ends on server shutdown.
	resp, err := ada.c.Get(e.base + "/campaigns/1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "event: rounds\n" || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("event stream: %q, %v, %s", line, err, resp.Header.Get("Content-Type"))
	}
	start := time.Now()
	e.stop()
	select {
	case err := <-e.served:
		e.served <- err
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("the server did not shut down within 8s with an event stream open")
	}
	t.Logf("shut down %s after the stop with an event stream open", time.Since(start).Round(time.Millisecond))
}

// TestSignInThrottle: after FailedSignInsPer15Min wrong passwords from one address,
// even the right one is refused with 429 for a while; the failures named no session.
func TestSignInThrottle(t *testing.T) {
	t.Parallel()
	e := newServeEnv(t)
	jar, _ := cookiejar.New(nil)
	p := &page{t: t, base: e.base, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	tok := p.csrf("/signin")
	for i := 0; i < webui.FailedSignInsPer15Min; i++ {
		if code, body := p.post("/signin", url.Values{"csrf": {tok}, "name": {"ada"}, "password": {"wrong password"}}); code != http.StatusUnauthorized || !strings.Contains(body, "wrong password") {
			t.Fatalf("wrong password %d: HTTP %d", i+1, code)
		}
	}
	if code, body := p.post("/signin", url.Values{"csrf": {tok}, "name": {"ada"}, "password": {"ada's password"}}); code != http.StatusTooManyRequests || !strings.Contains(body, "failed sign-ins") {
		t.Fatalf("sign-in after %d failures: HTTP %d, want 429", webui.FailedSignInsPer15Min, code)
	}
	var n int64
	if err := e.srv.DB.Raw("SELECT COUNT(*) FROM sessions").Scan(&n).Error; err != nil || n != 0 {
		t.Fatalf("%d sessions after refused sign-ins (%v)", n, err)
	}
}
