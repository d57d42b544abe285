// Package safetensors reads and writes model weights and weight deltas in the
// safetensors format: an 8-byte little-endian header length, a JSON header mapping each
// tensor name to {dtype, shape, data_offsets} (plus an optional "__metadata__" string
// map), then the raw little-endian data. texgrid stores float32 tensors as F32 or F16.
//
// Writing is deterministic: tensors are laid out sorted by name and the header is padded
// with spaces so that the data starts on an 8-byte boundary. Reading trusts nothing: a
// malformed, truncated, oversized or mismatched file returns an error that names the
// problem and wraps one of the sentinel errors below, and never panics (FuzzDecode).
package safetensors

import (
	"errors"
	"fmt"
)

// DType is the on-disk element type of a file's tensors. In memory every tensor is
// float32; F16 files are widened on reading and rounded (to nearest, ties to even) on
// writing.
type DType string

// The element types texgrid reads and writes.
const (
	F32 DType = "F32"
	F16 DType = "F16"
)

// Size returns the bytes per element, or 0 for an unsupported type.
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case F16:
		return 2
	}
	return 0
}

// Sentinel errors wrapped by every error this package returns, for callers that act on
// the kind of failure (reject a volunteer's upload, re-download a cached file ...).
var (
	// ErrMalformed: the bytes are not a valid safetensors file (bad header, bad JSON,
	// unknown dtype, offsets that do not tile the data, truncation ...).
	ErrMalformed = errors.New("malformed safetensors file")
	// ErrTooLarge: the file or its header is larger than Options.MaxBytes.
	ErrTooLarge = errors.New("safetensors file too large")
	// ErrMismatch: the file is well formed but its tensors are not the ones expected
	// (Options.Expect, or the destination of DecodeInto/AddInto).
	ErrMismatch = errors.New("safetensors tensors do not match")
	// ErrNonFinite: a tensor holds NaN or an infinity.
	ErrNonFinite = errors.New("non-finite value")
	// ErrInvalid: the tensors given to Encode cannot be written (empty or duplicate
	// names, data length not matching the shape, a value too large for F16 ...).
	ErrInvalid = errors.New("invalid tensors for safetensors")
)

// DefaultMaxBytes is the file size limit used when Options.MaxBytes is zero or
// negative: far above tcnn3's ~80 MB of F32 weights, far below what would hurt a server.
const DefaultMaxBytes int64 = 1 << 30

// maxHeaderBytes bounds the JSON header whatever MaxBytes says; texgrid headers are a
// few hundred bytes and the reference implementation uses the same 100 MB ceiling.
const maxHeaderBytes = 100 << 20

// metadataKey is the reserved header entry holding free-form string metadata.
const metadataKey = "__metadata__"

func malformed(format string, args ...any) error {
	return fmt.Errorf("safetensors: %s: %w", fmt.Sprintf(format, args...), ErrMalformed)
}
