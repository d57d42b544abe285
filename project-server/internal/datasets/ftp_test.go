package datasets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/texgrid/texgrid/trainer/poll"
	"github.com/texgrid/texgrid/trainer/shareddata"
)

// moduleRoot walks up to go.mod.
func moduleRoot(t *testing.T) string {
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod")
		}
		dir = parent
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestFTPReal reads a dataset through the real dataset-ftp server (built from this
// repository) as a read-only account: the manifest, and images checked against it.
func TestFTPReal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs dataset-ftp")
	}
	root := moduleRoot(t)
	src := shareddata.Path(t, "kylberg6")
	dir := t.TempDir()
	bin := filepath.Join(dir, "dataset-ftp")
	if out, err := exec.Command("go", "build", "-o", bin, filepath.Join(root, "dataset-ftp", "cmd", "dataset-ftp")).CombinedOutput(); err != nil {
		t.Fatalf("build dataset-ftp: %v\n%s", err, out)
	}
	// A small dataset: 6 images of two classes, copied into the temporary FTP root.
	ftpRoot := filepath.Join(dir, "root")
	for _, cls := range []string{"canvas1", "stone1"} {
		os.MkdirAll(filepath.Join(ftpRoot, "kyl", cls), 0o755)
		names, _ := filepath.Glob(filepath.Join(src, cls, "*.png"))
		for _, p := range names[:3] {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(ftpRoot, "kyl", cls, filepath.Base(p)), b, 0o644)
		}
	}
	if out, err := exec.Command(bin, "index", "--root", ftpRoot, "kyl").CombinedOutput(); err != nil {
		t.Fatalf("index: %v\n%s", err, out)
	}
	hashOut, err := exec.Command("sh", "-c", "echo reader-secret | "+bin+" passwd").Output()
	if err != nil {
		t.Fatal(err)
	}
	pasv := freePort(t)
	cfg := map[string]any{
		"root": ftpRoot, "listen": fmt.Sprintf("127.0.0.1:%d", freePort(t)), "passive_ports": fmt.Sprintf("%d-%d", pasv, pasv+1),
		"tls_required": false, "anonymous": false,
		"accounts": []map[string]any{{"name": "server", "role": "reader", "password_hash": strings.TrimSpace(string(hashOut))}},
	}
	cb, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(dir, "ftp.json")
	os.WriteFile(cfgPath, cb, 0o644)
	logf, _ := os.Create(filepath.Join(dir, "ftp.log"))
	defer logf.Close()
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	addr := cfg["listen"].(string)
	poll.For(t, 30*time.Second, "dataset-ftp to listen on "+addr, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})

	ctx := context.Background()
	src2 := &FTP{Addr: addr, User: "server", Password: "reader-secret", CacheDir: filepath.Join(dir, "cache")}
	defer src2.Close()
	m, err := src2.Manifest(ctx, "kyl", "")
	if err != nil {
		lb, _ := os.ReadFile(logf.Name())
		t.Fatalf("manifest over FTP: %v\n%s", err, lb)
	}
	if len(m.Images) != 6 || len(m.Classes) != 2 {
		t.Fatalf("manifest lists %d images of %d classes, want 6 of 2", len(m.Images), len(m.Classes))
	}
	if _, err := src2.Manifest(ctx, "kyl", strings.Repeat("0", 64)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a stale manifest version: %v, want ErrNotFound", err)
	}
	if _, err := src2.Manifest(ctx, "nope", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an unknown dataset: %v, want ErrNotFound", err)
	}
	rc, err := src2.Open(ctx, "kyl", m.Images[0])
	if err != nil {
		t.Fatalf("image over FTP: %v", err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	want, _ := os.ReadFile(filepath.Join(ftpRoot, "kyl", filepath.FromSlash(m.Images[0].Path)))
	if string(b) != string(want) {
		t.Fatal("the image read over FTP differs from the file")
	}
	bad := m.Images[1]
	bad.SHA256 = strings.Repeat("ab", 32)
	if _, err := src2.Open(ctx, "kyl", bad); err == nil {
		t.Fatal("an image whose bytes do not match the manifest entry was accepted")
	}
	// Both sources list the indexed dataset; a folder without a manifest is listed by
	// FTP (an upload in progress) and skipped by Dir.
	os.MkdirAll(filepath.Join(ftpRoot, "incoming"), 0o755)
	for _, l := range []struct {
		name string
		src  Lister
		want string
	}{{"ftp", src2, "incoming,kyl"}, {"dir", Dir{Root: ftpRoot}, "kyl"}} {
		names, err := l.src.Datasets(ctx)
		if err != nil || strings.Join(names, ",") != l.want {
			t.Errorf("%s lists %v (%v), want %s", l.name, names, err, l.want)
		}
	}
	// The local-directory source reads the same dataset the same way.
	dm, err := (Dir{Root: ftpRoot}).Manifest(ctx, "kyl", m.Version)
	if err != nil || dm.Version != m.Version {
		t.Fatalf("Dir manifest: %v", err)
	}
}
