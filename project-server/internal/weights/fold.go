package weights

import (
	"fmt"
	"io"
	"math"

	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/spec"
)

// Sum is a running, weighted float64 sum of deltas over one model's parameters. It holds
// one float64 per parameter (two model sizes of float32) and nothing per delta, however
// many are folded in.
type Sum struct {
	params []spec.Param
	offset map[string]int
	vals   []float64
	weight float64
	count  int
	buf    []float32 // fold's chunk buffer
}

// NewSum returns a zero sum over params.
func NewSum(params []spec.Param) *Sum { return NewSumIn(params, nil) }

// NewSumIn returns a zero sum over params that reuses buf's storage when it is large
// enough, so successive round closes do not each allocate two model sizes.
func NewSumIn(params []spec.Param, buf []float64) *Sum {
	s := &Sum{params: params, offset: make(map[string]int, len(params))}
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
	return s.AddAll([]io.Reader{r}, dtype, []float64{weight})
}

// MaxBatch is how many deltas AddAll folds in one pass; callers fold longer lists in
// batches of this size.
const MaxBatch = 8

// AddAll folds weights[k] x delta k, read from rs[k], into the sum for every k, with
// exactly the arithmetic of calling Add for each in order (each value of the sum gets
// the deltas added one after the other, in float64). It makes one pass over the sum
// for the whole batch, a chunk of the sum staying in the CPU cache while every delta's
// matching chunk is added, so the sum, the largest array, crosses memory once per
// batch rather than once per delta. Deltas whose tensors are not laid out in the same
// order as the first's are folded one after the other instead. Memory per delta is its
// header. On error the sum is left partly updated and must be discarded.
func (s *Sum) AddAll(rs []io.Reader, dtype string, weights []float64) error {
	if len(rs) != len(weights) || len(rs) > MaxBatch {
		return fmt.Errorf("fold: %d readers, %d weights (at most %d)", len(rs), len(weights), MaxBatch)
	}
	srcs := make([]deltaSource, len(rs))
	for k, r := range rs {
		h, err := readHeader(r, s.params, dtype)
		if err != nil {
			return deltaErr(len(rs), k, err)
		}
		srcs[k] = deltaSource{h: h, d: safetensors.NewDataReader(r, h, safetensors.Options{}), weight: weights[k]}
	}
	same := true
	for k := 1; k < len(srcs); k++ {
		same = same && sameLayout(srcs[0].h, srcs[k].h)
	}
	if same {
		if err := s.fold(srcs); err != nil {
			return err
		}
	} else {
		for k := range srcs {
			if err := s.fold(srcs[k : k+1]); err != nil {
				return deltaErr(len(rs), k, err)
			}
		}
	}
	for _, w := range weights {
		s.weight += w
	}
	s.count += len(rs)
	return nil
}

// deltaSource is one delta of a batch: its header and its data.
type deltaSource struct {
	h      *safetensors.Header
	d      *safetensors.DataReader
	weight float64
}

func deltaErr(n, k int, err error) error {
	if n == 1 {
		return err
	}
	return fmt.Errorf("delta %d of %d: %w", k+1, n, err)
}

// sameLayout reports whether two headers list the same tensors in the same order.
func sameLayout(a, b *safetensors.Header) bool {
	if len(a.Tensors) != len(b.Tensors) {
		return false
	}
	for i := range a.Tensors {
		if a.Tensors[i].Name != b.Tensors[i].Name {
			return false
		}
	}
	return true
}

// foldChunk is how many values fold adds per delta before moving to the next delta:
// the chunk of the sum (8 bytes a value) and a delta chunk fit in a core's L2.
const foldChunk = 1 << 15

