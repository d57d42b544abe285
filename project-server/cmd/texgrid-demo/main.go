// Command texgrid-demo runs a whole texgrid on 127.0.0.1 (a dataset-ftp server, a
// project server on SQLite, volunteer clients) through one training campaign, printing
// each round, and leaves the final model and its metrics behind. `make demo` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/texgrid/texgrid/project-server/internal/grid"
)

func main() {
	var o grid.DemoOptions
	exe, _ := os.Executable()
	flag.StringVar(&o.BinDir, "bin", filepath.Dir(exe), "folder with the texgrid binaries (make build)")
	flag.StringVar(&o.WorkDir, "work", "demo-run", "folder for everything the demo writes (wiped first)")
	flag.StringVar(&o.Data, "data", "", "a <class>/<image> dataset folder (default: generate synthetic textures)")
	flag.StringVar(&o.Model, "model", "tcnn-small", "model spec name")
	flag.IntVar(&o.Size, "size", 128, "fragment side in pixels")
	flag.IntVar(&o.Volunteers, "volunteers", 4, "volunteer processes (and work units a round)")
	flag.IntVar(&o.Rounds, "rounds", 8, "rounds")
	flag.Float64Var(&o.Quorum, "quorum", 0.75, "share of a round's results that closes it")
	flag.IntVar(&o.Epochs, "epochs", 1, "epochs per work unit")
	flag.Float64Var(&o.LR, "lr", 0.01, "learning rate of the first round")
	flag.Float64Var(&o.LRDecay, "lr-decay", 0.85, "learning-rate factor per round (1: constant)")
	flag.IntVar(&o.FragMin, "fragments-min", 4500, "fewest fragments per work unit")
	flag.IntVar(&o.FragMax, "fragments-max", 6000, "most fragments per work unit")
	flag.StringVar(&o.Upload, "upload", "", "scripted upload: lftp, curl or dataset-ftp (default lftp when installed)")
	flag.DurationVar(&o.KeepServing, "keep-serving", 0, "keep the grid and its web UI up this long after the campaign (e.g. 30m; Ctrl-C stops sooner)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := grid.RunDemo(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "texgrid-demo: %v\n", err)
		os.Exit(1)
	}
}
