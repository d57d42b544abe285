package index

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/trainer/data"
)

func testImage(w, h int) *image.Gray {
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 13)
	}
	return img
}

func encode(t *testing.T, format string, w, h int) []byte {
	t.Helper()
	var buf bytes.Buffer
	img := testImage(w, h)
	var err error
	switch format {
	case "png":
		err = png.Encode(&buf, img)
	case "jpeg":
		err = jpeg.Encode(&buf, img, nil)
	case "gif":
		pal := image.NewPaletted(img.Bounds(), color.Palette{color.Black, color.White})
		err = gif.Encode(&buf, pal, nil)
	case "bmp":
		err = bmp.Encode(&buf, img)
	case "tiff":
		err = tiff.Encode(&buf, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func write(t *testing.T, root, rel string, b []byte) {
	t.Helper()
	p := filepath.Join(root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDataset indexes every supported format and every kind of bad file, and checks
// the manifest, the quarantine and that re-indexing is stable.
func TestDataset(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	good := map[string][2]int{
		"bark/a.png": {30, 20}, "bark/b.jpg": {24, 24}, "bark/c.gif": {10, 12},
		"wool/d.bmp": {16, 8}, "wool/e.tif": {9, 9},
	}
	for rel, wh := range good {
		format := map[string]string{".png": "png", ".jpg": "jpeg", ".gif": "gif", ".bmp": "bmp", ".tif": "tiff"}[filepath.Ext(rel)]
		write(t, root, "ds/"+rel, encode(t, format, wh[0], wh[1]))
	}
	pngBytes := encode(t, "png", 64, 64)
	big := encode(t, "bmp", 64, 64) // about 4 kB, over the limit below
	bad := map[string]string{
		"bark/empty.png":    ReasonEmpty,
		"bark/notes.txt":    ReasonNotImage,
		"bark/cut.png":      ReasonTruncated,
		"wool/big.bmp":      ReasonTooLarge,
		"loose.png":         ReasonPlace,
		"wool/deeper/x.png": ReasonPlace,
		"wool/link.png":     ReasonSymlink,
	}
	write(t, root, "ds/bark/empty.png", nil)
	write(t, root, "ds/bark/notes.txt", []byte("hello"))
	write(t, root, "ds/bark/cut.png", pngBytes[:len(pngBytes)/2])
	write(t, root, "ds/wool/big.bmp", big)
	write(t, root, "ds/loose.png", pngBytes)
	write(t, root, "ds/wool/deeper/x.png", pngBytes)
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "ds/wool/link.png")); err != nil {
		t.Fatal(err)
	}
	write(t, root, "ds/wool/.hidden.png.part", []byte("partial upload"))

	opt := Options{TestFraction: 0.3, MaxImageBytes: 2000, Rehash: true}
	m, err := Dataset(context.Background(), root, "ds", opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Images) != len(good) {
		t.Fatalf("%d images, want %d: %+v", len(m.Images), len(good), m.Images)
	}
	for _, im := range m.Images {
		wh := good[im.Path]
		if im.Width != wh[0] || im.Height != wh[1] {
			t.Errorf("%s: %dx%d, want %dx%d", im.Path, im.Width, im.Height, wh[0], wh[1])
		}
		if want := data.SplitOf(im.Class, filepath.Base(im.Path), 0.3); im.Split != want {
			t.Errorf("%s: split %s, want %s", im.Path, im.Split, want)
		}
	}
	if strings.Join(m.Classes, ",") != "bark,wool" {
		t.Errorf("classes %v", m.Classes)
	}
	if len(m.Quarantined) != len(bad) {
		t.Errorf("%d quarantined, want %d: %+v", len(m.Quarantined), len(bad), m.Quarantined)
	}
	for _, q := range m.Quarantined {
		if want, ok := bad[q.Path]; !ok || !strings.HasPrefix(q.Reason, want) {
			t.Errorf("%s quarantined for %q, want %q", q.Path, q.Reason, want)
		}
		if _, err := os.Lstat(filepath.Join(root, "ds", q.Stored)); err != nil {
			t.Errorf("%s: %v", q.Stored, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "ds/wool/.hidden.png.part")); err != nil {
		t.Errorf("a partial upload was touched: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(root, "ds", manifest.FileName))
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := manifest.Parse(b)
	if err != nil || parsed.Version != m.Version {
		t.Fatalf("written manifest: %v (version %v)", err, parsed)
	}

	// Indexing again (fast and full) gives the same version and keeps the quarantine.
	for _, rehash := range []bool{false, true} {
		opt.Rehash = rehash
		m2, err := Dataset(context.Background(), root, "ds", opt)
		if err != nil {
			t.Fatal(err)
		}
		if m2.Version != m.Version || len(m2.Quarantined) != len(bad) {
			t.Errorf("rehash=%v: version %s (was %s), %d quarantined", rehash, m2.Version, m.Version, len(m2.Quarantined))
		}
	}
	// A file replaced by different bytes of the same size is re-read even without
	// Rehash, because it was modified after the previous manifest.
	old, _ := os.ReadFile(filepath.Join(root, "ds/wool/d.bmp"))
	repl := append([]byte(nil), old...)
	repl[len(repl)-1] ^= 0xff // last pixel byte
	write(t, root, "ds/wool/d.bmp", repl)
	// Modified after the newest manifest was created, whatever the clock's granularity.
	b, err = os.ReadFile(filepath.Join(root, "ds", manifest.FileName))
	if err != nil {
		t.Fatal(err)
	}
	newest, err := manifest.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	later := newest.Created.Add(time.Second)
	if err := os.Chtimes(filepath.Join(root, "ds/wool/d.bmp"), later, later); err != nil {
		t.Fatal(err)
	}
	opt.Rehash = false
	m3, err := Dataset(context.Background(), root, "ds", opt)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := m3.ImageByPath("wool/d.bmp")
	if m3.Version == m.Version || im.Size != int64(len(old)) || im.SHA256 == "" {
		t.Errorf("replaced file not re-read: version unchanged=%v, %+v", m3.Version == m.Version, im)
	}
}

func TestDatasetRefusesBadNames(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	for _, name := range []string{"", "..", "../x", ".quarantine", "a/b"} {
		if _, err := Dataset(context.Background(), root, name, Options{}); err == nil {
			t.Errorf("Dataset(%q) succeeded", name)
		}
	}
}

// TestSchedulerDebounces checks a dataset is indexed once after writes settle and not
// while an upload into it is in progress.
func TestSchedulerDebounces(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	runs := map[string]int{}
	ran := make(chan string, 10)
	s := NewScheduler(50*time.Millisecond, func(_ context.Context, ds string) {
		mu.Lock()
		runs[ds]++
		mu.Unlock()
		ran <- ds
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()

	// The sleeps here are the input, not waits: writes spread over time, then a quiet
	// spell longer than the delay in which nothing may be indexed.
	s.Begin("a")
	for range 5 {
		s.Touch("a")
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(150 * time.Millisecond) // past the delay, but the upload is still open
	mu.Lock()
	early := runs["a"]
	mu.Unlock()
	if early != 0 {
		t.Errorf("indexed %d times during an upload", early)
	}
	s.End("a")
	if ds := <-ran; ds != "a" {
		t.Errorf("ran %s", ds)
	}
	s.Touch("b")
	cancel()
	<-done
	s.Flush(context.Background())
	mu.Lock()
	defer mu.Unlock()
	if runs["a"] != 1 || runs["b"] != 1 {
		t.Errorf("runs %v, want a and b once each", runs)
	}
}
