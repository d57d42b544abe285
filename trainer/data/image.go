package data

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif"  // register GIF
	_ "image/jpeg" // register JPEG
	_ "image/png"  // register PNG
	"io"
	"os"

	_ "golang.org/x/image/bmp"  // register BMP
	_ "golang.org/x/image/tiff" // register TIFF
)

// Limits that keep a hostile or broken file from exhausting a volunteer's memory.
const (
	// MaxFileBytes bounds an image file read into memory.
	MaxFileBytes = 256 << 20
	// MaxPixels bounds width*height, checked from the header before decoding (a
	// 100-byte PNG can claim to be 100000x100000).
	MaxPixels = 1 << 26
)

// Sentinel errors for the images a dataset scan skips and the fragments a source
// refuses.
var (
	// ErrFormat: the bytes are not an image in a supported format (PNG, JPEG, GIF,
	// TIFF, BMP), or the image data is corrupt.
	ErrFormat = errors.New("not a readable image")
	// ErrEmptyImage: the file is empty or the image has no pixels.
	ErrEmptyImage = errors.New("empty image")
	// ErrImageTooLarge: the file or its pixel count is beyond MaxFileBytes or MaxPixels.
	ErrImageTooLarge = errors.New("image too large")
	// ErrFragment: a fragment does not fit its image or its destination.
	ErrFragment = errors.New("bad fragment")
)

// Gray is an 8-bit grey image, row-major with no padding: pixel (x, y) is
// Pix[y*W+x]. It is the only pixel format the trainer works with.
type Gray struct {
	W, H int
	Pix  []uint8
}

// Bytes returns the memory the pixels hold, for cache accounting.
func (g *Gray) Bytes() int64 { return int64(len(g.Pix)) }

// pixelScale maps a byte to the network input x/255 - 0.5, computed in float32 as
// float32(x)/255 - 0.5, the same arithmetic as the PyTorch peer's float32 tensors.
var pixelScale = func() (t [256]float32) {
	for i := range t {
		t[i] = float32(i)/255 - 0.5
	}
	return t
}()

// PixelValue returns the network input for a grey level: x/255 - 0.5.
func PixelValue(x uint8) float32 { return pixelScale[x] }

// Cut writes fragment f of g into dst as f.Size*f.Size floats, row-major, scaled
// x/255 - 0.5. dst must hold at least f.Size*f.Size values; only those are written.
// A fragment that does not lie inside g, or a too-short dst, is an ErrFragment error
// and dst is not touched.
func (g *Gray) Cut(f Fragment, dst []float32) error {
	if err := g.check(); err != nil {
		return err
	}
	s := f.Size
	switch {
	case s <= 0:
		return fmt.Errorf("cut %dx%d fragment: size is not positive: %w", s, s, ErrFragment)
	case f.X < 0 || f.Y < 0 || f.X > g.W-s || f.Y > g.H-s:
		return fmt.Errorf("cut %dx%d fragment at (%d, %d): outside the %dx%d image: %w", s, s, f.X, f.Y, g.W, g.H, ErrFragment)
	case len(dst) < s*s:
		return fmt.Errorf("cut %dx%d fragment: destination holds %d values, need %d: %w", s, s, len(dst), s*s, ErrFragment)
	}
	for y := range s {
		row := g.Pix[(f.Y+y)*g.W+f.X:][:s]
		out := dst[y*s:][:s]
		for x, p := range row {
			out[x] = pixelScale[p]
		}
	}
	return nil
}

// check guards against a hand-built Gray whose slice does not match its size.
func (g *Gray) check() error {
	if g == nil || g.W <= 0 || g.H <= 0 || len(g.Pix) != g.W*g.H {
		if g == nil {
			return fmt.Errorf("nil image: %w", ErrFragment)
		}
		return fmt.Errorf("image claims %dx%d pixels but holds %d: %w", g.W, g.H, len(g.Pix), ErrFragment)
	}
	return nil
}

// LoadGray reads and decodes an image file to grey.
func LoadGray(path string) (*Gray, error) {
	b, err := readImageFile(path)
	if err != nil {
		return nil, err
	}
	g, err := decodeBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return g, nil
}

// DecodeGray decodes an image (PNG, JPEG, GIF, TIFF or BMP) from r and converts it to
// grey with the ITU-R BT.601 luma weights (0.299 R + 0.587 G + 0.114 B), exactly as
// image/color.GrayModel does, colours being composited over black when they carry
// alpha. JPEG's own luma channel is used as is. It reads at most MaxFileBytes.
func DecodeGray(r io.Reader) (*Gray, error) {
	b, err := readAllLimited(r, sizeHint(r))
	if err != nil {
		return nil, err
	}
	return decodeBytes(b)
}

// sizeHint returns the bytes left in r when r can tell (bytes.Reader, bytes.Buffer,
// strings.Reader), else 0.
func sizeHint(r io.Reader) int64 {
	if l, ok := r.(interface{ Len() int }); ok {
		return int64(l.Len())
	}
	return 0
}

