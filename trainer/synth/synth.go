// Package synth generates a synthetic texture dataset for the demo and for tests: each
// class is a procedural texture family (gratings, checkerboards, fractal noise, dots,
// bricks, cross-hatching, wood rings, cells) whose every image draws its own scale,
// orientation, phase, brightness, contrast and noise. Brightness and contrast are
// drawn from the same ranges for every class, so no class can be told apart by its
// grey level: a classifier has to learn the structure.
//
// Output depends only on the arguments: the same seed gives the same pixels (on a
// given architecture; floating-point fusion may differ across them).
package synth

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sync/errgroup"

	"github.com/texgrid/texgrid/trainer/data"
)

// family renders one texture pattern into p (size*size, row-major) with any scale and
// offset: Render standardises it afterwards.
type family struct {
	name   string
	render func(p []float64, size int, rng *rand.Rand)
}

var families = []family{
	{"grating", grating},
	{"checker", checker},
	{"cloud", cloud},
	{"dots", dots},
	{"bricks", bricks},
	{"hatch", hatch},
	{"rings", rings},
	{"cells", cells},
}

// MaxClasses is the number of texture families, and so of distinct classes.
const MaxClasses = 8

// Classes returns the names of the first n classes (sorted as they are on disk).
func Classes(n int) ([]string, error) {
	if n < 1 || n > len(families) {
		return nil, fmt.Errorf("synth: %d classes requested; between 1 and %d are available", n, len(families))
	}
	out := make([]string, n)
	for i := range n {
		out[i] = fmt.Sprintf("%d-%s", i, families[i].name)
	}
	return out, nil
}

// Render returns image index of class (a family index) at size x size pixels. Every
// (class, index, seed) triple has its own random stream, so images can be rendered in
// any order or in parallel.
func Render(class, index, size int, seed uint64) (*data.Gray, error) {
	if class < 0 || class >= len(families) {
		return nil, fmt.Errorf("synth: class %d; want 0..%d", class, len(families)-1)
	}
	if size < 8 || size > 8192 {
		return nil, fmt.Errorf("synth: size %d; want 8..8192 pixels", size)
	}
	rng := rand.New(rand.NewPCG(seed, uint64(class)<<40|uint64(index)))
	p := make([]float64, size*size)
	families[class].render(p, size, rng)

	// Standardise the pattern, then give it a brightness, contrast and sensor noise
	// drawn from class-independent ranges.
	mean, sd := stats(p)
	if sd < 1e-9 {
		sd = 1
	}
	level := 70 + 110*rng.Float64()
	contrast := 22 + 28*rng.Float64()
	noise := 2 + 10*rng.Float64()
	g := &data.Gray{W: size, H: size, Pix: make([]uint8, size*size)}
	for i, v := range p {
		x := level + contrast*(v-mean)/sd + noise*rng.NormFloat64()
		g.Pix[i] = uint8(math.Round(min(255, max(0, x))))
	}
	return g, nil
}

// Generate writes perClass PNG images of size x size pixels for each of the first
// classes families to dir/<class>/<class>-NNNN.png, the "<class>/<image>" layout the
// trainer and the FTP store read. It creates dir if needed and overwrites files.
func Generate(dir string, classes, perClass, size int, seed uint64) error {
	names, err := Classes(classes)
	if err != nil {
		return err
	}
	if perClass < 1 {
		return fmt.Errorf("synth: %d images per class; want at least 1", perClass)
	}
	for _, n := range names {
		if err := os.MkdirAll(filepath.Join(dir, n), 0o755); err != nil {
			return fmt.Errorf("synth: %w", err)
		}
	}
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for c, name := range names {
		for i := range perClass {
			g.Go(func() error {
				img, err := Render(c, i, size, seed)
				if err != nil {
					return err
				}
				var b bytes.Buffer
				if err := png.Encode(&b, &image.Gray{Pix: img.Pix, Stride: img.W, Rect: image.Rect(0, 0, img.W, img.H)}); err != nil {
					return fmt.Errorf("synth: encode %s %d: %w", name, i, err)
				}
				path := filepath.Join(dir, name, fmt.Sprintf("%s-%04d.png", name, i))
				if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
					return fmt.Errorf("synth: %w", err)
				}
				return nil
			})
		}
	}
	return g.Wait()
}

func stats(p []float64) (mean, sd float64) {
	for _, v := range p {
		mean += v
	}
	mean /= float64(len(p))
	for _, v := range p {
		sd += (v - mean) * (v - mean)
	}
	return mean, math.Sqrt(sd / float64(len(p)))
}

// uniform returns a value in [lo, hi).
func uniform(rng *rand.Rand, lo, hi float64) float64 { return lo + (hi-lo)*rng.Float64() }

// rotator maps pixel coordinates to a frame rotated by a random angle.
func rotator(rng *rand.Rand) func(x, y float64) (u, v float64) {
	a := rng.Float64() * math.Pi
	c, s := math.Cos(a), math.Sin(a)
	return func(x, y float64) (float64, float64) { return c*x + s*y, -s*x + c*y }
}

// period returns a pattern period in pixels, relative to the image size so that a
// fragment of a quarter of the image still holds several periods.
func period(rng *rand.Rand, size int, lo, hi float64) float64 {
	return math.Max(3, uniform(rng, lo, hi)*float64(size)/64)
}
