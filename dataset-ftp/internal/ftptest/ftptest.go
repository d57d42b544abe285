// Package ftptest starts a real dataset-ftp server on 127.0.0.1 with a temporary root for
// tests, with an uploader, a reader and (optionally) anonymous access, and reports each
// automatic indexing on a channel.
package ftptest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/texgrid/texgrid/dataset-ftp/internal/server"
	"github.com/texgrid/texgrid/dataset-ftp/manifest"
)

// Test accounts; every password is Password.
const (
	Uploader = "alice" // uploader for every dataset
	Limited  = "bob"   // uploader granted only the dataset "bobs"
	Reader   = "volunteer"
	Password = "s3cret-pass"
)

// Indexed is one automatic indexing result.
type Indexed struct {
	Dataset  string
	Manifest *manifest.Manifest
	Err      error
}

// Env is a running server.
type Env struct {
	Addr   string
	Root   string
	Config server.Config
	// MetricsURL is the server's GET /metrics when Config.MetricsListen was set.
	MetricsURL string
	stop       func()

	mu      sync.Mutex
	latest  map[string]Indexed // the last automatic indexing of each dataset
	counts  map[string]int     // how many times each dataset was indexed
	changed chan struct{}      // closed and replaced on every indexing
}

func (e *Env) record(ix Indexed) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.latest[ix.Dataset] = ix
	e.counts[ix.Dataset]++
	close(e.changed)
	e.changed = make(chan struct{})
}

// IndexCount returns how many times dataset has been indexed automatically.
func (e *Env) IndexCount(dataset string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.counts[dataset]
}

// Option changes the configuration before the server starts.
type Option func(*server.Config)

// Start runs a server until the test ends.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(Password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Defaults()
	cfg.Root = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.IndexDelay = server.Duration(300 * time.Millisecond)
	cfg.Accounts = []server.Account{
		{Name: Uploader, Role: server.RoleUploader, PasswordHash: string(hash), Datasets: []string{server.AllDatasets}},
		{Name: Limited, Role: server.RoleUploader, PasswordHash: string(hash), Datasets: []string{"bobs"}},
		{Name: Reader, Role: server.RoleReader, PasswordHash: string(hash)},
	}
	for _, o := range opts {
		o(&cfg)
	}
	env := &Env{Root: cfg.Root, Config: cfg, latest: map[string]Indexed{}, counts: map[string]int{}, changed: make(chan struct{})}
	tw := &testWriter{t: t}
	t.Cleanup(func() { tw.done.Store(true) }) // runs after the server stopped (cleanups are LIFO)
	log := slog.New(slog.NewTextHandler(tw, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if os.Getenv("TEXGRID_FTP_QUIET") != "" {
		log = slog.New(slog.DiscardHandler)
	}
	serving := make(chan struct{})
	var srv *server.Server
	srv, err = server.New(cfg, server.Options{Log: log, OnIndexed: func(ds string, m *manifest.Manifest, err error) {
		env.record(Indexed{ds, m, err})
	}, OnServing: func() { close(serving) }})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env.Addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	env.stop = func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server stopped with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("server did not stop within 30s")
		}
	}
	t.Cleanup(env.stop)
	// Return only after the start-up scan: a test that then writes into Root by hand
	// does not race the server's scan of it.
	select {
	case <-serving:
	case err := <-done:
		done <- err // for the cleanup's stop
		t.Fatalf("server stopped before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server not serving within 30s")
	}
	if a := srv.MetricsAddr(); a != nil {
		env.MetricsURL = "http://" + a.String() + "/metrics"
	}
	return env
}

// WithTLS turns on explicit FTPS with a fresh self-signed certificate for 127.0.0.1.
func WithTLS(t testing.TB, required bool) Option {
	return func(c *server.Config) {
		dir := t.TempDir()
		certPEM, keyPEM := SelfSigned(t)
		c.CertFile, c.KeyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		if err := os.WriteFile(c.CertFile, certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(c.KeyFile, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		c.TLSRequired = required
	}
}

// ClientTLS trusts the certificate of an Env started WithTLS.
func (e *Env) ClientTLS(t testing.TB) *tls.Config {
	b, err := os.ReadFile(e.Config.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("no certificate")
	}
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// SelfSigned makes a certificate and key for 127.0.0.1, valid for a day.
func SelfSigned(t testing.TB) (certPEM, keyPEM []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "texgrid test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// WaitIndexed waits until the latest automatic indexing of dataset satisfies ok (nil:
// any successful indexing) and returns that manifest.
func (e *Env) WaitIndexed(t testing.TB, dataset string, ok func(*manifest.Manifest) bool) *manifest.Manifest {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		e.mu.Lock()
		ix, seen := e.latest[dataset]
		ch := e.changed
		e.mu.Unlock()
		if seen && ix.Err == nil && (ok == nil || ok(ix.Manifest)) {
			return ix.Manifest
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("dataset %s: no satisfying indexing within 60s (last: %+v)", dataset, ix.Err)
			return nil
		}
	}
}

// Images returns a predicate for WaitIndexed: exactly n images.
func Images(n int) func(*manifest.Manifest) bool {
	return func(m *manifest.Manifest) bool { return len(m.Images) == n }
}

// Tool returns the path of an external program, skipping the test when it is missing
// unless TEXGRID_REQUIRE_TOOLS=1.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("TEXGRID_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s is required (TEXGRID_REQUIRE_TOOLS=1) but not installed: %v", name, err)
		}
		t.Skipf("%s not installed (Debian package %s); set TEXGRID_REQUIRE_TOOLS=1 to make this a failure", name, name)
	}
	return p
}

// testWriter sends the server log to the test log until the test is over.
type testWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
