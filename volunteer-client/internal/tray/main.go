package tray

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// Main is the volunteer-tray command: flags, then Run. It returns the exit code.
func Main(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("volunteer-tray", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("state-dir", localapi.DefaultStateDir(os.Getenv), "state directory of the volunteer-client to follow")
	project := fs.String("project-url", "", "project page to open (default: the server the client is attached to)")
	unit := fs.String("unit", UnitName, `systemd user unit of the daemon, for "Start daemon" and "Stop daemon" ("" hides them)`)
	snooze := fs.Duration("snooze", time.Hour, "how long \""+LabelSnooze+"\" pauses")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `usage: volunteer-tray [flags]

The tray icon of a running volunteer-client. It talks only to the client's local API
(the address and token files in the client's state directory), shows whether the
machine computes, is paused, waits for a preference, has no work or cannot reach the
daemon or the project server, with the current work unit's campaign, round, epoch,
progress and time left in the tooltip. The menu pauses and resumes, snoozes for an
hour, sets the CPU share and idle-only preference, opens the project page, shows the
credit and results the server keeps for this host, and starts or stops the daemon
where it runs as the systemd user service %s. Quitting the tray leaves the daemon
working.

flags:
`, UnitName)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "volunteer-tray: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "volunteer-tray: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return 2
	}
	if *snooze < time.Second || *snooze > localapi.MaxSnooze {
		fmt.Fprintf(stderr, "volunteer-tray: --snooze %s: want 1s..%s\n", *snooze, localapi.MaxSnooze)
		return 2
	}
	cfg := Config{
		StateDir: *dir, ProjectURL: *project, Snooze: *snooze,
		Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
	}
	if *unit != "" {
		cfg.Service = NewService("", *unit)
	}
	if err := Run(ctx, cfg); err != nil {
		fmt.Fprintf(stderr, "volunteer-tray: %v\n", err)
		return 1
	}
	return 0
}
