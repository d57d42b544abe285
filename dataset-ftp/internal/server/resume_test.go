package server_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jlaffaye/ftp"

	"github.com/texgrid/texgrid/dataset-ftp/internal/ftptest"
	"github.com/texgrid/texgrid/dataset-ftp/internal/server"
	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/trainer/poll"
	"github.com/texgrid/texgrid/trainer/shareddata"
)

// connTracker records the connections a jlaffaye client opens so a test can cut them.
type connTracker struct {
	mu    sync.Mutex
	conns []*net.TCPConn
}

func (ct *connTracker) dial(network, addr string) (net.Conn, error) {
	c, err := net.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	ct.mu.Lock()
	ct.conns = append(ct.conns, c.(*net.TCPConn))
	ct.mu.Unlock()
	return c, nil
}

// drop resets every connection (RST), as a dropped link looks to the server.
func (ct *connTracker) drop() {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	for _, c := range ct.conns {
		c.SetLinger(0)
		c.Close()
	}
}

// kill closes the control connection and then the data connection cleanly (FIN), as
// the kernel does for a killed client.
func (ct *connTracker) kill() {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	for _, c := range ct.conns {
		c.Close()
	}
}

// cutReader yields n bytes of b, then calls cut and fails.
type cutReader struct {
	b   []byte
	n   int
	off int
	cut func()
}

var errCut = errors.New("connection cut by the test")

func (r *cutReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		r.cut()
		return 0, errCut
	}
	k := copy(p, r.b[r.off:r.n])
	r.off += k
	return k, nil
}

// waitPartial polls SIZE until the server reports a partial upload of p (a partial
// upload shows its partial size to the uploader) and returns the uploader's connection
// and that size.
func waitPartial(t *testing.T, env *ftptest.Env, p string) (*ftp.ServerConn, int64) {
	t.Helper()
	c := dial(t, env, ftptest.Uploader, ftptest.Password)
	var n int64
	poll.For(t, 20*time.Second, "a partial upload of "+p, func() error {
		var err error
		if n, err = c.FileSize(p); err == nil && n == 0 {
			err = errors.New("size 0")
		}
		return err
	})
	return c, n
}

// resume sends body from offset got with REST + STOR, trying again while the server
// still holds the cut upload open (450 busy: it has not yet seen the cut).
func resume(t *testing.T, c *ftp.ServerConn, p string, body []byte, got int64) {
	t.Helper()
	poll.For(t, 20*time.Second, "the resume of "+p+" to be accepted", func() error {
		err := c.StorFrom(p, bytes.NewReader(body[got:]), uint64(got))
		var te *textproto.Error
		if errors.As(err, &te) && te.Code == ftp.StatusFileActionIgnored {
			return err // busy: the cut upload is still running on the server
		}
		if err != nil {
			t.Fatalf("resume at %d: %v", got, err)
		}
		return nil
	})
}

// TestStorResume drops the connections in the middle of an upload, checks the partial
// file is neither visible to readers nor indexed, then resumes with REST + STOR.
func TestStorResume(t *testing.T) {
	t.Parallel()
	src := shareddata.Path(t, "kylberg6")
	body, err := os.ReadFile(filepath.Join(src, "sand1", "sand1-a-p001.png"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cut  func(*connTracker)
	}{
		{"dropped link (RST)", (*connTracker).drop},
		{"killed client (FIN)", (*connTracker).kill},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := ftptest.Start(t)
			setup := dial(t, env, ftptest.Uploader, ftptest.Password)
			mkdirs(t, setup, "/r", "/r/sand1")
			if err := setup.Stor("/r/sand1/keep.png", bytes.NewReader(smallPNG(t, 20, 20))); err != nil {
				t.Fatal(err)
			}
			env.WaitIndexed(t, "r", ftptest.Images(1))

			ct := &connTracker{}
			c, err := ftp.Dial(env.Addr, ftp.DialWithDialFunc(ct.dial))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Login(ftptest.Uploader, ftptest.Password); err != nil {
				t.Fatal(err)
			}
			half := len(body) / 2
			err = c.Stor("/r/sand1/big.png", &cutReader{b: body, n: half, cut: func() { tc.cut(ct) }})
			if err == nil {
				t.Fatal("STOR over a cut connection succeeded")
			}

			up, got := waitPartial(t, env, "/r/sand1/big.png")
			if got > int64(half) {
				t.Fatalf("partial size %d > %d sent", got, half)
			}
			if _, err := os.Stat(filepath.Join(env.Root, "r/sand1/big.png")); !os.IsNotExist(err) {
				t.Fatalf("the partial upload was committed: %v", err)
			}
			rd := dial(t, env, ftptest.Reader, ftptest.Password)
			if ents, err := rd.List("/r/sand1"); err != nil || len(ents) != 1 {
				t.Errorf("reader listing %v (%v), want only keep.png", ents, err)
			}
			if _, err := rd.FileSize("/r/sand1/big.png"); err == nil {
				t.Error("reader can SIZE the partial upload")
			}

			resume(t, up, "/r/sand1/big.png", body, got)
			m := env.WaitIndexed(t, "r", ftptest.Images(2))
			im, ok := m.ImageByPath("sand1/big.png")
			if !ok || im.SHA256 != sha256Bytes(body) || im.Size != int64(len(body)) {
				t.Fatalf("resumed file indexed as %+v, want sha256 %s", im, sha256Bytes(body))
			}
			if _, err := os.Stat(filepath.Join(env.Root, "r/sand1/.big.png.part")); !os.IsNotExist(err) {
				t.Errorf("partial file left behind: %v", err)
			}
			if n := len(m.Quarantined); n != 0 {
				t.Errorf("%d files quarantined: %+v", n, m.Quarantined)
			}
		})
	}
}

// TestRetrRest downloads a file in two parts with REST.
func TestRetrRest(t *testing.T) {
	t.Parallel()
	env := ftptest.Start(t)
	body := smallPNG(t, 64, 64)
	if err := os.MkdirAll(filepath.Join(env.Root, "d/c"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(env.Root, "d/c/x.png"), body, 0o644); err != nil {
		t.Fatal(err)
	}
	c := dial(t, env, ftptest.Reader, ftptest.Password)
	cases := []struct {
		name   string
		offset int
	}{{"start", 0}, {"middle", len(body) / 3}, {"end", len(body)}}
	for _, tc := range cases {
		r, err := c.RetrFrom("/d/c/x.png", uint64(tc.offset))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(b, body[tc.offset:]) {
			t.Errorf("%s: got %d bytes (%v), want the last %d", tc.name, len(b), err, len(body)-tc.offset)
		}
	}
	if _, err := c.RetrFrom("/d/c/x.png", uint64(len(body)+1)); replyCode(err) != 554 {
		t.Errorf("REST beyond the end: %v, want 554", err)
	}
	_ = manifest.FileName
}

// TestStalePartialsRemovedAtStart: partial uploads older than partial_max_age are
// removed when the server starts; recent ones stay resumable.
func TestStalePartialsRemovedAtStart(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	dir := filepath.Join(root, "ds", "c")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, fresh := filepath.Join(dir, ".old.png.part"), filepath.Join(dir, ".fresh.png.part")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("half"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-30 * 24 * time.Hour)
	if err := os.Chtimes(old, long, long); err != nil {
		t.Fatal(err)
	}
	env := ftptest.Start(t, func(c *server.Config) { c.Root = root })
	env.WaitIndexed(t, "ds", nil) // the start-up scan has run once the dataset is indexed
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("stale partial kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("recent partial removed: %v", err)
	}
}
