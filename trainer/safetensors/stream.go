package safetensors

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// Streaming: ReadHeader, DataReader and Writer handle a file as a stream, holding only
// the header and the caller's buffer, for files too large to keep a second copy of in
// memory (the project server checks 80 MB uploads while writing them to disk, folds
// deltas from disk into a running sum, and writes the next model from that sum). They
// accept and produce exactly the files Decode and Encode do.
//
// A stream that ends early is reported with an error wrapping both ErrMalformed and
// io.ErrUnexpectedEOF, so a caller can tell a cut upload from a bad one; an error of
// the underlying reader is wrapped as it is.

// ReadHeader reads a file's header from r (the 8-byte length and the JSON header) and
// leaves r at the first data byte. It validates what ParseHeader does, except that the
// data size is not known yet: the tensors must tile [0, DataSize()) with no gap and no
// overlap, and the whole file, DataOffset+DataSize(), must be within Options.MaxBytes
// (ErrTooLarge). Options.Expect is checked; RequireFinite is the DataReader's job.
// Memory grows with the header bytes actually read, not with the announced length.
func ReadHeader(r io.Reader, opt Options) (*Header, error) {
	limit := opt.maxBytes()
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, streamErr("the header length", err)
	}
	n := binary.LittleEndian.Uint64(pre[:])
	switch {
	case n > uint64(limit) || n > maxHeaderBytes:
		return nil, fmt.Errorf("safetensors: header length %d is over the %d byte limit: %w", n, min(limit, maxHeaderBytes), ErrTooLarge)
	case n < 2:
		return nil, malformed("header length %d is too short for a JSON object", n)
	}
	raw, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err != nil {
		return nil, streamErr("the header", err)
	}
	if uint64(len(raw)) < n {
		return nil, streamErr("the header", io.ErrUnexpectedEOF)
	}
	h, err := parseJSONHeader(raw)
	if err != nil {
		return nil, err
	}
	h.DataOffset = 8 + int64(n)
	size, err := h.tile()
	if err != nil {
		return nil, err
	}
	if h.DataOffset+size > limit {
		return nil, fmt.Errorf("safetensors: header announces a %d byte file, over the %d byte limit: %w", h.DataOffset+size, limit, ErrTooLarge)
	}
	if opt.Expect != nil {
		if err := h.match(opt.Expect); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// tile sorts the tensors into data order and requires their ranges to tile the data
// section from 0; it returns the section's size.
func (h *Header) tile() (int64, error) {
	var end int64
	for _, t := range h.Tensors {
		end = max(end, t.End)
	}
	if err := h.checkLayout(end); err != nil {
		return 0, err
	}
	return end, nil
}

// DataSize returns the length of the data section the header describes.
func (h *Header) DataSize() int64 {
	var end int64
	for _, t := range h.Tensors {
		end = max(end, t.End)
	}
	return end
}

// streamErr reports a failed read of what: a stream that ended wraps ErrMalformed and
// io.ErrUnexpectedEOF, any other error is the reader's own.
func streamErr(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("safetensors: the stream ends inside %s: %w", what, errors.Join(ErrMalformed, io.ErrUnexpectedEOF))
	}
	return fmt.Errorf("safetensors: read %s: %w", what, err)
}

// DataReader reads the data section that follows a header, tensor by tensor in data
// order (name order for files Encode wrote), into the caller's buffers.
type DataReader struct {
	r      io.Reader
	h      *Header
	finite bool
	i      int    // the tensor being read
	at     int    // its values already read
	buf    []byte // F16 staging, and F32 on big-endian machines
	done   bool
}

// NewDataReader reads the data of h from r, which must be where ReadHeader left it.
// With opt.RequireFinite, a NaN or infinity is an ErrNonFinite error naming the tensor
// and element.
func NewDataReader(r io.Reader, h *Header, opt Options) *DataReader {
	return &DataReader{r: r, h: h, finite: opt.RequireFinite}
}

// Next reads the next values of the current tensor into vals, F16 widened exactly: at
// most len(vals), never past the tensor's end. It returns the tensor, the index in it of
// vals[0], and the count read; tensors without values are skipped. After the last
// tensor it makes sure the stream ends there (trailing bytes are ErrMalformed) and
// returns io.EOF. vals must not be empty.
func (d *DataReader) Next(vals []float32) (t *TensorInfo, at, n int, err error) {
	if len(vals) == 0 {
		return nil, 0, 0, errors.New("safetensors: DataReader.Next with an empty buffer")
	}
	esize := d.h.DType.Size()
	for d.i < len(d.h.Tensors) && int64(d.at*esize) == d.h.Tensors[d.i].End-d.h.Tensors[d.i].Begin {
		d.i++
		d.at = 0
	}
	if d.i == len(d.h.Tensors) {
		if !d.done {
			var one [1]byte
			k, err := io.ReadFull(d.r, one[:])
			if k > 0 {
				return nil, 0, 0, malformed("bytes follow the %d data bytes the header describes", d.h.DataSize())
			}
			if !errors.Is(err, io.EOF) {
				return nil, 0, 0, fmt.Errorf("safetensors: read after the data: %w", err)
			}
			d.done = true
		}
		return nil, 0, 0, io.EOF
	}
	t = &d.h.Tensors[d.i]
	left := int((t.End-t.Begin)/int64(esize)) - d.at
	n = min(len(vals), left)
	v := vals[:n]
	switch {
	case d.h.DType == F32 && littleEndian:
		_, err = io.ReadFull(d.r, f32Bytes(v))
	default:
		d.buf = slices.Grow(d.buf[:0], n*esize)[:n*esize]
		if _, err = io.ReadFull(d.r, d.buf); err == nil {
			if d.h.DType == F16 {
				getF16(v, d.buf)
			} else {
				getF32(v, d.buf)
			}
		}
	}
	if err != nil {
		return nil, 0, 0, streamErr(fmt.Sprintf("the data of tensor %q", t.Name), err)
	}
	if d.finite {
		if k := firstNonFiniteF32(v); k >= 0 {
			return nil, 0, 0, fmt.Errorf("safetensors: tensor %q element %d is NaN or infinite: %w", t.Name, d.at+k, ErrNonFinite)
		}
	}
	at = d.at
	d.at += n
	return t, at, n, nil
}

