package safetensors

import (
	"bytes"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// readStream reads a whole file through ReadHeader and DataReader with a buffer of
// chunk values, returning the tensors in data order.
func readStream(r io.Reader, opt Options, chunk int) (*Header, []tensor.Named, error) {
	h, err := ReadHeader(r, opt)
	if err != nil {
		return nil, nil, err
	}
	out := make([]tensor.Named, len(h.Tensors))
	for i, ti := range h.Tensors {
		out[i] = tensor.Named{Name: ti.Name, T: tensor.New(ti.Shape...)}
	}
	d := NewDataReader(r, h, opt)
	buf := make([]float32, chunk)
	idx := 0
	for {
		t, at, n, err := d.Next(buf)
		if err == io.EOF {
			return h, out, nil
		}
		if err != nil {
			return nil, nil, err
		}
		for out[idx].Name != t.Name {
			idx++
		}
		copy(out[idx].T.Data[at:at+n], buf[:n])
	}
}

// TestStreamMatchesDecode: the streaming reader returns Decode's values, for both dtypes,
// any buffer size and a reader that returns a byte at a time.
func TestStreamMatchesDecode(t *testing.T) {
	t.Parallel()
	r, err := mustSpec(t, "tcnn-small").Resolve(3, 64)
	if err != nil {
		t.Fatal(err)
	}
	ts := randomTensors(r.Params, 7)
	ts = append(ts, named("empty", []int{0}), named("scalar", []int{}, 2.5))
	for _, dt := range []DType{F32, F16} {
		b, err := Marshal(ts, dt, map[string]string{"round": "3"})
		if err != nil {
			t.Fatal(err)
		}
		want, err := Decode(b, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, chunk := range []int{1, 7, 4096, 1 << 20} {
			var r io.Reader = bytes.NewReader(b)
			if chunk == 7 {
				r = iotest.OneByteReader(r)
			}
			h, got, err := readStream(r, Options{}, chunk)
			if err != nil {
				t.Fatalf("%s chunk %d: %v", dt, chunk, err)
			}
			if h.DType != dt || h.Meta["round"] != "3" || h.DataOffset+h.DataSize() != int64(len(b)) {
				t.Fatalf("%s chunk %d: header %+v", dt, chunk, h)
			}
			for _, g := range got {
				w := tensor.Find(want.Tensors, g.Name)
				if !tensor.SameShape(g.T.Shape, w.Shape) || !bytes.Equal(f32Bytes(g.T.Data), f32Bytes(w.Data)) {
					t.Fatalf("%s chunk %d: tensor %s differs from Decode", dt, chunk, g.Name)
				}
			}
		}
	}
}

// TestStreamRejects: every bad stream gets the error kind Decode would give, a cut
// stream is also io.ErrUnexpectedEOF, and the reader's own errors come through.
func TestStreamRejects(t *testing.T) {
	t.Parallel()
	good, err := Marshal([]tensor.Named{named("a", []int{2}, 1, 2), named("b", []int{1}, 3)}, F32, nil)
	if err != nil {
		t.Fatal(err)
	}
	inf, _ := Marshal([]tensor.Named{named("a", []int{2}, 1, float32(math.Inf(1))), named("b", []int{1}, 3)}, F32, nil)
	boom := errors.New("boom")
	cases := []struct {
		name string
		r    io.Reader
		opt  Options
		want []error
		msg  string
	}{
		{"empty", bytes.NewReader(nil), Options{}, []error{ErrMalformed, io.ErrUnexpectedEOF}, "header length"},
		{"cut in the header", bytes.NewReader(good[:20]), Options{}, []error{ErrMalformed, io.ErrUnexpectedEOF}, "inside the header"},
		{"cut in the data", bytes.NewReader(good[:len(good)-1]), Options{}, []error{ErrMalformed, io.ErrUnexpectedEOF}, `tensor "b"`},
		{"trailing byte", bytes.NewReader(append(bytes.Clone(good), 0)), Options{}, []error{ErrMalformed}, "bytes follow"},
		{"gap", bytes.NewReader(raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f32le(0, 1))), Options{}, []error{ErrMalformed}, "belong to no tensor"},
		{"overlap", bytes.NewReader(raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f32le(0, 1))), Options{}, []error{ErrMalformed}, "overlaps"},
		{"not json", bytes.NewReader(raw(`xx`, nil)), Options{}, []error{ErrMalformed}, "does not start"},
		{"header over the limit", bytes.NewReader(good), Options{MaxBytes: 16}, []error{ErrTooLarge}, "header length"},
		{"file over the limit", bytes.NewReader(good), Options{MaxBytes: int64(len(good)) - 4}, []error{ErrTooLarge}, "announces"},
		{"mismatch", bytes.NewReader(good), Options{Expect: []spec.Param{{Name: "a", Shape: []int{2}}}}, []error{ErrMismatch}, "unexpected b"},
		{"non-finite", bytes.NewReader(inf), Options{RequireFinite: true}, []error{ErrNonFinite}, `tensor "a" element 1`},
		{"reader error", io.MultiReader(bytes.NewReader(good[:40]), iotest.ErrReader(boom)), Options{}, []error{boom}, "read"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := readStream(c.r, c.opt, 1)
			for _, w := range c.want {
				if !errors.Is(err, w) {
					t.Fatalf("error %v, want it to wrap %v", err, w)
				}
			}
			if err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %v does not mention %q", err, c.msg)
			}
		})
	}
}

