package data

import (
	"bytes"
	"flag"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
)

var update = flag.Bool("update", false, "rewrite the generated image fixtures in testdata/")

// Fixture images are 13x7 (not square, odd width) so that a transposed or mis-strided
// conversion shows.
const fixW, fixH = 13, 7

// fixtureColor is the colour of pixel (x, y) in the colour fixtures: every channel
// varies differently, so swapping channels changes the grey value.
func fixtureColor(x, y int) color.NRGBA {
	return color.NRGBA{R: uint8(19*x + 7*y), G: uint8(255 - 17*x + 3*y), B: uint8(11*x*y + 40), A: 255}
}

func fixtureGray(x, y int) uint8 { return uint8(19*x + 29*y + 3) }

// fixtureSources are the in-memory images the fixtures were encoded from.
func fixtureSources() map[string]image.Image {
	r := image.Rect(0, 0, fixW, fixH)
	gray, gray16 := image.NewGray(r), image.NewGray16(r)
	rgb, rgba := image.NewNRGBA(r), image.NewNRGBA(r)
	pal := image.NewPaletted(r, nil)
	for i := range 64 {
		pal.Palette = append(pal.Palette, color.NRGBA{uint8(4 * i), uint8(255 - 4*i), uint8(i * i), 255})
	}
	for y := range fixH {
		for x := range fixW {
			gray.SetGray(x, y, color.Gray{fixtureGray(x, y)})
			gray16.SetGray16(x, y, color.Gray16{uint16(fixtureGray(x, y))<<8 | uint16(x*y)})
			c := fixtureColor(x, y)
			rgb.SetNRGBA(x, y, c)
			c.A = uint8(255 - 9*x - 11*y)
			rgba.SetNRGBA(x, y, c)
			pal.SetColorIndex(x, y, uint8((x+3*y)%64))
		}
	}
	return map[string]image.Image{
		"gray.png": gray, "gray16.png": gray16, "rgb.png": rgb, "rgba.png": rgba, "palette.png": pal,
		"palette.gif": pal, "gray.tif": gray, "rgb.tif": rgb, "rgb.bmp": rgb, "gray.bmp": gray,
		"gray.jpg": gray, "color.jpg": rgb,
	}
}

func encodeFixture(t *testing.T, name string, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	var err error
	switch filepath.Ext(name) {
	case ".png":
		err = png.Encode(&b, img)
	case ".gif":
		err = gif.Encode(&b, img, nil)
	case ".jpg":
		err = jpeg.Encode(&b, img, &jpeg.Options{Quality: 95})
	case ".tif":
		err = tiff.Encode(&b, img, &tiff.Options{Compression: tiff.Deflate})
	case ".bmp":
		err = bmp.Encode(&b, img)
	}
	if err != nil {
		t.Fatalf("encode %s: %v", name, err)
	}
	return b.Bytes()
}

// TestWriteFixtures regenerates testdata/ with -update; otherwise it checks that every
// fixture is present (TestLoadGrayFormats checks their pixels against the sources:
// encoder output bytes may change between Go releases, decoded pixels may not).
func TestWriteFixtures(t *testing.T) {
	srcs := fixtureSources()
	files := map[string][]byte{}
	for name, img := range srcs {
		files[name] = encodeFixture(t, name, img)
	}
	good := files["gray.png"]
	files["corrupt.png"] = good[:len(good)*2/3]       // valid header, truncated pixel data
	files["text.png"] = []byte("this is not a PNG\n") // wrong contents behind a .png name
	files["empty.png"] = nil
	if *update {
		for name, b := range files {
			if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	for name := range files {
		if _, err := os.Stat(filepath.Join("testdata", name)); err != nil {
			t.Errorf("fixture %s missing (run go test -run TestWriteFixtures -update): %v", name, err)
		}
	}
}
