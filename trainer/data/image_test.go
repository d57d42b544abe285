package data

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/trainer/shareddata"
)

// grayRef is the independent reference conversion: image/color's GrayModel per pixel.
func grayRef(img image.Image) *Gray {
	r := img.Bounds()
	g := &Gray{W: r.Dx(), H: r.Dy(), Pix: make([]uint8, r.Dx()*r.Dy())}
	for y := range g.H {
		for x := range g.W {
			g.Pix[y*g.W+x] = color.GrayModel.Convert(img.At(r.Min.X+x, r.Min.Y+y)).(color.Gray).Y
		}
	}
	return g
}

func maxDiff(a, b *Gray) int {
	d := 0
	for i := range a.Pix {
		d = max(d, int(a.Pix[i])-int(b.Pix[i]), int(b.Pix[i])-int(a.Pix[i]))
	}
	return d
}

func TestLoadGrayFormats(t *testing.T) {
	t.Parallel()
	srcs := fixtureSources()
	cases := []struct {
		file   string
		format string
		tol    int // largest allowed per-pixel difference from the source's grey
	}{
		{"gray.png", "png", 0},
		{"gray16.png", "png", 0},
		{"rgb.png", "png", 0},
		{"rgba.png", "png", 0},
		{"palette.png", "png", 0},
		{"palette.gif", "gif", 0},
		{"gray.tif", "tiff", 0},
		{"rgb.tif", "tiff", 0},
		{"gray.bmp", "bmp", 0},
		{"rgb.bmp", "bmp", 0},
		{"gray.jpg", "jpeg", 6},
		{"color.jpg", "jpeg", 12},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join("testdata", c.file)
			g, err := LoadGray(path)
			if err != nil {
				t.Fatal(err)
			}
			if g.W != fixW || g.H != fixH || len(g.Pix) != fixW*fixH {
				t.Fatalf("got %dx%d with %d pixels, want %dx%d", g.W, g.H, len(g.Pix), fixW, fixH)
			}
			want := grayRef(srcs[c.file])
			if d := maxDiff(g, want); d > c.tol {
				t.Errorf("differs from the source's BT.601 grey by up to %d (allowed %d)\ngot  %v\nwant %v", d, c.tol, g.Pix, want.Pix)
			}
			w, h, format, err := DecodeConfig(path)
			if err != nil || w != fixW || h != fixH || format != c.format {
				t.Errorf("DecodeConfig = %d, %d, %q, %v", w, h, format, err)
			}
			b, _ := os.ReadFile(path)
			g2, err := DecodeGray(bytes.NewReader(b))
			if err != nil || !bytes.Equal(g2.Pix, g.Pix) {
				t.Errorf("DecodeGray differs from LoadGray: %v", err)
			}
		})
	}
}

func TestLoadGrayRejects(t *testing.T) {
	t.Parallel()
	// A PNG whose header claims 100000x100000 grey pixels, caught before any allocation.
	ihdr := []byte("IHDR\x00\x01\x86\xa0\x00\x01\x86\xa0\x08\x00\x00\x00\x00")
	bomb := append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0d"), ihdr...)
	bomb = binary.BigEndian.AppendUint32(bomb, crc32.ChecksumIEEE(ihdr))
	bombPath := filepath.Join(t.TempDir(), "bomb.png")
	if err := os.WriteFile(bombPath, bomb, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		path string
		want error
		msg  string
	}{
		{"empty file", "testdata/empty.png", ErrEmptyImage, "empty"},
		{"text named .png", "testdata/text.png", ErrFormat, "unknown format"},
		{"truncated PNG", "testdata/corrupt.png", ErrFormat, "decode png"},
		{"decompression bomb", bombPath, ErrImageTooLarge, "100000x100000"},
		{"missing file", "testdata/none.png", os.ErrNotExist, "none.png"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			g, err := LoadGray(c.path)
			if err == nil {
				t.Fatalf("loaded %dx%d", g.W, g.H)
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("got %v, want %v containing %q", err, c.want, c.msg)
			}
		})
	}
	if _, _, _, err := DecodeConfig("testdata/empty.png"); !errors.Is(err, ErrEmptyImage) {
		t.Errorf("DecodeConfig(empty) = %v, want ErrEmptyImage", err)
	}
	if _, _, _, err := DecodeConfig("testdata/text.png"); !errors.Is(err, ErrFormat) {
		t.Errorf("DecodeConfig(text) = %v, want ErrFormat", err)
	}
}

