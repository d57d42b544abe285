// Package ftpstore is the client side of dataset-ftp, used by volunteers and the
// project server: it reads a dataset's manifest and fetches the images a work unit
// names into a local content-addressed cache (CacheDir/<sha256[:2]>/<sha256>), checking
// every file's size and sha256. Downloads resume after a dropped connection (REST),
// retry with exponential backoff and jitter, and reuse one control connection. The
// cache is bounded and evicts the least recently used files, never the pinned ones.
package ftpstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/textproto"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jlaffaye/ftp"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
)

// Errors callers act on.
var (
	// ErrNotFound: the server has no such dataset, manifest or file (FTP 550).
	ErrNotFound = errors.New("not found on the dataset server")
	// ErrLogin: the server refused the account (FTP 530).
	ErrLogin = errors.New("login refused by the dataset server")
	// ErrVerify: a file kept arriving with the wrong size or sha256.
	ErrVerify = errors.New("downloaded file does not match the manifest")
	// ErrVersion: the manifest on the server is not the version the work unit cites.
	ErrVersion = errors.New("manifest version differs")
	// ErrCacheFull: the images asked for do not fit in MaxCacheBytes at all.
	ErrCacheFull = errors.New("images exceed the cache size limit")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
)

// Config configures a Store. Addr, User, Password and CacheDir are required.
type Config struct {
	Addr     string // host:port of dataset-ftp
	User     string
	Password string
	// TLS, when set, makes the connection explicit FTPS (AUTH TLS) with this
	// configuration; ServerName should match the server's certificate.
	TLS           *tls.Config
	CacheDir      string
	MaxCacheBytes int64         // 0 = unbounded
	Retries       int           // extra attempts per file or manifest after a failure; default 4
	BackoffBase   time.Duration // first retry delay; default 200ms, doubled per attempt
	BackoffMax    time.Duration // default 10s
	Timeout       time.Duration // dial and idle-read timeout; default 30s
	Log           *slog.Logger
	// DialFunc, if set, opens the control and data connections (a proxy, a test that
	// cuts connections). Plain FTP only: the FTP client does not put TLS on data
	// connections it did not dial itself, so Open refuses DialFunc together with TLS.
	DialFunc func(network, address string) (net.Conn, error)
}

