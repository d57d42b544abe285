// Package weights is how the project server checks, folds and writes model weights and
// deltas: safetensors files handled as streams through trainer/safetensors
// (ReadHeader, DataReader, Writer), so the server never holds a whole received delta in
// memory: a result is validated while it is written to disk, and a round's deltas are
// folded one chunk at a time into a single running sum. This package adds what the
// server needs on top: the campaign's checks (names, shapes, dtype, finite values, an
// L2 bound) with the two errors the scheduler acts on, and the float64 running sum.
package weights

import (
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// DType names as they appear in safetensors headers.
const (
	F32 = string(safetensors.F32)
	F16 = string(safetensors.F16)
)

// DTypeOf maps the protocol's delta encodings ("float32", "float16") to header dtypes.
func DTypeOf(protocolName string) (string, error) {
	switch protocolName {
	case "float32", "":
		return F32, nil
	case "float16":
		return F16, nil
	}
	return "", fmt.Errorf("delta dtype %q: want float32 or float16", protocolName)
}

// MaxHeaderBytes is the room left for a header beyond the size of the one Encode
// writes: a delta file may be at most FileSize + MaxHeaderBytes.
const MaxHeaderBytes = 1 << 20

// ErrInvalid marks a file whose header or values break the rules; the message says how.
var ErrInvalid = errors.New("invalid weights")

// ErrTruncated marks a stream that ended before the data its header announced.
var ErrTruncated = errors.New("truncated weights")

// classify maps trainer/safetensors errors to ErrTruncated (the stream ended early) or
// ErrInvalid (bad bytes or the wrong tensors); the reader's own errors pass unchanged.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.ErrUnexpectedEOF) && errors.Is(err, safetensors.ErrMalformed):
		return fmt.Errorf("%w: %v", ErrTruncated, err)
	case errors.Is(err, safetensors.ErrMalformed), errors.Is(err, safetensors.ErrMismatch),
		errors.Is(err, safetensors.ErrTooLarge), errors.Is(err, safetensors.ErrNonFinite):
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return err
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// FileSize returns the size of a file with params in dtype, as Encode lays it out.
func FileSize(params []spec.Param, dtype string, meta map[string]string) int64 {
	h, err := safetensors.EncodeHeader(params, safetensors.DType(dtype), meta)
	if err != nil {
		return 0
	}
	n := int64(len(h))
	for _, p := range params {
		n += int64(tensor.Numel(p.Shape) * safetensors.DType(dtype).Size())
	}
	return n
}

// readHeader reads a delta's header and checks it holds exactly params, all in dtype,
// with a header of at most MaxHeaderBytes.
func readHeader(r io.Reader, params []spec.Param, dtype string) (*safetensors.Header, error) {
	limit := int64(8 + MaxHeaderBytes)
	for _, p := range params {
		limit += int64(tensor.Numel(p.Shape) * safetensors.DType(dtype).Size())
	}
	h, err := safetensors.ReadHeader(r, safetensors.Options{Expect: params, MaxBytes: limit})
	if err != nil {
		return nil, classify(err)
	}
	if string(h.DType) != dtype && len(h.Tensors) > 0 {
		return nil, invalidf("the tensors are %s, the campaign wants %s", h.DType, dtype)
	}
	return h, nil
}

// chunkElems is how many values a streaming pass reads at a time.
const chunkElems = 1 << 16

// chunkFor returns a chunk length for streaming params: limit, or the largest tensor
// when that is smaller, so a small model's pass allocates little.
func chunkFor(params []spec.Param, limit int) int {
	n := 1
	for _, p := range params {
		n = max(n, tensor.Numel(p.Shape))
	}
	return min(n, limit)
}

// Summary describes a delta that passed Check.
type Summary struct {
	Header *safetensors.Header
	Norm   float64 // L2 norm over every value
}

// Check reads a whole delta from r and verifies it: exactly params in dtype, every value
// finite, and an L2 norm at most maxNorm (no bound when maxNorm <= 0). Errors wrap
// ErrInvalid or ErrTruncated, or are the reader's own.
func Check(r io.Reader, params []spec.Param, dtype string, maxNorm float64) (*Summary, error) {
	h, err := readHeader(r, params, dtype)
	if err != nil {
		return nil, err
	}
	d := safetensors.NewDataReader(r, h, safetensors.Options{})
	vals := make([]float32, chunkFor(params, chunkElems))
	var ss float64
	for {
		t, at, n, err := d.Next(vals)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, classify(err)
		}
		sq, bad := sumSquaresFinite(vals[:n])
		if bad >= 0 {
			return nil, invalidf("tensor %q element %d is %v", t.Name, at+bad, vals[bad])
		}
		ss += sq
	}
	norm := math.Sqrt(ss)
	if maxNorm > 0 && norm > maxNorm {
		return nil, invalidf("L2 norm %.6g is over the campaign bound %.6g", norm, maxNorm)
	}
	return &Summary{Header: h, Norm: norm}, nil
}

// ReadAll reads a whole weights file into tensors, sorted by name.
func ReadAll(r io.Reader) ([]tensor.Named, map[string]string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, fmt.Errorf("read weights: %w", err)
	}
	f, err := safetensors.Decode(b, safetensors.Options{MaxBytes: int64(len(b))})
	if err != nil {
		return nil, nil, classify(err)
	}
	return f.Tensors, f.Meta, nil
}

// Encode writes tensors as a safetensors file in dtype (F32 or F16), in name order.
func Encode(w io.Writer, ts []tensor.Named, dtype string, meta map[string]string) error {
	if err := safetensors.Encode(w, ts, safetensors.DType(dtype), meta); err != nil {
		return fmt.Errorf("encode weights: %w", err)
	}
	return nil
}

// sumSquaresFinite returns the sum of squares of vals (float32 partial sums in four
// lanes, folded into float64) and the index of the first NaN or infinity, or -1.
func sumSquaresFinite(vals []float32) (float64, int) {
	const expMask = 0x7f800000
	var s0, s1, s2, s3 float32
	var bits uint32 = 0
	i := 0
	for ; i+4 <= len(vals); i += 4 {
		a, b, c, d := vals[i], vals[i+1], vals[i+2], vals[i+3]
		// A value is not finite when all its exponent bits are set; test each lane:
		// cheap compared with the float work.
		ba, bb, bc, bd := math.Float32bits(a), math.Float32bits(b), math.Float32bits(c), math.Float32bits(d)
		if ba&expMask == expMask || bb&expMask == expMask || bc&expMask == expMask || bd&expMask == expMask {
			bits = 1
			break
		}
		s0 += a * a
		s1 += b * b
		s2 += c * c
		s3 += d * d
	}
	if bits != 0 || i < len(vals) {
		for ; i < len(vals); i++ {
			v := vals[i]
			if math.Float32bits(v)&expMask == expMask {
				return 0, i
			}
			s0 += v * v
		}
	}
	return float64(s0) + float64(s1) + float64(s2) + float64(s3), -1
}
