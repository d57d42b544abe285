// Package weights reads, checks, folds and writes model weights and deltas in the
// safetensors format as streams, so the project server never holds a whole received
// delta in memory: a result is validated while it is written to disk, and a round's
// deltas are folded one chunk at a time into a single running sum.
//
// The layout is the standard one: an 8-byte little-endian header length, a JSON header
// mapping tensor names to {dtype, shape, data_offsets} (plus "__metadata__"), then the
// little-endian data. Files written here list tensors in name order, contiguously, with
// the header padded by spaces to a multiple of 8 bytes.
package weights

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// DType names as they appear in safetensors headers.
const (
	F32 = "F32"
	F16 = "F16"
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

// ElemSize returns the bytes per element of a dtype.
func ElemSize(dtype string) int {
	if dtype == F16 {
		return 2
	}
	return 4
}

// MaxHeaderBytes bounds the JSON header a reader accepts.
const MaxHeaderBytes = 1 << 20

// ErrInvalid marks a file whose header or values break the rules; the message says how.
var ErrInvalid = errors.New("invalid weights")

// ErrTruncated marks a stream that ended before the data its header announced.
var ErrTruncated = errors.New("truncated weights")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Entry is one tensor of a header.
type Entry struct {
	Name  string
	DType string
	Shape []int
	Begin int64 // offset of the first byte in the data section
	End   int64
}

// Header is a parsed safetensors header, entries sorted by Begin.
type Header struct {
	Entries  []Entry
	Meta     map[string]string
	DataSize int64
}

// FileSize returns the size of a file with params in dtype, as Encode lays it out.
func FileSize(params []spec.Param, dtype string, meta map[string]string) int64 {
	h := encodeHeader(params, dtype, meta)
	n := int64(8 + len(h))
	for _, p := range params {
		n += int64(p.Size() * ElemSize(dtype))
	}
	return n
}

// ReadHeader reads the length prefix and JSON header from r and checks its layout: known
// dtypes, non-negative shapes, and offsets that tile the data section exactly.
func ReadHeader(r io.Reader) (*Header, error) {
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, readErr("header length", err)
	}
	n := binary.LittleEndian.Uint64(pre[:])
	if n == 0 || n > MaxHeaderBytes {
		return nil, invalidf("header length %d is outside 1..%d", n, MaxHeaderBytes)
	}
	hb := make([]byte, n)
	if _, err := io.ReadFull(r, hb); err != nil {
		return nil, readErr("header", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hb, &raw); err != nil {
		return nil, invalidf("header is not a JSON object: %v", err)
	}
	h := &Header{}
	for name, v := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(v, &h.Meta); err != nil {
				return nil, invalidf("__metadata__ is not a string map: %v", err)
			}
			continue
		}
		var e struct {
			DType       string  `json:"dtype"`
			Shape       []int   `json:"shape"`
			DataOffsets []int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, invalidf("tensor %q: %v", name, err)
		}
		if e.DType != F32 && e.DType != F16 {
			return nil, invalidf("tensor %q: dtype %q, want F32 or F16", name, e.DType)
		}
		if len(e.DataOffsets) != 2 {
			return nil, invalidf("tensor %q: data_offsets needs two numbers", name)
		}
		numel := int64(1)
		for _, d := range e.Shape {
			if d < 0 || d > 1<<31 {
				return nil, invalidf("tensor %q: bad dimension %d", name, d)
			}
			numel *= int64(d)
			if numel > 1<<40 {
				return nil, invalidf("tensor %q: too many elements", name)
			}
		}
		if e.DataOffsets[1]-e.DataOffsets[0] != numel*int64(ElemSize(e.DType)) || e.DataOffsets[0] < 0 {
			return nil, invalidf("tensor %q: data_offsets %v do not match shape %v of %s", name, e.DataOffsets, e.Shape, e.DType)
		}
		h.Entries = append(h.Entries, Entry{Name: name, DType: e.DType, Shape: e.Shape, Begin: e.DataOffsets[0], End: e.DataOffsets[1]})
	}
	sort.Slice(h.Entries, func(i, j int) bool {
		if h.Entries[i].Begin != h.Entries[j].Begin {
			return h.Entries[i].Begin < h.Entries[j].Begin
		}
		return h.Entries[i].Name < h.Entries[j].Name
	})
	var at int64
	for _, e := range h.Entries {
		if e.Begin != at {
			return nil, invalidf("tensor %q starts at byte %d, want %d (gap or overlap)", e.Name, e.Begin, at)
		}
		at = e.End
	}
	h.DataSize = at
	return h, nil
}

func readErr(what string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: the stream ended inside the %s", ErrTruncated, what)
	}
	return fmt.Errorf("read %s: %w", what, err)
}

