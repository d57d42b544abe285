// Command volunteer-tray is the volunteer's tray icon for a running volunteer-client:
// it shows what the client does and offers pause, snooze, common preferences and the
// project page, talking only to the client's local API. Quitting it leaves the client
// working. `volunteer-tray --help` lists the flags.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/texgrid/texgrid/volunteer-client/internal/tray"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := tray.Main(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}
