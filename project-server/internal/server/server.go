// Package server assembles the project server from its parts (database, blob store,
// scheduler, evaluator, HTTP API under /api/v1, web pages elsewhere) and runs it until its context ends. Tests and the
// project-server command both start it through Open and Serve.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/texgrid/texgrid/project-server/internal/api"
	"github.com/texgrid/texgrid/project-server/internal/blob"
	"github.com/texgrid/texgrid/project-server/internal/datasets"
	"github.com/texgrid/texgrid/project-server/internal/eval"
	"github.com/texgrid/texgrid/project-server/internal/scheduler"
	"github.com/texgrid/texgrid/project-server/internal/store"
	"github.com/texgrid/texgrid/project-server/internal/webui"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// Config is the server's configuration: defaults, then a JSON file, then flags.
type Config struct {
	Addr      string `json:"addr"`       // listen address, default 127.0.0.1:8480
	DataDir   string `json:"data_dir"`   // blobs and the SQLite file, default ./project-data
	DB        string `json:"db"`         // SQLite path or postgres DSN, default <data_dir>/texgrid.db
	ModelsDir string `json:"models_dir"` // extra model specs <name>.json; the shipped ones are always there
	// DatasetDir reads datasets from a local dataset-ftp root instead of over FTP.
	DatasetDir  string `json:"dataset_dir,omitempty"`
	FTPAddr     string `json:"ftp_addr"`     // dataset-ftp server, host:port
	FTPUser     string `json:"ftp_user"`     // read-only account
	FTPPassword string `json:"ftp_password"` // its password
	// PublicFTPAddr is the address volunteers are told; default FTPAddr.
	PublicFTPAddr string `json:"public_ftp_addr,omitempty"`
	// TickInterval is how often deadlines are checked, default 5s.
	TickInterval Duration `json:"tick_interval,omitempty"`
	// RetryAfter is what hosts without work are told to wait, default 30s.
	RetryAfter Duration `json:"retry_after,omitempty"`
	// EvalThreads bounds the evaluator's threads, default 1.
	EvalThreads int `json:"eval_threads,omitempty"`

	// Set by tests and embedders, not by files.
	Now      func() time.Time   `json:"-"`
	Log      *slog.Logger       `json:"-"`
	Init     scheduler.InitFunc `json:"-"`
	Datasets datasets.Source    `json:"-"`
	Engine   eval.Engine        `json:"-"`
}

// Duration is a time.Duration read from JSON as "30s".
type Duration = protocol.Duration

// Defaults fills zero fields.
func (c *Config) Defaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8480"
	}
	if c.DataDir == "" {
		c.DataDir = "project-data"
	}
	if c.DB == "" {
		c.DB = filepath.Join(c.DataDir, "texgrid.db")
	}
	if c.PublicFTPAddr == "" {
		c.PublicFTPAddr = c.FTPAddr
	}
	if c.TickInterval == 0 {
		c.TickInterval = Duration(5 * time.Second)
	}
	if c.EvalThreads <= 0 {
		c.EvalThreads = 1
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// Server is an opened project server.
type Server struct {
	cfg     Config
	DB      *store.DB
	Blobs   *blob.Store
	Sched   *scheduler.Scheduler
	Metrics *api.Metrics
	Eval    *eval.Runner
	handler http.Handler
	pages   *webui.Handler
	lock    *os.File
}

// ErrDataDirInUse means another server holds the data directory.
var ErrDataDirInUse = errors.New("data directory in use")

// Open opens the database (migrating it), the blob store and the scheduler, and
// recovers from whatever state a crash left.
func Open(ctx context.Context, cfg Config) (*Server, error) {
	cfg.Defaults()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	blobs, err := blob.Open(cfg.DataDir)
	if err != nil {
		lock.Close()
		return nil, err
	}
	db, err := store.Open(ctx, cfg.DB)
	if err != nil {
		lock.Close()
		return nil, err
	}
	src := cfg.Datasets
	if src == nil {
		switch {
		case cfg.DatasetDir != "":
			src = datasets.Dir{Root: cfg.DatasetDir}
		case cfg.FTPAddr != "":
			src = &datasets.FTP{Addr: cfg.FTPAddr, User: cfg.FTPUser, Password: cfg.FTPPassword, CacheDir: filepath.Join(cfg.DataDir, "ftpcache")}
		}
	}
	srv := &Server{cfg: cfg, DB: db, Blobs: blobs, Metrics: api.NewMetrics(db), lock: lock}
	srv.Eval = eval.NewRunner(db, blobs, src, cfg.Engine, cfg.EvalThreads, cfg.Log)
	srv.Sched = scheduler.New(db, blobs, scheduler.Config{
		ModelsDir: cfg.ModelsDir, Datasets: src, Init: cfg.Init, Now: cfg.Now, Log: cfg.Log,
		RetryAfter: time.Duration(cfg.RetryAfter), Counters: srv.Metrics,
		FTP:           protocol.DatasetRef{FTPAddr: cfg.PublicFTPAddr, FTPUser: cfg.FTPUser, FTPPassword: cfg.FTPPassword},
		OnRoundClosed: srv.Eval.Enqueue,
	})
	if err := srv.Sched.Recover(ctx); err != nil {
		srv.Close()
		return nil, err
	}
	apiHandler := api.New(srv.Sched, srv.Metrics, cfg.Log, api.WithDatasets(src))
	pages, err := webui.New(webui.Config{Sched: srv.Sched, Datasets: src, Engine: cfg.Engine, Log: cfg.Log})
	if err != nil {
		srv.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(protocol.APIPrefix+"/", apiHandler)
	mux.Handle("/metrics", apiHandler)
	mux.Handle("/", pages)
	srv.handler, srv.pages = mux, pages
	return srv, nil
}

// Handler returns the HTTP handler (for httptest servers).
func (s *Server) Handler() http.Handler { return s.handler }

// Config returns the effective configuration.
func (s *Server) Config() Config { return s.cfg }

// Background runs the deadline ticker and the evaluator until ctx ends; it returns when
// both have stopped.
func (s *Server) Background(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.Sched.Run(ctx, time.Duration(s.cfg.TickInterval)) }()
	go func() { defer wg.Done(); s.Eval.Run(ctx) }()
	wg.Wait()
}

// Serve answers HTTP on ln and runs the background work until ctx ends, then shuts
// down gracefully and closes the database.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s.handler, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	hs.RegisterOnShutdown(s.pages.Shutdown)
	bg, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.Background(bg) }()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.cfg.Log.Info("project server listening", "addr", ln.Addr().String(), "db", redactDSN(s.cfg.DB), "data_dir", s.cfg.DataDir)
	var err error
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = hs.Shutdown(sctx)
		cancel()
	case err = <-errc:
	}
	stop()
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close releases the database and the data directory lock. Serve calls it on return.
func (s *Server) Close() error {
	err := s.DB.Close()
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
	return err
}

func redactDSN(dsn string) string {
	if store.IsPostgres(dsn) {
		return "postgres"
	}
	return dsn
}
