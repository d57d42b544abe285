// Package data turns texture images into training samples: the deterministic train/test
// split by source image, the fragment sampling that work units describe by seed and
// count, and (in other files) image decoding and fragment cutting. The project server
// and every volunteer derive identical fragment lists from the same inputs, so a work
// unit never carries pixels or coordinates.
package data

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sort"
)

// Split is the side of the train/test split an image belongs to.
type Split string

// The two splits.
const (
	Train Split = "train"
	Test  Split = "test"
)

// DefaultTestFraction is the share of source images held out for evaluation.
const DefaultTestFraction = 0.2

// SplitOf assigns an image to a split from its identity alone (class and file name), so
// an image never changes side when other images are added or removed. The rule:
// h = the first 8 bytes, big-endian, of sha256("texgrid-split/v1\x00" + class + "/" + name);
// the image is Test when h < testFraction * 2^64.
func SplitOf(class, name string, testFraction float64) Split {
	sum := sha256.Sum256([]byte("texgrid-split/v1\x00" + class + "/" + name))
	h := binary.BigEndian.Uint64(sum[:8])
	if float64(h) < testFraction*18446744073709551616.0 {
		return Test
	}
	return Train
}

// ImageRef names one source image and its size; the fragment sampler needs nothing else.
type ImageRef struct {
	Key    string // the image's path inside its dataset, "<class>/<name>"
	Class  int    // index into the dataset's sorted class list
	Width  int
	Height int
}

// Fragment is a square crop of a source image: the unit of training and evaluation.
type Fragment struct {
	Image int // index into the []ImageRef it was sampled from
	X, Y  int // top-left corner in pixels
	Size  int
}

// Eligible returns the images at least size pixels on each side, sorted by Key, and the
// keys of those that were left out because they are too small.
func Eligible(images []ImageRef, size int) (ok []ImageRef, tooSmall []string) {
	for _, im := range images {
		if im.Width >= size && im.Height >= size {
			ok = append(ok, im)
		} else {
			tooSmall = append(tooSmall, im.Key)
		}
	}
	sort.Slice(ok, func(i, j int) bool { return ok[i].Key < ok[j].Key })
	sort.Strings(tooSmall)
	return ok, tooSmall
}

// fragmentStream is the second PCG word: the ASCII bytes of "texgrid1".
const fragmentStream = 0x7465786772696431

// SampleFragments derives a work unit's fragment list. The algorithm, which every
// implementation must follow exactly:
//
//  1. images are the eligible images (see Eligible) sorted by Key;
//  2. rng is math/rand/v2's PCG seeded with (seed, 0x7465786772696431);
//  3. for each of count fragments, in order: i = rng.IntN(len(images)),
//     x = rng.IntN(width_i - size + 1), y = rng.IntN(height_i - size + 1).
//
// The caller passes images already filtered and sorted by Eligible.
func SampleFragments(images []ImageRef, seed uint64, count, size int) ([]Fragment, error) {
	if len(images) == 0 {
		return nil, fmt.Errorf("sample fragments: no image is at least %dx%d pixels", size, size)
	}
	if count < 0 || size <= 0 {
		return nil, fmt.Errorf("sample fragments: bad count %d or size %d", count, size)
	}
	rng := rand.New(rand.NewPCG(seed, fragmentStream))
	out := make([]Fragment, count)
	for k := range out {
		i := rng.IntN(len(images))
		im := images[i]
		if im.Width < size || im.Height < size {
			return nil, fmt.Errorf("sample fragments: image %s is %dx%d, smaller than %d", im.Key, im.Width, im.Height, size)
		}
		out[k] = Fragment{Image: i, X: rng.IntN(im.Width - size + 1), Y: rng.IntN(im.Height - size + 1), Size: size}
	}
	return out, nil
}

// GridFragments covers an image with fragments on a regular grid: the evaluation
// fragments of a test image. The grid has ceil((side-size)/stride)+1 positions per axis
// and its last row and column touch the far edges, so every pixel is covered once
// stride <= size.
func GridFragments(image int, width, height, size, stride int) []Fragment {
	if width < size || height < size || size <= 0 || stride <= 0 {
		return nil
	}
	xs := gridPositions(width, size, stride)
	ys := gridPositions(height, size, stride)
	out := make([]Fragment, 0, len(xs)*len(ys))
	for _, y := range ys {
		for _, x := range xs {
			out = append(out, Fragment{Image: image, X: x, Y: y, Size: size})
		}
	}
	return out
}

func gridPositions(side, size, stride int) []int {
	var ps []int
	for p := 0; p+size < side; p += stride {
		ps = append(ps, p)
	}
	return append(ps, side-size)
}
