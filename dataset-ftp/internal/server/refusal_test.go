package server_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jlaffaye/ftp"

	"github.com/texgrid/texgrid/dataset-ftp/internal/ftptest"
	"github.com/texgrid/texgrid/dataset-ftp/internal/server"
)

// TestRefusals checks each forbidden action gets its FTP reply code and changes nothing.
func TestRefusals(t *testing.T) {
	t.Parallel()
	env := ftptest.Start(t, func(c *server.Config) {
		c.Anonymous = true
		c.MaxUploadBytes = 64 << 10
		c.Accounts[1].QuotaBytes = 100 << 10 // bob
		// Nothing is indexed while the test runs, however slowly: indexing would
		// quarantine the planted symlinks and write manifest.json under its feet.
		c.IndexDelay = server.Duration(time.Hour)
	})
	// A dataset with one image, a planted symlink to a file outside the root and one to
	// a folder outside the root.
	secret := filepath.Join(t.TempDir(), "secret.txt")
	if err := os.WriteFile(secret, []byte("host secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"ds/c", "bobs/c"} {
		if err := os.MkdirAll(filepath.Join(env.Root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	img := smallPNG(t, 16, 16)
	if err := os.WriteFile(filepath.Join(env.Root, "ds/c/a.png"), img, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(env.Root, "ds/c/link.png")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(secret), filepath.Join(env.Root, "ds/out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a.png", filepath.Join(env.Root, "ds/c/inside.png")); err != nil {
		t.Fatal(err)
	}

	anon := dial(t, env, "anonymous", "guest@example.org")
	reader := dial(t, env, ftptest.Reader, ftptest.Password)
	alice := dial(t, env, ftptest.Uploader, ftptest.Password)
	bob := dial(t, env, ftptest.Limited, ftptest.Password)
	if err := alice.ChangeDir("/ds/c"); err != nil {
		t.Fatal(err)
	}
	if err := reader.ChangeDir("/ds"); err != nil {
		t.Fatal(err)
	}
	stor := func(c *ftp.ServerConn, p string, n int) func() error {
		return func() error { return c.Stor(p, strings.NewReader(strings.Repeat("x", n))) }
	}
	get := func(c *ftp.ServerConn, p string) func() error {
		return func() error {
			r, err := c.Retr(p)
			if err == nil {
				r.Close()
			}
			return err
		}
	}
	cases := []struct {
		name string
		do   func() error
		code int
	}{
		{"anonymous STOR", stor(anon, "/ds/c/x.png", 10), 550},
		{"anonymous MKD", func() error { return anon.MakeDir("/ds/new") }, 550},
		{"anonymous DELE", func() error { return anon.Delete("/ds/c/a.png") }, 550},
		{"reader STOR", stor(reader, "/ds/c/x.png", 10), 550},
		{"reader RNFR/RNTO", func() error { return reader.Rename("/ds/c/a.png", "/ds/c/b.png") }, 550},
		{"uploader outside its grant", stor(bob, "/ds/c/x.png", 10), 550},
		{"uploader writes manifest.json", stor(alice, "/ds/manifest.json", 10), 550},
		{"uploader writes a hidden name", stor(alice, "/ds/c/.sneaky.part", 10), 553},
		{"STOR at the top level", stor(alice, "/toplevel.png", 10), 553},
		{"RETR ../.. traversal", get(alice, "../../../etc/passwd"), 553},
		{"RETR ..-traversal from a reader", get(reader, "c/../../../etc/passwd"), 553},
		{"STOR .. traversal", stor(alice, "../../../tmp/evil.png", 10), 553},
		{"CWD above the root", func() error { return reader.ChangeDir("../../..") }, 550},
		{"RETR absolute host path", get(reader, "/etc/passwd"), 550},
		{"RETR symlink to outside file", get(reader, "/ds/c/link.png"), 553},
		{"RETR symlink inside the root", get(reader, "/ds/c/inside.png"), 553},
		{"RETR through symlinked folder", get(reader, "/ds/out/secret.txt"), 553},
		{"LIST symlinked folder", func() error { _, err := reader.List("/ds/out"); return err }, 550},
		{"STOR through symlinked folder", stor(alice, "/ds/out/evil.png", 10), 553},
		{"RETR server state", get(alice, "/.dataset-ftp/usage.log"), 550},
		{"upload over the size limit", stor(alice, "/ds/c/big.png", 65<<10+1), 552},
		{"quota exceeded", func() error {
			if err := stor(bob, "/bobs/c/one.png", 60<<10)(); err != nil {
				return fmt.Errorf("first upload within quota failed: %w", err)
			}
			return stor(bob, "/bobs/c/two.png", 60<<10)()
		}, 552},
		{"quota already used up", func() error {
			if err := stor(bob, "/bobs/c/fill.png", 40<<10)(); err != nil {
				return fmt.Errorf("upload filling the quota exactly failed: %w", err)
			}
			return stor(bob, "/bobs/c/three.png", 10)()
		}, 552},
	}
	for _, tc := range cases {
		err := tc.do()
		if got := replyCode(err); got != tc.code {
			t.Errorf("%s: %v (code %d), want code %d", tc.name, err, got, tc.code)
		}
	}
	// Nothing leaked or changed.
	if b, err := os.ReadFile(filepath.Join(env.Root, "ds/c/a.png")); err != nil || string(b) != string(img) {
		t.Errorf("a.png changed: %v", err)
	}
	for _, p := range []string{"ds/c/x.png", "ds/manifest.json", "ds/c/big.png", "ds/c/.big.png.part", "bobs/c/two.png", "bobs/c/.two.png.part", "bobs/c/three.png", "ds/new", "toplevel.png"} {
		if _, err := os.Lstat(filepath.Join(env.Root, p)); !os.IsNotExist(err) {
			t.Errorf("%s exists after a refused action: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(env.Root, "bobs/c/one.png")); err != nil {
		t.Errorf("the upload within quota was lost: %v", err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(secret), "evil.png")); !os.IsNotExist(err) {
		t.Errorf("a file was written outside the root: %v", err)
	}
	// The reader's listing of the folder hides the symlinks.
	ents, err := reader.List("/ds/c")
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name != "a.png" {
		t.Errorf("listing %v, want only a.png", ents)
	}
}

// TestBadPasswords: wrong passwords and unknown users get 530 and the right password
// still works afterwards; without anonymous access "anonymous" is refused too.
func TestBadPasswords(t *testing.T) {
	t.Parallel()
	env := ftptest.Start(t)
	cases := []struct{ name, user, pass string }{
		{"wrong password", ftptest.Uploader, "nope"},
		{"unknown user", "mallory", ftptest.Password},
		{"anonymous disabled", "anonymous", "x@example.org"},
	}
	for _, tc := range cases {
		c, err := ftp.Dial(env.Addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Login(tc.user, tc.pass); replyCode(err) != 530 {
			t.Errorf("%s: %v, want 530", tc.name, err)
		}
		c.Quit()
	}
	c := dial(t, env, ftptest.Uploader, ftptest.Password)
	if _, err := c.List("/"); err != nil {
		t.Errorf("LIST after a good login: %v", err)
	}
}

// rawConn is a minimal FTP client for checks jlaffaye hides (PASV details).
type rawConn struct {
	c  net.Conn
	tp *textproto.Conn
}

func rawDial(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := &rawConn{c: c, tp: textproto.NewConn(c)}
	t.Cleanup(func() { c.Close() })
	if _, _, err := r.tp.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rawConn) cmd(t *testing.T, line string) (int, string) {
	t.Helper()
	if err := r.tp.PrintfLine("%s", line); err != nil {
		t.Fatal(err)
	}
	code, msg, err := r.tp.ReadResponse(0)
	if err != nil && code == 0 {
		t.Fatalf("%s: %v", line, err)
	}
	return code, msg
}

// TestPassivePortsAndListings checks PASV and EPSV stay in the configured range and
// that LIST and MLSD both describe a folder.
func TestPassivePortsAndListings(t *testing.T) {
	t.Parallel()
	lo := 42000 + int(time.Now().UnixNano()%2000)
	env := ftptest.Start(t, func(c *server.Config) { c.PassivePorts = fmt.Sprintf("%d-%d", lo, lo+50) })
	if err := os.MkdirAll(filepath.Join(env.Root, "ds/c"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(env.Root, "ds/c/a.png"), smallPNG(t, 8, 8), 0o644); err != nil {
		t.Fatal(err)
	}
	r := rawDial(t, env.Addr)
	r.cmd(t, "USER "+ftptest.Reader)
	if code, msg := r.cmd(t, "PASS "+ftptest.Password); code != 230 {
		t.Fatalf("login: %d %s", code, msg)
	}
	code, msg := r.cmd(t, "EPSV")
	if code != 229 {
		t.Fatalf("EPSV: %d %s", code, msg)
	}
	port, err := strconv.Atoi(strings.Trim(msg[strings.Index(msg, "(|||")+4:], "|)"))
	if err != nil || port < lo || port >= lo+50 {
		t.Errorf("EPSV port %d (%v) outside %d-%d", port, err, lo, lo+50)
	}
	dc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	r.tp.PrintfLine("MLSD /ds/c")
	if code, _, _ := r.tp.ReadResponse(150); code != 150 {
		t.Fatalf("MLSD: %d", code)
	}
	line, _ := bufio.NewReader(dc).ReadString('\n')
	dc.Close()
	if !strings.Contains(line, "Type=file") || !strings.HasSuffix(strings.TrimSpace(line), " a.png") {
		t.Errorf("MLSD line %q", line)
	}
	if code, _, _ := r.tp.ReadResponse(226); code != 226 {
		t.Errorf("MLSD end: %d", code)
	}
	for _, line := range []string{"PORT 127,0,0,1,4,1", "EPRT |1|127.0.0.1|1025|"} {
		if code, msg := r.cmd(t, line); code != 502 {
			t.Errorf("%s: %d %s, want 502 (active mode refused)", line, code, msg)
		}
	}
	code, msg = r.cmd(t, "PASV")
	if code != 227 {
		t.Fatalf("PASV: %d %s", code, msg)
	}
	f := strings.Split(strings.Trim(msg[strings.Index(msg, "("):], "()"), ",")
	p1, _ := strconv.Atoi(f[4])
	p2, _ := strconv.Atoi(f[5])
	if p := p1*256 + p2; p < lo || p >= lo+50 {
		t.Errorf("PASV port %d outside %d-%d", p, lo, lo+50)
	}

	// LIST (MLSD disabled in the client) and MLSD give the same names and sizes.
	for _, opt := range []ftp.DialOption{ftp.DialWithDisabledMLSD(true), ftp.DialWithDisabledEPSV(true)} {
		c := dial(t, env, ftptest.Reader, ftptest.Password, opt)
		ents, err := c.List("/ds/c")
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 1 || ents[0].Name != "a.png" || ents[0].Type != ftp.EntryTypeFile || ents[0].Size == 0 {
			t.Errorf("listing %+v", ents)
		}
	}
}

// TestParallelUploadsShareTheQuota starts two uploads by one account at once that
// together exceed its quota: at most one may complete, and the stored bytes never
// exceed the quota.
func TestParallelUploadsShareTheQuota(t *testing.T) {
	t.Parallel()
	env := ftptest.Start(t, func(c *server.Config) { c.Accounts[1].QuotaBytes = 100 << 10 })
	setup := dial(t, env, ftptest.Limited, ftptest.Password)
	mkdirs(t, setup, "/bobs", "/bobs/c")
	c1 := dial(t, env, ftptest.Limited, ftptest.Password)
	c2 := dial(t, env, ftptest.Limited, ftptest.Password)
	// Each writer sends 30 kB, waits until both have started, then sends 30 kB more.
	started := make(chan struct{}, 2)
	proceed := make(chan struct{})
	body := func() io.Reader {
		first := strings.NewReader(strings.Repeat("a", 30<<10))
		return io.MultiReader(first, readerFunc(func(p []byte) (int, error) {
			started <- struct{}{}
			<-proceed
			return 0, io.EOF
		}), strings.NewReader(strings.Repeat("b", 30<<10)))
	}
	errs := make(chan error, 2)
	go func() { errs <- c1.Stor("/bobs/c/one.bin", body()) }()
	go func() { errs <- c2.Stor("/bobs/c/two.bin", body()) }()
	<-started
	<-started
	close(proceed)
	var ok, refused int
	for range 2 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case replyCode(err) == 552:
			refused++
		default:
			t.Errorf("upload: %v", err)
		}
	}
	if ok > 1 || refused < 1 {
		t.Errorf("%d uploads completed and %d were refused; the quota fits one", ok, refused)
	}
	var stored int64
	for _, n := range []string{"one.bin", "two.bin"} {
		if fi, err := os.Stat(filepath.Join(env.Root, "bobs/c", n)); err == nil {
			stored += fi.Size()
		}
	}
	if stored > 100<<10 {
		t.Errorf("%d bytes stored over a %d byte quota", stored, 100<<10)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
