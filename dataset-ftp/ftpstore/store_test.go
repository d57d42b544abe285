package ftpstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/texgrid/texgrid/dataset-ftp/ftpstore"
	"github.com/texgrid/texgrid/dataset-ftp/internal/ftptest"
	"github.com/texgrid/texgrid/dataset-ftp/internal/index"
	"github.com/texgrid/texgrid/dataset-ftp/internal/server"
	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/poll"
	"github.com/texgrid/texgrid/trainer/shareddata"
)

// serveKTH starts a real server holding n images of each of two kth-tips-grey classes
// as dataset "kth", indexed.
func serveKTH(t testing.TB, n int, opts ...ftptest.Option) (*ftptest.Env, *manifest.Manifest) {
	t.Helper()
	src := shareddata.Path(t, "kth-tips-grey")
	env := ftptest.Start(t, opts...)
	for _, class := range []string{"cotton", "sponge"} {
		ents, err := os.ReadDir(filepath.Join(src, class))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		sort.Strings(names)
		dst := filepath.Join(env.Root, "kth", class)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, name := range names[:n] {
			b, err := os.ReadFile(filepath.Join(src, class, name))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dst, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	m, err := index.Dataset(context.Background(), env.Root, "kth", index.Options{TestFraction: data.DefaultTestFraction, Rehash: true})
	if err != nil {
		t.Fatal(err)
	}
	return env, m
}

func open(t testing.TB, env *ftptest.Env, cfg ftpstore.Config) *ftpstore.Store {
	t.Helper()
	cfg.Addr = env.Addr
	if cfg.User == "" {
		cfg.User, cfg.Password = ftptest.Reader, ftptest.Password
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = t.TempDir()
	}
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase = time.Millisecond
	}
	s, err := ftpstore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func totalSize(imgs []manifest.Image) int64 {
	var n int64
	for _, im := range imgs {
		n += im.Size
	}
	return n
}

// TestFetchVerifiesAndCaches: the first fetch downloads each image once, the second
// downloads nothing, and a new Store over the same cache folder downloads nothing too.
func TestFetchVerifiesAndCaches(t *testing.T) {
	t.Parallel()
	env, want := serveKTH(t, 5)
	ctx := context.Background()
	cache := t.TempDir()
	s := open(t, env, ftpstore.Config{CacheDir: cache})
	m, err := s.FetchManifest(ctx, "kth")
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != want.Version || len(m.Images) != 10 {
		t.Fatalf("manifest %s with %d images, want %s with 10", m.Version, len(m.Images), want.Version)
	}
	manifestBytes := s.Stats().BytesDownloaded
	if err := s.Fetch(ctx, "kth", m.Images); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.FilesFetched != 10 || st.BytesDownloaded-manifestBytes != totalSize(m.Images) || st.CacheHits != 0 {
		t.Errorf("first fetch: %+v, want 10 files and %d bytes", st, totalSize(m.Images))
	}
	for _, im := range m.Images {
		b, err := os.ReadFile(s.Path(im.SHA256))
		if err != nil || int64(len(b)) != im.Size {
			t.Errorf("%s: %v", im.Path, err)
		}
		if !strings.HasPrefix(s.Path(im.SHA256), filepath.Join(cache, im.SHA256[:2], im.SHA256)) {
			t.Errorf("path %s is not content-addressed", s.Path(im.SHA256))
		}
	}
	before := s.Stats()
	if err := s.Fetch(ctx, "kth", m.Images); err != nil {
		t.Fatal(err)
	}
	after := s.Stats()
	if after.BytesDownloaded != before.BytesDownloaded || after.CacheHits-before.CacheHits != 10 {
		t.Errorf("second fetch downloaded %d bytes, %d hits", after.BytesDownloaded-before.BytesDownloaded, after.CacheHits-before.CacheHits)
	}
	s2 := open(t, env, ftpstore.Config{CacheDir: cache})
	if err := s2.Fetch(ctx, "kth", m.Images); err != nil {
		t.Fatal(err)
	}
	if st := s2.Stats(); st.BytesDownloaded != 0 || st.CacheHits != 10 {
		t.Errorf("fetch after reopening the cache: %+v", st)
	}
	if _, err := s2.FetchManifestVersion(ctx, "kth", m.Version); err != nil {
		t.Errorf("FetchManifestVersion with the right version: %v", err)
	}
}

// TestTamperedCacheFileIsFetchedAgain damages a cached file; the next Fetch notices,
// deletes it and downloads it again.
func TestTamperedCacheFileIsFetchedAgain(t *testing.T) {
	t.Parallel()
	env, m := serveKTH(t, 2)
	ctx := context.Background()
	s := open(t, env, ftpstore.Config{})
	if err := s.Fetch(ctx, "kth", m.Images); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		damage func(p string) error
	}{
		{"flipped byte", func(p string) error {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b[len(b)/2] ^= 1
			return os.WriteFile(p, b, 0o644)
		}},
		{"truncated", func(p string) error { return os.Truncate(p, 100) }},
		{"deleted", os.Remove},
	}
	for i, tc := range cases {
		im := m.Images[i]
		if err := tc.damage(s.Path(im.SHA256)); err != nil {
			t.Fatal(err)
		}
		before := s.Stats()
		if err := s.Fetch(ctx, "kth", []manifest.Image{im}); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		after := s.Stats()
		if after.FilesFetched-before.FilesFetched != 1 || after.VerifyFailures-before.VerifyFailures != 1 ||
			after.BytesDownloaded-before.BytesDownloaded != im.Size {
			t.Errorf("%s: stats went from %+v to %+v", tc.name, before, after)
		}
		if b, err := os.ReadFile(s.Path(im.SHA256)); err != nil || int64(len(b)) != im.Size {
			t.Errorf("%s: not repaired: %v", tc.name, err)
		}
	}
}

// TestServerFileDiffersFromManifest: a file changed on the server after indexing is
// refused after the retries with ErrVerify, and nothing is cached for it.
func TestServerFileDiffersFromManifest(t *testing.T) {
	t.Parallel()
	env, m := serveKTH(t, 1)
	im := m.Images[0]
	p := filepath.Join(env.Root, "kth", filepath.FromSlash(im.Path))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[10] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s := open(t, env, ftpstore.Config{Retries: 2})
	err = s.Fetch(context.Background(), "kth", []manifest.Image{im})
	if !errors.Is(err, ftpstore.ErrVerify) || !strings.Contains(err.Error(), im.Path) {
		t.Fatalf("Fetch: %v, want ErrVerify naming %s", err, im.Path)
	}
	if s.Has(im.SHA256) {
		t.Error("the mismatching file was cached")
	}
	if st := s.Stats(); st.VerifyFailures != 3 || st.Retries != 2 {
		t.Errorf("stats %+v, want 3 verify failures and 2 retries", st)
	}
}

// TestEvictsLeastRecentlyUsed fills a cache capped at three images and checks which
// files are evicted, that pinned ones never are, and that an oversized request fails.
func TestEvictsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	env, m := serveKTH(t, 3)
	imgs := m.Images // 6 images, about the same size
	var maxSize int64
	for _, im := range imgs {
		maxSize = max(maxSize, im.Size)
	}
	ctx := context.Background()
	s := open(t, env, ftpstore.Config{MaxCacheBytes: 3 * maxSize})
	fetch := func(ims ...manifest.Image) {
		t.Helper()
		if err := s.Fetch(ctx, "kth", ims); err != nil {
			t.Fatal(err)
		}
	}
	a, b, c, d, e := imgs[0], imgs[1], imgs[2], imgs[3], imgs[4]
	fetch(a)
	fetch(b)
	fetch(c)
	fetch(a) // a is now the most recently used; b is the least
	fetch(d) // must evict b
	if s.Has(b.SHA256) || !s.Has(a.SHA256) || !s.Has(c.SHA256) || !s.Has(d.SHA256) {
		t.Errorf("after d: has a=%v b=%v c=%v d=%v, want b evicted", s.Has(a.SHA256), s.Has(b.SHA256), s.Has(c.SHA256), s.Has(d.SHA256))
	}
	if _, err := os.Stat(s.Path(b.SHA256)); !os.IsNotExist(err) {
		t.Errorf("evicted file still on disk: %v", err)
	}
	release := s.Pin([]manifest.Image{c}) // c is the LRU now, but pinned
	fetch(e)
	if !s.Has(c.SHA256) || s.Has(a.SHA256) {
		t.Errorf("after e with c pinned: has c=%v a=%v, want a evicted and c kept", s.Has(c.SHA256), s.Has(a.SHA256))
	}
	release()
	if got := s.CacheBytes(); got > 3*maxSize {
		t.Errorf("cache holds %d bytes, cap %d", got, 3*maxSize)
	}
	err := s.Fetch(ctx, "kth", imgs)
	if !errors.Is(err, ftpstore.ErrCacheFull) {
		t.Errorf("fetching 6 images into a 3-image cache: %v, want ErrCacheFull", err)
	}
	if st := s.Stats(); st.Evictions < 2 {
		t.Errorf("evictions %d", st.Evictions)
	}
}

