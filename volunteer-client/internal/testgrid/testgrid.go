// Package testgrid starts the real texgrid components on 127.0.0.1 for the
// volunteer-client's integration tests: it builds the dataset-ftp, project-server and
// volunteer-client binaries, runs them on free ports with their state in the test's
// temporary directory, uploads real images from ../shared/data through the FTP
// server's upload path, and stops every process it started when the test ends. It is
// imported by tests only.
package testgrid

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/texgrid/texgrid/dataset-ftp/ftpstore"
	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/trainer/poll"
)

// Root returns the module root (the directory holding go.mod).
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

var (
	buildMu  sync.Mutex
	built    = map[string]string{}
	buildDir string
)

// Binary builds ./<pkg> (e.g. "dataset-ftp/cmd/dataset-ftp") once per test process
// and returns the executable's path. The binaries live in one temporary directory
// removed by Cleanup, which TestMain calls.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[pkg]; ok {
		return p
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "texgrid-testbin-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = d
	}
	out := filepath.Join(buildDir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, "./"+pkg)
	cmd.Dir = Root(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	built[pkg] = out
	return out
}

// Cleanup removes the built binaries; call it from TestMain after m.Run.
func Cleanup() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
		buildDir = ""
		built = map[string]string{}
	}
}

// FreeAddr returns a 127.0.0.1 address with a port the OS just handed out.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Proc is a started process; its output goes to Log.
type Proc struct {
	Cmd  *exec.Cmd
	Log  string
	done chan error
	err  error
}

// Start runs bin with args, logging to a file in dir; the test's cleanup stops it
// (SIGTERM, then SIGKILL after 10 s) and prints its log when the test failed.
func Start(t testing.TB, dir, bin string, args ...string) *Proc {
	t.Helper()
	return StartEnv(t, dir, nil, bin, args...)
}

// StartEnv is Start with extra environment variables ("NAME=value").
func StartEnv(t testing.TB, dir string, env []string, bin string, args ...string) *Proc {
	t.Helper()
	logf, err := os.CreateTemp(dir, filepath.Base(bin)+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &Proc{Cmd: cmd, Log: logf.Name(), done: make(chan error, 1)}
	go func() {
		p.done <- cmd.Wait()
		logf.Close()
	}()
	t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if t.Failed() {
			b, _ := os.ReadFile(p.Log)
			t.Logf("log of %s %s:\n%s", filepath.Base(bin), strings.Join(args, " "), tail(b, 4000))
		}
	})
	return p
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Stop sends SIGTERM and waits up to grace before SIGKILL; it returns the exit error.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Cmd.ProcessState == nil {
		p.Cmd.Process.Signal(syscall.SIGTERM)
	}
	return p.Wait(grace)
}

// Freeze stops the process with SIGSTOP: it runs no further until Thaw, so the test
// can inspect what it wrote knowing it will not change meanwhile.
func (p *Proc) Freeze() error { return p.Cmd.Process.Signal(syscall.SIGSTOP) }

// Thaw lets a frozen process go on (SIGCONT).
func (p *Proc) Thaw() error { return p.Cmd.Process.Signal(syscall.SIGCONT) }

// Kill sends SIGKILL (kill -9) and waits for the process to end.
func (p *Proc) Kill() {
	p.Cmd.Process.Kill()
	p.Wait(10 * time.Second)
}

// Wait waits up to d for the process to end by itself, then kills it.
func (p *Proc) Wait(d time.Duration) error {
	select {
	case err, ok := <-p.done:
		if ok {
			p.err = err
			close(p.done)
		}
		return p.err
	case <-time.After(d):
		p.Cmd.Process.Kill()
		err, ok := <-p.done
		if ok {
			p.err = err
			close(p.done)
		}
		return fmt.Errorf("%s did not exit within %s (killed): %v", filepath.Base(p.Cmd.Path), d, err)
	}
}

// Exited reports whether the process has ended (without waiting).
func (p *Proc) Exited() bool {
	select {
	case err, ok := <-p.done:
		if ok {
			p.err = err
			close(p.done)
		}
		return true
	default:
		return false
	}
}

// LogText returns the process's output so far.
func (p *Proc) LogText() string {
	b, _ := os.ReadFile(p.Log)
	return string(b)
}

// WaitLog polls the process log until it contains s, failing the test after d or
// when the process exits first.
func (p *Proc) WaitLog(t testing.TB, s string, d time.Duration) {
	t.Helper()
	poll.For(t, d, fmt.Sprintf("%s to log %q", filepath.Base(p.Cmd.Path), s), func() error {
		if strings.Contains(p.LogText(), s) {
			return nil
		}
		if p.Exited() && !strings.Contains(p.LogText(), s) {
			t.Fatalf("%s exited (%v) before logging %q; log:\n%s", filepath.Base(p.Cmd.Path), p.err, s, tail([]byte(p.LogText()), 3000))
		}
		return fmt.Errorf("log so far:\n%s", tail([]byte(p.LogText()), 3000))
	})
}

// FTP is a running dataset-ftp server with anonymous reads and one uploader.
type FTP struct {
	Addr             string
	Root             string
	Uploader, Secret string
	Proc             *Proc
	dir              string
}

// StartFTP runs `dataset-ftp serve` on a free port over an empty root.
func StartFTP(t testing.TB) *FTP {
	t.Helper()
	dir := t.TempDir()
	f := &FTP{Addr: FreeAddr(t), Root: filepath.Join(dir, "root"), Uploader: "uploader", Secret: "upload-secret", dir: dir}
	if err := os.MkdirAll(f.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(f.Secret), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`{"root": %q, "listen": %q, "anonymous": true, "index_delay": "200ms",
  "accounts": [{"name": %q, "role": "uploader", "password_hash": %q, "datasets": ["*"]}]}`, f.Root, f.Addr, f.Uploader, hash)
	cfgPath := filepath.Join(dir, "dataset-ftp.json")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	f.Proc = Start(t, dir, Binary(t, "dataset-ftp/cmd/dataset-ftp"), "serve", "--config", cfgPath)
	waitListening(t, f.Addr, f.Proc)
	return f
}