// firstNonFiniteF32 returns the index of the first NaN or infinity in v, or -1.
func firstNonFiniteF32(v []float32) int {
	return firstNonFinite(f32Bytes(v), F32)
}

// EncodeHeader returns the header Encode writes (8-byte length prefix included, padded
// so the data starts on an 8-byte boundary) for tensors with these names and shapes in
// dtype. The data follows it in name order; Writer writes both.
func EncodeHeader(params []spec.Param, dtype DType, meta map[string]string) ([]byte, error) {
	ts := make([]tensor.Named, len(params))
	for i, p := range params {
		ts[i] = tensor.Named{Name: p.Name, T: &tensor.Tensor{Shape: p.Shape}}
	}
	h, _, err := buildHeader(ts, dtype, meta, true)
	return h, err
}

// Writer writes a safetensors file as a stream: the header at once, then the tensors'
// values in name order, in pieces of any size. The bytes are exactly what Encode writes
// for the same tensors.
type Writer struct {
	w      *bufio.Writer
	dtype  DType
	sizes  []int    // value counts in name order
	names  []string // for errors
	i, at  int
	buf    []byte
	closed bool
}

// NewWriter writes the header for params in dtype (F32 or F16) to w and returns the
// writer of their values.
func NewWriter(w io.Writer, params []spec.Param, dtype DType, meta map[string]string) (*Writer, error) {
	h, err := EncodeHeader(params, dtype, meta)
	if err != nil {
		return nil, err
	}
	ps := slices.Clone(params)
	slices.SortFunc(ps, func(a, b spec.Param) int { return strings.Compare(a.Name, b.Name) })
	sw := &Writer{w: bufio.NewWriterSize(w, 1<<20), dtype: dtype}
	for _, p := range ps {
		sw.sizes = append(sw.sizes, tensor.Numel(p.Shape))
		sw.names = append(sw.names, p.Name)
	}
	if _, err := sw.w.Write(h); err != nil {
		return nil, fmt.Errorf("safetensors: write header: %w", err)
	}
	return sw, nil
}

// Write appends values, continuing from one tensor into the next in name order. Writing
// more values than the header announced is an ErrInvalid error; F16 refuses finite
// values beyond its range as Encode does.
func (sw *Writer) Write(vals []float32) error {
	for len(vals) > 0 {
		for sw.i < len(sw.sizes) && sw.at == sw.sizes[sw.i] {
			sw.i++
			sw.at = 0
		}
		if sw.i == len(sw.sizes) {
			return fmt.Errorf("safetensors: %d values beyond the tensors the header announced: %w", len(vals), ErrInvalid)
		}
		n := min(len(vals), sw.sizes[sw.i]-sw.at)
		v := vals[:n]
		var err error
		switch {
		case sw.dtype == F32 && littleEndian:
			_, err = sw.w.Write(f32Bytes(v))
		case sw.dtype == F32:
			sw.buf = slices.Grow(sw.buf[:0], 4*n)[:4*n]
			putF32(sw.buf, v)
			_, err = sw.w.Write(sw.buf)
		default:
			if rerr := checkF16Range([]tensor.Named{{Name: sw.names[sw.i], T: &tensor.Tensor{Data: v}}}, F16); rerr != nil {
				return rerr
			}
			sw.buf = slices.Grow(sw.buf[:0], 2*n)[:2*n]
			putF16(sw.buf, v)
			_, err = sw.w.Write(sw.buf)
		}
		if err != nil {
			return fmt.Errorf("safetensors: write tensor %q: %w", sw.names[sw.i], err)
		}
		sw.at += n
		vals = vals[n:]
	}
	return nil
}

// Close flushes the file; it is an ErrInvalid error when fewer values were written than
// the header announced. It does not close the underlying writer.
func (sw *Writer) Close() error {
	if sw.closed {
		return nil
	}
	sw.closed = true
	for sw.i < len(sw.sizes) && sw.at == sw.sizes[sw.i] {
		sw.i++
		sw.at = 0
	}
	if sw.i < len(sw.sizes) {
		return fmt.Errorf("safetensors: tensor %q got %d of its %d values: %w", sw.names[sw.i], sw.at, sw.sizes[sw.i], ErrInvalid)
	}
	if err := sw.w.Flush(); err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	return nil
}
