// Package tensor holds the float32 arrays that flow through texgrid: activations in
// NCHW order, weights, gradients and weight deltas. A Tensor owns a flat slice; shapes
// are row-major and never alias another tensor's data unless a function says so.
package tensor

import "fmt"

// Tensor is a dense row-major float32 array.
type Tensor struct {
	Shape []int
	Data  []float32
}

// New returns a zeroed tensor of the given shape.
func New(shape ...int) *Tensor {
	n := 1
	for _, d := range shape {
		if d < 0 {
			panic(fmt.Sprintf("tensor.New: negative dimension in %v", shape))
		}
		n *= d
	}
	return &Tensor{Shape: append([]int(nil), shape...), Data: make([]float32, n)}
}

// Len returns the number of elements the shape describes.
func (t *Tensor) Len() int { return Numel(t.Shape) }

// Clone returns a deep copy.
func (t *Tensor) Clone() *Tensor {
	return &Tensor{Shape: append([]int(nil), t.Shape...), Data: append([]float32(nil), t.Data...)}
}

// SameShape reports whether a and b have identical shapes.
func SameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Numel returns the product of the dimensions.
func Numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// Named is a tensor with its stable name, such as "conv1.weight". Ordered slices of
// Named are how weights and deltas travel between packages and files.
type Named struct {
	Name string
	T    *Tensor
}

// Find returns the tensor with the given name, or nil.
func Find(ts []Named, name string) *Tensor {
	for _, n := range ts {
		if n.Name == name {
			return n.T
		}
	}
	return nil
}