func (c *Config) defaults() {
	if c.Retries <= 0 {
		c.Retries = 4
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = 200 * time.Millisecond
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 10 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Stats are the store's counters since Open.
type Stats struct {
	BytesDownloaded int64 // image and manifest bytes received over FTP
	FilesFetched    int64 // images downloaded and verified
	CacheHits       int64 // images found in the cache and verified
	VerifyFailures  int64 // downloaded or cached files that failed verification
	Retries         int64 // attempts repeated after an error
	Reconnects      int64 // control connections opened after the first
	Evictions       int64 // files removed to stay under MaxCacheBytes
}

// Store is a dataset-ftp client with a verified local cache. Its methods are safe for
// concurrent use; FTP transfers are serialized over one control connection.
type Store struct {
	cfg Config

	connMu  sync.Mutex // guards conn and serializes FTP commands
	conn    *ftp.ServerConn
	dials   int
	lastUse time.Time

	mu      sync.Mutex // guards the cache index
	entries map[string]*entry
	lru     lruList
	total   int64
	pins    map[string]int
	closed  bool
	busy    map[string]*shaLock // one fetch per sha256 at a time

	bytes, fetched, hits, verifyFails, retries, reconnects, evictions atomic.Int64
}

type entry struct {
	sha        string
	size       int64
	prev, next *entry
}

// Open prepares the cache (indexing files already in it) and logs in, so a wrong
// address or password is reported here.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.defaults()
	if cfg.Addr == "" || cfg.CacheDir == "" {
		return nil, errors.New("ftpstore: Addr and CacheDir are required")
	}
	if cfg.DialFunc != nil && cfg.TLS != nil {
		return nil, errors.New("ftpstore: DialFunc cannot be combined with TLS")
	}
	s := &Store{cfg: cfg, entries: map[string]*entry{}, pins: map[string]int{}, busy: map[string]*shaLock{}}
	if err := s.loadCache(); err != nil {
		return nil, err
	}
	s.connMu.Lock()
	_, err := s.connect(ctx)
	s.connMu.Unlock()
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Close logs out. The cache stays on disk for the next Open.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.conn != nil {
		err := s.conn.Quit()
		s.conn = nil
		return err
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (s *Store) Stats() Stats {
	return Stats{BytesDownloaded: s.bytes.Load(), FilesFetched: s.fetched.Load(), CacheHits: s.hits.Load(),
		VerifyFailures: s.verifyFails.Load(), Retries: s.retries.Load(), Reconnects: s.reconnects.Load(),
		Evictions: s.evictions.Load()}
}

// connect returns the live control connection, dialling and logging in if needed.
// The caller holds connMu.
func (s *Store) connect(ctx context.Context) (*ftp.ServerConn, error) {
	if s.conn != nil && time.Since(s.lastUse) > idleCheck {
		// The server closes idle control connections; check before relying on it.
		if err := s.conn.NoOp(); err != nil {
			s.drop()
		}
	}
	if s.conn != nil {
		s.lastUse = time.Now()
		return s.conn, nil
	}
	opts := []ftp.DialOption{ftp.DialWithContext(ctx), ftp.DialWithTimeout(s.cfg.Timeout), ftp.DialWithShutTimeout(s.cfg.Timeout)}
	if s.cfg.TLS != nil {
		opts = append(opts, ftp.DialWithExplicitTLS(s.cfg.TLS))
	}
	if s.cfg.DialFunc != nil {
		opts = append(opts, ftp.DialWithDialFunc(s.cfg.DialFunc))
	}
	c, err := ftp.Dial(s.cfg.Addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("ftpstore: dial %s: %w", s.cfg.Addr, err)
	}
	if err := c.Login(s.cfg.User, s.cfg.Password); err != nil {
		c.Quit()
		if code(err) == 530 {
			return nil, fmt.Errorf("ftpstore: %s as %q: %w", s.cfg.Addr, s.cfg.User, ErrLogin)
		}
		return nil, fmt.Errorf("ftpstore: login to %s: %w", s.cfg.Addr, err)
	}
	if s.dials > 0 {
		s.reconnects.Add(1)
	}
	s.dials++
	s.conn = c
	s.lastUse = time.Now()
	return c, nil
}

// idleCheck is how long the control connection may sit unused before a NOOP checks it.
const idleCheck = 30 * time.Second

// drop closes a control connection that failed, so the next command reconnects.
func (s *Store) drop() {
	if s.conn != nil {
		s.conn.Quit()
		s.conn = nil
	}
}

func code(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// permanent reports errors that retrying cannot fix.
func permanent(err error) bool {
	switch code(err) {
	case 530, 550, 553:
		return true
	}
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrLogin) || errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrClosed)
}

// backoff waits before attempt n (1-based): BackoffBase*2^(n-1) capped at BackoffMax,
// with the upper half jittered so clients that failed together spread out.
func (s *Store) backoff(ctx context.Context, n int) error {
	d := s.cfg.BackoffBase << min(n-1, 20)
	if d > s.cfg.BackoffMax || d <= 0 {
		d = s.cfg.BackoffMax
	}
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retry runs op until it succeeds, fails permanently or runs out of attempts.
func (s *Store) retry(ctx context.Context, what string, op func() error) error {
	var err error
	for attempt := 0; attempt <= s.cfg.Retries; attempt++ {
		if attempt > 0 {
			s.retries.Add(1)
			s.cfg.Log.Warn("ftpstore: retrying", "what", what, "attempt", attempt, "err", err)
			if berr := s.backoff(ctx, attempt); berr != nil {
				return fmt.Errorf("%s: %w (after %v)", what, berr, err)
			}
		}
		if err = op(); err == nil || permanent(err) {
			return err
		}
	}
	return fmt.Errorf("%s: giving up after %d attempts: %w", what, s.cfg.Retries+1, err)
}

func checkDataset(dataset string) error {
	if dataset == "" || strings.ContainsAny(dataset, "/\\\r\n\x00") || strings.HasPrefix(dataset, ".") {
		return fmt.Errorf("ftpstore: bad dataset name %q", dataset)
	}
	return nil
}

// FetchManifest downloads and validates <dataset>/manifest.json.
func (s *Store) FetchManifest(ctx context.Context, dataset string) (*manifest.Manifest, error) {
	if err := checkDataset(dataset); err != nil {
		return nil, err
	}
	var m *manifest.Manifest
	err := s.retry(ctx, "manifest "+dataset, func() error {
		b, err := s.retrAll(ctx, "/"+dataset+"/"+manifest.FileName, manifest.MaxBytes)
		if err != nil {
			return err
		}
		m, err = manifest.Parse(b)
		if err != nil {
			return fmt.Errorf("ftpstore: %w", err)
		}
		if m.Dataset != dataset {
			return fmt.Errorf("ftpstore: manifest of %q names dataset %q", dataset, m.Dataset)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// FetchManifestVersion is FetchManifest that also requires the version a work unit
// cites; a different version is ErrVersion (the dataset changed since).
func (s *Store) FetchManifestVersion(ctx context.Context, dataset, version string) (*manifest.Manifest, error) {
	m, err := s.FetchManifest(ctx, dataset)
	if err != nil {
		return nil, err
	}
	if m.Version != version {
		return nil, fmt.Errorf("ftpstore: dataset %s is at %.12s, want %.12s: %w", dataset, m.Version, version, ErrVersion)
	}
	return m, nil
}

// retrAll reads a whole remote file of at most limit bytes.
func (s *Store) retrAll(ctx context.Context, remote string, limit int64) ([]byte, error) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	c, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := c.Retr(remote)
	if err != nil {
		return nil, s.transferErr(remote, err)
	}
	b, err := io.ReadAll(io.LimitReader(&deadlineReader{r: resp, timeout: s.cfg.Timeout}, limit+1))
	s.bytes.Add(int64(len(b)))
	if cerr := resp.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		s.drop()
		return nil, fmt.Errorf("ftpstore: read %s: %w", remote, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("ftpstore: %s is over %d bytes", remote, limit)
	}
	return b, nil
}

// transferErr classifies the error of starting a transfer, dropping the connection if
// it may be broken.
func (s *Store) transferErr(remote string, err error) error {
	switch code(err) {
	case 550, 553:
		return fmt.Errorf("ftpstore: %s: %w (%v)", remote, ErrNotFound, err)
	case 0:
		s.drop()
	}
	return fmt.Errorf("ftpstore: %s: %w", remote, err)
}

// deadlineReader extends the data connection's deadline before each read, so a stalled
// transfer fails after Timeout instead of hanging.
type deadlineReader struct {
	r       *ftp.Response
	timeout time.Duration
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	d.r.SetDeadline(time.Now().Add(d.timeout))
	return d.r.Read(p)
}

func (s *Store) tmpDir() string { return filepath.Join(s.cfg.CacheDir, "tmp") }

// Path returns where the cache keeps the file with this sha256 and marks it recently
// used. The file exists only after a successful Fetch of that image.
func (s *Store) Path(sha string) string {
	s.mu.Lock()
	if e := s.entries[sha]; e != nil {
		s.lru.moveToFront(e)
	}
	s.mu.Unlock()
	return s.path(sha)
}

func (s *Store) path(sha string) string {
	if len(sha) < 2 {
		return filepath.Join(s.cfg.CacheDir, "invalid")
	}
	return filepath.Join(s.cfg.CacheDir, sha[:2], sha)
}

// Has reports whether the cache holds a file for sha (not re-verified).
func (s *Store) Has(sha string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries[sha] != nil
}

// CacheBytes returns the bytes the cache holds.
func (s *Store) CacheBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}
