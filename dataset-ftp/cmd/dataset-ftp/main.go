// Command dataset-ftp is texgrid's dataset store: an FTP(S) server that indexes uploaded
// <dataset>/<class>/<image> trees into manifest.json, plus the index, passwd and upload
// tools. See dataset-ftp/README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/texgrid/texgrid/dataset-ftp/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
