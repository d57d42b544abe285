package weights

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

var testParams = []spec.Param{
	{Name: "conv1.weight", Shape: []int{4, 1, 3, 3}},
	{Name: "conv1.bias", Shape: []int{4}},
	{Name: "fc1.weight", Shape: []int{3, 4}},
	{Name: "fc1.bias", Shape: []int{3}},
}

func random(ps []spec.Param, seed uint64) []tensor.Named {
	rng := rand.New(rand.NewPCG(seed, 3))
	out := make([]tensor.Named, len(ps))
	for i, p := range ps {
		t := tensor.New(p.Shape...)
		for j := range t.Data {
			t.Data[j] = float32(rng.NormFloat64())
		}
		out[i] = tensor.Named{Name: p.Name, T: t}
	}
	return out
}

func encode(t *testing.T, ts []tensor.Named, dtype string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Encode(&b, ts, dtype, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestInterop: files written here decode with trainer/safetensors (what volunteers
// use for the base model), and deltas written by trainer/safetensors pass Check and fold.
func TestInterop(t *testing.T) {
	t.Parallel()
	ts := random(testParams, 1)
	f, err := safetensors.Decode(encode(t, ts, F32), safetensors.Options{Expect: testParams, RequireFinite: true})
	if err != nil {
		t.Fatalf("trainer/safetensors cannot read our file: %v", err)
	}
	for i, n := range f.Tensors {
		if n.Name != testParams[i].Name || !bytes.Equal(f32bytes(n.T.Data), f32bytes(tensor.Find(ts, n.Name).Data)) {
			t.Fatalf("tensor %s differs after the round trip", n.Name)
		}
	}
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.F16} {
		b, err := safetensors.Marshal(ts, dt, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Check(bytes.NewReader(b), testParams, string(dt), 0); err != nil {
			t.Fatalf("%s file from trainer/safetensors refused: %v", dt, err)
		}
		s := NewSum(testParams)
		if err := s.Add(bytes.NewReader(b), string(dt), 1); err != nil {
			t.Fatalf("%s fold: %v", dt, err)
		}
	}
}

func f32bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func TestCheck(t *testing.T) {
	t.Parallel()
	good := encode(t, random(testParams, 2), F32)
	nan := random(testParams, 3)
	nan[2].T.Data[5] = float32(math.Inf(-1))
	shape := random([]spec.Param{{Name: "conv1.weight", Shape: []int{4, 1, 3, 2}}, testParams[1], testParams[2], testParams[3]}, 4)
	cases := []struct {
		name    string
		body    []byte
		dtype   string
		maxNorm float64
		want    error
	}{
		{"valid", good, F32, 0, nil},
		{"empty", nil, F32, 0, ErrTruncated},
		{"cut in the header", good[:12], F32, 0, ErrTruncated},
		{"cut in the data", good[:len(good)-3], F32, 0, ErrTruncated},
		{"trailing byte", append(bytes.Clone(good), 0), F32, 0, ErrInvalid},
		{"infinity", encode(t, nan, F32), F32, 0, ErrInvalid},
		{"wrong shape", encode(t, shape, F32), F32, 0, ErrInvalid},
		{"missing tensor", encode(t, random(testParams[:3], 5), F32), F32, 0, ErrInvalid},
		{"wrong dtype", encode(t, random(testParams, 6), F16), F32, 0, ErrInvalid},
		{"norm over the bound", good, F32, 0.5, ErrInvalid},
		{"header length absurd", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0}, F32, 0, ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Check(bytes.NewReader(tc.body), testParams, tc.dtype, tc.maxNorm)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Check: %v, want %v", err, tc.want)
			}
		})
	}
}

