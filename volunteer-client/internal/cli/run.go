package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/volunteer-client/internal/agent"
	"github.com/texgrid/texgrid/volunteer-client/internal/apiclient"
	"github.com/texgrid/texgrid/volunteer-client/internal/idle"
	"github.com/texgrid/texgrid/volunteer-client/internal/localserver"
	"github.com/texgrid/texgrid/volunteer-client/internal/prefs"
	"github.com/texgrid/texgrid/volunteer-client/internal/state"
	"github.com/texgrid/texgrid/volunteer-client/internal/sysinfo"
	"github.com/texgrid/texgrid/volunteer-client/internal/wu"
	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

func runRun(ctx context.Context, env *Env, args []string) error {
	fs, dirFlag := newFlags(env, "run", "[flags]")
	headless := fs.Bool("headless", false, "no progress bar: structured logs only (the default when stderr is not a terminal)")
	logFormat := fs.String("log-format", "text", `log format: "text" or "json"`)
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	exitAfter := fs.Int("exit-after", 0, "exit after this many results were uploaded (0: run until stopped)")
	retryBase := fs.Duration("retry-base", time.Second, "first retry delay after a network error (doubles up to --max-retry-delay)")
	pf := prefs.RegisterFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, `usage: volunteer-client run [flags]

Preferences come from, in increasing precedence: built-in defaults, prefs.json in the
state directory (the same names as the JSON of `+"`volunteer-client prefs`"+`), these flags,
and changes made while running through the local API (`+"`volunteer-client prefs --set`"+`,
the tray), which persist in prefs-override.json until `+"`volunteer-client prefs --reset`"+`.

SIGINT or SIGTERM checkpoints the current work unit and exits; the next run resumes it.

flags:
`)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, *logLevel)
	}
	interactive := !*headless && isTerminal(env.Stderr)
	if interactive && level < slog.LevelWarn {
		level = slog.LevelWarn // the progress bar says the rest
	}
	hopts := &slog.HandlerOptions{Level: level}
	var log *slog.Logger
	switch *logFormat {
	case "text":
		log = slog.New(slog.NewTextHandler(env.Stderr, hopts))
	case "json":
		log = slog.New(slog.NewJSONHandler(env.Stderr, hopts))
	default:
		return fmt.Errorf("%w: --log-format %q: want text or json", errUsage, *logFormat)
	}

	dir, err := state.Open(*dirFlag, false)
	if err != nil {
		return err
	}
	if err := dir.Lock(); err != nil {
		return err
	}
	defer dir.Unlock()
	id, tok, err := dir.LoadIdentity()
	if err != nil {
		return err
	}
	info := sysinfo.Probe()
	store, err := prefs.Load(dir, prefs.Defaults(info.Cores, info.MemTotalBytes), pf.Patch())
	if err != nil {
		return err
	}
	api, err := apiclient.New(id.Server, tok, Version)
	if err != nil {
		return err
	}
	uctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = api.UpdateHost(uctx, protocol.HostUpdateRequest{Cores: info.Cores, MemoryBytes: info.MemTotalBytes, GFLOPS: id.GFLOPS, ClientVersion: Version})
	cancel()
	if errors.Is(err, apiclient.ErrUnauthorized) {
		return fmt.Errorf("%w: the server no longer knows this host; attach again", err)
	} else if err != nil {
		log.Warn("could not refresh the host's description", "err", err) // the loop retries the server anyway
	}
	adv, err := wu.AdversaryFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	if adv != wu.AdversaryNone {
		log.Warn("test hook: this volunteer corrupts every delta it uploads", "adversary", string(adv))
	}
	var own ownThreads
	cfg := agent.Config{
		Dir: dir, API: api, Identity: id, Prefs: store, Logger: log, Version: Version, GFLOPS: id.GFLOPS,
		Trainer:    &wu.Trainer{CacheDir: dir.File(state.CacheDir), Log: log, Adversary: adv},
		Idle:       &idle.System{Cores: info.Cores, Own: own.get},
		MaxResults: *exitAfter, RetryBase: *retryBase,
	}
	var bar *bar
	if interactive {
		bar = newBar(env)
		defer bar.close()
	}
	cfg.OnProgress = func(w localapi.WorkUnit) {
		if w.Phase == localapi.PhaseTraining {
			own.set(float64(store.Get().MaxThreads))
		} else {
			own.set(0)
		}
		if bar != nil {
			bar.show(w)
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	ls, err := localserver.Start(dir, a, store)
	if err != nil {
		return err
	}
	defer ls.Close()
	log.Info("volunteer-client running", "server", id.Server, "host", id.HostID, "state_dir", dir.Path, "local_api", ls.Addr,
		"threads", store.Get().MaxThreads, "cpu_limit", store.Get().CPULimitPercent)
	err = a.Run(ctx)
	if errors.Is(err, apiclient.ErrUnauthorized) {
		return fmt.Errorf("%w: the server no longer knows this host; attach again", err)
	}
	if err != nil {
		return err
	}
	log.Info("volunteer-client stopped")
	return nil
}

// ownThreads is how many threads the client keeps busy, for the idle detector.
type ownThreads struct {
	mu sync.Mutex
	n  float64
}

func (o *ownThreads) set(n float64) { o.mu.Lock(); o.n = n; o.mu.Unlock() }
func (o *ownThreads) get() float64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// bar is the terminal progress bar of the current work unit.
type bar struct {
	env *Env
	mu  sync.Mutex
	id  int64
	pb  *progressbar.ProgressBar
}

func newBar(env *Env) *bar { return &bar{env: env} }

func (b *bar) show(w localapi.WorkUnit) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pb == nil || b.id != w.ID {
		if b.pb != nil {
			b.pb.Finish()
			fmt.Fprintln(b.env.Stderr)
		}
		b.id = w.ID
		b.pb = progressbar.NewOptions(1000,
			progressbar.OptionSetWriter(b.env.Stderr),
			progressbar.OptionSetWidth(30),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(200*time.Millisecond),
		)
	}
	desc := fmt.Sprintf("work unit %d (round %d) %s", w.ID, w.Round, w.Phase)
	if w.Phase == localapi.PhaseTraining {
		desc = fmt.Sprintf("work unit %d (round %d) epoch %d loss %.3f", w.ID, w.Round, w.Epoch+1, w.Loss)
	}
	b.pb.Describe(desc)
	b.pb.Set(int(w.Progress * 1000))
}

func (b *bar) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pb != nil {
		b.pb.Finish()
		fmt.Fprintln(b.env.Stderr)
	}
}