// readAllLimited reads r to the end into one buffer of the expected size (when known),
// failing with ErrImageTooLarge beyond MaxFileBytes.
func readAllLimited(r io.Reader, hint int64) ([]byte, error) {
	var buf bytes.Buffer
	if hint > 0 && hint <= MaxFileBytes {
		buf.Grow(int(hint) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(io.LimitReader(r, MaxFileBytes+1)); err != nil {
		return nil, fmt.Errorf("read image: %w", err)
	}
	if buf.Len() > MaxFileBytes {
		return nil, fmt.Errorf("image data over %d bytes: %w", MaxFileBytes, ErrImageTooLarge)
	}
	return buf.Bytes(), nil
}

// DecodeConfig returns an image file's size and format ("png", "jpeg", "gif", "tiff",
// "bmp") from its header, without decoding the pixels.
func DecodeConfig(path string) (w, h int, format string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, "", fmt.Errorf("image: %w", err)
	}
	defer f.Close()
	cfg, format, err := image.DecodeConfig(f)
	if err != nil {
		if st, serr := f.Stat(); serr == nil && st.Size() == 0 {
			return 0, 0, "", fmt.Errorf("%s: file is empty: %w", path, ErrEmptyImage)
		}
		return 0, 0, "", fmt.Errorf("%s: %v: %w", path, err, ErrFormat)
	}
	return cfg.Width, cfg.Height, format, nil
}

func readImageFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	defer f.Close()
	var hint int64
	if st, err := f.Stat(); err == nil {
		if st.Size() > MaxFileBytes {
			return nil, fmt.Errorf("%s: %d bytes, over the %d byte limit: %w", path, st.Size(), MaxFileBytes, ErrImageTooLarge)
		}
		hint = st.Size()
	}
	b, err := readAllLimited(f, hint)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

func decodeBytes(b []byte) (g *Gray, err error) {
	// The decoders are well tested, but a volunteer must not crash on one bad file
	// in someone else's dataset: a decoder panic is just an unreadable image.
	defer func() {
		if r := recover(); r != nil {
			g, err = nil, fmt.Errorf("image decoder failed: %v: %w", r, ErrFormat)
		}
	}()
	if len(b) == 0 {
		return nil, fmt.Errorf("file is empty: %w", ErrEmptyImage)
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrFormat)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, fmt.Errorf("%s image is %dx%d: %w", format, cfg.Width, cfg.Height, ErrEmptyImage)
	}
	if int64(cfg.Width)*int64(cfg.Height) > MaxPixels {
		return nil, fmt.Errorf("%s image is %dx%d, over %d pixels: %w", format, cfg.Width, cfg.Height, MaxPixels, ErrImageTooLarge)
	}
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("decode %s: %v: %w", format, err, ErrFormat)
	}
	if m, ok := img.(*image.Gray); ok && m.Rect.Min == (image.Point{}) && m.Stride == m.Rect.Dx() {
		// The decoder's buffer is ours and already in Gray's layout: keep it.
		g = &Gray{W: m.Rect.Dx(), H: m.Rect.Dy(), Pix: m.Pix[:m.Rect.Dx()*m.Rect.Dy()]}
	} else {
		g = ToGray(img)
	}
	if g.W <= 0 || g.H <= 0 {
		return nil, fmt.Errorf("%s image has no pixels: %w", format, ErrEmptyImage)
	}
	return g, nil
}

// ToGray converts any image to a Gray (see DecodeGray for the formula), with fast paths
// for the types the standard decoders return.
func ToGray(img image.Image) *Gray {
	r := img.Bounds()
	w, h := r.Dx(), r.Dy()
	if w <= 0 || h <= 0 {
		return &Gray{}
	}
	g := &Gray{W: w, H: h, Pix: make([]uint8, w*h)}
	switch m := img.(type) {
	case *image.Gray:
		for y := range h {
			copy(g.Pix[y*w:(y+1)*w], m.Pix[m.PixOffset(r.Min.X, r.Min.Y+y):])
		}
	case *image.YCbCr:
		// The stored Y' is the BT.601 luma; converting to RGB and back would only add
		// rounding error.
		for y := range h {
			copy(g.Pix[y*w:(y+1)*w], m.Y[m.YOffset(r.Min.X, r.Min.Y+y):])
		}
	case *image.Gray16:
		for y := range h {
			row := m.Pix[m.PixOffset(r.Min.X, r.Min.Y+y):]
			out := g.Pix[y*w : (y+1)*w]
			for x := range out {
				out[x] = row[2*x] // the high byte, as color.GrayModel rounds
			}
		}
	case *image.RGBA:
		for y := range h {
			row := m.Pix[m.PixOffset(r.Min.X, r.Min.Y+y):]
			out := g.Pix[y*w : (y+1)*w]
			for x := range out {
				p := row[4*x : 4*x+4]
				r16, g16, b16, _ := color.RGBA{p[0], p[1], p[2], p[3]}.RGBA()
				out[x] = luma(r16, g16, b16)
			}
		}
	case *image.NRGBA:
		for y := range h {
			row := m.Pix[m.PixOffset(r.Min.X, r.Min.Y+y):]
			out := g.Pix[y*w : (y+1)*w]
			for x := range out {
				p := row[4*x : 4*x+4]
				r16, g16, b16, _ := color.NRGBA{p[0], p[1], p[2], p[3]}.RGBA()
				out[x] = luma(r16, g16, b16)
			}
		}
	case *image.Paletted:
		var lut [256]uint8
		for i, c := range m.Palette[:min(len(m.Palette), 256)] {
			r16, g16, b16, _ := c.RGBA()
			lut[i] = luma(r16, g16, b16)
		}
		for y := range h {
			row := m.Pix[m.PixOffset(r.Min.X, r.Min.Y+y):]
			out := g.Pix[y*w : (y+1)*w]
			for x := range out {
				out[x] = lut[row[x]]
			}
		}
	default:
		for y := range h {
			out := g.Pix[y*w : (y+1)*w]
			for x := range out {
				r16, g16, b16, _ := img.At(r.Min.X+x, r.Min.Y+y).RGBA()
				out[x] = luma(r16, g16, b16)
			}
		}
	}
	return g
}

// luma is color.GrayModel's BT.601 conversion of 16-bit (alpha-premultiplied) channels.
func luma(r, g, b uint32) uint8 {
	return uint8((19595*r + 38470*g + 7471*b + 1<<15) >> 24)
}
