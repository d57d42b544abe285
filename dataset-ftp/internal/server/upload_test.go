package server_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jlaffaye/ftp"

	"github.com/texgrid/texgrid/dataset-ftp/internal/ftptest"
	"github.com/texgrid/texgrid/dataset-ftp/internal/index"
	"github.com/texgrid/texgrid/dataset-ftp/internal/server"
	"github.com/texgrid/texgrid/dataset-ftp/internal/upload"
	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/shareddata"
)

// checkManifest compares a manifest with the source folder: same files, same hashes and
// sizes, splits from data.SplitOf, and real dimensions.
func checkManifest(t *testing.T, m *manifest.Manifest, src string, wantClasses int) {
	t.Helper()
	want := localHashes(t, src)
	if len(m.Images) != len(want) || len(m.Classes) != wantClasses {
		t.Fatalf("manifest has %d images in %d classes, want %d in %d", len(m.Images), len(m.Classes), len(want), wantClasses)
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("manifest invalid: %v", err)
	}
	for _, im := range m.Images {
		if want[im.Path] != im.SHA256 {
			t.Errorf("%s: sha256 %s, source has %s", im.Path, im.SHA256, want[im.Path])
		}
		fi, err := os.Stat(filepath.Join(src, filepath.FromSlash(im.Path)))
		if err != nil || fi.Size() != im.Size {
			t.Errorf("%s: size %d, source %v", im.Path, im.Size, fi)
		}
		if im.Width <= 0 || im.Height <= 0 {
			t.Errorf("%s: %dx%d", im.Path, im.Width, im.Height)
		}
		if s := data.SplitOf(im.Class, filepath.Base(im.Path), m.TestFraction); s != im.Split {
			t.Errorf("%s: split %s, SplitOf says %s", im.Path, im.Split, s)
		}
	}
}

// TestUploadKylberg6 uploads the whole Kylberg subset with `dataset-ftp upload`'s client,
// checks the manifest against the source files, downloads one image as a reader, and
// uploads again to show complete files are skipped.
func TestUploadKylberg6(t *testing.T) {
	t.Parallel()
	src := shareddata.Path(t, "kylberg6")
	env := ftptest.Start(t)
	ctx := context.Background()
	start := time.Now()
	res, err := upload.Tree(ctx, src, upload.Options{Addr: env.Addr, User: ftptest.Uploader, Password: ftptest.Password})
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	uploaded := time.Since(start)
	if res.Files != 240 || res.Skipped != 0 {
		t.Fatalf("upload result %+v, want 240 files sent", res)
	}
	m := env.WaitIndexed(t, "kylberg6", ftptest.Images(240))
	t.Logf("kylberg6: upload %v (%d bytes), upload+debounce+index %v", uploaded, res.Bytes, time.Since(start))
	checkManifest(t, m, src, 6)
	for _, c := range m.Classes {
		n := 0
		for _, im := range m.Images {
			if im.Class == c {
				n++
				if im.Width != 576 || im.Height != 576 {
					t.Errorf("%s is %dx%d, want 576x576", im.Path, im.Width, im.Height)
				}
			}
		}
		if n != 40 {
			t.Errorf("class %s has %d images, want 40", c, n)
		}
	}
	if len(m.Quarantined) != 0 {
		t.Errorf("quarantined %+v", m.Quarantined)
	}

	rd := dial(t, env, ftptest.Reader, ftptest.Password)
	im := m.Images[17]
	if got := sha256Bytes(retr(t, rd, "/kylberg6/"+im.Path)); got != im.SHA256 {
		t.Errorf("reader downloaded %s with sha256 %s, want %s", im.Path, got, im.SHA256)
	}
	var fetched manifest.Manifest
	if b := retr(t, rd, "/kylberg6/manifest.json"); true {
		mm, err := manifest.Parse(b)
		if err != nil {
			t.Fatalf("served manifest: %v", err)
		}
		fetched = *mm
	}
	if fetched.Version != m.Version {
		t.Errorf("served manifest version %s, indexed %s", fetched.Version, m.Version)
	}

	again, err := upload.Tree(ctx, src, upload.Options{Addr: env.Addr, User: ftptest.Uploader, Password: ftptest.Password})
	if err != nil {
		t.Fatalf("second upload: %v", err)
	}
	if again.Skipped != 240 || again.Files != 0 || again.Bytes != 0 {
		t.Errorf("second upload %+v, want all 240 skipped", again)
	}
}

