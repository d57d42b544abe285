// Package server is dataset-ftp's FTP(S) server: goftp.io/server/v2 over a root folder
// of <dataset>/<class>/<image> trees, with bcrypt accounts (uploaders write the datasets
// they are granted, readers and anonymous only read), refusal of every path that leaves
// the root, upload size and quota limits, partial uploads kept out of sight until they
// complete, and indexing of a dataset into manifest.json once uploads to it settle.
//
// Hidden names (starting with ".") belong to the server: .quarantine, partial uploads
// ".<name>.part" and the state folder .dataset-ftp. Readers never see or fetch them;
// uploaders see .quarantine and partial files of the datasets they may write (to check
// what was rejected) but can never create a hidden name.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	ftpserver "goftp.io/server/v2"

	"github.com/texgrid/texgrid/dataset-ftp/internal/index"
	"github.com/texgrid/texgrid/dataset-ftp/manifest"
)

// Options are the hooks a caller (the command, tests) may set.
type Options struct {
	// Log receives refusals, logins, uploads and indexing results; nil discards them.
	Log *slog.Logger
	// OnIndexed is called after each automatic indexing of a dataset.
	OnIndexed func(dataset string, m *manifest.Manifest, err error)
	// OnServing is called once Serve has finished its start-up scan and serves
	// sessions: from then on, files written into the root are not scanned again.
	OnServing func()
}

// Server is one dataset-ftp instance. Create it with New and run it with Serve.
type Server struct {
	cfg       Config
	opt       Options
	rootDir   string // absolute, symlinks resolved
	root      *os.Root
	log       *slog.Logger
	accounts  map[string]*Account
	auth      *authenticator
	ledger    *ledger
	sched     *index.Scheduler
	tlsConfig *tls.Config
	ftp       *ftpserver.Server

	mu        sync.Mutex
	conns     map[string]*ctrlConn // by remote address
	uploading map[string]bool      // target paths with an upload in progress
	addr      net.Addr
	metrics   *metrics
	mAddr     net.Addr // where /metrics is served; nil when not
}

// New checks the configuration and prepares the server; nothing listens yet.
func New(cfg Config, opt Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(cfg.Root)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return nil, fmt.Errorf("root %s: %w", cfg.Root, err)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	s := &Server{cfg: cfg, opt: opt, rootDir: abs, root: root, log: log,
		accounts: map[string]*Account{}, conns: map[string]*ctrlConn{}, uploading: map[string]bool{}, metrics: newMetrics()}
	for i := range cfg.Accounts {
		a := cfg.Accounts[i]
		s.accounts[a.Name] = &a
	}
	s.ledger, err = openLedger(root)
	if err != nil {
		root.Close()
		return nil, err
	}
	s.sched = index.NewScheduler(time.Duration(cfg.IndexDelay), s.indexDataset)
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("tls certificate: %w", err)
		}
		s.tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"ftp"}}
	}
	return s, nil
}

func (s *Server) close() {
	if s.ledger != nil {
		s.ledger.Close()
	}
	s.root.Close()
}

// account returns the account of a logged-in user; anonymous is a reader.
func (s *Server) account(user string) *Account {
	if a := s.accounts[user]; a != nil {
		return a
	}
	if s.cfg.Anonymous && isAnonymous(user) {
		return &Account{Name: AnonymousUser, Role: RoleReader}
	}
	return nil
}

