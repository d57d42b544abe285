package safetensors

import (
	"fmt"
	"math"

	"github.com/texgrid/texgrid/trainer/tensor"
)

// CheckFinite returns an ErrNonFinite error naming the first tensor and element that is
// NaN or infinite, or nil. A delta with such a value would poison every model it is
// folded into.
func CheckFinite(ts []tensor.Named) error {
	for _, t := range ts {
		if t.T == nil {
			continue
		}
		for i, v := range t.T.Data {
			if math.Float32bits(v)&0x7f800000 == 0x7f800000 {
				return fmt.Errorf("tensor %q element %d is %v: %w", t.Name, i, v, ErrNonFinite)
			}
		}
	}
	return nil
}

// L2Norm returns the Euclidean norm of all values of ts taken together, accumulated in
// float64 (the server's sanity bound on a delta's size). It is NaN or +Inf when a value
// is.
func L2Norm(ts []tensor.Named) float64 {
	var s float64
	for _, t := range ts {
		if t.T == nil {
			continue
		}
		for _, v := range t.T.Data {
			s += float64(v) * float64(v)
		}
	}
	return math.Sqrt(s)
}