// TestScriptedUploads uploads kth-tips-grey subsets with the stock tools the README
// documents: curl -T, lftp mirror -R, Python's ftplib, and the jlaffaye client.
func TestScriptedUploads(t *testing.T) {
	t.Parallel()
	kth := shareddata.Path(t, "kth-tips-grey")
	env := ftptest.Start(t)
	host, port, _ := strings.Cut(env.Addr, ":")
	cases := []struct {
		name    string
		classes []string
		n       int
		run     func(t *testing.T, dir string)
	}{
		{"curl", []string{"cotton"}, 1, func(t *testing.T, dir string) {
			curl := ftptest.Tool(t, "curl")
			f := filepath.Join(dir, "cotton", firstFile(t, filepath.Join(dir, "cotton")))
			url := fmt.Sprintf("ftp://%s/%s/cotton/", env.Addr, filepath.Base(dir))
			run(t, exec.Command(curl, "-sS", "--ftp-create-dirs", "--user", ftptest.Uploader+":"+ftptest.Password, "-T", f, url))
		}},
		{"lftp", []string{"linen", "sponge"}, 3, func(t *testing.T, dir string) {
			lftp := ftptest.Tool(t, "lftp")
			script := fmt.Sprintf("set ftp:ssl-allow no; set net:max-retries 2; set net:timeout 20; set cmd:fail-exit yes; mirror -R --no-perms %s /%s; quit", dir, filepath.Base(dir))
			run(t, exec.Command(lftp, "-u", ftptest.Uploader+","+ftptest.Password, "-p", port, "-e", script, host))
		}},
		{"python-ftplib", []string{"cracker", "orange_peel"}, 2, func(t *testing.T, dir string) {
			py := "/usr/bin/python3"
			if _, err := os.Stat(py); err != nil {
				py = ftptest.Tool(t, "python3")
			}
			script := `
import ftplib, os, sys
addr, port, user, pw, local = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ds = os.path.basename(local)
ftp = ftplib.FTP()
ftp.connect(addr, port, timeout=20)
ftp.login(user, pw)
ftp.mkd('/' + ds)
for cls in sorted(os.listdir(local)):
    ftp.mkd('/%s/%s' % (ds, cls))
    for name in sorted(os.listdir(os.path.join(local, cls))):
        with open(os.path.join(local, cls, name), 'rb') as fh:
            ftp.storbinary('STOR /%s/%s/%s' % (ds, cls, name), fh)
ftp.quit()
`
			run(t, exec.Command(py, "-c", script, host, port, ftptest.Uploader, ftptest.Password, dir))
		}},
		{"jlaffaye", []string{"brown_bread"}, 2, func(t *testing.T, dir string) {
			c := dial(t, env, ftptest.Uploader, ftptest.Password)
			ds := "/" + filepath.Base(dir)
			mkdirs(t, c, ds, ds+"/brown_bread")
			for _, name := range []string{firstFile(t, filepath.Join(dir, "brown_bread")), secondFile(t, filepath.Join(dir, "brown_bread"))} {
				f, err := os.Open(filepath.Join(dir, "brown_bread", name))
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Stor(ds+"/brown_bread/"+name, f); err != nil {
					t.Fatalf("STOR: %v", err)
				}
				f.Close()
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := subset(t, kth, "kth-"+tc.name, tc.classes, tc.n)
			tc.run(t, dir)
			m := env.WaitIndexed(t, filepath.Base(dir), ftptest.Images(len(tc.classes)*tc.n))
			checkManifest(t, m, dir, len(tc.classes))
		})
	}
}

func run(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args[:1], " "), err, out)
	}
}

func firstFile(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		t.Fatalf("no files in %s: %v", dir, err)
	}
	return ents[0].Name()
}

func secondFile(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) < 2 {
		t.Fatalf("fewer than 2 files in %s: %v", dir, err)
	}
	return ents[1].Name()
}