// cutter cuts the first data connection that carries more than after bytes, with a
// reset, as a dropped link does. The control connection (to the server's port) is
// never cut.
type cutter struct {
	ctrl  string
	after atomic.Int64 // 0: no cut pending
	cuts  atomic.Int64
}

func (c *cutter) dial(network, addr string) (net.Conn, error) {
	conn, err := net.Dial(network, addr)
	if err != nil || addr == c.ctrl {
		return conn, err
	}
	if n := c.after.Swap(0); n > 0 {
		return &cutConn{TCPConn: conn.(*net.TCPConn), left: n, c: c}, nil
	}
	return conn, nil
}

type cutConn struct {
	*net.TCPConn
	mu   sync.Mutex
	left int64
	c    *cutter
}

func (cc *cutConn) Read(p []byte) (int, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.left <= 0 {
		cc.TCPConn.SetLinger(0)
		cc.TCPConn.Close()
		cc.c.cuts.Add(1)
		return 0, errors.New("test: connection reset")
	}
	if int64(len(p)) > cc.left {
		p = p[:cc.left]
	}
	n, err := cc.TCPConn.Read(p)
	cc.left -= int64(n)
	return n, err
}

// TestResumesDroppedDownload cuts a download halfway: the store reconnects, resumes
// with REST and ends with the verified file having downloaded each byte once.
func TestResumesDroppedDownload(t *testing.T) {
	t.Parallel()
	env, m := serveKTH(t, 1)
	im := m.Images[0]
	cut := &cutter{ctrl: env.Addr}
	s := open(t, env, ftpstore.Config{DialFunc: cut.dial})
	cut.after.Store(im.Size / 2)
	if err := s.Fetch(context.Background(), "kth", []manifest.Image{im}); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if cut.cuts.Load() != 1 || st.Retries != 1 || st.FilesFetched != 1 {
		t.Errorf("cuts %d, stats %+v: want one cut and one retry", cut.cuts.Load(), st)
	}
	if st.BytesDownloaded != im.Size {
		t.Errorf("downloaded %d bytes for a %d byte file: the retry did not resume", st.BytesDownloaded, im.Size)
	}
	if st.Reconnects != 1 {
		t.Errorf("reconnects %d, want 1 (the control connection is reused otherwise)", st.Reconnects)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	env, m := serveKTH(t, 1)
	ctx := context.Background()
	if _, err := ftpstore.Open(ctx, ftpstore.Config{Addr: env.Addr, User: ftptest.Reader, Password: "wrong", CacheDir: t.TempDir()}); !errors.Is(err, ftpstore.ErrLogin) {
		t.Errorf("wrong password: %v, want ErrLogin", err)
	}
	s := open(t, env, ftpstore.Config{})
	cases := []struct {
		name string
		do   func() error
		want error
	}{
		{"missing dataset", func() error { _, err := s.FetchManifest(ctx, "nope"); return err }, ftpstore.ErrNotFound},
		{"other version", func() error { _, err := s.FetchManifestVersion(ctx, "kth", strings.Repeat("0", 64)); return err }, ftpstore.ErrVersion},
		{"missing image", func() error {
			im := m.Images[0]
			im.Path = im.Class + "/missing.png"
			return s.Fetch(ctx, "kth", []manifest.Image{im})
		}, ftpstore.ErrNotFound},
	}
	for _, tc := range cases {
		if err := tc.do(); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	bad := m.Images[0]
	bad.Path = "../../etc/passwd"
	if err := s.Fetch(ctx, "kth", []manifest.Image{bad}); err == nil {
		t.Error("a traversing image path was fetched")
	}
	if err := s.Fetch(ctx, "../x", m.Images); err == nil {
		t.Error("a traversing dataset name was accepted")
	}
	if st := s.Stats(); st.Retries != 0 {
		t.Errorf("permanent errors were retried %d times", st.Retries)
	}
}

// TestOverTLSAndLoader fetches over explicit FTPS and decodes through Loader.
func TestOverTLSAndLoader(t *testing.T) {
	t.Parallel()
	tlsEnv, m := serveKTH(t, 2, ftptest.WithTLS(t, true))
	ctx := context.Background()
	s := open(t, tlsEnv, ftpstore.Config{TLS: tlsEnv.ClientTLS(t)})
	got, err := s.FetchManifest(ctx, "kth")
	if err != nil || got.Version != m.Version {
		t.Fatalf("manifest over TLS: %v", err)
	}
	load := s.Loader(ctx, got)
	for _, im := range got.Images {
		g, err := load(im.Path)
		if err != nil {
			t.Fatalf("load %s: %v", im.Path, err)
		}
		if g.W != im.Width || g.H != im.Height {
			t.Errorf("%s decoded %dx%d, manifest %dx%d", im.Path, g.W, g.H, im.Width, im.Height)
		}
	}
	if _, err := load("cotton/none.png"); !errors.Is(err, ftpstore.ErrNotFound) {
		t.Errorf("unknown key: %v", err)
	}
	if st := s.Stats(); st.FilesFetched != int64(len(got.Images)) {
		t.Errorf("stats %+v", st)
	}
}

// TestConcurrentFetches runs several work units' fetches of overlapping images at once;
// each file is downloaded once and every cached file verifies.
func TestConcurrentFetches(t *testing.T) {
	t.Parallel()
	env, m := serveKTH(t, 4)
	s := open(t, env, ftpstore.Config{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			imgs := append([]manifest.Image(nil), m.Images[w:]...)
			imgs = append(imgs, m.Images[:w]...)
			errs <- s.Fetch(context.Background(), "kth", imgs)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	if st.FilesFetched != int64(len(m.Images)) || st.BytesDownloaded != totalSize(m.Images) || st.VerifyFailures != 0 {
		t.Errorf("stats %+v: want each of %d files (%d bytes) downloaded once", st, len(m.Images), totalSize(m.Images))
	}
	if err := s.Fetch(context.Background(), "kth", m.Images); err != nil {
		t.Fatal(err)
	}
	if st2 := s.Stats(); st2.VerifyFailures != 0 || st2.BytesDownloaded != st.BytesDownloaded {
		t.Errorf("after the concurrent fetches the cache does not verify: %+v", st2)
	}
}

// TestReconnectsAfterServerIdleTimeout: the server drops the idle control connection;
// the next fetch reconnects and succeeds.
func TestReconnectsAfterServerIdleTimeout(t *testing.T) {
	t.Parallel()
	env, m := serveKTH(t, 1, func(c *server.Config) { c.IdleTimeout = server.Duration(100 * time.Millisecond) })
	var mu sync.Mutex
	var ctrl *net.TCPConn // the first connection Open dials: the control connection
	s := open(t, env, ftpstore.Config{DialFunc: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		mu.Lock()
		if err == nil && ctrl == nil {
			ctrl = c.(*net.TCPConn)
		}
		mu.Unlock()
		return c, err
	}})
	mu.Lock()
	first := ctrl
	mu.Unlock()
	poll.For(t, 30*time.Second, "the server to drop the idle control connection", func() error { return dropped(first) })
	if err := s.Fetch(context.Background(), "kth", m.Images[:1]); err != nil {
		t.Fatalf("fetch after the server closed the idle connection: %v", err)
	}
	if st := s.Stats(); st.Reconnects != 1 || st.FilesFetched != 1 {
		t.Errorf("stats %+v, want one reconnect", st)
	}
}

// dropped reports (as nil) whether the server has given up on the control connection c:
// it has closed it, or sent its 421 goodbye, which it closes right after. It only
// peeks, so the FTP client still reads whatever is there.
func dropped(c *net.TCPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	buf := make([]byte, 64)
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for data: this is a look, not a read
	}); err != nil {
		return err
	}
	switch {
	case rerr == syscall.EAGAIN:
		return errors.New("connection open and quiet")
	case rerr != nil:
		return nil // reset: dropped
	case n == 0:
		return nil // closed by the server
	case strings.HasPrefix(string(buf[:n]), "421"):
		return nil
	}
	return fmt.Errorf("unexpected %q from the server", buf[:n])
}
