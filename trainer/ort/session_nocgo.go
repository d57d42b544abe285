//go:build !cgo

package ort

import (
	"fmt"

	"github.com/texgrid/texgrid/trainer/tensor"
)

// haveCgo tells tests which build this is.
const haveCgo = false

// errNoCgo explains why a pure-Go build cannot use ONNX Runtime.
var errNoCgo = fmt.Errorf("%w: this binary was built with CGO_ENABLED=0, and loading libonnxruntime needs cgo; rebuild with cgo or use the Go engine", ErrNoLibrary)

// Available always fails in a build without cgo.
func Available() error { return errNoCgo }

// Loaded returns empty strings: nothing is ever loaded without cgo.
func Loaded() (path, version string) { return "", "" }

// Session is a loaded model; without cgo none can be opened.
type Session struct {
	Info
}

// Open fails with ErrNoLibrary without cgo, after the checks that need no library: a
// file that is not a texgrid ONNX classifier is still reported as such.
func Open(model []byte, threads int) (*Session, error) {
	if _, _, err := inspect(model); err != nil {
		return nil, fmt.Errorf("ort: open model: %w", err)
	}
	return nil, errNoCgo
}

// Run fails with ErrNoLibrary without cgo.
func (s *Session) Run(x *tensor.Tensor) (*tensor.Tensor, error) { return nil, errNoCgo }

// Close does nothing.
func (s *Session) Close() error { return nil }
