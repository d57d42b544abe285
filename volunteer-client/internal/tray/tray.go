package tray

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"runtime"
	"sync"
	"time"

	"fyne.io/systray"

	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// Menu labels. Tests and documentation find the items by them.
const (
	LabelPause        = "Pause"
	LabelResume       = "Resume"
	LabelSnooze       = "Snooze for 1 hour"
	LabelPreferences  = "Preferences"
	LabelCPU25        = "Use 25% of the CPU"
	LabelCPU50        = "Use 50% of the CPU"
	LabelCPU100       = "Use 100% of the CPU"
	LabelIdleOnly     = "Run only when idle"
	LabelAlways       = "Run always"
	LabelProjectPage  = "Open project page"
	LabelStartService = "Start daemon"
	LabelStopService  = "Stop daemon"
	LabelQuit         = "Quit tray"
)

// Config wires the tray.
type Config struct {
	StateDir string   // the daemon's state directory, where localapi.AddrFile and TokenFile are
	Service  *Service // the daemon's systemd user unit; nil: no start/stop items
	// Open shows a URL in the default browser; nil: xdg-open.
	Open func(ctx context.Context, url string) error
	// ProjectURL overrides the project page; "": the server the daemon is attached to.
	ProjectURL string
	Snooze     time.Duration // default 1 h
	Retry      time.Duration // delay before asking an unreachable daemon again; default 2 s
	Wait       time.Duration // longest wait for a change per call; default 25 s
	Log        *slog.Logger
}

// Run shows the tray until ctx ends or the volunteer picks "Quit tray". The systray
// library holds one tray per process, so Run is called once.
func Run(ctx context.Context, cfg Config) error {
	if cfg.StateDir == "" {
		return errors.New("tray: no state directory")
	}
	if cfg.Open == nil {
		cfg.Open = xdgOpen
	}
	if cfg.Snooze <= 0 {
		cfg.Snooze = time.Hour
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 2 * time.Second
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 25 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := &tray{cfg: cfg, log: cfg.Log, actions: make(chan func(context.Context), 16), changed: make(chan struct{}, 1)}
	var wg sync.WaitGroup
	systray.Run(func() {
		t.build(ctx, &wg)
		for _, f := range []func(context.Context){t.watch, t.act, t.watchService, t.settle} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f(ctx)
			}()
		}
		go func() {
			<-ctx.Done()
			systray.Quit()
		}()
	}, cancel)
	cancel()
	wg.Wait()
	return nil
}

// tray is the running tray: the menu items, the last view, and the client.
type tray struct {
	cfg     Config
	log     *slog.Logger
	actions chan func(context.Context) // menu clicks, run one at a time by act
	changed chan struct{}              // a click changed the daemon: ask now

	status, pause, snooze, prefsMenu, cpu25, cpu50, cpu100, idleOnly, always *systray.MenuItem
	project, credit, results, start, stop, quit                              *systray.MenuItem

	mu     sync.Mutex
	client *localapi.Client
	view   View
	shown  bool
	svc    ServiceState
}

func (t *tray) build(ctx context.Context, wg *sync.WaitGroup) {
	systray.SetIcon(Icon(DaemonUnreachable))
	systray.SetTitle("texgrid")
	systray.SetTooltip("texgrid: starting")
	t.status = systray.AddMenuItem("Connecting to the daemon", "")
	t.status.Disable()
	systray.AddSeparator()
	t.pause = systray.AddMenuItem(LabelPause, "Stop computing after the current batch")
	t.snooze = systray.AddMenuItem(LabelSnooze, "Pause now and resume by itself in an hour")
	t.prefsMenu = systray.AddMenuItem(LabelPreferences, "")
	t.cpu25 = t.prefsMenu.AddSubMenuItemCheckbox(LabelCPU25, "", false)
	t.cpu50 = t.prefsMenu.AddSubMenuItemCheckbox(LabelCPU50, "", false)
	t.cpu100 = t.prefsMenu.AddSubMenuItemCheckbox(LabelCPU100, "", false)
	t.prefsMenu.AddSeparator()
	t.idleOnly = t.prefsMenu.AddSubMenuItemCheckbox(LabelIdleOnly, "Compute only while nobody uses the machine", false)
	t.always = t.prefsMenu.AddSubMenuItemCheckbox(LabelAlways, "Compute whether the machine is in use or not", false)
	systray.AddSeparator()
	t.project = systray.AddMenuItem(LabelProjectPage, "The project's web page in the browser")
	t.credit = systray.AddMenuItem("Credit: unknown", "Total credit the server granted this host")
	t.credit.Disable()
	t.results = systray.AddMenuItem("Results: unknown", "")
	t.results.Disable()
	systray.AddSeparator()
	t.start = systray.AddMenuItem(LabelStartService, "systemctl --user start "+UnitName)
	t.stop = systray.AddMenuItem(LabelStopService, "systemctl --user stop "+UnitName)
	t.start.Hide()
	t.stop.Hide()
	t.quit = systray.AddMenuItem(LabelQuit, "Close this icon; the daemon keeps working")

	on := func(it *systray.MenuItem, f func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case <-it.ClickedCh:
				}
				select {
				case t.actions <- f:
				default:
					t.log.Warn("tray: too many clicks at once; one dropped")
				}
			}
		}()
	}
	on(t.pause, t.togglePause)
	on(t.snooze, func(ctx context.Context) {
		t.call(ctx, "snooze", func(c *localapi.Client) error { _, err := c.PauseFor(ctx, t.cfg.Snooze); return err })
	})
	on(t.cpu25, t.setCPU(25))
	on(t.cpu50, t.setCPU(50))
	on(t.cpu100, t.setCPU(100))
	on(t.idleOnly, t.setIdleOnly(true))
	on(t.always, t.setIdleOnly(false))
	on(t.project, t.openProject)
	on(t.start, func(ctx context.Context) { t.service(ctx, "start", t.cfg.Service.Start) })
	on(t.stop, func(ctx context.Context) { t.service(ctx, "stop", t.cfg.Service.Stop) })
	on(t.quit, func(context.Context) { systray.Quit() })
	t.apply(Describe(nil, errors.New("connecting"), time.Now()), true)
}