// TestQuarantine uploads a good image next to a truncated PNG, a PNG with a damaged
// chunk, a text file and an empty file: only the good one is indexed, the others are
// moved to .quarantine with their reasons, which readers cannot see.
func TestQuarantine(t *testing.T) {
	t.Parallel()
	env := ftptest.Start(t)
	up := dial(t, env, ftptest.Uploader, ftptest.Password)
	good := smallPNG(t, 40, 30)
	corrupt := append([]byte(nil), good...)
	corrupt[len(corrupt)/2] ^= 0xff // inside IDAT: CRC or zlib failure
	files := map[string][]byte{
		"good.png":      good,
		"truncated.png": good[:len(good)*2/3],
		"corrupt.png":   corrupt,
		"notes.txt":     []byte("these are field notes, not pixels\n"),
		"empty.png":     {},
	}
	mkdirs(t, up, "/q", "/q/bark")
	for name, b := range files {
		if err := up.Stor("/q/bark/"+name, strings.NewReader(string(b))); err != nil {
			t.Fatalf("STOR %s: %v", name, err)
		}
	}
	m := env.WaitIndexed(t, "q", func(m *manifest.Manifest) bool { return len(m.Quarantined) == 4 })
	if len(m.Images) != 1 || m.Images[0].Path != "bark/good.png" || m.Images[0].Width != 40 || m.Images[0].Height != 30 {
		t.Fatalf("images %+v, want only bark/good.png 40x30", m.Images)
	}
	wantReason := map[string]string{
		"bark/truncated.png": index.ReasonTruncated,
		"bark/corrupt.png":   index.ReasonCorrupt,
		"bark/notes.txt":     index.ReasonNotImage,
		"bark/empty.png":     index.ReasonEmpty,
	}
	for _, q := range m.Quarantined {
		w, ok := wantReason[q.Path]
		if !ok || !strings.HasPrefix(q.Reason, w) {
			t.Errorf("quarantined %s with reason %q, want prefix %q", q.Path, q.Reason, w)
		}
		if q.Stored != ".quarantine/"+q.Path {
			t.Errorf("%s stored at %s", q.Path, q.Stored)
		}
		if _, err := os.Stat(filepath.Join(env.Root, "q", q.Stored)); err != nil {
			t.Errorf("%s not in quarantine: %v", q.Path, err)
		}
		if _, err := os.Stat(filepath.Join(env.Root, "q", q.Path)); !os.IsNotExist(err) {
			t.Errorf("%s still in place: %v", q.Path, err)
		}
	}

	rd := dial(t, env, ftptest.Reader, ftptest.Password)
	names := func(c *ftp.ServerConn, dir string) string {
		ents, err := c.List(dir)
		if err != nil {
			t.Fatalf("LIST %s: %v", dir, err)
		}
		var ns []string
		for _, e := range ents {
			ns = append(ns, e.Name)
		}
		return strings.Join(ns, ",")
	}
	if got := names(rd, "/q"); strings.Contains(got, ".quarantine") {
		t.Errorf("reader sees %q", got)
	}
	if got := names(up, "/q"); !strings.Contains(got, ".quarantine") {
		t.Errorf("uploader does not see the quarantine: %q", got)
	}
	if _, err := rd.Retr("/q/.quarantine/bark/notes.txt"); replyCode(err) != 550 {
		t.Errorf("reader RETR of a quarantined file: %v, want 550", err)
	}
	if b := retr(t, up, "/q/.quarantine/bark/notes.txt"); string(b) != string(files["notes.txt"]) {
		t.Errorf("uploader got %q from the quarantine", b)
	}

	// Re-indexing keeps the quarantine list and the version.
	m2, err := index.Dataset(context.Background(), env.Root, "q", index.Options{TestFraction: m.TestFraction, Rehash: true})
	if err != nil {
		t.Fatal(err)
	}
	if m2.Version != m.Version || len(m2.Quarantined) != 4 {
		t.Errorf("re-index: version %s (was %s), %d quarantined", m2.Version, m.Version, len(m2.Quarantined))
	}
}

