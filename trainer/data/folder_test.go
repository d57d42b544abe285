package data

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/trainer/shareddata"
)

func copyFixture(t *testing.T, name, dst string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestScanFolder builds a dataset with every kind of bad entry and checks what is kept,
// what is skipped and why.
func TestScanFolder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := map[string]string{ // dataset key -> fixture
		"bark/a.png": "gray.png", "bark/b.jpg": "color.jpg", "bark/c.tif": "rgb.tif",
		"wool/a.gif": "palette.gif", "wool/b.bmp": "rgb.bmp", "wool/c.png": "rgba.png",
		"wool/d.png": "gray16.png",
	}
	for key, fix := range good {
		copyFixture(t, fix, filepath.Join(dir, key))
	}
	copyFixture(t, "corrupt.png", filepath.Join(dir, "bark", "corrupt.png"))
	copyFixture(t, "text.png", filepath.Join(dir, "bark", "text.png"))
	copyFixture(t, "empty.png", filepath.Join(dir, "wool", "empty.png"))
	copyFixture(t, "gray.png", filepath.Join(dir, "wool", ".hidden.png"))
	copyFixture(t, "gray.png", filepath.Join(dir, "wool", "nested", "x.png"))
	copyFixture(t, "text.png", filepath.Join(dir, "onlybad", "x.png"))
	copyFixture(t, "text.png", filepath.Join(dir, "README.md")) // top-level files are ignored
	if err := os.Mkdir(filepath.Join(dir, "emptyclass"), 0o755); err != nil {
		t.Fatal(err)
	}

	fo, err := ScanFolder(dir, 0.3)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(fo.Classes, ",") != "bark,wool" {
		t.Errorf("classes %v, want [bark wool]", fo.Classes)
	}
	wantSkips := map[string]string{
		"bark/corrupt.png": "not a readable",
		"bark/text.png":    "not a readable",
		"wool/empty.png":   "empty file",
		"wool/.hidden.png": "hidden file",
		"wool/nested":      "folder inside a class folder",
		"onlybad/x.png":    "not a readable",
		"onlybad":          "no readable image",
		"emptyclass":       "no readable image",
	}
	if len(fo.Skipped) != len(wantSkips) {
		t.Errorf("skipped %d entries, want %d: %+v", len(fo.Skipped), len(wantSkips), fo.Skipped)
	}
	for _, s := range fo.Skipped {
		rel, _ := filepath.Rel(dir, s.Path)
		want, ok := wantSkips[filepath.ToSlash(rel)]
		if !ok || !strings.Contains(s.Reason, want) {
			t.Errorf("skip %s: %q, want reason containing %q", rel, s.Reason, want)
		}
	}
	// Every good image is on the side SplitOf puts it, with the right class and size.
	all := append(append([]ImageRef(nil), fo.Train...), fo.Test...)
	if len(all) != len(good) {
		t.Fatalf("%d images, want %d", len(all), len(good))
	}
	for _, set := range []struct {
		refs  []ImageRef
		split Split
	}{{fo.Train, Train}, {fo.Test, Test}} {
		for i, r := range set.refs {
			class, name, _ := strings.Cut(r.Key, "/")
			if SplitOf(class, name, 0.3) != set.split || fo.Classes[r.Class] != class || r.Width != fixW || r.Height != fixH {
				t.Errorf("%s: %+v in %s", r.Key, r, set.split)
			}
			if i > 0 && set.refs[i-1].Key >= r.Key {
				t.Errorf("%s refs not sorted at %s", set.split, r.Key)
			}
			if p := fo.Paths[r.Key]; !filepath.IsAbs(p) || p != filepath.Join(dir, r.Key) {
				t.Errorf("path of %s = %q", r.Key, p)
			}
			if _, ok := good[r.Key]; !ok {
				t.Errorf("unexpected image %s", r.Key)
			}
		}
	}
	// Loader reads by key; unknown keys are an error.
	g, err := fo.Loader()(all[0].Key)
	if err != nil || g.W != fixW {
		t.Errorf("loader: %v", err)
	}
	if _, err := fo.Loader()("bark/none.png"); err == nil {
		t.Error("loader accepted an unknown key")
	}
	if gs, err := fo.Load(all); err != nil || len(gs) != len(all) {
		t.Errorf("Load: %d images, %v", len(gs), err)
	}
}

func TestScanFolderErrors(t *testing.T) {
	t.Parallel()
	onlyBad := t.TempDir()
	copyFixture(t, "text.png", filepath.Join(onlyBad, "c", "x.png"))
	cases := []struct {
		name     string
		dir      string
		fraction float64
		want     error
		msg      string
	}{
		{"missing folder", filepath.Join(t.TempDir(), "none"), 0.2, os.ErrNotExist, "none"},
		{"no classes", t.TempDir(), 0.2, ErrNoClasses, "no class folders"},
		{"no readable image", onlyBad, 0.2, ErrNoClasses, "no class folders"},
		{"bad fraction", t.TempDir(), 1.5, nil, "test fraction 1.5"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := ScanFolder(c.dir, c.fraction)
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("got %v, want %v containing %q", err, c.want, c.msg)
			}
		})
	}
}

func TestScanFolderReal(t *testing.T) {
	t.Parallel()
	cases := []struct {
		dataset       string
		classes, imgs int
		size          int // a fragment size to check Eligible with
		allEligible   bool
	}{
		{"kylberg6", 6, 240, 256, true},
		{"kth-tips-grey", 10, 810, 128, false},
	}
	for _, c := range cases {
		t.Run(c.dataset, func(t *testing.T) {
			t.Parallel()
			fo, err := ScanFolder(shareddata.Path(t, c.dataset), DefaultTestFraction)
			if err != nil {
				t.Fatal(err)
			}
			if len(fo.Classes) != c.classes || len(fo.Train)+len(fo.Test) != c.imgs || len(fo.Skipped) != 0 {
				t.Fatalf("%d classes, %d+%d images, skipped %v", len(fo.Classes), len(fo.Train), len(fo.Test), fo.Skipped)
			}
			if frac := float64(len(fo.Test)) / float64(c.imgs); frac < 0.12 || frac > 0.28 {
				t.Errorf("test fraction %.2f, want about %.2f", frac, DefaultTestFraction)
			}
			train, test, small := fo.Eligible(c.size)
			if len(train)+len(test)+len(small) != c.imgs {
				t.Errorf("Eligible lost images: %d+%d+%d", len(train), len(test), len(small))
			}
			if c.allEligible != (len(small) == 0) {
				t.Errorf("%d images too small for %d px", len(small), c.size)
			}
			for _, s := range small {
				w, h, _, err := DecodeConfig(s.Path)
				if err != nil || (w >= c.size && h >= c.size) || !strings.Contains(s.Reason, "smaller than the") {
					t.Errorf("%s (%dx%d) reported too small: %q", s.Path, w, h, s.Reason)
				}
			}
			// At the largest size every kth image is eligible for the smallest side only.
			if _, _, all := fo.Eligible(100000); len(all) != c.imgs {
				t.Errorf("at 100000 px only %d of %d are too small", len(all), c.imgs)
			}
		})
	}
}
