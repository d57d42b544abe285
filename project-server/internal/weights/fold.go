package weights

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sync"

	"github.com/texgrid/texgrid/trainer/spec"
)

// readers recycles the 1 MB read buffers of folds, one per delta otherwise.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 1<<20) }}

// Sum is a running, weighted float64 sum of deltas over one model's parameters. It holds
// one float64 per parameter (two model sizes of float32) and nothing per delta, however
// many are folded in.
type Sum struct {
	params []spec.Param
	offset map[string]int
	vals   []float64
	weight float64
	count  int
	buf    []byte
}

// NewSum returns a zero sum over params.
func NewSum(params []spec.Param) *Sum { return NewSumIn(params, nil) }

// NewSumIn returns a zero sum over params that reuses buf's storage when it is large
// enough, so successive round closes do not each allocate two model sizes.
func NewSumIn(params []spec.Param, buf []float64) *Sum {
	s := &Sum{params: params, offset: make(map[string]int, len(params)), buf: make([]byte, chunkElems*4)}
	n := 0
	for _, p := range params {
		s.offset[p.Name] = n
		n += p.Size()
	}
	if cap(buf) >= n {
		s.vals = buf[:n]
		clear(s.vals)
	} else {
		s.vals = make([]float64, n)
	}
	return s
}

// Storage returns the sum's backing array, for NewSumIn.
func (s *Sum) Storage() []float64 { return s.vals }

// Count returns how many deltas were folded in; Weight their total weight.
func (s *Sum) Count() int { return s.count }

// Weight returns the total weight folded in.
func (s *Sum) Weight() float64 { return s.weight }

// Add folds weight x delta, read as a stream from r, into the sum. The delta must have
// exactly the sum's tensors; its dtype may be F32 or F16. On error the sum is left
// partly updated and must be discarded.
func (s *Sum) Add(r io.Reader, dtype string, weight float64) error {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() { br.Reset(nil); readers.Put(br) }()
	h, err := ReadHeader(br)
	if err != nil {
		return err
	}
	if err := h.Expect(s.params, dtype); err != nil {
		return err
	}
	for _, e := range h.Entries {
		es := ElemSize(e.DType)
		total := int((e.End - e.Begin) / int64(es))
		dst := s.vals[s.offset[e.Name] : s.offset[e.Name]+total]
		for at := 0; at < total; {
			n := min(chunkElems, total-at)
			b := s.buf[:n*es]
			if _, err := io.ReadFull(br, b); err != nil {
				return readErr(fmt.Sprintf("data of tensor %q", e.Name), err)
			}
			if e.DType == F32 {
				addF32(dst[at:at+n], asF32(b), weight)
			} else {
				d := dst[at : at+n]
				for i := range d {
					d[i] += weight * float64(halfToFloat(uint16(b[2*i])|uint16(b[2*i+1])<<8))
				}
			}
			at += n
		}
	}
	s.weight += weight
	s.count++
	return nil
}

func addF32(dst []float64, src []float32, weight float64) {
	src = src[:len(dst)]
	if weight == 1 {
		for i, v := range src {
			dst[i] += float64(v)
		}
		return
	}
	for i, v := range src {
		dst[i] += weight * float64(v)
	}
}

// Apply writes base + sum/weight as a new F32 weights file to w, streaming base (an F32
// file with the sum's tensors) from r. Each value is
// float32(float64(base) + sum/weight), the definition tests reproduce.
func (s *Sum) Apply(w io.Writer, r io.Reader, meta map[string]string) error {
	if s.count == 0 || s.weight <= 0 {
		return fmt.Errorf("apply: nothing folded in")
	}
	br := bufio.NewReaderSize(r, 1<<20)
	h, err := ReadHeader(br)
	if err != nil {
		return fmt.Errorf("apply: base model: %w", err)
	}
	if err := h.Expect(s.params, F32); err != nil {
		return fmt.Errorf("apply: base model: %w", err)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if err := writeHeader(bw, s.params, F32, meta); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	// The output lists tensors in name order; read the base's data into place by name.
	base := make(map[string]Entry, len(h.Entries))
	for _, e := range h.Entries {
		base[e.Name] = e
	}
	// Base files written by Encode are in name order too, so this is one sequential
	// pass; other layouts would need seeking and are refused.
	var at int64
	out := make([]byte, chunkElems*4)
	for _, p := range Sorted(s.params) {
		e := base[p.Name]
		if e.Begin != at {
			return fmt.Errorf("apply: base model is not laid out in name order")
		}
		total := p.Size()
		off := s.offset[p.Name]
		for i := 0; i < total; {
			n := min(chunkElems, total-i)
			b := s.buf[:4*n]
			if _, err := io.ReadFull(br, b); err != nil {
				return fmt.Errorf("apply: base model: %w", readErr("data", err))
			}
			src := asF32(b)
			dst := asF32(out[:4*n])
			sum := s.vals[off+i : off+i+n]
			for k := range n {
				dst[k] = float32(float64(src[k]) + sum[k]/s.weight)
			}
			if _, err := bw.Write(encodeVals(F32, dst, out)); err != nil {
				return fmt.Errorf("apply: %w", err)
			}
			i += n
		}
		at = e.End
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	return nil
}

// Finite reports whether every value of the sum is finite.
func (s *Sum) Finite() bool {
	for _, v := range s.vals {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}