// TestFoldApply: Apply(base, sum of weighted deltas) is float32(base + sum/weight)
// computed in float64, value by value.
func TestFoldApply(t *testing.T) {
	t.Parallel()
	base := random(testParams, 10)
	deltas := [][]tensor.Named{random(testParams, 11), random(testParams, 12), random(testParams, 13)}
	ws := []float64{1, 2, 5}
	s := NewSum(testParams)
	for i, d := range deltas {
		if err := s.Add(bytes.NewReader(encode(t, d, F32)), F32, ws[i]); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := s.Apply(&out, bytes.NewReader(encode(t, base, F32)), nil); err != nil {
		t.Fatal(err)
	}
	got, _, err := ReadAll(&out)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range got {
		b := tensor.Find(base, g.Name)
		for j, v := range g.T.Data {
			var sum float64
			for i, d := range deltas {
				sum += ws[i] * float64(tensor.Find(d, g.Name).Data[j])
			}
			want := float32(float64(b.Data[j]) + sum/8)
			if math.Float32bits(v) != math.Float32bits(want) {
				t.Fatalf("%s[%d] = %v, want %v", g.Name, j, v, want)
			}
		}
	}
	// Storage reuse starts from zero.
	s2 := NewSumIn(testParams, s.Storage())
	for _, v := range s2.Storage() {
		if v != 0 {
			t.Fatal("reused storage was not cleared")
		}
	}
}

// FuzzCheck: no input makes Check panic, and whatever it accepts folds without error.
func FuzzCheck(f *testing.F) {
	var b bytes.Buffer
	Encode(&b, random(testParams, 20), F32, nil)
	f.Add(b.Bytes())
	f.Add([]byte{8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '})
	f.Fuzz(func(t *testing.T, body []byte) {
		if _, err := Check(bytes.NewReader(body), testParams, F32, 0); err != nil {
			return
		}
		if err := NewSum(testParams).Add(bytes.NewReader(body), F32, 1); err != nil {
			t.Fatalf("Check accepted what Add refuses: %v", err)
		}
	})
}

// encodeReversed writes ts as a safetensors file whose data section holds the tensors
// in reverse name order: valid, but laid out unlike Encode's files.
func encodeReversed(t *testing.T, ts []tensor.Named) []byte {
	t.Helper()
	ps := paramsOf(ts)
	slices.SortFunc(ps, func(a, b spec.Param) int { return strings.Compare(a.Name, b.Name) })
	var hdr, data bytes.Buffer
	hdr.WriteByte('{')
	for i := len(ps) - 1; i >= 0; i-- {
		if hdr.Len() > 1 {
			hdr.WriteByte(',')
		}
		vals := tensor.Find(ts, ps[i].Name).Data
		begin := data.Len()
		data.Write(f32bytes(vals))
		shape, _ := json.Marshal(ps[i].Shape)
		fmt.Fprintf(&hdr, `%q:{"dtype":"F32","shape":%s,"data_offsets":[%d,%d]}`, ps[i].Name, shape, begin, data.Len())
	}
	hdr.WriteByte('}')
	var out bytes.Buffer
	binary.Write(&out, binary.LittleEndian, uint64(hdr.Len()))
	out.Write(hdr.Bytes())
	out.Write(data.Bytes())
	return out.Bytes()
}

func paramsOf(ts []tensor.Named) []spec.Param {
	ps := make([]spec.Param, len(ts))
	for i, n := range ts {
		ps[i] = spec.Param{Name: n.Name, Shape: n.T.Shape}
	}
	return ps
}

// TestAddAll: folding a batch in one pass gives the bits of folding its deltas one
// after the other, for float32 and float16, weighted or not, whether or not the
// deltas share a layout; a bad delta in a batch is named.
func TestAddAll(t *testing.T) {
	t.Parallel()
	// Large enough for several fold chunks per tensor.
	ps := []spec.Param{{Name: "a.weight", Shape: []int{3, foldChunk + 5}}, {Name: "b.bias", Shape: []int{7}}}
	var deltas [][]tensor.Named
	for k := 0; k < MaxBatch; k++ {
		deltas = append(deltas, random(ps, uint64(30+k)))
	}
	cases := []struct {
		name     string
		dtype    string
		weights  []float64
		reversed int // index of a delta laid out in reverse order, or -1
	}{
		{"f32 unweighted", F32, []float64{1, 1, 1, 1, 1, 1, 1, 1}, -1},
		{"f32 weighted", F32, []float64{3, 1, 0.5, 7, 1, 2, 9, 4}, -1},
		{"f16 weighted", F16, []float64{1, 2, 3, 4, 5, 6, 7, 8}, -1},
		{"mixed layouts", F32, []float64{1, 2, 1, 2, 1, 2, 1, 2}, 3},
		{"single", F32, []float64{2}, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			bodies := make([][]byte, len(c.weights))
			for k := range bodies {
				if k == c.reversed {
					bodies[k] = encodeReversed(t, deltas[k])
				} else {
					bodies[k] = encode(t, deltas[k], c.dtype)
				}
			}
			one := NewSum(ps)
			for k, b := range bodies {
				if err := one.Add(bytes.NewReader(b), c.dtype, c.weights[k]); err != nil {
					t.Fatal(err)
				}
			}
			batch := NewSum(ps)
			rs := make([]io.Reader, len(bodies))
			for k, b := range bodies {
				rs[k] = iotest.HalfReader(bytes.NewReader(b)) // short reads, as from a socket
			}
			if err := batch.AddAll(rs, c.dtype, c.weights); err != nil {
				t.Fatal(err)
			}
			if batch.Count() != one.Count() || batch.Weight() != one.Weight() {
				t.Fatalf("batch count %d weight %g, one by one %d %g", batch.Count(), batch.Weight(), one.Count(), one.Weight())
			}
			for i, v := range batch.Storage() {
				if math.Float64bits(v) != math.Float64bits(one.Storage()[i]) {
					t.Fatalf("sum[%d] = %v in a batch, %v one by one", i, v, one.Storage()[i])
				}
			}
		})
	}
	t.Run("bad delta named", func(t *testing.T) {
		t.Parallel()
		good := encode(t, deltas[0], F32)
		rs := []io.Reader{bytes.NewReader(good), bytes.NewReader(good[:len(good)-10]), bytes.NewReader(good)}
		err := NewSum(ps).AddAll(rs, F32, []float64{1, 1, 1})
		if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "delta 2 of 3") {
			t.Fatalf("AddAll with a truncated second delta: %v", err)
		}
		wrong := encode(t, random(testParams, 1), F32)
		err = NewSum(ps).AddAll([]io.Reader{bytes.NewReader(good), bytes.NewReader(wrong)}, F32, []float64{1, 1})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "delta 2 of 2") {
			t.Fatalf("AddAll with a delta of another model: %v", err)
		}
	})
}