// Expect checks that h holds exactly params (names and shapes), all in dtype.
func (h *Header) Expect(params []spec.Param, dtype string) error {
	want := make(map[string][]int, len(params))
	for _, p := range params {
		want[p.Name] = p.Shape
	}
	for _, e := range h.Entries {
		shape, ok := want[e.Name]
		if !ok {
			return invalidf("unexpected tensor %q", e.Name)
		}
		if !tensor.SameShape(shape, e.Shape) {
			return invalidf("tensor %q has shape %v, the model needs %v", e.Name, e.Shape, shape)
		}
		if e.DType != dtype {
			return invalidf("tensor %q is %s, the campaign wants %s", e.Name, e.DType, dtype)
		}
		delete(want, e.Name)
	}
	if len(want) > 0 {
		missing := make([]string, 0, len(want))
		for n := range want {
			missing = append(missing, n)
		}
		sort.Strings(missing)
		return invalidf("missing tensors %s", strings.Join(missing, ", "))
	}
	return nil
}

// chunkElems is how many elements a streaming pass converts at a time.
const chunkElems = 1 << 16

// forEachChunk streams the data section of r (positioned after the header) entry by
// entry, calling fn with converted float32 chunks and the element offset inside the
// entry. It fails on short data and on trailing bytes.
func forEachChunk(r io.Reader, h *Header, fn func(e *Entry, at int, vals []float32) error) error {
	largest := 1
	for _, e := range h.Entries {
		largest = max(largest, int((e.End-e.Begin)/int64(ElemSize(e.DType))))
	}
	n := min(chunkElems, largest)
	buf := make([]byte, n*4)
	vals := make([]float32, n)
	for i := range h.Entries {
		e := &h.Entries[i]
		es := ElemSize(e.DType)
		total := int((e.End - e.Begin) / int64(es))
		for at := 0; at < total; {
			k := min(len(vals), total-at)
			b := buf[:k*es]
			if _, err := io.ReadFull(r, b); err != nil {
				return readErr(fmt.Sprintf("data of tensor %q", e.Name), err)
			}
			v := vals[:k]
			if e.DType == F32 {
				v = asF32(b) // in place on little-endian machines
			} else {
				decode(e.DType, b, v)
			}
			if err := fn(e, at, v); err != nil {
				return err
			}
			at += k
		}
	}
	var one [1]byte
	if n, err := io.ReadFull(r, one[:]); n > 0 {
		return invalidf("trailing bytes after the %d data bytes the header announced", h.DataSize)
	} else if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read after data: %w", err)
	}
	return nil
}

func decode(dtype string, b []byte, dst []float32) {
	if dtype == F16 {
		for i := range dst {
			dst[i] = halfToFloat(binary.LittleEndian.Uint16(b[2*i:]))
		}
		return
	}
	decodeF32(b, dst)
}

// halfToFloat converts an IEEE 754 binary16 value.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	case exp == 0:
		if frac == 0 {
			return math.Float32frombits(sign)
		}
		v := float32(frac) / 1024 / 16384 // 2^-14 * frac/1024
		if sign != 0 {
			return -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
}

// Summary describes a delta that passed Check.
type Summary struct {
	Header *Header
	Norm   float64 // L2 norm over every value
}

// Check reads a whole delta from r and verifies it: exactly params in dtype, every value
// finite, and an L2 norm at most maxNorm (no bound when maxNorm <= 0). Errors wrap
// ErrInvalid or ErrTruncated, or are the reader's own.
func Check(r io.Reader, params []spec.Param, dtype string, maxNorm float64) (*Summary, error) {
	h, err := ReadHeader(r)
	if err != nil {
		return nil, err
	}
	if err := h.Expect(params, dtype); err != nil {
		return nil, err
	}
	var ss float64
	err = forEachChunk(r, h, func(e *Entry, at int, vals []float32) error {
		sq, bad := sumSquaresFinite(vals)
		if bad >= 0 {
			return invalidf("tensor %q element %d is %v", e.Name, at+bad, vals[bad])
		}
		ss += sq
		return nil
	})
	if err != nil {
		return nil, err
	}
	norm := math.Sqrt(ss)
	if maxNorm > 0 && norm > maxNorm {
		return nil, invalidf("L2 norm %.6g is over the campaign bound %.6g", norm, maxNorm)
	}
	return &Summary{Header: h, Norm: norm}, nil
}

