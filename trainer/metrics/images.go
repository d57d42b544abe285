package metrics

import (
	"fmt"
	"sort"
)

// FromProbs scores per-sample class probabilities (or logits: only the argmax counts)
// laid out row-major as [samples][classes], against the true labels. A row that is
// all NaN has no prediction and is an ErrLabel error.
func FromProbs(probs []float32, classes int, labels []int) (*Confusion, error) {
	if err := checkRows(probs, classes, len(labels)); err != nil {
		return nil, err
	}
	c := NewConfusion(classes)
	for i, l := range labels {
		if err := c.Add(l, Argmax(probs[i*classes:(i+1)*classes])); err != nil {
			return nil, fmt.Errorf("sample %d: %w", i, err)
		}
	}
	return c, nil
}

// ImageResult is one source image's verdict: the mean of its fragments' class
// probabilities and the class with the highest mean.
type ImageResult struct {
	Image     int       // the image index the fragments carried
	Fragments int       // how many fragments were averaged
	Mean      []float64 // mean probability per class
	Pred      int       // Argmax(Mean)
}

// ByImage groups fragment probability rows ([fragments][classes], row-major) by the
// image each came from (imageOf[i] for row i), averages each image's rows in float64
// and takes the argmax: the image-level prediction. Results are sorted by image index.
func ByImage(probs []float32, classes int, imageOf []int) ([]ImageResult, error) {
	if err := checkRows(probs, classes, len(imageOf)); err != nil {
		return nil, err
	}
	at := map[int]int{}
	var out []ImageResult
	for i, im := range imageOf {
		k, ok := at[im]
		if !ok {
			k = len(out)
			at[im] = k
			out = append(out, ImageResult{Image: im, Mean: make([]float64, classes)})
		}
		r := &out[k]
		r.Fragments++
		for c, p := range probs[i*classes : (i+1)*classes] {
			r.Mean[c] += float64(p)
		}
	}
	for k := range out {
		r := &out[k]
		for c := range r.Mean {
			r.Mean[c] /= float64(r.Fragments)
		}
		r.Pred = Argmax(r.Mean)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Image < out[j].Image })
	return out, nil
}

// ImageConfusion scores the image-level predictions of ByImage: labelOf[img] is the
// true class of image img.
func ImageConfusion(results []ImageResult, classes int, labelOf []int) (*Confusion, error) {
	c := NewConfusion(classes)
	for _, r := range results {
		if r.Image < 0 || r.Image >= len(labelOf) {
			return nil, fmt.Errorf("image %d has no label (%d labels): %w", r.Image, len(labelOf), ErrLabel)
		}
		if err := c.Add(labelOf[r.Image], r.Pred); err != nil {
			return nil, fmt.Errorf("image %d: %w", r.Image, err)
		}
	}
	return c, nil
}

func checkRows(probs []float32, classes, rows int) error {
	if classes <= 0 {
		return fmt.Errorf("%d classes: %w", classes, ErrLabel)
	}
	if len(probs) != rows*classes {
		return fmt.Errorf("%d probabilities for %d rows of %d classes: %w", len(probs), rows, classes, ErrLabel)
	}
	return nil
}
