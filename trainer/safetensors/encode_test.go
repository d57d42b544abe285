package safetensors

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

func named(name string, shape []int, data ...float32) tensor.Named {
	return tensor.Named{Name: name, T: &tensor.Tensor{Shape: shape, Data: data}}
}

// TestMarshalGolden pins the exact bytes: the format as other safetensors readers
// expect it (header written out by hand from the format description).
func TestMarshalGolden(t *testing.T) {
	t.Parallel()
	ts := []tensor.Named{named("w", []int{2}, 1, -2), named("b", []int{}, 0.5)}
	got, err := Marshal(ts, F32, map[string]string{"step": "3"})
	if err != nil {
		t.Fatal(err)
	}
	hdr := `{"__metadata__":{"step":"3"},"b":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`
	for (8+len(hdr))%8 != 0 {
		hdr += " "
	}
	want := []byte{byte(len(hdr)), 0, 0, 0, 0, 0, 0, 0}
	want = append(want, hdr...)
	want = append(want, 0, 0, 0, 0x3f) // 0.5
	want = append(want, 0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0)
	if !bytes.Equal(got, want) {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	r, err := mustSpec(t, "tcnn-small").Resolve(4, 64)
	if err != nil {
		t.Fatal(err)
	}
	ts := randomTensors(r.Params, 1)
	meta := map[string]string{"model": "tcnn-small", "note": "quotes \" and \\ and <tags> and ünïcode"}
	for _, dt := range []DType{F32, F16} {
		t.Run(string(dt), func(t *testing.T) {
			t.Parallel()
			b, err := Marshal(ts, dt, meta)
			if err != nil {
				t.Fatal(err)
			}
			f, err := Decode(b, Options{Expect: r.Params})
			if err != nil {
				t.Fatal(err)
			}
			if f.DType != dt || f.Meta["note"] != meta["note"] || len(f.Meta) != 2 {
				t.Errorf("dtype %s meta %v", f.DType, f.Meta)
			}
			for i, p := range r.Params {
				got := f.Tensors[i]
				if got.Name != p.Name || !tensor.SameShape(got.T.Shape, p.Shape) {
					t.Fatalf("tensor %d is %s %v, want %s %v", i, got.Name, got.T.Shape, p.Name, p.Shape)
				}
				for k, v := range ts[i].T.Data {
					want := v
					if dt == F16 {
						want = roundF16(v)
					}
					if math.Float32bits(got.T.Data[k]) != math.Float32bits(want) {
						t.Fatalf("%s[%d] = %v, want %v", p.Name, k, got.T.Data[k], want)
					}
				}
			}
			// Re-encoding the decoded tensors reproduces the file byte for byte.
			again, err := Marshal(f.Tensors, dt, f.Meta)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, b) {
				t.Error("re-encoding changed the bytes")
			}
		})
	}
}

func TestMarshalDeterministic(t *testing.T) {
	t.Parallel()
	a := []tensor.Named{named("x", []int{1}, 1), named("a", []int{2}, 2, 3), named("m", []int{1}, 4)}
	b := []tensor.Named{a[2], a[0], a[1]}
	meta1 := map[string]string{"k1": "v", "k2": "w", "a": "z"}
	meta2 := map[string]string{"a": "z", "k2": "w", "k1": "v"}
	x, err1 := Marshal(a, F32, meta1)
	y, err2 := Marshal(b, F32, meta2)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if !bytes.Equal(x, y) {
		t.Error("input order or map order changed the bytes")
	}
	if (len(x)-4*4)%8 != 0 {
		t.Errorf("data section does not start on an 8-byte boundary")
	}
}

// TestF16Rounding checks round-to-nearest-even at the interesting points.
func TestF16Rounding(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		in   float32
		want uint16
	}{
		{"one", 1, 0x3c00},
		{"tie rounds down to even", 1 + 1.0/2048, 0x3c00},
		{"tie rounds up to even", 1 + 3.0/2048, 0x3c02},
		{"just above tie rounds up", math.Nextafter32(1+1.0/2048, 2), 0x3c01},
		{"largest finite", 65504, 0x7bff},
		{"just below overflow", 65519, 0x7bff},
		{"smallest subnormal", 1.0 / (1 << 24), 0x0001},
		{"half the smallest subnormal ties to zero", 1.0 / (1 << 25), 0x0000},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
		{"minus two", -2, 0xc000},
		{"infinity", float32(math.Inf(1)), 0x7c00},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := make([]byte, 2)
			putF16(b, []float32{c.in})
			if got := uint16(b[0]) | uint16(b[1])<<8; got != c.want {
				t.Errorf("F16(%v) = %#04x, want %#04x", c.in, got, c.want)
			}
			back := make([]float32, 1)
			getF16(back, b)
			if c.want != 0x7c00 && c.in == c.in && math.Abs(float64(back[0]-c.in)) > math.Abs(float64(c.in))/1024+1.0/(1<<24) {
				t.Errorf("widened back to %v from %v", back[0], c.in)
			}
		})
	}
}

