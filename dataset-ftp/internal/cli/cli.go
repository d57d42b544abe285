// Package cli implements the dataset-ftp command: serve, index, passwd and upload. It
// holds the flag parsing so that cmd/dataset-ftp stays a thin main.
package cli

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/texgrid/texgrid/dataset-ftp/internal/index"
	"github.com/texgrid/texgrid/dataset-ftp/internal/server"
	"github.com/texgrid/texgrid/dataset-ftp/internal/upload"
)

const usage = `usage: dataset-ftp <command> [flags]

commands:
  serve   --config FILE [flags]   run the FTP(S) server (flags override the file)
  index   --root DIR [DATASET...] write <dataset>/manifest.json (all datasets if none named)
  passwd  [--cost N]              read a password on stdin, print its bcrypt hash for the config
  upload  --addr HOST:PORT --user U DIR
                                  upload a <dataset>/<class>/<image> folder, resuming

Run "dataset-ftp <command> -h" for a command's flags.
`

// Run executes the command line args (without the program name) and returns the exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], stderr)
	case "index":
		err = runIndex(ctx, args[1:], stdout, stderr)
	case "passwd":
		err = passwd(args[1:], stdin, stdout, stderr)
	case "upload":
		err = runUpload(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "dataset-ftp: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "dataset-ftp %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// newLogger writes text to w, at debug level when verbose.
func newLogger(w io.Writer, verbose bool) *slog.Logger {
	l, _ := formatLogger(w, verbose, "text") // "text" is always known
	return l
}

// formatLogger writes format ("text" or "json") to w, at debug level when verbose.
func formatLogger(w io.Writer, verbose bool, format string) (*slog.Logger, error) {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "JSON config file (see configs/dataset-ftp.example.json)")
	root := fs.String("root", "", "dataset root folder")
	listen := fs.String("listen", "", "control address, e.g. 0.0.0.0:2121")
	pasv := fs.String("passive-ports", "", "passive port range min-max")
	publicIP := fs.String("public-ip", "", "IPv4 address announced in PASV replies")
	cert := fs.String("cert", "", "TLS certificate (PEM) for explicit FTPS")
	key := fs.String("key", "", "TLS private key (PEM)")
	tlsRequired := fs.Bool("tls-required", false, "refuse every command before AUTH TLS")
	anonymous := fs.Bool("anonymous", false, "allow anonymous read-only logins")
	verbose := fs.Bool("v", false, "log every FTP command and reply")
	logFormat := fs.String("log-format", "text", `log format on stderr: "text" or "json"`)
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus GET /metrics over HTTP here, e.g. 127.0.0.1:9121 (default: off)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := server.Defaults()
	if *configPath != "" {
		var err error
		if cfg, err = server.LoadConfig(*configPath); err != nil {
			return err
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "root":
			cfg.Root = *root
		case "listen":
			cfg.Listen = *listen
		case "passive-ports":
			cfg.PassivePorts = *pasv
		case "public-ip":
			cfg.PublicIP = *publicIP
		case "cert":
			cfg.CertFile = *cert
		case "key":
			cfg.KeyFile = *key
		case "tls-required":
			cfg.TLSRequired = *tlsRequired
		case "anonymous":
			cfg.Anonymous = *anonymous
		case "metrics-listen":
			cfg.MetricsListen = *metricsListen
		}
	})
	log, err := formatLogger(stderr, *verbose, *logFormat)
	if err != nil {
		return err
	}
	srv, err := server.New(cfg, server.Options{Log: log})
	if err != nil {
		return err
	}
	return srv.ListenAndServe(ctx)
}

func runIndex(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	def := server.Defaults()
	fs := flag.NewFlagSet("index", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "", "dataset root folder")
	tf := fs.Float64("test-fraction", def.TestFraction, "share of images in the test split")
	maxBytes := fs.Int64("max-image-bytes", def.MaxImageBytes, "quarantine larger files (0: no limit)")
	fast := fs.Bool("fast", false, "reuse hashes of files unchanged since the previous manifest")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *root == "" {
		return errors.New("--root is required")
	}
	names := fs.Args()
	if len(names) == 0 {
		ents, err := os.ReadDir(*root)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				names = append(names, e.Name())
			}
		}
	}
	log := newLogger(stderr, false)
	for _, name := range names {
		start := time.Now()
		m, err := index.Dataset(ctx, *root, name, index.Options{TestFraction: *tf, MaxImageBytes: *maxBytes, Rehash: !*fast, Log: log})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %d images in %d classes, %d quarantined, version %s (%s)\n", name, len(m.Images),
			len(m.Classes), len(m.Quarantined), m.Version, time.Since(start).Round(time.Millisecond))
		for _, q := range m.Quarantined {
			fmt.Fprintf(stdout, "  quarantined %s: %s\n", q.Path, q.Reason)
		}
	}
	return nil
}

func passwd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cost := fs.Int("cost", bcrypt.DefaultCost, "bcrypt cost")
	if err := fs.Parse(args); err != nil {
		return err
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return fmt.Errorf("read password from stdin: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return errors.New("empty password")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), *cost)
	if err != nil {
		return fmt.Errorf("hash: %w", err)
	}
	fmt.Fprintln(stdout, string(h))
	return nil
}

func runUpload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("upload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:2121", "server host:port")
	user := fs.String("user", "", "uploader account")
	password := fs.String("password", "", "password (default: $DATASET_FTP_PASSWORD)")
	useTLS := fs.Bool("tls", false, "explicit FTPS (AUTH TLS)")
	caFile := fs.String("ca", "", "PEM certificate(s) to trust for --tls (default: the system roots)")
	insecure := fs.Bool("tls-insecure", false, "do not verify the server certificate (testing only)")
	dataset := fs.String("dataset", "", "remote dataset name (default: the folder's name)")
	quiet := fs.Bool("q", false, "no progress bar")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *user == "" {
		return errors.New("want --user and exactly one folder")
	}
	pw := *password
	if pw == "" {
		pw = os.Getenv("DATASET_FTP_PASSWORD")
	}
	opt := upload.Options{Addr: *addr, User: *user, Password: pw, Dataset: *dataset, Log: newLogger(stderr, false)}
	if !*quiet {
		opt.Progress = stderr
	}
	if *useTLS {
		tc, err := clientTLS(*addr, *caFile, *insecure)
		if err != nil {
			return err
		}
		opt.TLS = tc
	}
	res, err := upload.Tree(ctx, filepath.Clean(fs.Arg(0)), opt)
	fmt.Fprintf(stdout, "sent %d files, resumed %d, skipped %d complete, %d bytes\n", res.Files, res.Resumed, res.Skipped, res.Bytes)
	return err
}

func clientTLS(addr, caFile string, insecure bool) (*tls.Config, error) {
	host := addr
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		host = strings.Trim(addr[:i], "[]")
	}
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s: no PEM certificate", caFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}
