package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// Options bounds and checks what a reader accepts.
type Options struct {
	// MaxBytes limits the whole file (and so its header); <= 0 means DefaultMaxBytes.
	MaxBytes int64
	// Expect, when not nil, requires exactly these tensor names with these shapes; a
	// missing, extra or mis-shaped tensor is an ErrMismatch naming each of them.
	Expect []spec.Param
	// RequireFinite rejects files holding NaN or infinities (ErrNonFinite). AddInto and
	// DecodeInto check before changing anything, so a bad file leaves dst untouched.
	RequireFinite bool
}

func (o Options) maxBytes() int64 {
	if o.MaxBytes <= 0 {
		return DefaultMaxBytes
	}
	return o.MaxBytes
}

// File is a decoded safetensors file. Tensors are in Options.Expect order when Expect
// was given, otherwise sorted by name; they never alias the input bytes.
type File struct {
	Tensors []tensor.Named
	Meta    map[string]string // nil when the file has no "__metadata__"
	DType   DType             // the stored element type; F32 for a file without tensors
}

// TensorInfo describes one tensor of a header: its name, shape and byte range in the
// data section (Begin inclusive, End exclusive).
type TensorInfo struct {
	Name       string
	Shape      []int
	Begin, End int64
}

// Header is a validated header: every tensor has a supported dtype and a shape that
// matches its byte range, and the ranges tile the data section exactly.
type Header struct {
	Tensors []TensorInfo // sorted by Begin (the data order), which is name order for files Encode wrote
	Meta    map[string]string
	DType   DType
	// DataOffset is where the data section starts in the file (8 + header length).
	DataOffset int64
}

