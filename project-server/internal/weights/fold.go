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
	s := &Sum{params: params, offset: make(map[string]int, len(params)), buf: make([]byte, max(chunkElems, foldChunk)*4)}
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
// order as the first's are folded one after the other instead. Memory per delta is one
// read buffer. On error the sum is left partly updated and must be discarded.
func (s *Sum) AddAll(rs []io.Reader, dtype string, weights []float64) error {
	if len(rs) != len(weights) || len(rs) > MaxBatch {
		return fmt.Errorf("fold: %d readers, %d weights (at most %d)", len(rs), len(weights), MaxBatch)
	}
	srcs := make([]deltaSource, len(rs))
	for k, r := range rs {
		br := readers.Get().(*bufio.Reader)
		br.Reset(r)
		defer func() { br.Reset(nil); readers.Put(br) }()
		h, err := ReadHeader(br)
		if err != nil {
			return deltaErr(len(rs), k, err)
		}
		if err := h.Expect(s.params, dtype); err != nil {
			return deltaErr(len(rs), k, err)
		}
		srcs[k] = deltaSource{h: h, r: direct{br: br, r: r}, weight: weights[k]}
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

// deltaSource is one delta of a batch: its header and its data stream.
type deltaSource struct {
	h      *Header
	r      io.Reader
	weight float64
}

func deltaErr(n, k int, err error) error {
	if n == 1 {
		return err
	}
	return fmt.Errorf("delta %d of %d: %w", k+1, n, err)
}

// sameLayout reports whether two headers list the same tensors in the same order.
func sameLayout(a, b *Header) bool {
	if len(a.Entries) != len(b.Entries) {
		return false
	}
	for i := range a.Entries {
		if a.Entries[i].Name != b.Entries[i].Name {
			return false
		}
	}
	return true
}

// foldChunk is how many elements fold adds per delta before moving to the next delta:
// the chunk of the sum (8 bytes an element) and one delta chunk fit in a core's L2.
const foldChunk = 1 << 14

// fold adds the data of srcs, which share the first one's layout, chunk by chunk.
func (s *Sum) fold(srcs []deltaSource) error {
	for _, e := range srcs[0].h.Entries {
		es := ElemSize(e.DType)
		total := int((e.End - e.Begin) / int64(es))
		dst := s.vals[s.offset[e.Name] : s.offset[e.Name]+total]
		for at := 0; at < total; {
			n := min(foldChunk, total-at)
			d := dst[at : at+n]
			for k := range srcs {
				b := s.buf[:n*es]
				if _, err := io.ReadFull(srcs[k].r, b); err != nil {
					return deltaErr(len(srcs), k, readErr(fmt.Sprintf("data of tensor %q", e.Name), err))
				}
				if e.DType == F32 {
					addF32(d, asF32(b), srcs[k].weight)
				} else {
					addF16(d, b, srcs[k].weight)
				}
			}
			at += n
		}
	}
	return nil
}

// direct reads what a bufio.Reader still holds, then reads the underlying stream
// directly: the bulk of a delta goes from the file into the chunk buffer with one copy.
type direct struct {
	br *bufio.Reader
	r  io.Reader
}

func (d direct) Read(p []byte) (int, error) {
	if n := d.br.Buffered(); n > 0 {
		return d.br.Read(p[:min(len(p), n)])
	}
	return d.r.Read(p)
}

// addF32 does dst[i] += weight * float64(src[i]) (without the multiply for weight 1),
// four elements a step: the compiler checks bounds once a step.
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

// addF16 does dst[i] += weight * float64(half(b[2i:])).
func addF16(dst []float64, b []byte, weight float64) {
	for i := range dst {
		dst[i] += weight * float64(halfToFloat(uint16(b[2*i])|uint16(b[2*i+1])<<8))
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