// TestToGrayFastPaths checks every fast path against color.GrayModel on random pixels,
// on sub-images whose bounds do not start at the origin.
func TestToGrayFastPaths(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	full := image.Rect(-3, 2, 40, 31)
	sub := image.Rect(1, 5, 30, 22)
	byte8 := func() uint8 { return uint8(rng.Uint32()) }
	gray, gray16 := image.NewGray(full), image.NewGray16(full)
	rgba, nrgba := image.NewRGBA(full), image.NewNRGBA(full)
	cmyk := image.NewCMYK(full)
	pal := image.NewPaletted(full, nil)
	for range 200 {
		pal.Palette = append(pal.Palette, color.RGBA{byte8(), byte8(), byte8(), 255})
	}
	for i := range gray.Pix {
		gray.Pix[i] = byte8()
		pal.Pix[i] = byte8() % 200
	}
	for i := range gray16.Pix {
		gray16.Pix[i] = byte8()
	}
	for i := 0; i < len(rgba.Pix); i += 4 {
		a := byte8()
		pm := func() uint8 { return uint8(uint16(byte8()) % (uint16(a) + 1)) } // premultiplied: channel <= alpha
		rgba.Pix[i], rgba.Pix[i+1], rgba.Pix[i+2], rgba.Pix[i+3] = pm(), pm(), pm(), a
		copy(nrgba.Pix[i:i+4], []uint8{byte8(), byte8(), byte8(), byte8()})
		copy(cmyk.Pix[i:i+4], []uint8{byte8(), byte8(), byte8(), byte8()})
	}
	type subImager interface {
		SubImage(image.Rectangle) image.Image
	}
	cases := []struct {
		name string
		img  subImager
	}{
		{"Gray", gray}, {"Gray16", gray16}, {"RGBA", rgba}, {"NRGBA", nrgba}, {"Paletted", pal}, {"CMYK (generic path)", cmyk},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			for _, img := range []image.Image{c.img.(image.Image), c.img.SubImage(sub)} {
				got, want := ToGray(img), grayRef(img)
				if got.W != want.W || got.H != want.H || !bytes.Equal(got.Pix, want.Pix) {
					t.Fatalf("bounds %v: differs from color.GrayModel (max diff %d)", img.Bounds(), maxDiff(got, want))
				}
			}
		})
	}
	t.Run("YCbCr uses the stored luma", func(t *testing.T) {
		t.Parallel()
		yc := image.NewYCbCr(full, image.YCbCrSubsampleRatio420)
		// Colours inside the RGB gamut, so the reference's RGB round trip does not clip.
		for i := range yc.Y {
			yc.Y[i] = byte8()%190 + 30
		}
		for i := range yc.Cb {
			yc.Cb[i], yc.Cr[i] = byte8()%32+112, byte8()%32+112
		}
		img := yc.SubImage(sub).(*image.YCbCr)
		got := ToGray(img)
		for y := range got.H {
			for x := range got.W {
				if want := img.Y[img.YOffset(sub.Min.X+x, sub.Min.Y+y)]; got.Pix[y*got.W+x] != want {
					t.Fatalf("(%d,%d) = %d, want Y %d", x, y, got.Pix[y*got.W+x], want)
				}
			}
		}
		// And luma is BT.601 grey up to the rounding of the YCbCr -> RGB round trip.
		if d := maxDiff(got, grayRef(img)); d > 2 {
			t.Errorf("Y differs from GrayModel by %d", d)
		}
	})
}