// TestStockToolResume plants the first part of a file as the partial upload a dropped
// connection leaves, then lets curl (-C -: SIZE + APPE) and lftp (put -c: SIZE + REST +
// STOR) finish it.
func TestStockToolResume(t *testing.T) {
	t.Parallel()
	src := filepath.Join(shareddata.Path(t, "kylberg6"), "linseeds1", "linseeds1-a-p001.png")
	body, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	env := ftptest.Start(t)
	host, port, _ := strings.Cut(env.Addr, ":")
	cases := []struct {
		name string
		cmd  func(t *testing.T, remote string) *exec.Cmd
	}{
		{"curl", func(t *testing.T, remote string) *exec.Cmd {
			return exec.Command(ftptest.Tool(t, "curl"), "-sS", "-C", "-", "-T", src, "--user", ftptest.Uploader+":"+ftptest.Password,
				"ftp://"+env.Addr+remote)
		}},
		{"lftp", func(t *testing.T, remote string) *exec.Cmd {
			return exec.Command(ftptest.Tool(t, "lftp"), "-u", ftptest.Uploader+","+ftptest.Password, "-p", port,
				"-e", fmt.Sprintf("set ftp:ssl-allow no; set cmd:fail-exit yes; put -c %s -o %s; quit", src, remote), host)
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ds := fmt.Sprintf("resume%d", i)
			dir := filepath.Join(env.Root, ds, "linseeds1")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			// The planted part differs from the source in one byte, so the result shows
			// whether the tool resumed (keeps it) or started over (exact copy).
			k := len(body) / 3
			part := append([]byte(nil), body[:k]...)
			part[k-1] ^= 0xff
			if err := os.WriteFile(filepath.Join(dir, ".x.png.part"), part, 0o644); err != nil {
				t.Fatal(err)
			}
			run(t, tc.cmd(t, "/"+ds+"/linseeds1/x.png"))
			got, err := os.ReadFile(filepath.Join(dir, "x.png"))
			want := append(part, body[k:]...)
			if err != nil || sha256Bytes(got) != sha256Bytes(want) {
				t.Fatalf("%s did not resume at %d: %d bytes (%v), exact copy=%v", tc.name, k, len(got), err, sha256Bytes(got) == sha256Bytes(body))
			}
			if _, err := os.Stat(filepath.Join(dir, ".x.png.part")); !os.IsNotExist(err) {
				t.Errorf("partial file left: %v", err)
			}
		})
	}
}

// TestIndexesExistingDatasetsAtStart: a dataset copied into the root by hand, without a
// manifest, is indexed when the server starts.
func TestIndexesExistingDatasetsAtStart(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "byhand", "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "byhand", "c", "a.png"), smallPNG(t, 12, 12), 0o644); err != nil {
		t.Fatal(err)
	}
	env := ftptest.Start(t, func(c *server.Config) { c.Root = root })
	m := env.WaitIndexed(t, "byhand", ftptest.Images(1))
	if _, err := os.Stat(filepath.Join(root, "byhand", manifest.FileName)); err != nil || m.Images[0].Width != 12 {
		t.Errorf("manifest not written at start: %v", err)
	}
}

// TestQuarantineDeleteFreesQuota: a quarantined upload still counts against the
// uploader's quota until the uploader deletes it from the quarantine, which readers
// cannot do.
func TestQuarantineDeleteFreesQuota(t *testing.T) {
	t.Parallel()
	env := ftptest.Start(t, func(c *server.Config) { c.Accounts[1].QuotaBytes = 100 << 10 })
	bob := dial(t, env, ftptest.Limited, ftptest.Password)
	mkdirs(t, bob, "/bobs", "/bobs/c")
	junk := strings.Repeat("not an image ", 60<<10/13)
	if err := bob.Stor("/bobs/c/junk.png", strings.NewReader(junk)); err != nil {
		t.Fatal(err)
	}
	env.WaitIndexed(t, "bobs", func(m *manifest.Manifest) bool { return len(m.Quarantined) == 1 })
	if err := bob.Stor("/bobs/c/second.png", strings.NewReader(junk)); replyCode(err) != 552 {
		t.Fatalf("upload while the quarantined file fills the quota: %v, want 552", err)
	}
	rd := dial(t, env, ftptest.Reader, ftptest.Password)
	if err := rd.Delete("/bobs/.quarantine/c/junk.png"); replyCode(err) != 550 {
		t.Errorf("reader DELE in the quarantine: %v, want 550", err)
	}
	if err := bob.Delete("/bobs/.quarantine/c/junk.png"); err != nil {
		t.Fatalf("uploader DELE in the quarantine: %v", err)
	}
	if err := bob.Stor("/bobs/c/second.png", strings.NewReader(junk)); err != nil {
		t.Errorf("upload of the same size after clearing the quarantine: %v", err)
	}
}
