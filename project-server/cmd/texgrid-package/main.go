// Command texgrid-package builds texgrid's Debian packages (texgrid-volunteer and
// texgrid-server) into a folder; `make package` runs it from the module root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/texgrid/texgrid/project-server/internal/debpkg"
)

func main() {
	var o debpkg.Options
	flag.StringVar(&o.Root, "root", ".", "module root (go.mod, configs/packaging)")
	flag.StringVar(&o.Out, "out", "dist", "folder for the .deb files")
	flag.StringVar(&o.Version, "version", "0.1.0", "upstream version; the Debian revision is 1")
	flag.StringVar(&o.Arch, "arch", "", "Debian architecture, amd64 or arm64 (default: this machine's)")
	flag.StringVar(&o.Tags, "tags", "", `build tags of the cgo binaries ("openblas" links OpenBLAS and depends on libopenblas0)`)
	flag.Parse()
	o.Log = os.Stdout
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	_, err := debpkg.Build(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