func TestEncodeRejects(t *testing.T) {
	t.Parallel()
	ok := named("a", []int{1}, 1)
	cases := []struct {
		name  string
		ts    []tensor.Named
		dtype DType
		msg   string
	}{
		{"unknown dtype", []tensor.Named{ok}, "BF16", `dtype "BF16"`},
		{"empty name", []tensor.Named{named("", []int{1}, 1)}, F32, "empty name"},
		{"reserved name", []tensor.Named{named("__metadata__", []int{1}, 1)}, F32, "reserved"},
		{"nil tensor", []tensor.Named{{Name: "n"}}, F32, `"n" is nil`},
		{"shape not matching data", []tensor.Named{named("s", []int{2, 2}, 1, 2, 3)}, F32, "4 elements) but 3 values"},
		{"negative dimension", []tensor.Named{named("s", []int{-1}, 1)}, F32, "negative dimension"},
		{"duplicate names", []tensor.Named{ok, named("a", []int{1}, 2)}, F32, `duplicate tensor name "a"`},
		{"F16 overflow", []tensor.Named{named("big", []int{2}, 1, 70000)}, F16, `"big" element 1 = 70000 is beyond the F16 range`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var w bytes.Buffer
			err := Encode(&w, c.ts, c.dtype, nil)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want ErrInvalid containing %q", err, c.msg)
			}
			if w.Len() != 0 {
				t.Errorf("wrote %d bytes before failing", w.Len())
			}
		})
	}
}

func TestWriteFileAtomic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "w.safetensors")
	first := []tensor.Named{named("a", []int{2}, 1, 2)}
	if err := WriteFile(path, first, F32, map[string]string{"v": "1"}); err != nil {
		t.Fatal(err)
	}
	// A failed write (invalid tensors) leaves the old file intact and no temp file.
	err := WriteFile(path, []tensor.Named{named("a", []int{3}, 1)}, F32, nil)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
	f, err := ReadFile(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if f.Meta["v"] != "1" || f.Tensors[0].T.Data[1] != 2 {
		t.Errorf("old file damaged: %+v", f)
	}
	// A successful write replaces it.
	if err := WriteFile(path, []tensor.Named{named("a", []int{2}, 5, 6)}, F16, nil); err != nil {
		t.Fatal(err)
	}
	f, err = ReadFile(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if f.DType != F16 || f.Tensors[0].T.Data[0] != 5 || f.Meta != nil {
		t.Errorf("replacement not visible: %+v", f)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the file", len(entries))
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", st.Mode())
	}
	// A missing directory is an error, not a panic.
	if err := WriteFile(filepath.Join(dir, "no", "such", "x"), first, F32, nil); err == nil {
		t.Error("WriteFile into a missing directory succeeded")
	}
}

func TestReadFileRejects(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	if err := WriteFile(big, []tensor.Named{named("a", []int{64}, make([]float32, 64)...)}, F32, nil); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		path string
		opt  Options
		want error
		msg  string
	}{
		{"over MaxBytes before reading", big, Options{MaxBytes: 100}, ErrTooLarge, "over the 100 byte limit"},
		{"missing file", filepath.Join(dir, "none"), Options{}, os.ErrNotExist, "none"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := ReadFile(c.path, c.opt)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("got %v, want %v containing %q", err, c.want, c.msg)
			}
		})
	}
	trunc := filepath.Join(dir, "trunc")
	b, _ := os.ReadFile(big)
	if err := os.WriteFile(trunc, b[:len(b)-3], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(trunc, Options{}); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "trunc") {
		t.Errorf("truncated file: got %v, want ErrMalformed naming the path", err)
	}
}

func TestCheckFiniteAndNorm(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		ts   []tensor.Named
		bad  string // substring of the error, "" for finite
		norm float64
	}{
		{"finite", []tensor.Named{named("a", []int{2}, 3, 0), named("b", []int{1}, -4)}, "", 5},
		{"NaN", []tensor.Named{named("a", []int{1}, 1), named("b", []int{2}, 0, float32(math.NaN()))}, `"b" element 1 is NaN`, math.NaN()},
		{"infinity", []tensor.Named{named("a", []int{1}, float32(math.Inf(-1)))}, `"a" element 0 is -Inf`, math.Inf(1)},
		{"largest float32 is finite", []tensor.Named{named("a", []int{1}, math.MaxFloat32)}, "", math.MaxFloat32},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := CheckFinite(c.ts)
			switch {
			case c.bad == "" && err != nil:
				t.Errorf("unexpected %v", err)
			case c.bad != "" && (!errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), c.bad)):
				t.Errorf("got %v, want ErrNonFinite containing %q", err, c.bad)
			}
			n := L2Norm(c.ts)
			if !(n == c.norm || math.IsNaN(n) && math.IsNaN(c.norm) || math.Abs(n-c.norm) <= 1e-9*c.norm) {
				t.Errorf("L2Norm = %v, want %v", n, c.norm)
			}
		})
	}
}

func roundF16(v float32) float32 {
	b := make([]byte, 2)
	putF16(b, []float32{v})
	out := make([]float32, 1)
	getF16(out, b)
	return out[0]
}

func mustSpec(t testing.TB, name string) *spec.Spec {
	t.Helper()
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
	s, err := spec.Load(filepath.Join(dir, "configs", "models", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// randomTensors fills the parameters with deterministic pseudo-random values spanning
// several magnitudes (so F16 rounding and subnormals get exercised).
func randomTensors(params []spec.Param, seed uint32) []tensor.Named {
	x := seed*2654435761 + 1
	out := make([]tensor.Named, len(params))
	for i, p := range params {
		t := tensor.New(p.Shape...)
		for k := range t.Data {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			mant := float32(x%20001)/10000 - 1
			t.Data[k] = mant * float32(math.Pow(10, float64(int(x>>20)%8-6)))
		}
		out[i] = tensor.Named{Name: p.Name, T: t}
	}
	return out
}