// Addr is the control address once Serve has started (nil before).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// ListenAndServe listens on cfg.Listen and serves until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve accepts FTP connections on ln until ctx ends, then stops listening, runs any
// pending indexing and returns nil. Connected sessions are closed.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	defer s.close()
	s.auth = &authenticator{accounts: s.accounts, anonymous: s.cfg.Anonymous, backoff: newBackoff(),
		log: s.log, sleep: sleepCtx, ctx: ctx, metrics: s.metrics}
	opts := &ftpserver.Options{
		Driver:         driver{s},
		Auth:           s.auth,
		Perm:           ftpserver.NewSimplePerm("texgrid", "texgrid"),
		Name:           "texgrid dataset-ftp",
		WelcomeMessage: "texgrid dataset-ftp ready",
		PublicIP:       s.cfg.PublicIP,
		PassivePorts:   s.cfg.PassivePorts,
		Logger:         goftpLogger{s.log},
		Commands:       s.commands(),
		Port:           -1,
	}
	if s.tlsConfig != nil {
		opts.TLS, opts.ExplicitFTPS, opts.TLSConfig, opts.ForceTLS = true, true, s.tlsConfig, s.cfg.TLSRequired
	}
	srv, err := ftpserver.NewServer(opts)
	if err != nil {
		ln.Close()
		return fmt.Errorf("ftp server: %w", err)
	}
	if s.tlsConfig != nil {
		// goftp installs its TLS configuration only inside ListenAndServe; with the
		// invalid port -1 that call sets it up and fails at once without listening, and
		// Serve below then uses our own listener.
		if err := srv.ListenAndServe(); err == nil {
			return errors.New("ftp server: unexpected listen on port -1")
		}
	}
	s.mu.Lock()
	s.ftp, s.addr = srv, ln.Addr()
	s.mu.Unlock()

	if s.cfg.MetricsListen != "" {
		mctx, stopMetrics := context.WithCancel(ctx)
		metricsDone, err := s.serveMetrics(mctx, s.cfg.MetricsListen)
		if err != nil {
			stopMetrics()
			ln.Close()
			return err
		}
		defer func() {
			stopMetrics()
			<-metricsDone
		}()
	}
	s.startupScan()
	schedCtx, stopSched := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSched()
	schedDone := make(chan struct{})
	go func() {
		defer close(schedDone)
		s.sched.Run(schedCtx)
	}()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(&listener{Listener: ln, s: s}) }()
	s.log.Info("serving", "addr", ln.Addr().String(), "root", s.rootDir, "tls", s.tlsConfig != nil, "tls_required", s.cfg.TLSRequired)
	if s.opt.OnServing != nil {
		s.opt.OnServing()
	}

	// goftp's Shutdown races with its Serve (both touch the listener and context
	// unsynchronized), so the server is stopped by closing our own listener instead:
	// Accept fails and Serve returns.
	var runErr error
	select {
	case <-ctx.Done():
		ln.Close()
		<-serveErr
	case runErr = <-serveErr:
		ln.Close()
	}
	s.mu.Lock()
	open := make([]*ctrlConn, 0, len(s.conns))
	for _, c := range s.conns {
		open = append(open, c)
	}
	s.mu.Unlock()
	for _, c := range open {
		c.Close() // ends the session's goroutine
	}
	stopSched()
	<-schedDone
	s.sched.Flush(context.WithoutCancel(ctx))
	s.log.Info("stopped", "addr", ln.Addr().String())
	if runErr != nil {
		return fmt.Errorf("serve: %w", runErr)
	}
	return nil
}

// startupScan queues the datasets on disk that have no manifest yet (copied in by
// hand, or written while the server was down before indexing) and removes partial
// uploads older than PartialMaxAge, which nobody is going to resume.
func (s *Server) startupScan() {
	ents, err := readDir(s.root, ".")
	if err != nil {
		s.log.Error("startup scan", "err", err)
		return
	}
	cutoff := time.Now().Add(-time.Duration(s.cfg.PartialMaxAge))
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		ds := e.Name()
		if _, err := s.root.Lstat(ds + "/" + manifest.FileName); errors.Is(err, os.ErrNotExist) {
			s.sched.Touch(ds)
		}
		if s.cfg.PartialMaxAge <= 0 {
			continue
		}
		classes, _ := readDir(s.root, ds)
		for _, c := range classes {
			if !c.IsDir() || strings.HasPrefix(c.Name(), ".") {
				continue
			}
			files, _ := readDir(s.root, ds+"/"+c.Name())
			for _, f := range files {
				name := f.Name()
				if !strings.HasPrefix(name, partPrefix) || !strings.HasSuffix(name, partSuffix) || !f.Type().IsRegular() {
					continue
				}
				if info, err := f.Info(); err == nil && info.ModTime().Before(cutoff) {
					rel := ds + "/" + c.Name() + "/" + name
					if err := s.root.Remove(rel); err == nil {
						s.log.Info("removed stale partial upload", "path", "/"+rel, "bytes", info.Size(), "modified", info.ModTime())
					}
				}
			}
		}
	}
}

func readDir(root *os.Root, name string) ([]os.DirEntry, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ReadDir(-1)
}

// changed tells the scheduler that a dataset was written.
func (s *Server) changed(dataset string) {
	if dataset != "" {
		s.sched.Touch(dataset)
	}
}