// TestWriterMatchesEncode: a file written through Writer in pieces of any size has
// Encode's bytes; too many or too few values are refused.
func TestWriterMatchesEncode(t *testing.T) {
	t.Parallel()
	params := []spec.Param{{Name: "z.bias", Shape: []int{5}}, {Name: "a.weight", Shape: []int{3, 4}}, {Name: "s", Shape: []int{}}}
	ts := randomTensors(params, 3)
	for _, dt := range []DType{F32, F16} {
		want, err := Marshal(ts, dt, map[string]string{"m": "1"})
		if err != nil {
			t.Fatal(err)
		}
		// The values in name order, as a streaming writer produces them.
		var all []float32
		for _, n := range []string{"a.weight", "s", "z.bias"} {
			all = append(all, tensor.Find(ts, n).Data...)
		}
		for _, piece := range []int{1, 3, len(all)} {
			var out bytes.Buffer
			w, err := NewWriter(&out, params, dt, map[string]string{"m": "1"})
			if err != nil {
				t.Fatal(err)
			}
			for at := 0; at < len(all); at += piece {
				if err := w.Write(all[at:min(at+piece, len(all))]); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("%s in pieces of %d: Writer's bytes differ from Encode's", dt, piece)
			}
		}
		hdr, err := EncodeHeader(params, dt, map[string]string{"m": "1"})
		if err != nil || !bytes.Equal(hdr, want[:len(hdr)]) || len(want)-len(hdr) != len(all)*dt.Size() {
			t.Fatalf("%s: EncodeHeader is not the start of Encode's file (%v)", dt, err)
		}
	}
	w, _ := NewWriter(io.Discard, params, F32, nil)
	if err := w.Write(make([]float32, 19)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("one value too many: %v", err)
	}
	w, _ = NewWriter(io.Discard, params, F32, nil)
	w.Write(make([]float32, 17))
	if err := w.Close(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "z.bias") {
		t.Fatalf("one value short: %v", err)
	}
	w, _ = NewWriter(io.Discard, params, F16, nil)
	if err := w.Write([]float32{1e6}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("F16 out of range: %v", err)
	}
}

// FuzzReadHeader: for any bytes, the streaming reader accepts exactly what Decode
// accepts, and reads the same values.
func FuzzReadHeader(f *testing.F) {
	for _, ts := range [][]tensor.Named{{named("a", []int{2}, 1, 2), named("b", []int{}, -0.5)}, {named("e", []int{0})}, {}} {
		for _, dt := range []DType{F32, F16} {
			b, err := Marshal(ts, dt, map[string]string{"k": "v"})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add(raw(`{"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f32le(1, 2)))
	f.Add(raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, f32le(1, 2)))
	f.Fuzz(func(t *testing.T, b []byte) {
		opt := Options{MaxBytes: 1 << 20}
		file, derr := Decode(b, opt)
		_, got, serr := readStream(bytes.NewReader(b), opt, 3)
		if (derr == nil) != (serr == nil) {
			t.Fatalf("Decode error %v but stream error %v", derr, serr)
		}
		if derr != nil {
			return
		}
		for _, g := range got {
			w := tensor.Find(file.Tensors, g.Name)
			if !bytes.Equal(f32Bytes(g.T.Data), f32Bytes(w.Data)) {
				t.Fatalf("tensor %s: stream and Decode differ", g.Name)
			}
		}
	})
}
