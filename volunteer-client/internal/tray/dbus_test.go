package tray_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/texgrid/texgrid/configs"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/poll"
	"github.com/texgrid/texgrid/volunteer-client/internal/agent"
	"github.com/texgrid/texgrid/volunteer-client/internal/apiclient"
	"github.com/texgrid/texgrid/volunteer-client/internal/fakeserver"
	"github.com/texgrid/texgrid/volunteer-client/internal/idle"
	"github.com/texgrid/texgrid/volunteer-client/internal/localserver"
	"github.com/texgrid/texgrid/volunteer-client/internal/prefs"
	"github.com/texgrid/texgrid/volunteer-client/internal/state"
	"github.com/texgrid/texgrid/volunteer-client/internal/tray"
	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// requireTool skips, or fails under TEXGRID_REQUIRE_TOOLS=1, when a command is missing.
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("TEXGRID_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s is required (TEXGRID_REQUIRE_TOOLS=1) but not installed (Debian package %s)", name, pkg)
		}
		t.Skipf("%s not installed (Debian package %s); TEXGRID_REQUIRE_TOOLS=1 makes this a failure", name, pkg)
	}
	return p
}

// sessionBus starts a private dbus-daemon --session and returns its address.
func sessionBus(t *testing.T) string {
	t.Helper()
	bin := requireTool(t, "dbus-daemon", "dbus-daemon")
	cmd := exec.Command(bin, "--session", "--nofork", "--print-address=1", "--address=unix:dir="+t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("dbus-daemon printed no address: %v", err)
	}
	return strings.TrimSpace(line)
}

// watcher is a test double of org.kde.StatusNotifierWatcher: it records the items
// that register, as a panel's watcher would before showing them.
type watcher struct {
	mu    sync.Mutex
	items []string // "sender path"
}

func (w *watcher) RegisterStatusNotifierItem(sender dbus.Sender, service string) *dbus.Error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.items = append(w.items, string(sender)+" "+service)
	return nil
}

func (w *watcher) registered() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.items...)
}

func startWatcher(t *testing.T, addr string) (*dbus.Conn, *watcher) {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatalf("connect to the session bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	w := &watcher{}
	if err := conn.Export(w, "/StatusNotifierWatcher", "org.kde.StatusNotifierWatcher"); err != nil {
		t.Fatal(err)
	}
	if r, err := conn.RequestName("org.kde.StatusNotifierWatcher", dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own the watcher name: %v %v", r, err)
	}
	return conn, w
}

// slowTrainer trains a work unit in many short steps, so the daemon stays busy while
// the test clicks.
type slowTrainer struct{ steps int }

type slowJob struct{ pos, n int }

func (tr slowTrainer) Prepare(ctx context.Context, wu *protocol.WorkUnit, basePath string, threads int, cacheBytes int64, st []byte) (agent.Job, error) {
	return &slowJob{n: tr.steps}, nil
}
func (j *slowJob) Step(ctx context.Context) (agent.StepInfo, error) {
	time.Sleep(20 * time.Millisecond) // a batch's training time, simulated
	j.pos++
	return agent.StepInfo{Epoch: j.pos * 2 / j.n, Batch: j.pos, Loss: 1, Samples: j.pos, Done: j.pos >= j.n}, nil
}
func (j *slowJob) Checkpoint() ([]byte, error) { return []byte(fmt.Sprint(j.pos)), nil }
func (j *slowJob) Progress() float64           { return float64(j.pos) / float64(j.n) }
func (j *slowJob) Close()                      {}
func (j *slowJob) Result() ([]byte, int, float64, error) {
	return []byte("delta"), j.pos, 1, nil
}

// daemon is the volunteer-client's run loop and local API in this process, against the
// in-memory fake project server.
type daemon struct {
	dir   *state.Dir
	srv   *fakeserver.Server
	stop  func()
	local *localserver.Server
}

func startDaemon(t *testing.T) *daemon {
	t.Helper()
	srv, err := fakeserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	dir, err := state.Open(filepath.Join(t.TempDir(), "state"), true)
	if err != nil {
		t.Fatal(err)
	}
	tok := srv.AddHost()
	id := state.Identity{Server: srv.URL(), HostID: 1}
	if err := dir.SaveIdentity(id, tok); err != nil {
		t.Fatal(err)
	}
	defaults := prefs.Defaults(2, 4<<30)
	defaults.HeartbeatSeconds, defaults.CheckpointSeconds, defaults.MaxRetryDelaySecs = 1, 1, 1
	pr, err := prefs.Load(dir, defaults, localapi.PrefsPatch{})
	if err != nil {
		t.Fatal(err)
	}
	api, err := apiclient.New(srv.URL(), tok, "test")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := configs.Model("tcnn-small")
	if err != nil {
		t.Fatal(err)
	}
	base := srv.AddBlob([]byte("base model"))
	srv.QueueWork(&protocol.WorkUnit{
		ID: 1, CampaignID: 7, Round: 3, BaseModel: base, ModelSpec: sp,
		Classes: []string{"a", "b"}, FragmentSize: 64, FragmentCount: 16, Seed: 1,
		Hyper:      protocol.Hyper{Epochs: 2, BatchSize: 4, LearningRate: 0.01, Momentum: 0.9},
		DeltaDType: "float32", Deadline: time.Now().Add(time.Hour),
	})
	a, err := agent.New(agent.Config{
		Dir: dir, API: api, Identity: id, Prefs: pr, Trainer: slowTrainer{steps: 100000}, Idle: idle.Always{Value: true},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "test", RetryBase: 20 * time.Millisecond, Poll: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := localserver.Start(dir, a, pr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Run(ctx)
	}()
	d := &daemon{dir: dir, srv: srv, local: ls}
	var once sync.Once
	d.stop = func() {
		once.Do(func() {
			ls.Close()
			cancel()
			<-done
		})
	}
	t.Cleanup(d.stop)
	return d
}

// buildTray builds the volunteer-tray binary without cgo, as the package ships it.
func buildTray(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "volunteer-tray")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/texgrid/texgrid/volunteer-client/cmd/volunteer-tray")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build volunteer-tray: %v\n%s", err, out)
	}
	return bin
}

