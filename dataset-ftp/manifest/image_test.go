package manifest

import (
	"testing"

	"github.com/texgrid/texgrid/trainer/data"
)

func TestNewImage(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name        string
		class, file string
		b           []byte
		frac        float64
		wantSHA     string
		wantSplit   data.Split
		wantPath    string
	}{
		// sha256("abc") is the FIPS 180-2 test vector.
		{"hash", "canvas1", "a.png", []byte("abc"), 0.2,
			"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", data.Train, "canvas1/a.png"},
		// blanket1-a-p004.png is pinned as test in trainer/data's split tests.
		{"split", "blanket1", "blanket1-a-p004.png", []byte{}, 0.2,
			"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", data.Test, "blanket1/blanket1-a-p004.png"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			im := NewImage(c.class, c.file, c.b, 576, 480, c.frac)
			if im.Path != c.wantPath || im.Class != c.class || im.SHA256 != c.wantSHA || im.Split != c.wantSplit ||
				im.Size != int64(len(c.b)) || im.Width != 576 || im.Height != 480 {
				t.Fatalf("NewImage = %+v", im)
			}
		})
	}
}
