package upload_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/dataset-ftp/internal/ftptest"
	"github.com/texgrid/texgrid/dataset-ftp/internal/upload"
	"github.com/texgrid/texgrid/trainer/shareddata"
)

// TestTreeResumes plants on the server a complete copy of one file and the first half
// of another as a partial upload (what a dropped connection leaves); Tree skips the
// first, resumes the second and sends the third, and the server ends with exact copies.
func TestTreeResumes(t *testing.T) {
	t.Parallel()
	src := filepath.Join(shareddata.Path(t, "kylberg6"), "seat2")
	env := ftptest.Start(t)
	local := filepath.Join(t.TempDir(), "res")
	names := []string{"seat2-a-p001.png", "seat2-a-p002.png", "seat2-a-p003.png"}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(local, "seat2"), 0o755)
		if err := os.WriteFile(filepath.Join(local, "seat2", n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	remote := filepath.Join(env.Root, "res", "seat2")
	os.MkdirAll(remote, 0o755)
	b0, _ := os.ReadFile(filepath.Join(local, "seat2", names[0]))
	b1, _ := os.ReadFile(filepath.Join(local, "seat2", names[1]))
	os.WriteFile(filepath.Join(remote, names[0]), b0, 0o644)
	os.WriteFile(filepath.Join(remote, "."+names[1]+".part"), b1[:len(b1)/2], 0o644)

	var progress bytes.Buffer
	res, err := upload.Tree(context.Background(), local, upload.Options{Addr: env.Addr, User: ftptest.Uploader, Password: ftptest.Password, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if res.Skipped != 1 || res.Resumed != 1 || res.Files != 1 {
		t.Errorf("result %+v, want 1 skipped, 1 resumed, 1 sent", res)
	}
	b2, _ := os.ReadFile(filepath.Join(local, "seat2", names[2]))
	if want := int64(len(b1) - len(b1)/2 + len(b2)); res.Bytes != want {
		t.Errorf("sent %d bytes, want %d (half of the resumed file and the new one)", res.Bytes, want)
	}
	for _, n := range names {
		got, _ := os.ReadFile(filepath.Join(remote, n))
		want, _ := os.ReadFile(filepath.Join(local, "seat2", n))
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs on the server (%d vs %d bytes)", n, len(got), len(want))
		}
	}
	if !strings.Contains(progress.String(), "upload res") {
		t.Errorf("no progress bar drawn: %q", progress.String())
	}
	env.WaitIndexed(t, "res", ftptest.Images(3))
}

func TestTreeRefused(t *testing.T) {
	t.Parallel()
	env := ftptest.Start(t)
	local := filepath.Join(t.TempDir(), "bobs-not")
	os.MkdirAll(filepath.Join(local, "c"), 0o755)
	os.WriteFile(filepath.Join(local, "c", "x.png"), []byte("x"), 0o644)
	cases := []struct {
		name, user, pass, dir string
	}{
		{"reader account", ftptest.Reader, ftptest.Password, local},
		{"dataset not granted", ftptest.Limited, ftptest.Password, local},
		{"wrong password", ftptest.Uploader, "bad", local},
		{"not a dataset tree", ftptest.Uploader, ftptest.Password, t.TempDir()},
	}
	for _, tc := range cases {
		_, err := upload.Tree(context.Background(), tc.dir, upload.Options{Addr: env.Addr, User: tc.user, Password: tc.pass, Retries: 1})
		if err == nil {
			t.Errorf("%s: upload succeeded", tc.name)
		}
	}
	if _, err := upload.Tree(context.Background(), t.TempDir(), upload.Options{Addr: env.Addr}); !errors.Is(err, upload.ErrLayout) {
		t.Errorf("empty folder: %v, want ErrLayout", err)
	}
	if _, err := os.Stat(filepath.Join(env.Root, "bobs-not")); !os.IsNotExist(err) {
		t.Errorf("a refused upload created the dataset: %v", err)
	}
}

// cutDialer resets the first data connection after it has carried after bytes from the
// client, as a dropped link does mid-upload.
type cutDialer struct {
	ctrl  string
	after int64
	done  bool
}

func (d *cutDialer) dial(network, addr string) (net.Conn, error) {
	c, err := net.Dial(network, addr)
	if err != nil || addr == d.ctrl || d.done {
		return c, err
	}
	d.done = true
	return &cutConn{TCPConn: c.(*net.TCPConn), left: d.after}, nil
}

type cutConn struct {
	*net.TCPConn
	left int64
}

// ReadFrom hides TCPConn's, which would send the file with sendfile around Write.
func (c *cutConn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{c}, r)
}

func (c *cutConn) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		n, _ := c.TCPConn.Write(p[:c.left])
		c.left = 0
		c.TCPConn.SetLinger(0)
		c.TCPConn.Close()
		return n, errors.New("test: connection reset")
	}
	c.left -= int64(len(p))
	return c.TCPConn.Write(p)
}

// TestTreeRecoversFromDroppedConnection cuts the upload of the first file halfway: the
// client reconnects, asks the server how much arrived and sends only the rest.
func TestTreeRecoversFromDroppedConnection(t *testing.T) {
	t.Parallel()
	src := filepath.Join(shareddata.Path(t, "kylberg6"), "cushion1", "cushion1-a-p001.png")
	body, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(t.TempDir(), "cut")
	os.MkdirAll(filepath.Join(local, "cushion1"), 0o755)
	if err := os.WriteFile(filepath.Join(local, "cushion1", "x.png"), body, 0o644); err != nil {
		t.Fatal(err)
	}
	env := ftptest.Start(t)
	d := &cutDialer{ctrl: env.Addr, after: int64(len(body) / 2)}
	res, err := upload.Tree(context.Background(), local, upload.Options{Addr: env.Addr, User: ftptest.Uploader,
		Password: ftptest.Password, DialFunc: d.dial})
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed != 1 || res.Files != 0 {
		t.Errorf("result %+v, want the file resumed", res)
	}
	if res.Bytes >= int64(len(body))*3/2 {
		t.Errorf("sent %d bytes for a %d byte file: the retry started over", res.Bytes, len(body))
	}
	got, err := os.ReadFile(filepath.Join(env.Root, "cut", "cushion1", "x.png"))
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("server copy: %d bytes (%v), want an exact %d", len(got), err, len(body))
	}
}

// TestTreeOverFTPS uploads to a server that requires TLS.
func TestTreeOverFTPS(t *testing.T) {
	t.Parallel()
	env := ftptest.Start(t, ftptest.WithTLS(t, true))
	local := filepath.Join(t.TempDir(), "secure")
	os.MkdirAll(filepath.Join(local, "c"), 0o755)
	src := filepath.Join(shareddata.Path(t, "kth-tips-grey"), "cotton")
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents[:3] {
		b, _ := os.ReadFile(filepath.Join(src, e.Name()))
		os.WriteFile(filepath.Join(local, "c", e.Name()), b, 0o644)
	}
	opt := upload.Options{Addr: env.Addr, User: ftptest.Uploader, Password: ftptest.Password, Retries: 1}
	if _, err := upload.Tree(context.Background(), local, opt); err == nil {
		t.Error("a plain-text upload to a TLS-only server succeeded")
	}
	opt.TLS = env.ClientTLS(t)
	res, err := upload.Tree(context.Background(), local, opt)
	if err != nil || res.Files != 3 {
		t.Fatalf("upload over TLS: %+v, %v", res, err)
	}
	env.WaitIndexed(t, "secure", ftptest.Images(3))
}