// item is the tray as a panel sees it on the bus.
type item struct {
	conn   *dbus.Conn
	sender string
}

func (it item) prop(t *testing.T, name string) dbus.Variant {
	t.Helper()
	v, err := it.conn.Object(it.sender, "/StatusNotifierItem").GetProperty("org.kde.StatusNotifierItem." + name)
	if err != nil {
		t.Fatalf("property %s: %v", name, err)
	}
	return v
}

func (it item) title(t *testing.T) string { return it.prop(t, "Title").Value().(string) }

// tooltip returns the tooltip's title text: (s a(iiay) s s), the third field.
func (it item) tooltip(t *testing.T) string {
	var tt struct {
		Name  string
		Icons []struct {
			W, H int32
			Pix  []byte
		}
		Title, Text string
	}
	if err := it.prop(t, "ToolTip").Store(&tt); err != nil {
		t.Fatalf("tooltip: %v", err)
	}
	return tt.Title
}

func (it item) icon(t *testing.T) []byte {
	var px []struct {
		W, H int32
		Pix  []byte
	}
	if err := it.prop(t, "IconPixmap").Store(&px); err != nil || len(px) == 0 {
		t.Fatalf("icon pixmap: %v (%d images)", err, len(px))
	}
	return px[0].Pix
}

// menuEntry is one com.canonical.dbusmenu item.
type menuEntry struct {
	ID      int32
	Label   string
	Enabled bool
	Visible bool
	Checked bool
	Parent  string
}

// layout calls GetLayout for the node id and all below it.
func (it item) layout(t *testing.T, id int32) []any {
	t.Helper()
	var rev uint32
	var root []any
	call := it.conn.Object(it.sender, "/StatusNotifierItem/menu").Call("com.canonical.dbusmenu.GetLayout", 0, id, int32(-1), []string{})
	if call.Err != nil {
		t.Fatalf("GetLayout: %v", call.Err)
	}
	if err := call.Store(&rev, &root); err != nil {
		t.Fatalf("GetLayout answer: %v", err)
	}
	return root
}

// menu reads the whole layout, asking for a submenu's items when the first answer
// left them out, as panels do when a submenu opens.
func (it item) menu(t *testing.T) map[string]menuEntry {
	t.Helper()
	root := it.layout(t, 0)
	out := map[string]menuEntry{}
	var walk func(node []any, parent string)
	walk = func(node []any, parent string) {
		id := node[0].(int32)
		props := node[1].(map[string]dbus.Variant)
		e := menuEntry{ID: id, Enabled: true, Visible: true, Parent: parent}
		if v, ok := props["label"]; ok {
			e.Label, _ = v.Value().(string)
		}
		if v, ok := props["enabled"]; ok {
			e.Enabled, _ = v.Value().(bool)
		}
		if v, ok := props["visible"]; ok {
			e.Visible, _ = v.Value().(bool)
		}
		if v, ok := props["toggle-state"]; ok {
			s, _ := v.Value().(int32)
			e.Checked = s == 1
		}
		if id != 0 && e.Label != "" {
			out[e.Label] = e
		}
		children := node[2].([]dbus.Variant)
		if v, ok := props["children-display"]; ok && v.Value() == "submenu" && len(children) == 0 {
			children = it.layout(t, id)[2].([]dbus.Variant)
		}
		for _, c := range children {
			walk(c.Value().([]any), e.Label)
		}
	}
	walk(root, "")
	return out
}

