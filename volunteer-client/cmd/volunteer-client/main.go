// Command volunteer-client lends a volunteer's machine to a texgrid project: it attaches
// the machine to a project server, then trains work units and uploads their results,
// within the volunteer's preferences. `volunteer-client help` lists the commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/texgrid/texgrid/volunteer-client/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], &cli.Env{Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}
