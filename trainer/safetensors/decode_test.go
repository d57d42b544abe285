package safetensors

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/trainer/spec"
)

// raw builds a file from a literal header and data section, without padding, so tests
// control every byte.
func raw(header string, data []byte) []byte {
	b := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func f32le(vs ...float32) []byte {
	b := make([]byte, 4*len(vs))
	putF32(b, vs)
	return b
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	eight := make([]byte, 8)
	hugeLen := make([]byte, 16)
	binary.LittleEndian.PutUint64(hugeLen, 1<<40)
	overFile := raw(`{}`, nil)
	binary.LittleEndian.PutUint64(overFile, 100)
	cases := []struct {
		name string
		b    []byte
		opt  Options
		want error
		msg  string // a substring the error must contain
	}{
		{"empty input", nil, Options{}, ErrMalformed, "shorter than the 8-byte header length"},
		{"seven bytes", []byte{1, 2, 3, 4, 5, 6, 7}, Options{}, ErrMalformed, "shorter than the 8-byte"},
		{"zero header length", eight, Options{}, ErrMalformed, "too short"},
		{"header length beyond file", overFile, Options{}, ErrMalformed, "header length 100 is larger than the 2 bytes"},
		{"header length beyond MaxBytes", hugeLen, Options{MaxBytes: 1 << 20}, ErrTooLarge, "header length 1099511627776 is over"},
		{"file beyond MaxBytes", raw(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, make([]byte, 16)), Options{MaxBytes: 32}, ErrTooLarge, "over the 32 byte limit"},
		{"not an object", raw(`[1,2]`, nil), Options{}, ErrMalformed, "does not start with '{'"},
		{"bad JSON", raw(`{"a":{"dtype":"F32",`, nil), Options{}, ErrMalformed, "header"},
		{"truncated JSON object", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}`, f32le(1)), Options{}, ErrMalformed, "header JSON"},
		{"trailing garbage after JSON", raw(`{}xx`, nil), Options{}, ErrMalformed, "trailing data"},
		{"invalid UTF-8", raw("{\"\xff\":{}}", nil), Options{}, ErrMalformed, "UTF-8"},
		{"entry not an object", raw(`{"a":5}`, nil), Options{}, ErrMalformed, `header entry "a"`},
		{"unknown field", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`, f32le(1)), Options{}, ErrMalformed, `unknown field "x"`},
		{"missing dtype", raw(`{"a":{"shape":[1],"data_offsets":[0,4]}}`, f32le(1)), Options{}, ErrMalformed, `"a" has no dtype`},
		{"missing shape", raw(`{"a":{"dtype":"F32","data_offsets":[0,4]}}`, f32le(1)), Options{}, ErrMalformed, `"a" has no shape`},
		{"missing offsets", raw(`{"a":{"dtype":"F32","shape":[1]}}`, f32le(1)), Options{}, ErrMalformed, `"a" has no data_offsets`},
		{"three offsets", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, f32le(1)), Options{}, ErrMalformed, "3 data_offsets"},
		{"negative offset", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, f32le(1)), Options{}, ErrMalformed, `"a"`},
		{"unknown dtype", raw(`{"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}}`, f32le(1)), Options{}, ErrMalformed, `unsupported dtype "Q7"`},
		{"unsupported dtype BF16", raw(`{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}`, f32le(1)), Options{}, ErrMalformed, `unsupported dtype "BF16"`},
		{"mixed dtypes", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]}}`, f32le(1, 2)), Options{}, ErrMalformed, "mixed dtypes"},
		{"negative dimension", raw(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, f32le(1)), Options{}, ErrMalformed, "negative dimension"},
		{"shape product overflows", raw(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, f32le(1)), Options{}, ErrMalformed, "overflows"},
		{"shape product not matching bytes", raw(`{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,8]}}`, f32le(1, 2)), Options{}, ErrMalformed, "needs 24 bytes but data_offsets [0, 8] span 8"},
		{"F16 bytes not matching", raw(`{"a":{"dtype":"F16","shape":[3],"data_offsets":[0,4]}}`, f32le(1)), Options{}, ErrMalformed, "needs 6 bytes"},
		{"begin after end", raw(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}`, f32le(1, 2)), Options{}, ErrMalformed, "begin after end"},
		{"offsets beyond data", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, f32le(1)), Options{}, ErrMalformed, "beyond the 4 data bytes"},
		{"truncated data", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, f32le(1, 2)[:7]), Options{}, ErrMalformed, "truncated"},
		{"overlapping tensors", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, f32le(1, 2, 3)), Options{}, ErrMalformed, `"b" data [4, 12] overlaps tensor "a"`},
		{"same range twice", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, f32le(1)), Options{}, ErrMalformed, "overlaps"},
		{"gap between tensors", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}`, f32le(1, 2, 3)), Options{}, ErrMalformed, `[4, 8) belong to no tensor (gap before "b")`},
		{"gap at start", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f32le(1, 2)), Options{}, ErrMalformed, "gap before"},
		{"trailing data bytes", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, f32le(1, 2)), Options{}, ErrMalformed, "4 trailing bytes"},
		{"duplicate names", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f32le(1, 2)), Options{}, ErrMalformed, `duplicate header entry "a"`},
		{"duplicate metadata", raw(`{"__metadata__":{},"__metadata__":{}}`, nil), Options{}, ErrMalformed, "duplicate"},
		{"metadata not strings", raw(`{"__metadata__":{"k":1}}`, nil), Options{}, ErrMalformed, "__metadata__"},
		{"empty tensor name", raw(`{"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, f32le(1)), Options{}, ErrMalformed, "empty name"},
		{"NaN with RequireFinite", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, f32le(1, float32(math.NaN()))), Options{RequireFinite: true}, ErrNonFinite, `"a" element 1`},
		{"F16 infinity with RequireFinite", raw(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, []byte{0, 0x3c, 0, 0x7c}), Options{RequireFinite: true}, ErrNonFinite, `"a" element 1`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f, err := Decode(c.b, c.opt)
			if err == nil {
				t.Fatalf("Decode accepted it: %+v", f)
			}
			if !errors.Is(err, c.want) {
				t.Errorf("error %q does not wrap %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q does not contain %q", err, c.msg)
			}
		})
	}
}

