package ort

import (
	"errors"
	"fmt"

	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// ClassifyBatch is how many fragments ClassifyImage sends to ONNX Runtime at a time.
const ClassifyBatch = 32

// Prediction is an image-level classification: the mean of the fragment probabilities
// over a grid of fragments, and its argmax.
type Prediction struct {
	Class     int       // argmax of Probs
	Prob      float32   // Probs[Class]
	Probs     []float32 // mean softmax probability per class
	Fragments int       // how many fragments were averaged
}

// Runner computes logits [N, classes] for fragments [N, 1, S, S]: a *Session, or any
// other engine (the Go engine, when ONNX Runtime is missing) behind the same method.
type Runner interface {
	Run(x *tensor.Tensor) (*tensor.Tensor, error)
}

// ClassifyImage classifies a grey image with the fragments of
// data.GridFragments(size, stride). size 0 means the model's own input size; stride 0
// means size (fragments side by side). The model must take one channel.
func ClassifyImage(s *Session, g *data.Gray, size, stride int) (Prediction, error) {
	if s == nil {
		return Prediction{}, errors.New("classify image: nil session")
	}
	if size == 0 {
		size = s.Size
	}
	if size <= 0 {
		return Prediction{}, errors.New("classify image: the model has no fixed input size; give a fragment size")
	}
	if s.Size > 0 && size != s.Size {
		return Prediction{}, fmt.Errorf("classify image: %w: %d px fragments for a model that takes %d px", ErrShape, size, s.Size)
	}
	if s.Channels > 1 {
		return Prediction{}, fmt.Errorf("classify image: %w: the model takes %d channels, grey images have 1", ErrShape, s.Channels)
	}
	return Classify(s, g, size, stride)
}

// Classify is ClassifyImage for any Runner taking size x size grey fragments.
func Classify(run Runner, g *data.Gray, size, stride int) (Prediction, error) {
	if g == nil {
		return Prediction{}, errors.New("classify image: nil image")
	}
	if size <= 0 {
		return Prediction{}, fmt.Errorf("classify image: fragment size %d is not positive", size)
	}
	if stride == 0 {
		stride = size
	}
	if stride < 0 {
		return Prediction{}, fmt.Errorf("classify image: stride %d is negative", stride)
	}
	frags := data.GridFragments(0, g.W, g.H, size, stride)
	if len(frags) == 0 {
		return Prediction{}, fmt.Errorf("classify image: the %dx%d image is smaller than the %dx%d fragments", g.W, g.H, size, size)
	}
	var sum []float64
	per := size * size
	for start := 0; start < len(frags); start += ClassifyBatch {
		batch := frags[start:min(start+ClassifyBatch, len(frags))]
		x := tensor.New(len(batch), 1, size, size)
		for i, f := range batch {
			if err := g.Cut(f, x.Data[i*per:(i+1)*per]); err != nil {
				return Prediction{}, fmt.Errorf("classify image: %w", err)
			}
		}
		logits, err := run.Run(x)
		if err != nil {
			return Prediction{}, fmt.Errorf("classify image: %w", err)
		}
		if len(logits.Shape) != 2 || logits.Shape[0] != len(batch) || logits.Shape[1] < 1 {
			return Prediction{}, fmt.Errorf("classify image: logits have shape %v for %d fragments", logits.Shape, len(batch))
		}
		probs := Softmax(logits)
		c := probs.Shape[1]
		if sum == nil {
			sum = make([]float64, c)
		}
		if len(sum) != c {
			return Prediction{}, fmt.Errorf("classify image: %d classes, then %d", len(sum), c)
		}
		for i, p := range probs.Data {
			sum[i%c] += float64(p)
		}
	}
	return mean(sum, len(frags)), nil
}

func mean(sum []float64, n int) Prediction {
	p := Prediction{Probs: make([]float32, len(sum)), Fragments: n}
	for i, v := range sum {
		p.Probs[i] = float32(v / float64(n))
		if p.Probs[i] > p.Probs[p.Class] {
			p.Class = i
		}
	}
	p.Prob = p.Probs[p.Class]
	return p
}
