package webui_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/texgrid/texgrid/project-server/client"
	"github.com/texgrid/texgrid/project-server/internal/grid"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/onnx"
	"github.com/texgrid/texgrid/trainer/poll"
	"github.com/texgrid/texgrid/trainer/synth"
)

// binDir holds the binaries TestMain built.
var binDir string

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "texgrid-webui-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	args := []string{"build", "-o", binDir + "/"}
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/libopenblas.so"); err == nil && runtime.GOOS == "linux" {
		args = append(args, "-tags", "openblas")
	}
	args = append(args, "./dataset-ftp/cmd/...", "./project-server/cmd/...", "./volunteer-client/cmd/...")
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Join("..", "..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the binaries: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// chromium finds Debian's chromium; under TEXGRID_REQUIRE_BROWSER=1 its absence fails
// the test instead of skipping it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("TEXGRID_REQUIRE_BROWSER") == "1" {
		t.Fatal("chromium is not installed (make deps installs it)")
	}
	t.Skip("chromium is not installed")
	return ""
}

// browser starts a headless chromium with a fresh profile and returns a context for
// one tab; a second call's context is a separate browser with its own cookies.
func browser(t *testing.T, parent context.Context, bin string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(parent, opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	poll.For(t, timeout, what, func() error {
		ok, err := cond()
		if ok {
			return nil
		}
		if err == nil {
			err = errors.New("not yet")
		}
		return err
	})
}

// js evaluates an expression in the page and decodes its value.
func js[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func navigate(t *testing.T, ctx context.Context, u string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(u)); err != nil {
		t.Fatalf("navigate %s: %v", u, err)
	}
}

// submit fills a form's fields by id and submits it, then waits for the next page.
func submit(t *testing.T, ctx context.Context, form string, values map[string]string) {
	t.Helper()
	var b strings.Builder
	for k, v := range values {
		fmt.Fprintf(&b, "document.getElementById(%q).value = %q;", k, v)
	}
	fmt.Fprintf(&b, "document.getElementById(%q).requestSubmit(); true", form)
	newPage(t, ctx, b.String())
}

// newPage runs a script that leaves the page (a submit, a click) and waits until the
// next page has loaded.
func newPage(t *testing.T, ctx context.Context, script string) {
	t.Helper()
	leave(t, ctx, script, chromedp.Evaluate[chromedp.Void](script))
}

// leave runs an action that leaves the page and waits until the next page has loaded.
func leave(t *testing.T, ctx context.Context, what string, a chromedp.Action[chromedp.Void]) {
	t.Helper()
	js[bool](t, ctx, "window.__oldPage = true")
	if err := chromedp.Do(ctx, a); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	waitFor(t, "the next page", 30*time.Second, func() (bool, error) {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__oldPage !== true && document.readyState === "complete"`))
		return v, err
	})
}

// shots writes a page's screenshots at desktop and phone width to dir.
func shots(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	for _, s := range []struct {
		suffix string
		w, h   int64
		opts   []chromedp.EmulateViewportOption
	}{{"desktop", 1280, 900, nil}, {"phone", 390, 844, []chromedp.EmulateViewportOption{chromedp.EmulateMobile, chromedp.EmulateScale(2)}}} {
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(s.w, s.h, s.opts...)); err != nil {
			t.Fatalf("viewport: %v", err)
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+"-"+s.suffix+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
		// Every page with its assets stays under 300 KB.
		if s.suffix == "desktop" {
			weight := js[float64](t, ctx, `performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource")).reduce((a, e) => a + (e.transferSize || e.encodedBodySize || 0), 0)`)
			if weight > 300<<10 || weight == 0 {
				t.Errorf("%s weighs %.0f bytes, want under 300 KB", name, weight)
			}
			t.Logf("%s: %.1f KB", name, weight/1024)
		}
		// A phone-width page must not scroll sideways.
		if s.suffix == "phone" {
			if over := js[bool](t, ctx, "document.documentElement.scrollWidth > window.innerWidth + 1"); over {
				t.Errorf("%s at phone width is wider than the screen", name)
			}
		}
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatal(err)
	}
}

// TestBrowser drives headless chromium against a real grid (dataset-ftp, the project
// server, volunteer clients): sign-in, the campaign form and its refusals, the live
// chart, pause and resume, the ONNX download, ownership, CSRF and sign-out.
func TestBrowser(t *testing.T) {
	bin := chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	work := t.TempDir()
	shotDir := os.Getenv("TEXGRID_SCREENSHOTS")
	if shotDir == "" {
		shotDir = filepath.Join(work, "screenshots")
	}
	if err := os.MkdirAll(shotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	g, err := grid.Start(ctx, grid.Options{BinDir: binDir, WorkDir: work, Upload: grid.UploadDatasetFTP, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	data := filepath.Join(work, "synthetic")
	if err := synth.Generate(data, 3, 12, 96, 7); err != nil {
		t.Fatal(err)
	}
	// One file that is not an image: the store quarantines it, and the form says why.
	classDirs, err := filepath.Glob(filepath.Join(data, "*"))
	if err != nil || len(classDirs) == 0 {
		t.Fatalf("synthetic classes: %v", err)
	}
	if err := os.WriteFile(filepath.Join(classDirs[0], "notes.txt"), []byte("not an image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := g.UploadDataset(ctx, data, "synthetic"); err != nil {
		t.Fatal(err)
	}
	tab := browser(t, ctx, bin)
	base := g.ServerURL

	// Signed out: sent to sign-in, and back after it.
	navigate(t, tab, base+"/campaigns/new")
	if u := location(tab); !strings.Contains(u, "/signin?next=") {
		t.Fatalf("signed-out visit to /campaigns/new landed on %s, want the sign-in page", u)
	}
	submit(t, tab, "signin", map[string]string{"name": g.Researcher, "password": "wrong password!"})
	if msg := js[string](t, tab, `document.querySelector(".flash")?.textContent || ""`); !strings.Contains(msg, "wrong password") {
		t.Fatalf("wrong password: page says %q", msg)
	}
	submit(t, tab, "signin", map[string]string{"name": g.Researcher, "password": g.Password})
	if u := location(tab); !strings.HasSuffix(u, "/campaigns/new") {
		t.Fatalf("after sign-in: at %s, want /campaigns/new", u)
	}
	shots(t, tab, shotDir, "new-campaign")
	if opts := js[string](t, tab, `document.getElementById("dataset").options[0]?.textContent || ""`); opts != "synthetic (3 classes, 36 images)" {
		t.Errorf("dataset picker offers %q, want synthetic with its class and image counts", opts)
	}
	if q := js[string](t, tab, `document.querySelector("#datasets .quarantined")?.textContent || ""`); !strings.Contains(q, "notes.txt: ") || len(q) < len("notes.txt: ")+5 {
		t.Errorf("quarantined file shown as %q, want notes.txt with its reason", q)
	}

	// A bad quorum comes back next to its field, and nothing is created.
	form := map[string]string{"name": "browser run", "dataset": "synthetic", "model": "tcnn-small", "fragment_size": "64",
		"fragments_min": "60", "fragments_max": "80", "work_units_per_round": "2", "quorum": "0.95", "rounds": "30",
		"epochs": "1", "learning_rate": "0.01", "batch_size": "16"}
	submit(t, tab, "new-campaign", form)
	if msg := js[string](t, tab, `document.getElementById("quorum-error")?.textContent || ""`); !strings.Contains(msg, "0.75") {
		t.Fatalf("quorum 0.95: field error %q, want one naming the allowed range", msg)
	}
	if v := js[string](t, tab, `document.getElementById("name").value`); v != "browser run" {
		t.Errorf("the refused form lost the name: %q", v)
	}
	shots(t, tab, shotDir, "new-campaign-refused")
	if cs, err := g.API.Campaigns(ctx); err != nil || len(cs) != 0 {
		t.Fatalf("after the refused form: campaigns %v, %v; want none", cs, err)
	}
	form["quorum"] = "0.75"
	submit(t, tab, "new-campaign", form)
	if u := location(tab); !strings.Contains(u, "/campaigns/1") {
		t.Fatalf("after creating: at %s (%s)", u, js[string](t, tab, "document.body.innerText"))
	}
	camp, err := g.API.Campaign(ctx, 1)
	if err != nil || camp.State != protocol.StateRunning || camp.Spec.Quorum != 0.75 {
		t.Fatalf("created campaign: %+v, %v", camp, err)
	}
	for i := 0; i < 2; i++ {
		if _, err := g.AddVolunteer(ctx, grid.VolunteerOptions{HeartbeatSeconds: 2}); err != nil {
			t.Fatal(err)
		}
	}

	// The chart gains a point when round 0 is closed and evaluated, without a reload.
	js[bool](t, tab, "window.__noReload = true")
	var evaluated time.Time
	waitFor(t, "round 0 evaluated", 4*time.Minute, func() (bool, error) {
		rs, err := g.API.Rounds(ctx, camp.ID)
		if err != nil || len(rs) == 0 || rs[0].Metrics == nil {
			return false, err
		}
		evaluated = time.Now()
		return true, nil
	})
	waitFor(t, "chart point", 5*time.Second, func() (bool, error) {
		return js[string](t, tab, `document.getElementById("chart").getAttribute("data-points")`) != "0", nil
	})
	if lag := time.Since(evaluated); lag > 2*time.Second {
		t.Errorf("the chart showed the round %s after its metrics were in, want under 2s", lag)
	}
	if !js[bool](t, tab, "window.__noReload === true") {
		t.Error("the page reloaded to show the new point")
	}
	t.Logf("chart gained its first point %s after the round's metrics were in", time.Since(evaluated).Round(time.Millisecond))

	// The page works from the keyboard: Tab reaches the Pause button and Enter presses it.
	reached := false
	for i := 0; i < 12 && !reached; i++ {
		if err := chromedp.Do(tab, chromedp.KeyEvent("\t")); err != nil {
			t.Fatal(err)
		}
		reached = js[string](t, tab, "document.activeElement.id") == "action-pause"
	}
	if !reached {
		t.Fatalf("Tab never reached the Pause button (focus on %q)", js[string](t, tab, "document.activeElement.outerHTML"))
	}
	if c := js[string](t, tab, `getComputedStyle(document.activeElement).outlineStyle`); c == "none" {
		t.Error("the focused button shows no focus outline")
	}

	leave(t, tab, "Enter on Pause", chromedp.KeyEvent("\r"))
	// Then resume with a click; stop comes after the screenshots.
	for _, a := range []struct{ action, state string }{{"", protocol.StatePaused}, {"resume", protocol.StateRunning}} {
		if a.action != "" {
			newPage(t, tab, `document.getElementById("action-`+a.action+`").click(); true`)
		}
		waitFor(t, "state "+a.state, 10*time.Second, func() (bool, error) {
			return js[string](t, tab, `document.getElementById("state").textContent`) == a.state, nil
		})
		if c, err := g.API.Campaign(ctx, camp.ID); err != nil || c.State != a.state {
			t.Fatalf("campaign %+v (%v), want %s", c.State, err, a.state)
		}
	}
	// The reloaded page shows round 0's per-class scores and confusion heatmap, and the
	// hosts that contributed.
	for _, sel := range []string{"#per-class tbody tr", "#confusion tbody tr"} {
		if n := js[int](t, tab, `document.querySelectorAll("`+sel+`").length`); n != len(camp.Classes) {
			t.Errorf("%s: %d rows, want one per class (%d)", sel, n, len(camp.Classes))
		}
	}
	if n := js[int](t, tab, `document.querySelectorAll("#hosts tbody tr").length`); n < 1 {
		t.Error("no contributing host listed")
	}
	shots(t, tab, shotDir, "campaign")
	newPage(t, tab, `document.getElementById("action-stop").click(); true`)
	if c, err := g.API.Campaign(ctx, camp.ID); err != nil || c.State != protocol.StateStopped {
		t.Fatalf("after stop: %+v, %v", c.State, err)
	}

	// The ONNX model of round 0, exported by the server, loads with the campaign's classes.
	b64 := js[string](t, tab, `fetch("/campaigns/1/model?round=0&format=onnx").then(r => { if (!r.ok) throw new Error("HTTP " + r.status); return r.arrayBuffer() }).then(b => { let s = ""; new Uint8Array(b).forEach(c => s += String.fromCharCode(c)); return btoa(s) })`)
	raw, err := base64Decode(b64)
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnx.Decode(raw)
	if err != nil {
		t.Fatalf("downloaded ONNX model: %v", err)
	}
	classes, err := m.Classes()
	if err != nil || strings.Join(classes, ",") != strings.Join(camp.Classes, ",") {
		t.Fatalf("ONNX classes %v (%v), want %v", classes, err, camp.Classes)
	}
	if _, _, _, err := m.Network(); err != nil {
		t.Fatalf("ONNX model does not read back as a network: %v", err)
	}

	// Try the model: upload one of the dataset's images and see its class probabilities.
	imgs, err := filepath.Glob(filepath.Join(data, camp.Classes[1], "*.png"))
	if err != nil || len(imgs) == 0 {
		t.Fatalf("no image of class %s: %v", camp.Classes[1], err)
	}
	if err := chromedp.Do(tab, chromedp.SetUploadFiles(chromedp.CSS("#image"), []string{imgs[0]})); err != nil {
		t.Fatal(err)
	}
	newPage(t, tab, `document.getElementById("classify").requestSubmit(); true`)
	top := js[string](t, tab, `document.getElementById("top-class")?.textContent || ""`)
	if !slices.Contains(camp.Classes, top) {
		t.Fatalf("classify: top class %q is not one of %v (%s)", top, camp.Classes, js[string](t, tab, "document.body.innerText"))
	}
	if n := js[int](t, tab, `document.querySelectorAll("#classified tr").length`); n != len(camp.Classes) {
		t.Fatalf("classify shows %d class rows, want %d", n, len(camp.Classes))
	}
	shots(t, tab, shotDir, "campaign-classified")

	// A form posted without its CSRF token is refused and changes nothing: the
	// sign-out form without it leaves the session signed in.
	js[bool](t, tab, `document.querySelector("header form [name=csrf]").remove(); true`)
	newPage(t, tab, `document.querySelector("header form button").click(); true`)
	if msg := js[string](t, tab, `document.getElementById("error")?.textContent || ""`); !strings.Contains(msg, "CSRF") {
		t.Fatalf("sign-out without CSRF: page says %q", msg)
	}
	navigate(t, tab, base+"/campaigns/1")
	if u := location(tab); !strings.HasSuffix(u, "/campaigns/1") {
		t.Fatalf("a sign-out without its CSRF token signed out: at %s", u)
	}

	// A second researcher gets 403 on the first one's campaign, in the browser and the API.
	tok2, pw2, err := g.AddResearcher(ctx, "grace", false)
	if err != nil {
		t.Fatal(err)
	}
	tab2 := browser(t, ctx, bin)
	navigate(t, tab2, base+"/signin")
	submit(t, tab2, "signin", map[string]string{"name": "grace", "password": pw2})
	resp, err := chromedp.Run(tab2, chromedp.NavigateResponse(base+"/campaigns/1"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusForbidden {
		t.Fatalf("grace opening campaign 1: HTTP %d, want 403", resp.Status)
	}
	if msg := js[string](t, tab2, `document.getElementById("error")?.textContent || ""`); !strings.Contains(msg, "another researcher") {
		t.Fatalf("grace's 403 page says %q", msg)
	}
	if _, err := client.New(base, tok2, nil).Campaign(ctx, camp.ID); client.StatusOf(err) != http.StatusForbidden {
		t.Fatalf("grace's token on campaign 1: %v, want 403", err)
	}
	navigate(t, tab2, base+"/campaigns")
	if n := js[int](t, tab2, `document.querySelectorAll("#campaigns tbody tr").length`); n != 0 {
		t.Fatalf("grace's campaigns list shows %d campaigns, want none", n)
	}

	// The first researcher's list, then sign-out: the campaign page sends to sign-in.
	navigate(t, tab, base+"/campaigns")
	if n := js[int](t, tab, `document.querySelectorAll("#campaigns tbody tr").length`); n != 1 {
		t.Fatalf("campaigns list shows %d rows, want 1", n)
	}
	shots(t, tab, shotDir, "campaigns")
	newPage(t, tab, `document.querySelector("header form button").click(); true`)
	navigate(t, tab, base+"/campaigns/1")
	if u := location(tab); !strings.Contains(u, "/signin") {
		t.Fatalf("after sign-out /campaigns/1 showed %s, want the sign-in page", u)
	}
	// The volunteer side, signed out: the project page, a new account and its key,
	// the leaderboard and a host page.
	navigate(t, tab, base+"/")
	if txt := js[string](t, tab, `document.getElementById("status").textContent`); !strings.Contains(txt, "hosts attached") {
		t.Fatalf("project page status: %q", txt)
	}
	shots(t, tab, shotDir, "project")
	navigate(t, tab, base+"/join")
	submit(t, tab, "join", map[string]string{"name": "browser volunteer", "password": "a volunteer's password"})
	if key := js[string](t, tab, `document.getElementById("account-key")?.textContent || ""`); !strings.HasPrefix(key, "tga_") {
		t.Fatalf("new volunteer account: key %q (%s)", key, js[string](t, tab, "document.body.innerText"))
	}
	shots(t, tab, shotDir, "join")
	navigate(t, tab, base+"/leaderboard")
	if n := js[int](t, tab, `document.querySelectorAll("#by-host tbody tr").length`); n != 2 {
		t.Fatalf("leaderboard lists %d hosts, want the 2 volunteers", n)
	}
	shots(t, tab, shotDir, "leaderboard")
	newPage(t, tab, `document.querySelector("#by-host tbody a").click(); true`)
	if credit := js[string](t, tab, `document.getElementById("credit")?.textContent || ""`); credit == "" || credit == "0.0" {
		t.Fatalf("host page credit %q, want the credit of its accepted results", credit)
	}
	shots(t, tab, shotDir, "host")

	for _, name := range []string{"campaign-desktop.png", "campaign-phone.png"} {
		if st, err := os.Stat(filepath.Join(shotDir, name)); err != nil || st.Size() == 0 {
			t.Errorf("screenshot %s: %v", name, err)
		}
	}
}

func base64Decode(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }

func location(ctx context.Context) string {
	u, _ := chromedp.Run(ctx, chromedp.Location())
	return u
}