func waitListening(t testing.TB, addr string, p *Proc) {
	t.Helper()
	poll.For(t, 30*time.Second, fmt.Sprintf("%s to listen on %s", filepath.Base(p.Cmd.Path), addr), func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p.Exited() {
			t.Fatalf("%s exited before listening on %s: %v\n%s", filepath.Base(p.Cmd.Path), addr, err, tail([]byte(p.LogText()), 3000))
		}
		return fmt.Errorf("%w\n%s", err, tail([]byte(p.LogText()), 3000))
	})
}

// Upload sends a <dataset>/<class>/<image> folder with `dataset-ftp upload` (the
// scripted-upload path) and waits until the server has indexed all its images.
func (f *FTP) Upload(t testing.TB, folder string) *manifest.Manifest {
	t.Helper()
	cmd := exec.Command(Binary(t, "dataset-ftp/cmd/dataset-ftp"), "upload", "--addr", f.Addr, "--user", f.Uploader, "--password", f.Secret, "-q", folder)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dataset-ftp upload: %v\n%s", err, b)
	}
	n := 0
	filepath.WalkDir(folder, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return f.WaitManifest(t, filepath.Base(folder), n)
}

// WaitManifest polls the server (as anonymous, through ftpstore) until the dataset's
// manifest lists want images.
func (f *FTP) WaitManifest(t testing.TB, dataset string, want int) *manifest.Manifest {
	t.Helper()
	var m *manifest.Manifest
	poll.For(t, 60*time.Second, "dataset "+dataset+" to be indexed", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := ftpstore.Open(ctx, ftpstore.Config{Addr: f.Addr, User: "anonymous", Password: "test@", CacheDir: t.TempDir(), Retries: 1})
		if err != nil {
			return err
		}
		defer s.Close()
		if m, err = s.FetchManifest(ctx, dataset); err != nil {
			return err
		}
		if n := len(m.Images) + len(m.Quarantined); n < want {
			return fmt.Errorf("%d of %d images indexed", n, want)
		}
		return nil
	})
	return m
}

// Subset copies the first perClass images of the first classes classes of a real
// dataset into a fresh <tmp>/<name>/<class>/<image> folder and returns it.
func Subset(t testing.TB, src, name string, classes, perClass int) string {
	t.Helper()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	var cls []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			cls = append(cls, e.Name())
		}
	}
	sort.Strings(cls)
	if len(cls) > classes {
		cls = cls[:classes]
	}
	dst := filepath.Join(t.TempDir(), name)
	for _, c := range cls {
		imgs, err := os.ReadDir(filepath.Join(src, c))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, im := range imgs {
			if im.Type().IsRegular() {
				names = append(names, im.Name())
			}
		}
		sort.Strings(names)
		if len(names) > perClass {
			names = names[:perClass]
		}
		if err := os.MkdirAll(filepath.Join(dst, c), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			b, err := os.ReadFile(filepath.Join(src, c, n))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dst, c, n), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dst
}

// Project is a running project-server with one volunteer account and one researcher.
type Project struct {
	URL        string
	AccountKey string
	Researcher string
	DataDir    string
	Proc       *Proc
	bin        string
	args       []string
	dir, addr  string
}

// Stop ends the server (SIGTERM); Restart brings it back on the same port and data.
func (p *Project) Stop(t testing.TB) {
	t.Helper()
	p.Proc.Stop(30 * time.Second)
}

// Restart starts the server again after Stop, with the same flags.
func (p *Project) Restart(t testing.TB) {
	t.Helper()
	p.Proc = Start(t, p.dir, p.bin, p.args...)
	waitListening(t, p.addr, p.Proc)
}

// StartProject runs `project-server serve` on a free port with SQLite in a temporary
// data directory, reading datasets from ftp as anonymous.
func StartProject(t testing.TB, ftp *FTP) *Project {
	t.Helper()
	dir := t.TempDir()
	bin := Binary(t, "project-server/cmd/project-server")
	addr := FreeAddr(t)
	p := &Project{URL: "http://" + addr, DataDir: filepath.Join(dir, "data"), bin: bin, dir: dir, addr: addr}
	common := []string{"--data-dir", p.DataDir, "--models-dir", filepath.Join(Root(t), "configs", "models")}
	p.AccountKey = credential(t, bin, append([]string{"account", "add", "--name", "volunteer"}, common...))
	p.Researcher = credential(t, bin, append([]string{"researcher", "add", "--name", "researcher"}, common...))
	p.args = append([]string{"serve", "--addr", addr, "--ftp-addr", ftp.Addr, "--ftp-user", "anonymous", "--ftp-password", "test@", "--tick", "200ms"}, common...)
	p.Proc = Start(t, dir, bin, p.args...)
	waitListening(t, addr, p.Proc)
	return p
}

func credential(t testing.TB, bin string, args []string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("project-server %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	sc := bufio.NewScanner(&out)
	var last string
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			last = s
		}
	}
	if last == "" {
		t.Fatalf("project-server %s printed no secret", strings.Join(args, " "))
	}
	return last
}

// Campaign runs `project-server campaign <args>` against the server and returns stdout.
func (p *Project) Campaign(t testing.TB, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(p.bin, append([]string{"campaign"}, args...)...)
	cmd.Env = append(os.Environ(), "TEXGRID_SERVER="+p.URL, "TEXGRID_TOKEN="+p.Researcher)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("project-server campaign %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}