func (s *Server) indexDataset(ctx context.Context, dataset string) {
	start := time.Now()
	m, err := index.Dataset(ctx, s.rootDir, dataset, index.Options{
		TestFraction: s.cfg.TestFraction, MaxImageBytes: s.cfg.MaxImageBytes, Log: s.log})
	if err != nil {
		s.metrics.indexRuns.WithLabelValues("error").Inc()
		s.log.Error("index", "dataset", dataset, "err", err)
	} else {
		s.metrics.indexRuns.WithLabelValues("ok").Inc()
		s.metrics.images.WithLabelValues(dataset).Set(float64(len(m.Images)))
		s.metrics.quarantined.WithLabelValues(dataset).Set(float64(len(m.Quarantined)))
		s.log.Info("indexed", "dataset", dataset, "images", len(m.Images), "quarantined", len(m.Quarantined),
			"version", m.Version, "took", time.Since(start).Round(time.Millisecond))
		s.followQuarantine(dataset, m)
	}
	if s.opt.OnIndexed != nil {
		s.opt.OnIndexed(dataset, m, err)
	}
}

// followQuarantine moves the quota ledger's entries of files the indexer just moved
// into the quarantine, so an uploader who deletes them there gets the bytes back. An
// entry moves only if nothing is left at the uploaded path and the sizes agree (an
// older quarantined file whose path was uploaded again keeps the new upload's entry).
func (s *Server) followQuarantine(dataset string, m *manifest.Manifest) {
	for _, q := range m.Quarantined {
		from := dataset + "/" + q.Path
		if _, err := s.root.Lstat(from); err == nil {
			continue
		}
		if s.ledger.Size(from) != q.Size {
			continue
		}
		if err := s.ledger.Rename(from, dataset+"/"+q.Stored); err != nil {
			s.log.Error("usage ledger", "err", err)
		}
	}
}

// peerGone reports whether the client closed its control connection, which is how a
// killed client's unfinished upload (its data connection closed cleanly by the kernel)
// is told apart from a finished one.
func (s *Server) peerGone(sess *ftpserver.Session) bool {
	s.mu.Lock()
	c := s.conns[sess.RemoteAddr().String()]
	s.mu.Unlock()
	return c != nil && c.closedByPeer(5*time.Millisecond)
}

// listener wraps accepted connections in ctrlConn.
type listener struct {
	net.Listener
	s *Server
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &ctrlConn{Conn: c, idle: time.Duration(l.s.cfg.IdleTimeout), s: l.s}
	l.s.metrics.sessions.Inc()
	l.s.metrics.active.Inc()
	l.s.mu.Lock()
	l.s.conns[c.RemoteAddr().String()] = cc
	l.s.mu.Unlock()
	return cc, nil
}

// ctrlConn is a control connection: reads time out after the idle timeout, and the
// server can check whether the peer has closed it without losing bytes.
type ctrlConn struct {
	net.Conn
	idle    time.Duration
	s       *Server
	pending []byte
	once    sync.Once
}

func (c *ctrlConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.idle > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	}
	return c.Conn.Read(p)
}

// closedByPeer tells whether the peer closed the connection: a non-blocking peek where
// the platform allows, else a read of up to wait whose bytes are kept for the next Read. Only the session's own goroutine calls it, between commands'
// reads, so it never races with Read.
func (c *ctrlConn) closedByPeer(wait time.Duration) bool {
	if len(c.pending) > 0 {
		return false
	}
	if closed, ok := peerClosed(c.Conn); ok {
		return closed
	}
	c.Conn.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4096)
	n, err := c.Conn.Read(buf)
	c.pending = append(c.pending, buf[:n]...)
	c.Conn.SetReadDeadline(time.Time{})
	if n > 0 || err == nil {
		return false
	}
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func (c *ctrlConn) Close() error {
	c.once.Do(func() {
		c.s.metrics.active.Dec()
		c.s.mu.Lock()
		if c.s.conns[c.RemoteAddr().String()] == c {
			delete(c.s.conns, c.RemoteAddr().String())
		}
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

// goftpLogger sends goftp's session log to slog at debug level, never passwords.
type goftpLogger struct{ log *slog.Logger }

func (l goftpLogger) Print(id string, msg interface{}) {
	l.log.Debug(fmt.Sprint(msg), "session", id)
}
func (l goftpLogger) Printf(id string, format string, v ...interface{}) {
	l.log.Debug(fmt.Sprintf(format, v...), "session", id)
}
func (l goftpLogger) PrintCommand(id string, cmd string, param string) {
	if cmd == "PASS" {
		param = "****"
	}
	l.log.Debug("command", "session", id, "cmd", cmd, "param", param)
}
func (l goftpLogger) PrintResponse(id string, code int, msg string) {
	l.log.Debug("reply", "session", id, "code", code, "msg", msg)
}