// fold adds the data of srcs, which share a layout, chunk by chunk, in order: for each
// chunk of the sum, the matching chunk of every delta.
func (s *Sum) fold(srcs []deltaSource) error {
	if s.buf == nil {
		s.buf = make([]float32, chunkFor(s.params, foldChunk))
	}
	var off0, n0 int
	for {
		for k := range srcs {
			t, at, n, err := srcs[k].d.Next(s.buf)
			switch {
			case err == io.EOF && k == 0:
				// Every delta has the first's layout, so all must end here.
				for j := 1; j < len(srcs); j++ {
					if _, _, _, err := srcs[j].d.Next(s.buf); err != io.EOF {
						if err == nil {
							err = invalidf("the delta is longer than the first delta of its batch")
						}
						return deltaErr(len(srcs), j, classify(err))
					}
				}
				return nil
			case err == io.EOF:
				return deltaErr(len(srcs), k, invalidf("the delta ends before the first delta of its batch"))
			case err != nil:
				return deltaErr(len(srcs), k, classify(err))
			}
			off := s.offset[t.Name] + at
			if k == 0 {
				off0, n0 = off, n
			} else if off != off0 || n != n0 {
				// Same names in the same order, shapes checked against the model: the
				// chunks line up. This guards that invariant.
				return fmt.Errorf("fold: chunk of tensor %q at %d does not line up with the batch's first delta", t.Name, at)
			}
			addF32(s.vals[off:off+n], s.buf[:n], srcs[k].weight)
		}
	}
}

// addF32 does dst[i] += weight * float64(src[i]) (without the multiply for weight 1),
// four values a step: the compiler checks bounds once a step.
func addF32(dst []float64, src []float32, weight float64) {
	src = src[:len(dst)]
	i := 0
	if weight == 1 {
		for ; i+4 <= len(src); i += 4 {
			d, v := dst[i:i+4:i+4], src[i:i+4:i+4]
			d[0] += float64(v[0])
			d[1] += float64(v[1])
			d[2] += float64(v[2])
			d[3] += float64(v[3])
		}
		for ; i < len(src); i++ {
			dst[i] += float64(src[i])
		}
		return
	}
	for ; i+4 <= len(src); i += 4 {
		d, v := dst[i:i+4:i+4], src[i:i+4:i+4]
		d[0] += weight * float64(v[0])
		d[1] += weight * float64(v[1])
		d[2] += weight * float64(v[2])
		d[3] += weight * float64(v[3])
	}
	for ; i < len(src); i++ {
		dst[i] += weight * float64(src[i])
	}
}

// Apply writes base + sum/weight as a new F32 weights file to w, streaming base (an F32
// file with the sum's tensors, in name order as Encode writes them) from r. Each value
// is float32(float64(base) + sum/weight), the definition tests reproduce.
func (s *Sum) Apply(w io.Writer, r io.Reader, meta map[string]string) error {
	if s.count == 0 || s.weight <= 0 {
		return fmt.Errorf("apply: nothing folded in")
	}
	h, err := readHeader(r, s.params, F32)
	if err != nil {
		return fmt.Errorf("apply: base model: %w", err)
	}
	// The output lists tensors in name order; a base laid out otherwise would need
	// seeking and is refused.
	for i := 1; i < len(h.Tensors); i++ {
		if h.Tensors[i-1].Name > h.Tensors[i].Name {
			return fmt.Errorf("apply: base model is not laid out in name order")
		}
	}
	out, err := safetensors.NewWriter(w, s.params, safetensors.F32, meta)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	d := safetensors.NewDataReader(r, h, safetensors.Options{})
	vals := make([]float32, chunkFor(s.params, chunkElems))
	for {
		t, at, n, err := d.Next(vals)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("apply: base model: %w", classify(err))
		}
		sum := s.vals[s.offset[t.Name]+at : s.offset[t.Name]+at+n]
		v := vals[:n]
		for k := range v {
			v[k] = float32(float64(v[k]) + sum[k]/s.weight)
		}
		if err := out.Write(v); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
	}
	if err := out.Close(); err != nil {
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

// Params returns the parameters the sum is laid out over, in its storage order.
func (s *Sum) Params() []spec.Param { return s.params }

// Values returns the sum's values, one float64 per parameter in Params order. Callers
// that change them (server optimisers, robust aggregators) own the result's meaning.
func (s *Sum) Values() []float64 { return s.vals }

// Normalize divides the sum by its weight, leaving the weighted mean with weight 1, so
// Apply then writes base + mean exactly (a division by 1 rounds nothing).
func (s *Sum) Normalize() {
	if s.weight <= 0 || s.weight == 1 {
		return
	}
	for i := range s.vals {
		s.vals[i] /= s.weight
	}
	s.weight = 1
}

// SetUpdate declares the values (written through Values) a finished update made from
// count deltas, with weight 1, so Apply writes base + values: for aggregators that
// compute their update otherwise than by folding (a median, a trimmed mean).
func (s *Sum) SetUpdate(count int) {
	s.count, s.weight = count, 1
}