// ReadAll reads a whole weights file into tensors in header (offset) order.
func ReadAll(r io.Reader) ([]tensor.Named, map[string]string, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	h, err := ReadHeader(br)
	if err != nil {
		return nil, nil, err
	}
	out := make([]tensor.Named, len(h.Entries))
	for i, e := range h.Entries {
		out[i] = tensor.Named{Name: e.Name, T: tensor.New(e.Shape...)}
	}
	idx := 0
	err = forEachChunk(br, h, func(e *Entry, at int, vals []float32) error {
		for out[idx].Name != e.Name {
			idx++
		}
		copy(out[idx].T.Data[at:], vals)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return out, h.Meta, nil
}

// Sorted returns params ordered by name, the order Encode writes them in.
func Sorted(params []spec.Param) []spec.Param {
	ps := append([]spec.Param(nil), params...)
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
	return ps
}

func encodeHeader(params []spec.Param, dtype string, meta map[string]string) []byte {
	ps := Sorted(params)
	var b strings.Builder
	b.WriteByte('{')
	if len(meta) > 0 {
		mb, _ := json.Marshal(meta) // map keys are sorted by encoding/json
		b.WriteString(`"__metadata__":`)
		b.Write(mb)
		b.WriteByte(',')
	}
	var at int64
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		nb, _ := json.Marshal(p.Name)
		b.Write(nb)
		b.WriteString(`:{"dtype":"` + dtype + `","shape":[`)
		for j, d := range p.Shape {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(d))
		}
		end := at + int64(p.Size()*ElemSize(dtype))
		b.WriteString(`],"data_offsets":[` + strconv.FormatInt(at, 10) + "," + strconv.FormatInt(end, 10) + "]}")
		at = end
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	return []byte(b.String())
}

func writeHeader(w io.Writer, params []spec.Param, dtype string, meta map[string]string) error {
	h := encodeHeader(params, dtype, meta)
	var pre [8]byte
	binary.LittleEndian.PutUint64(pre[:], uint64(len(h)))
	if _, err := w.Write(pre[:]); err != nil {
		return err
	}
	_, err := w.Write(h)
	return err
}

// Encode writes tensors as a safetensors file in dtype (F32 or F16), in name order.
func Encode(w io.Writer, ts []tensor.Named, dtype string, meta map[string]string) error {
	params := make([]spec.Param, len(ts))
	byName := make(map[string]*tensor.Tensor, len(ts))
	for i, t := range ts {
		if len(t.T.Data) != tensor.Numel(t.T.Shape) {
			return fmt.Errorf("encode %q: %d values for shape %v", t.Name, len(t.T.Data), t.T.Shape)
		}
		if _, dup := byName[t.Name]; dup {
			return fmt.Errorf("encode: duplicate tensor %q", t.Name)
		}
		params[i] = spec.Param{Name: t.Name, Shape: t.T.Shape}
		byName[t.Name] = t.T
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if err := writeHeader(bw, params, dtype, meta); err != nil {
		return fmt.Errorf("encode weights: %w", err)
	}
	buf := make([]byte, chunkElems*4)
	for _, p := range Sorted(params) {
		data := byName[p.Name].Data
		for at := 0; at < len(data); at += chunkElems {
			vals := data[at:min(at+chunkElems, len(data))]
			b := encodeVals(dtype, vals, buf)
			if _, err := bw.Write(b); err != nil {
				return fmt.Errorf("encode weights: %w", err)
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("encode weights: %w", err)
	}
	return nil
}

func encodeVals(dtype string, vals []float32, buf []byte) []byte {
	if dtype == F16 {
		b := buf[:2*len(vals)]
		for i, v := range vals {
			binary.LittleEndian.PutUint16(b[2*i:], floatToHalf(v))
		}
		return b
	}
	b := buf[:4*len(vals)]
	for i, v := range vals {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// floatToHalf converts to binary16 with round-to-nearest-even (used by tests and tools
// that produce float16 deltas).
func floatToHalf(f float32) uint16 {
	x := math.Float32bits(f)
	sign := uint16(x>>16) & 0x8000
	exp := int((x>>23)&0xff) - 127 + 15
	frac := x & 0x7fffff
	if (x>>23)&0xff == 0xff {
		if frac != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	if exp >= 0x1f {
		return sign | 0x7c00
	}
	if exp <= 0 {
		if exp < -10 {
			return sign
		}
		frac |= 0x800000
		shift := uint(14 - exp)
		half := frac >> shift
		rem := frac & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 == 1) {
			half++
		}
		return sign | uint16(half)
	}
	half := uint32(exp)<<10 | frac>>13
	rem := frac & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
		half++
	}
	return sign | uint16(half)
}

// ToHalf converts float32 to IEEE binary16 bits, rounding to nearest even.
func ToHalf(f float32) uint16 { return floatToHalf(f) }

// sumSquaresFinite returns the sum of squares of vals (float32 partial sums in four
// lanes, folded into float64) and the index of the first NaN or infinity, or -1.
func sumSquaresFinite(vals []float32) (float64, int) {
	const expMask = 0x7f800000
	var s0, s1, s2, s3 float32
	var bits uint32 = 0
	i := 0
	for ; i+4 <= len(vals); i += 4 {
		a, b, c, d := vals[i], vals[i+1], vals[i+2], vals[i+3]
		// A value is not finite when all its exponent bits are set; AND-ing the
		// exponents of four values keeps a lane's bits only if every lane has them,
		// so test each lane: cheap compared with the float work.
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