func (it item) click(t *testing.T, label string) {
	t.Helper()
	e, ok := it.menu(t)[label]
	if !ok {
		t.Fatalf("no menu item %q", label)
	}
	call := it.conn.Object(it.sender, "/StatusNotifierItem/menu").Call("com.canonical.dbusmenu.Event", 0, e.ID, "clicked", dbus.MakeVariant(""), uint32(time.Now().Unix()))
	if call.Err != nil {
		t.Fatalf("click %q: %v", label, call.Err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, d, what, cond)
}

func TestTrayOnSessionBus(t *testing.T) {
	addr := sessionBus(t)
	conn, w := startWatcher(t, addr)
	d := startDaemon(t)
	bin := buildTray(t)

	// systemd is not running here: a stand-in systemctl on the tray's PATH keeps the
	// user unit's state in a file, so start and stop can be clicked.
	sysd := t.TempDir()
	calls, unitState := filepath.Join(sysd, "calls"), filepath.Join(sysd, "state")
	if err := os.WriteFile(unitState, []byte("active\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho \"$*\" >> " + calls + "\ncase \"$*\" in\n" +
		"*show*) printf 'LoadState=loaded\\nActiveState=%s\\n' \"$(cat " + unitState + ")\" ;;\n" +
		"*' stop '*) echo inactive > " + unitState + " ;;\n" +
		"*' start '*) echo active > " + unitState + " ;;\nesac\n"
	if err := os.WriteFile(filepath.Join(sysd, "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	cmd := exec.Command(bin, "--state-dir", d.dir.Path)
	cmd.Env = append(os.Environ(), "DBUS_SESSION_BUS_ADDRESS="+addr, "PATH="+sysd+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("tray output:\n%s", logs.String())
		}
	})

	// The item registers with the watcher.
	waitFor(t, 10*time.Second, "the tray to register with the watcher", func() bool { return len(w.registered()) > 0 })
	reg := strings.Fields(w.registered()[0])
	if len(reg) != 2 || reg[1] != "/StatusNotifierItem" {
		t.Fatalf("registered %q, want a sender and /StatusNotifierItem", w.registered()[0])
	}
	it := item{conn: conn, sender: reg[0]}

	// Its menu has every item of the issue.
	m := it.menu(t)
	for _, label := range []string{tray.LabelPause, tray.LabelSnooze, tray.LabelPreferences, tray.LabelCPU25, tray.LabelCPU50,
		tray.LabelCPU100, tray.LabelIdleOnly, tray.LabelAlways, tray.LabelProjectPage, tray.LabelStartService, tray.LabelStopService, tray.LabelQuit} {
		if _, ok := m[label]; !ok {
			t.Errorf("menu has no %q; it has %v", label, keys(m))
		}
	}
	for _, label := range []string{tray.LabelCPU25, tray.LabelCPU50, tray.LabelCPU100, tray.LabelIdleOnly, tray.LabelAlways} {
		if p := m[label].Parent; p != tray.LabelPreferences {
			t.Errorf("%q is under %q, want the %q submenu", label, p, tray.LabelPreferences)
		}
	}
	// The daemon's user unit runs: stop is offered, start is not.
	waitFor(t, 10*time.Second, "stop daemon offered for the running unit", func() bool {
		m := it.menu(t)
		return m[tray.LabelStopService].Visible && !m[tray.LabelStartService].Visible
	})

	// Computing: the tooltip names the campaign, round, epoch and percent, and the
	// credit line comes from the server's host record.
	waitFor(t, 10*time.Second, "a computing tooltip", func() bool {
		return strings.Contains(it.tooltip(t), "campaign 7, round 3, epoch 1/2")
	})
	if title := it.title(t); !strings.HasPrefix(title, "texgrid: computing ") || !strings.HasSuffix(title, "%") {
		t.Errorf("title while computing = %q", title)
	}
	waitFor(t, 10*time.Second, "the credit line", func() bool {
		_, ok := it.menu(t)["Credit: 0.0"]
		return ok
	})
	if !bytes.Equal(it.icon(t), pixmap(t, tray.Computing)) {
		t.Error("icon while computing is not the computing icon")
	}
	waitFor(t, 10*time.Second, "a time-left estimate in the tooltip", func() bool { return strings.Contains(it.tooltip(t), " left") })

	// Clicking pause pauses the real daemon within a second.
	lc, err := localapi.Dial(d.dir.Path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	clicked := time.Now()
	it.click(t, tray.LabelPause)
	waitFor(t, time.Second, "the daemon to pause after the click", func() bool {
		st, err := lc.State(ctx)
		return err == nil && st.State == localapi.StatePaused
	})
	t.Logf("paused %s after the click", time.Since(clicked).Round(time.Millisecond))
	// The icon, title and menu follow.
	waitFor(t, 5*time.Second, "the paused icon", func() bool { return bytes.Equal(it.icon(t), pixmap(t, tray.Paused)) })
	if title := it.title(t); !strings.HasPrefix(title, "texgrid: paused") {
		t.Errorf("title while paused = %q", title)
	}
	waitFor(t, 5*time.Second, "the menu to offer resume", func() bool { _, ok := it.menu(t)[tray.LabelResume]; return ok })

	// Resume, then a preference: the daemon's preferences change and the checkmark moves.
	it.click(t, tray.LabelResume)
	waitFor(t, 5*time.Second, "the daemon to resume", func() bool {
		st, err := lc.State(ctx)
		return err == nil && st.State != localapi.StatePaused
	})
	it.click(t, tray.LabelCPU50)
	waitFor(t, 5*time.Second, "cpu 50% in the daemon", func() bool {
		p, err := lc.Prefs(ctx)
		return err == nil && p.CPULimitPercent == 50
	})
	waitFor(t, 5*time.Second, "the 50% checkmark", func() bool {
		m := it.menu(t)
		return m[tray.LabelCPU50].Checked && !m[tray.LabelCPU100].Checked
	})
	it.click(t, tray.LabelIdleOnly)
	waitFor(t, 5*time.Second, "run only when idle in the daemon", func() bool {
		p, err := lc.Prefs(ctx)
		return err == nil && p.RunOnlyWhenIdle
	})
	it.click(t, tray.LabelAlways)
	waitFor(t, 5*time.Second, "run always in the daemon", func() bool {
		p, err := lc.Prefs(ctx)
		return err == nil && !p.RunOnlyWhenIdle
	})

	// Stop and start go to systemctl --user for the unit, and the menu follows.
	it.click(t, tray.LabelStopService)
	waitFor(t, 10*time.Second, "start daemon offered after stop", func() bool {
		m := it.menu(t)
		return m[tray.LabelStartService].Visible && !m[tray.LabelStopService].Visible
	})
	it.click(t, tray.LabelStartService)
	waitFor(t, 10*time.Second, "stop daemon offered after start", func() bool { return it.menu(t)[tray.LabelStopService].Visible })
	b, _ := os.ReadFile(calls)
	for _, want := range []string{"--user --no-ask-password stop " + tray.UnitName, "--user --no-ask-password start " + tray.UnitName} {
		if !strings.Contains(string(b), want) {
			t.Errorf("systemctl not called with %q; calls:\n%s", want, b)
		}
	}

	// Snooze pauses with an end about an hour away.
	it.click(t, tray.LabelSnooze)
	waitFor(t, 5*time.Second, "the snooze", func() bool {
		st, err := lc.State(ctx)
		return err == nil && st.State == localapi.StatePaused && st.PausedUntil != nil
	})
	if st, _ := lc.State(ctx); time.Until(*st.PausedUntil) < 59*time.Minute || time.Until(*st.PausedUntil) > 61*time.Minute {
		t.Errorf("snoozed until %s, want about an hour from now", st.PausedUntil)
	}
	waitFor(t, 5*time.Second, "the snoozed title", func() bool { return strings.HasPrefix(it.title(t), "texgrid: snoozed until") })

	// The daemon dies as with kill -9: its address and token files stay behind, naming
	// a port nobody listens on. The tray says so.
	addrB, err1 := os.ReadFile(d.dir.File(localapi.AddrFile))
	tokB, err2 := os.ReadFile(d.dir.File(localapi.TokenFile))
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	d.stop()
	for name, b := range map[string][]byte{localapi.AddrFile: addrB, localapi.TokenFile: tokB} {
		if err := os.WriteFile(d.dir.File(name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "daemon unreachable", func() bool {
		return strings.Contains(it.title(t), "daemon unreachable") && bytes.Equal(it.icon(t), pixmap(t, tray.DaemonUnreachable))
	})
	if m := it.menu(t); m[tray.LabelPause].Enabled {
		t.Error("pause stays enabled with no daemon")
	}

	// Quit ends the tray; nothing else.
	it.click(t, tray.LabelQuit)
	select {
	case <-exited:
		if exitErr != nil {
			t.Errorf("tray exit: %v", exitErr)
		}
	case <-time.After(10 * time.Second):
		t.Error("the tray did not quit")
	}
}

// pixmap is the ARGB pixmap the item exports for a kind's icon, read from a PNG the
// same way a panel would get it: decode, then ARGB32 in network byte order.
func pixmap(t *testing.T, k tray.Kind) []byte {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(tray.Icon(k)))
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	var out []byte
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
			out = append(out, c.A, c.R, c.G, c.B)
		}
	}
	return out
}

func keys(m map[string]menuEntry) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