// settle shows the current view again shortly after start: the library drops what is
// set while it is still exporting the item on the bus.
func (t *tray) settle(ctx context.Context) {
	for _, d := range []time.Duration{500 * time.Millisecond, 2 * time.Second} {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		t.mu.Lock()
		v := t.view
		t.mu.Unlock()
		t.apply(v, true)
	}
}

// act runs the clicked actions one at a time until ctx ends.
func (t *tray) act(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-t.actions:
			f(ctx)
		}
	}
}

// watch follows the daemon: a long wait for each change, a retry every cfg.Retry
// while it is unreachable.
func (t *tray) watch(ctx context.Context) {
	var seq uint64
	poll := false // a version-1 daemon without the wait endpoint
	for ctx.Err() == nil {
		c, err := t.dial()
		var st *localapi.Status
		if err == nil {
			if poll {
				st, err = c.State(ctx)
			} else {
				st, err = c.WaitState(ctx, seq, t.cfg.Wait)
				if err != nil && ctx.Err() == nil {
					// A version-1 daemon answers the wait with 404 but answers State.
					if s, err2 := c.State(ctx); err2 == nil && s.APIVersion < 2 {
						st, err, poll = s, nil, true
					}
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			t.forget()
			seq = 0
			t.show(nil, err)
			t.pauseFor(ctx, t.cfg.Retry)
			continue
		}
		if st.Seq < seq {
			seq = 0 // the daemon restarted with the same token files
		} else {
			seq = st.Seq
		}
		t.show(st, nil)
		if poll {
			t.pauseFor(ctx, t.cfg.Retry)
		}
	}
}

// pauseFor waits d, or less when a click changed the daemon.
func (t *tray) pauseFor(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-t.changed:
	case <-time.After(d):
	}
}

// dial returns the client, reading the address and token files again after a failure
// (the daemon writes new ones at every start).
func (t *tray) dial() (*localapi.Client, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.client != nil {
		return t.client, nil
	}
	c, err := localapi.Dial(t.cfg.StateDir)
	if err != nil {
		return nil, err
	}
	t.client = c
	return c, nil
}

func (t *tray) forget() {
	t.mu.Lock()
	t.client = nil
	t.mu.Unlock()
}

// call runs one local API call for a click and shows the daemon's answer.
func (t *tray) call(ctx context.Context, what string, f func(c *localapi.Client) error) {
	c, err := t.dial()
	if err == nil {
		err = f(c)
	}
	if err != nil {
		t.log.Warn("tray: "+what, "err", err)
		t.forget()
	}
	select {
	case t.changed <- struct{}{}:
	default:
	}
	if c != nil && err == nil {
		if st, err := c.State(ctx); err == nil {
			t.show(st, nil)
		}
	}
}

func (t *tray) togglePause(ctx context.Context) {
	t.mu.Lock()
	resume := t.view.Kind == Paused
	t.mu.Unlock()
	t.call(ctx, "pause", func(c *localapi.Client) error {
		var err error
		if resume {
			_, err = c.Resume(ctx)
		} else {
			_, err = c.Pause(ctx)
		}
		return err
	})
}

func (t *tray) setCPU(pct int) func(context.Context) {
	return func(ctx context.Context) {
		t.call(ctx, fmt.Sprintf("cpu %d%%", pct), func(c *localapi.Client) error {
			_, err := c.SetPrefs(ctx, localapi.PrefsPatch{CPULimitPercent: &pct})
			return err
		})
	}
}

func (t *tray) setIdleOnly(on bool) func(context.Context) {
	return func(ctx context.Context) {
		t.call(ctx, "run only when idle", func(c *localapi.Client) error {
			_, err := c.SetPrefs(ctx, localapi.PrefsPatch{RunOnlyWhenIdle: &on})
			return err
		})
	}
}

func (t *tray) openProject(ctx context.Context) {
	url := t.cfg.ProjectURL
	if url == "" {
		t.mu.Lock()
		url = t.view.ProjectURL
		t.mu.Unlock()
	}
	if url == "" {
		t.log.Warn("tray: no project page known yet (the daemon has not answered)")
		return
	}
	if err := t.cfg.Open(ctx, url); err != nil {
		t.log.Warn("tray: open project page", "url", url, "err", err)
	}
}

func (t *tray) service(ctx context.Context, what string, f func(context.Context) error) {
	if err := f(ctx); err != nil {
		t.log.Warn("tray: "+what+" daemon", "err", err)
	}
	t.refreshService(ctx)
	t.forget() // a started daemon writes new token files
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// watchService shows start or stop where the daemon is a systemd user service,
// checking every 5 s.
func (t *tray) watchService(ctx context.Context) {
	if t.cfg.Service == nil {
		return
	}
	for {
		t.refreshService(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

func (t *tray) refreshService(ctx context.Context) {
	if t.cfg.Service == nil {
		return
	}
	st := t.cfg.Service.State(ctx)
	t.mu.Lock()
	same := st == t.svc
	t.svc = st
	t.mu.Unlock()
	if same {
		return
	}
	showIf(t.start, st.Installed && !st.Active)
	showIf(t.stop, st.Installed && st.Active)
}

func showIf(it *systray.MenuItem, on bool) {
	if on {
		it.Show()
	} else {
		it.Hide()
	}
}

// show renders a Status (or the error of getting one).
func (t *tray) show(st *localapi.Status, err error) {
	t.apply(Describe(st, err, time.Now()), false)
}

// apply pushes the parts of v that changed to the tray (every part when force).
func (t *tray) apply(v View, force bool) {
	t.mu.Lock()
	old, shown := t.view, t.shown
	t.view, t.shown = v, true
	t.mu.Unlock()
	force = force || !shown
	if force || v.Kind != old.Kind {
		systray.SetIcon(Icon(v.Kind))
	}
	if force || v.Title != old.Title {
		systray.SetTitle(v.Title)
	}
	if force || v.Tooltip != old.Tooltip {
		systray.SetTooltip(v.Tooltip)
	}
	if force || v.Status != old.Status {
		t.status.SetTitle(v.Status)
	}
	if force || v.PauseLabel != old.PauseLabel {
		t.pause.SetTitle(v.PauseLabel)
	}
	if force || v.Credit != old.Credit {
		t.credit.SetTitle(v.Credit)
	}
	if force || v.Results != old.Results {
		t.results.SetTitle(v.Results)
	}
	if force || v.Reachable != old.Reachable {
		for _, it := range []*systray.MenuItem{t.pause, t.snooze, t.prefsMenu, t.cpu25, t.cpu50, t.cpu100, t.idleOnly, t.always} {
			if v.Reachable {
				it.Enable()
			} else {
				it.Disable()
			}
		}
	}
	if force || v.CPU != old.CPU || v.IdleOnly != old.IdleOnly || v.Reachable != old.Reachable {
		check(t.cpu25, v.Reachable && v.CPU == 25)
		check(t.cpu50, v.Reachable && v.CPU == 50)
		check(t.cpu100, v.Reachable && v.CPU == 100)
		check(t.idleOnly, v.Reachable && v.IdleOnly)
		check(t.always, v.Reachable && !v.IdleOnly)
	}
}

func check(it *systray.MenuItem, on bool) {
	if on {
		it.Check()
	} else {
		it.Uncheck()
	}
}

// xdgOpen opens url in the desktop's default browser.
func xdgOpen(ctx context.Context, url string) error {
	name, args := "xdg-open", []string{url}
	switch runtime.GOOS {
	case "darwin":
		name = "open"
	case "windows":
		name, args = "rundll32", []string{"url.dll,FileProtocolHandler", url}
	}
	cmd := exec.CommandContext(ctx, name, args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s %s: %w", name, url, err)
	}
	go cmd.Wait() // xdg-open returns at once; reap it
	return nil
}