// ParseHeader validates the header of a complete file b (and that b holds exactly the
// data the header describes) without decoding any tensor.
func ParseHeader(b []byte, opt Options) (*Header, error) {
	limit := opt.maxBytes()
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("safetensors: file is %d bytes, over the %d byte limit: %w", len(b), limit, ErrTooLarge)
	}
	if len(b) < 8 {
		return nil, malformed("file is %d bytes, shorter than the 8-byte header length: truncated", len(b))
	}
	n := binary.LittleEndian.Uint64(b[:8])
	switch {
	case n > uint64(limit) || n > maxHeaderBytes:
		return nil, fmt.Errorf("safetensors: header length %d is over the %d byte limit: %w", n, min(limit, maxHeaderBytes), ErrTooLarge)
	case n > uint64(len(b)-8):
		return nil, malformed("header length %d is larger than the %d bytes that follow it: truncated or not a safetensors file", n, len(b)-8)
	case n < 2:
		return nil, malformed("header length %d is too short for a JSON object", n)
	}
	raw := b[8 : 8+n]
	h, err := parseJSONHeader(raw)
	if err != nil {
		return nil, err
	}
	h.DataOffset = 8 + int64(n)
	if err := h.checkLayout(int64(len(b)) - h.DataOffset); err != nil {
		return nil, err
	}
	if opt.Expect != nil {
		if err := h.match(opt.Expect); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// jsonEntry is one tensor's header entry as written on disk.
type jsonEntry struct {
	DType   *string  `json:"dtype"`
	Shape   []int64  `json:"shape"`
	Offsets []uint64 `json:"data_offsets"`
}

func parseJSONHeader(raw []byte) (*Header, error) {
	if raw[0] != '{' {
		return nil, malformed("header does not start with '{' (got %q): not a safetensors file", raw[0])
	}
	if !utf8.Valid(raw) {
		return nil, malformed("header is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if _, err := dec.Token(); err != nil {
		return nil, malformed("header JSON: %v", err)
	}
	h := &Header{}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, malformed("header JSON: %v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, malformed("header JSON: want a tensor name, got %v", tok)
		}
		if seen[name] {
			return nil, malformed("duplicate header entry %q", name)
		}
		seen[name] = true
		if name == metadataKey {
			var m map[string]string
			if err := dec.Decode(&m); err != nil {
				return nil, malformed("header %s: want a map of strings: %v", metadataKey, err)
			}
			h.Meta = m
			continue
		}
		var e jsonEntry
		if err := dec.Decode(&e); err != nil {
			return nil, malformed("header entry %q: %v", name, err)
		}
		ti, dt, err := e.check(name)
		if err != nil {
			return nil, err
		}
		if h.DType == "" {
			h.DType = dt
		} else if dt != h.DType {
			return nil, malformed("tensor %q is %s but earlier tensors are %s: mixed dtypes are not supported", name, dt, h.DType)
		}
		h.Tensors = append(h.Tensors, ti)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, malformed("header JSON: %v", err)
	}
	// Only the space padding the format allows may follow the object.
	if rest := raw[dec.InputOffset():]; len(bytes.Trim(rest, " \t\r\n")) != 0 {
		return nil, malformed("header has %d bytes of trailing data after the JSON object", len(rest))
	}
	if h.DType == "" {
		h.DType = F32
	}
	return h, nil
}

// check validates one entry on its own: fields present, dtype supported, shape and
// offsets consistent.
func (e *jsonEntry) check(name string) (TensorInfo, DType, error) {
	switch {
	case name == "":
		return TensorInfo{}, "", malformed("a tensor has an empty name")
	case e.DType == nil:
		return TensorInfo{}, "", malformed("tensor %q has no dtype", name)
	case e.Shape == nil:
		return TensorInfo{}, "", malformed("tensor %q has no shape", name)
	case e.Offsets == nil:
		return TensorInfo{}, "", malformed("tensor %q has no data_offsets", name)
	case len(e.Offsets) != 2:
		return TensorInfo{}, "", malformed("tensor %q has %d data_offsets, want 2 [begin, end]", name, len(e.Offsets))
	}
	dt := DType(*e.DType)
	if dt.Size() == 0 {
		return TensorInfo{}, "", malformed("tensor %q has unsupported dtype %q (texgrid reads F32 and F16)", name, *e.DType)
	}
	begin, end := e.Offsets[0], e.Offsets[1]
	if begin > end {
		return TensorInfo{}, "", malformed("tensor %q has data_offsets [%d, %d] with begin after end", name, begin, end)
	}
	// The element count, with overflow detected: any real tensor fits in the file, so
	// anything beyond 2^62 bytes is simply wrong.
	numel := uint64(1)
	shape := make([]int, len(e.Shape))
	for i, d := range e.Shape {
		if d < 0 {
			return TensorInfo{}, "", malformed("tensor %q has negative dimension %d in shape %v", name, d, e.Shape)
		}
		hi, lo := bits.Mul64(numel, uint64(d))
		if hi != 0 || lo > 1<<62 {
			return TensorInfo{}, "", malformed("tensor %q has shape %v with an element count that overflows", name, e.Shape)
		}
		numel = lo
		shape[i] = int(d)
	}
	want := numel * uint64(dt.Size())
	if want > 1<<62 || end-begin != want {
		return TensorInfo{}, "", malformed("tensor %q: shape %v of %s needs %d bytes but data_offsets [%d, %d] span %d",
			name, e.Shape, dt, want, begin, end, end-begin)
	}
	if end > 1<<62 {
		return TensorInfo{}, "", malformed("tensor %q has data_offsets [%d, %d] beyond any file", name, begin, end)
	}
	return TensorInfo{Name: name, Shape: shape, Begin: int64(begin), End: int64(end)}, dt, nil
}

// checkLayout requires the tensors' byte ranges to tile [0, size) exactly: no range
// outside the data, no overlap, no gap, no trailing bytes. It sorts h.Tensors by Begin.
func (h *Header) checkLayout(size int64) error {
	slices.SortStableFunc(h.Tensors, func(a, b TensorInfo) int {
		if a.Begin != b.Begin {
			if a.Begin < b.Begin {
				return -1
			}
			return 1
		}
		if a.End != b.End { // empty tensors first at a shared offset
			if a.End < b.End {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	var pos int64
	prev := ""
	for _, t := range h.Tensors {
		switch {
		case t.End > size:
			return malformed("tensor %q has data_offsets [%d, %d] beyond the %d data bytes: truncated file or bad offsets", t.Name, t.Begin, t.End, size)
		case t.Begin < pos:
			return malformed("tensor %q data [%d, %d] overlaps tensor %q (which ends at %d)", t.Name, t.Begin, t.End, prev, pos)
		case t.Begin > pos:
			return malformed("data bytes [%d, %d) belong to no tensor (gap before %q)", pos, t.Begin, t.Name)
		}
		pos = t.End
		prev = t.Name
	}
	if pos != size {
		return malformed("data section is %d bytes but the tensors cover only %d: %d trailing bytes", size, pos, size-pos)
	}
	return nil
}

// match compares the header's tensors with the expected parameters and names every
// difference.
func (h *Header) match(expect []spec.Param) error {
	got := make(map[string]TensorInfo, len(h.Tensors))
	for _, t := range h.Tensors {
		got[t.Name] = t
	}
	var missing, shaped []string
	wanted := make(map[string]bool, len(expect))
	for _, p := range expect {
		wanted[p.Name] = true
		t, ok := got[p.Name]
		switch {
		case !ok:
			missing = append(missing, p.Name)
		case !tensor.SameShape(t.Shape, p.Shape):
			shaped = append(shaped, fmt.Sprintf("%s has shape %v, want %v", p.Name, t.Shape, p.Shape))
		}
	}
	var extra []string
	for _, t := range h.Tensors {
		if !wanted[t.Name] {
			extra = append(extra, t.Name)
		}
	}
	return mismatchError(missing, extra, shaped)
}

func mismatchError(missing, extra, shaped []string) error {
	var parts []string
	if len(missing) > 0 {
		slices.Sort(missing)
		parts = append(parts, "missing "+strings.Join(missing, ", "))
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		parts = append(parts, "unexpected "+strings.Join(extra, ", "))
	}
	parts = append(parts, shaped...)
	if len(parts) == 0 {
		return nil
	}
	return fmt.Errorf("safetensors: %s: %w", strings.Join(parts, "; "), ErrMismatch)
}

// Decode validates b and returns its tensors as float32 (F16 widened exactly).
func Decode(b []byte, opt Options) (*File, error) {
	h, err := ParseHeader(b, opt)
	if err != nil {
		return nil, err
	}
	data := b[h.DataOffset:]
	if opt.RequireFinite {
		if err := h.checkFinite(data); err != nil {
			return nil, err
		}
	}
	f := &File{Meta: h.Meta, DType: h.DType, Tensors: make([]tensor.Named, 0, len(h.Tensors))}
	esize := int64(h.DType.Size())
	infos := h.Tensors
	if opt.Expect != nil {
		infos = h.inOrder(opt.Expect)
	} else {
		infos = slices.Clone(infos)
		slices.SortFunc(infos, func(a, b TensorInfo) int { return strings.Compare(a.Name, b.Name) })
	}
	for _, ti := range infos {
		t := &tensor.Tensor{Shape: ti.Shape, Data: make([]float32, (ti.End-ti.Begin)/esize)}
		src := data[ti.Begin:ti.End]
		if h.DType == F16 {
			getF16(t.Data, src)
		} else {
			getF32(t.Data, src)
		}
		f.Tensors = append(f.Tensors, tensor.Named{Name: ti.Name, T: t})
	}
	return f, nil
}

// inOrder returns the header's tensors in the order of expect (which match has
// already checked covers them exactly).
func (h *Header) inOrder(expect []spec.Param) []TensorInfo {
	by := make(map[string]TensorInfo, len(h.Tensors))
	for _, t := range h.Tensors {
		by[t.Name] = t
	}
	out := make([]TensorInfo, 0, len(expect))
	for _, p := range expect {
		out = append(out, by[p.Name])
	}
	return out
}

func (h *Header) checkFinite(data []byte) error {
	for _, t := range h.Tensors {
		if i := firstNonFinite(data[t.Begin:t.End], h.DType); i >= 0 {
			return fmt.Errorf("safetensors: tensor %q element %d is NaN or infinite: %w", t.Name, i, ErrNonFinite)
		}
	}
	return nil
}

// ReadFile reads and decodes the file at path, refusing files over Options.MaxBytes
// before reading them.
func ReadFile(path string, opt Options) (*File, error) {
	b, err := readLimited(path, opt.maxBytes())
	if err != nil {
		return nil, err
	}
	f, err := Decode(b, opt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("safetensors: %s is %d bytes, over the %d byte limit: %w", path, st.Size(), limit, ErrTooLarge)
	}
	// Read through a limit in case the file grows while we read it.
	b, err := io.ReadAll(io.LimitReader(fh, limit+1))
	if err != nil {
		return nil, fmt.Errorf("safetensors: read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("safetensors: %s grew over the %d byte limit while being read: %w", path, limit, ErrTooLarge)
	}
	return b, nil
}

// DecodeInto validates b and copies its values into dst's existing tensors, which must
// be exactly the file's tensors (same names and shapes, any order). Nothing is
// allocated per tensor and dst is unchanged when an error is returned. Use it to load
// weights into a live model.
func DecodeInto(dst []tensor.Named, b []byte, opt Options) error {
	return fold(dst, b, opt, 0)
}

// AddInto validates b and adds its values into dst (dst += file) in one pass, without
// allocating a copy of the model: how the project server folds an 80 MB weight delta
// into a running sum. dst must hold exactly the file's tensors (same names and shapes,
// any order); on any error dst is unchanged.
func AddInto(dst []tensor.Named, b []byte, opt Options) error {
	return fold(dst, b, opt, 1)
}

// AddScaledInto is AddInto with dst += alpha*file, for weighted averages. Each product
// is rounded to float32 before the addition, so results are identical on every
// architecture.
func AddScaledInto(dst []tensor.Named, b []byte, alpha float32, opt Options) error {
	if alpha == 0 {
		// Still validate: a caller weighting a result by zero must not accept garbage.
		_, err := plan(dst, b, opt)
		return err
	}
	return fold(dst, b, opt, alpha)
}

// fold copies (alpha == 0) or adds alpha times the file's values into dst.
func fold(dst []tensor.Named, b []byte, opt Options, alpha float32) error {
	p, err := plan(dst, b, opt)
	if err != nil {
		return err
	}
	for i, t := range dst {
		src := p.data[p.infos[i].Begin:p.infos[i].End]
		d := t.T.Data
		switch {
		case alpha == 0 && p.dtype == F32:
			getF32(d, src)
		case alpha == 0:
			getF16(d, src)
		case p.dtype == F32:
			addF32(d, src, alpha)
		default:
			addF16(d, src, alpha)
		}
	}
	return nil
}

type foldPlan struct {
	data  []byte
	dtype DType
	infos []TensorInfo // infos[i] is the file tensor for dst[i]
}

// plan validates b against opt and dst before anything is written.
func plan(dst []tensor.Named, b []byte, opt Options) (*foldPlan, error) {
	h, err := ParseHeader(b, opt)
	if err != nil {
		return nil, err
	}
	by := make(map[string]TensorInfo, len(h.Tensors))
	for _, t := range h.Tensors {
		by[t.Name] = t
	}
	p := &foldPlan{data: b[h.DataOffset:], dtype: h.DType, infos: make([]TensorInfo, len(dst))}
	var missing, shaped []string
	used := make(map[string]bool, len(dst))
	for i, t := range dst {
		if t.T == nil {
			return nil, fmt.Errorf("safetensors: destination tensor %q is nil: %w", t.Name, ErrInvalid)
		}
		if used[t.Name] {
			return nil, fmt.Errorf("safetensors: destination has tensor %q twice: %w", t.Name, ErrInvalid)
		}
		used[t.Name] = true
		if len(t.T.Data) != tensor.Numel(t.T.Shape) {
			return nil, fmt.Errorf("safetensors: destination tensor %q has shape %v but %d values: %w", t.Name, t.T.Shape, len(t.T.Data), ErrInvalid)
		}
		ti, ok := by[t.Name]
		switch {
		case !ok:
			missing = append(missing, t.Name)
		case !tensor.SameShape(ti.Shape, t.T.Shape):
			shaped = append(shaped, fmt.Sprintf("%s has shape %v, want %v", t.Name, ti.Shape, t.T.Shape))
		}
		p.infos[i] = ti
	}
	var extra []string
	for _, t := range h.Tensors {
		if !used[t.Name] {
			extra = append(extra, t.Name)
		}
	}
	if err := mismatchError(missing, extra, shaped); err != nil {
		return nil, err
	}
	if opt.RequireFinite {
		if err := h.checkFinite(p.data); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// IsFormatError reports whether err means the bytes themselves are bad (malformed or
// too large), as opposed to well-formed tensors that are not the expected ones.
func IsFormatError(err error) bool {
	return errors.Is(err, ErrMalformed) || errors.Is(err, ErrTooLarge)
}
