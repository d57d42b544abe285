// Package cli is the volunteer-client command line: attach, detach, run, status,
// pause, resume and prefs. main only sets up signals and calls Main.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// Version is the client's version, sent at registration and shown in status.
const Version = "0.1.0"

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, env *Env, args []string) error
}

var commands = map[string]command{
	"attach": {"register this machine with a project server", runAttach},
	"detach": {"unregister this machine and delete its token", runDetach},
	"run":    {"compute: fetch work, train, upload (until SIGINT/SIGTERM)", runRun},
	"status": {"show what a running client is doing", runStatus},
	"pause":  {"pause a running client after its current batch", runPause},
	"resume": {"resume a paused client", runResume},
	"prefs":  {"show or change a running client's preferences", runPrefs},
}

// Env is the process environment a command runs in.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

// errUsage marks a command-line mistake: exit status 2.
var errUsage = errors.New("usage")

// Main runs the command line and returns the exit status.
func Main(ctx context.Context, args []string, env *Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.Stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(env.Stderr, "volunteer-client: unknown command %q\n\n", args[0])
		usage(env.Stderr)
		return 2
	}
	if err := c.run(ctx, env, args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(env.Stderr, "volunteer-client %s: %v\n", args[0], err)
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprint(w, `volunteer-client lends this machine's CPU to a texgrid project: it trains small
pieces of a texture-classification network and uploads the results.

usage: volunteer-client <command> [flags]   (volunteer-client <command> -h for its flags)

Typical use:
  volunteer-client attach --server http://127.0.0.1:8080 --account-key KEY
  volunteer-client run
  volunteer-client status | pause | resume

Every command takes --state-dir (default $TEXGRID_STATE_DIR, else
~/.local/state/texgrid-volunteer); run several clients on one machine by giving each
its own state directory.

commands:
`)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-7s %s\n", n, commands[n].summary)
	}
}

// newFlags returns a flag set with --state-dir registered.
func newFlags(env *Env, name, synopsis string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	dir := fs.String("state-dir", defaultStateDir(env), "state directory (identity, token, checkpoints, image cache)")
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "usage: volunteer-client %s %s\n\nflags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs, dir
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

func defaultStateDir(env *Env) string { return localapi.DefaultStateDir(env.Getenv) }

func trimURL(u string) string { return strings.TrimRight(u, "/") }
