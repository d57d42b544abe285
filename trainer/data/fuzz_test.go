package data

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecodeGray feeds arbitrary bytes to the image decoders: they must return a Gray
// whose pixels match its size, or one of the package's sentinel errors; never panic.
func FuzzDecodeGray(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := DecodeGray(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrEmptyImage) && !errors.Is(err, ErrImageTooLarge) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		if g.W <= 0 || g.H <= 0 || len(g.Pix) != g.W*g.H {
			t.Fatalf("decoded %dx%d with %d pixels", g.W, g.H, len(g.Pix))
		}
		dst := make([]float32, 4)
		if g.W >= 2 && g.H >= 2 {
			if err := g.Cut(Fragment{X: g.W - 2, Y: g.H - 2, Size: 2}, dst); err != nil {
				t.Fatal(err)
			}
		}
	})
}