func TestDecodeExpect(t *testing.T) {
	t.Parallel()
	file := raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}`, f32le(1, 2, 3))
	cases := []struct {
		name   string
		expect []spec.Param
		msgs   []string
	}{
		{"missing tensor", []spec.Param{{Name: "a", Shape: []int{2}}, {Name: "b", Shape: []int{1}}, {Name: "c", Shape: []int{5}}}, []string{"missing c"}},
		{"extra tensor", []spec.Param{{Name: "a", Shape: []int{2}}}, []string{"unexpected b"}},
		{"mis-shaped tensor", []spec.Param{{Name: "a", Shape: []int{1, 2}}, {Name: "b", Shape: []int{1}}}, []string{"a has shape [2], want [1 2]"}},
		{"everything wrong at once", []spec.Param{{Name: "a", Shape: []int{3}}, {Name: "z", Shape: []int{1}}}, []string{"missing z", "unexpected b", "a has shape [2], want [3]"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := Decode(file, Options{Expect: c.expect})
			if !errors.Is(err, ErrMismatch) {
				t.Fatalf("got %v, want ErrMismatch", err)
			}
			for _, m := range c.msgs {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not name %q", err, m)
				}
			}
		})
	}
	t.Run("exact match keeps Expect order", func(t *testing.T) {
		t.Parallel()
		f, err := Decode(file, Options{Expect: []spec.Param{{Name: "b", Shape: []int{1}}, {Name: "a", Shape: []int{2}}}})
		if err != nil {
			t.Fatal(err)
		}
		if f.Tensors[0].Name != "b" || f.Tensors[1].Name != "a" || f.Tensors[0].T.Data[0] != 3 || f.Tensors[1].T.Data[1] != 2 {
			t.Errorf("got %v %v / %v %v", f.Tensors[0].Name, f.Tensors[0].T.Data, f.Tensors[1].Name, f.Tensors[1].T.Data)
		}
	})
}

func TestDecodeAcceptsForeignLayouts(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		b     []byte
		names []string
	}{
		// Other writers may order data differently from names; offsets decide.
		{"data not in name order", raw(`{"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f32le(7, 9)), []string{"a", "b"}},
		{"empty tensor", raw(`{"e":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}`, f32le(5)), []string{"e", "s"}},
		{"no tensors", raw(`{}`, nil), nil},
		{"padded header and unaligned data", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}   `, f32le(7)), []string{"a"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f, err := Decode(c.b, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, n := range f.Tensors {
				got = append(got, n.Name)
			}
			if strings.Join(got, ",") != strings.Join(c.names, ",") {
				t.Errorf("tensors %v, want %v", got, c.names)
			}
		})
	}
	f, _ := Decode(raw(`{"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f32le(7, 9)), Options{})
	if f.Tensors[0].T.Data[0] != 9 || f.Tensors[1].T.Data[0] != 7 {
		t.Errorf("values follow offsets, not names: got a=%v b=%v", f.Tensors[0].T.Data, f.Tensors[1].T.Data)
	}
}
