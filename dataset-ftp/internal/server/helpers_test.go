package server_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/textproto"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/jlaffaye/ftp"

	"github.com/texgrid/texgrid/dataset-ftp/internal/ftptest"
)

func dial(t testing.TB, env *ftptest.Env, user, pass string, opts ...ftp.DialOption) *ftp.ServerConn {
	t.Helper()
	c, err := ftp.Dial(env.Addr, opts...)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if err := c.Login(user, pass); err != nil {
		c.Quit()
		t.Fatalf("login %s: %v", user, err)
	}
	t.Cleanup(func() { c.Quit() })
	return c
}

func replyCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

func sha256File(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func sha256Bytes(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// subset copies the first n images of each named class of a shared dataset into a
// temporary <name>/<class>/ tree and returns the dataset folder.
func subset(t testing.TB, src, name string, classes []string, n int) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	for _, c := range classes {
		ents, err := os.ReadDir(filepath.Join(src, c))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		sort.Strings(names)
		if len(names) > n {
			names = names[:n]
		}
		if err := os.MkdirAll(filepath.Join(dst, c), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range names {
			b, err := os.ReadFile(filepath.Join(src, c, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dst, c, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dst
}

// localHashes maps "<class>/<name>" to sha256 for a dataset folder.
func localHashes(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	classes, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range classes {
		if !c.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(dir, c.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			out[c.Name()+"/"+f.Name()] = sha256File(t, filepath.Join(dir, c.Name(), f.Name()))
		}
	}
	return out
}

// smallPNG encodes a w x h grey gradient.
func smallPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.SetGray(x, y, color.Gray{Y: uint8(x*7 + y*3)})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func retr(t testing.TB, c *ftp.ServerConn, p string) []byte {
	t.Helper()
	r, err := c.Retr(p)
	if err != nil {
		t.Fatalf("RETR %s: %v", p, err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("RETR %s: %v", p, err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("RETR %s close: %v", p, err)
	}
	return b
}

func mkdirs(t testing.TB, c *ftp.ServerConn, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := c.MakeDir(d); err != nil {
			t.Fatalf("MKD %s: %v", d, err)
		}
	}
}