func TestCut(t *testing.T) {
	t.Parallel()
	g := &Gray{W: 5, H: 4, Pix: make([]uint8, 20)}
	for i := range g.Pix {
		g.Pix[i] = uint8(i * 13)
	}
	dst := make([]float32, 9)
	if err := g.Cut(Fragment{X: 2, Y: 1, Size: 3}, dst); err != nil {
		t.Fatal(err)
	}
	for y := range 3 {
		for x := range 3 {
			p := g.Pix[(1+y)*5+2+x]
			if want := float32(p)/255 - 0.5; dst[y*3+x] != want {
				t.Errorf("(%d,%d) = %v, want %v", x, y, dst[y*3+x], want)
			}
		}
	}
	if PixelValue(0) != -0.5 || PixelValue(255) != 0.5 || math.Abs(float64(PixelValue(128))-(128.0/255-0.5)) > 1e-7 {
		t.Errorf("scale endpoints: %v %v %v", PixelValue(0), PixelValue(255), PixelValue(128))
	}
	cases := []struct {
		name string
		g    *Gray
		f    Fragment
		dst  int
		msg  string
	}{
		{"right edge", g, Fragment{X: 3, Y: 0, Size: 3}, 9, "outside the 5x4 image"},
		{"bottom edge", g, Fragment{X: 0, Y: 2, Size: 3}, 9, "outside"},
		{"negative corner", g, Fragment{X: -1, Y: 0, Size: 2}, 9, "outside"},
		{"larger than image", g, Fragment{Size: 6}, 36, "outside"},
		{"zero size", g, Fragment{Size: 0}, 9, "not positive"},
		{"short destination", g, Fragment{Size: 3}, 8, "holds 8 values, need 9"},
		{"pixels not matching size", &Gray{W: 5, H: 4, Pix: make([]uint8, 19)}, Fragment{Size: 2}, 4, "holds 19"},
		{"nil image", nil, Fragment{Size: 2}, 4, "nil image"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dst := make([]float32, c.dst)
			for i := range dst {
				dst[i] = 42
			}
			err := c.g.Cut(c.f, dst)
			if !errors.Is(err, ErrFragment) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("got %v, want ErrFragment containing %q", err, c.msg)
			}
			for _, v := range dst {
				if v != 42 {
					t.Fatal("dst written on error")
				}
			}
		})
	}
}

func firstPNG(t testing.TB, dataset string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(shareddata.Path(t, dataset), "*", "*.png"))
	if len(m) == 0 {
		t.Fatalf("no PNG in %s", dataset)
	}
	return m[0]
}

func TestLoadGrayReal(t *testing.T) {
	t.Parallel()
	path := firstPNG(t, "kylberg6")
	g, err := LoadGray(path)
	if err != nil {
		t.Fatal(err)
	}
	if g.W != 576 || g.H != 576 {
		t.Fatalf("%s is %dx%d, want 576x576", path, g.W, g.H)
	}
	// Cross-check against the standard library's own decode and grey conversion.
	f, _ := os.Open(path)
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if want := grayRef(img); !bytes.Equal(g.Pix, want.Pix) {
		t.Error("pixels differ from image.Decode + color.GrayModel")
	}
	// A real texture is not flat.
	lo, hi := uint8(255), uint8(0)
	for _, p := range g.Pix {
		lo, hi = min(lo, p), max(hi, p)
	}
	if hi-lo < 50 {
		t.Errorf("grey range %d..%d looks wrong for a texture photograph", lo, hi)
	}
}

// BenchmarkLoadGray decodes a real 576x576 grey PNG from memory to a Gray; its peer is
// the standard library decode alone, so the ratio is the cost of our conversion.
func BenchmarkLoadGray(b *testing.B) {
	path := firstPNG(b, "kylberg6")
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("DecodeGray", func(b *testing.B) {
		for b.Loop() {
			if _, err := DecodeGray(bytes.NewReader(raw)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("image.Decode-peer", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := image.Decode(bytes.NewReader(raw)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
