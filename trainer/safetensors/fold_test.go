package safetensors

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

func cloneAll(ts []tensor.Named) []tensor.Named {
	out := make([]tensor.Named, len(ts))
	for i, t := range ts {
		out[i] = tensor.Named{Name: t.Name, T: t.T.Clone()}
	}
	return out
}

func TestAddInto(t *testing.T) {
	t.Parallel()
	r, err := mustSpec(t, "tcnn-small").Resolve(3, 32)
	if err != nil {
		t.Fatal(err)
	}
	base := randomTensors(r.Params, 7)
	delta := randomTensors(r.Params, 8)
	for _, dt := range []DType{F32, F16} {
		b, err := Marshal(delta, dt, nil)
		if err != nil {
			t.Fatal(err)
		}
		// A copy shifted by one byte exercises the unaligned (word-by-word) path.
		shifted := make([]byte, len(b)+1)
		copy(shifted[1:], b)
		unaligned := shifted[1:]
		for _, c := range []struct {
			name  string
			b     []byte
			alpha float32
		}{
			{"aligned", b, 1},
			{"unaligned", unaligned, 1},
			{"scaled", b, 0.25},
			{"scaled unaligned", unaligned, -3},
		} {
			t.Run(string(dt)+" "+c.name, func(t *testing.T) {
				t.Parallel()
				dst := cloneAll(base)
				// Reverse dst so matching is by name, not position.
				for i, j := 0, len(dst)-1; i < j; i, j = i+1, j-1 {
					dst[i], dst[j] = dst[j], dst[i]
				}
				var err error
				if c.alpha == 1 {
					err = AddInto(dst, c.b, Options{Expect: r.Params, RequireFinite: true})
				} else {
					err = AddScaledInto(dst, c.b, c.alpha, Options{})
				}
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range dst {
					bt, dl := tensor.Find(base, d.Name), tensor.Find(delta, d.Name)
					for k := range d.T.Data {
						x := dl.Data[k]
						if dt == F16 {
							x = roundF16(x)
						}
						want := bt.Data[k] + float32(c.alpha*x)
						if math.Float32bits(d.T.Data[k]) != math.Float32bits(want) {
							t.Fatalf("%s[%d] = %v, want %v", d.Name, k, d.T.Data[k], want)
						}
					}
				}
			})
		}
	}
}

func TestDecodeInto(t *testing.T) {
	t.Parallel()
	src := []tensor.Named{named("a", []int{2}, 1.5, -2), named("b", []int{1}, 3)}
	for _, dt := range []DType{F32, F16} {
		b, err := Marshal(src, dt, nil)
		if err != nil {
			t.Fatal(err)
		}
		dst := []tensor.Named{named("b", []int{1}, 99), named("a", []int{2}, 7, 7)}
		keep := dst[1].T.Data
		if err := DecodeInto(dst, b, Options{}); err != nil {
			t.Fatal(err)
		}
		if dst[0].T.Data[0] != 3 || dst[1].T.Data[0] != 1.5 || dst[1].T.Data[1] != -2 {
			t.Errorf("%s: got b=%v a=%v", dt, dst[0].T.Data, dst[1].T.Data)
		}
		if &keep[0] != &dst[1].T.Data[0] {
			t.Errorf("%s: DecodeInto replaced the destination slice instead of filling it", dt)
		}
	}
}

// TestFoldRejectsAndLeavesDst shows each bad delta's error and that the running sum it
// was meant for is untouched.
func TestFoldRejectsAndLeavesDst(t *testing.T) {
	t.Parallel()
	good := []tensor.Named{named("a", []int{2}, 1, 2), named("b", []int{1}, 3)}
	goodBytes, _ := Marshal(good, F32, nil)
	nanBytes, _ := Marshal([]tensor.Named{named("a", []int{2}, 1, 2), named("b", []int{1}, float32(math.Inf(1)))}, F32, nil)
	extraBytes, _ := Marshal(append(cloneAll(good), named("c", []int{1}, 0)), F32, nil)
	shapeBytes, _ := Marshal([]tensor.Named{named("a", []int{1, 2}, 1, 2), named("b", []int{1}, 3)}, F32, nil)
	cases := []struct {
		name string
		dst  []tensor.Named
		b    []byte
		opt  Options
		want error
		msg  string
	}{
		{"truncated", nil, goodBytes[:len(goodBytes)-1], Options{}, ErrMalformed, "truncated"},
		{"too large", nil, goodBytes, Options{MaxBytes: 16}, ErrTooLarge, "limit"},
		{"non-finite", nil, nanBytes, Options{RequireFinite: true}, ErrNonFinite, `"b" element 0`},
		{"extra tensor in file", nil, extraBytes, Options{}, ErrMismatch, "unexpected c"},
		{"tensor missing from file", append(cloneAll(good), named("z", []int{1}, 0)), goodBytes, Options{}, ErrMismatch, "missing z"},
		{"mis-shaped", nil, shapeBytes, Options{}, ErrMismatch, "a has shape [1 2], want [2]"},
		{"Expect mismatch", nil, goodBytes, Options{Expect: []spec.Param{{Name: "a", Shape: []int{2}}}}, ErrMismatch, "unexpected b"},
		{"duplicate destination", []tensor.Named{named("a", []int{2}, 0, 0), named("a", []int{2}, 0, 0), named("b", []int{1}, 0)}, goodBytes, Options{}, ErrInvalid, `"a" twice`},
		{"broken destination", []tensor.Named{named("a", []int{2}, 0), named("b", []int{1}, 0)}, goodBytes, Options{}, ErrInvalid, "but 1 values"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dst := c.dst
			if dst == nil {
				dst = []tensor.Named{named("a", []int{2}, 10, 20), named("b", []int{1}, 30)}
			}
			before := cloneAll(dst)
			for _, fold := range []func() error{
				func() error { return AddInto(dst, c.b, c.opt) },
				func() error { return AddScaledInto(dst, c.b, 0.5, c.opt) },
				func() error { return AddScaledInto(dst, c.b, 0, c.opt) },
				func() error { return DecodeInto(dst, c.b, c.opt) },
			} {
				err := fold()
				if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
					t.Fatalf("got %v, want %v containing %q", err, c.want, c.msg)
				}
			}
			for i := range dst {
				for k := range dst[i].T.Data {
					if dst[i].T.Data[k] != before[i].T.Data[k] {
						t.Fatalf("%s[%d] changed from %v to %v", dst[i].Name, k, before[i].T.Data[k], dst[i].T.Data[k])
					}
				}
			}
		})
	}
}

// TestFirstNonFinite puts one bad value at every position of short buffers (covering the
// word-at-a-time lanes, the tail and unaligned starts) and checks the index reported.
func TestFirstNonFinite(t *testing.T) {
	t.Parallel()
	bad := map[DType][]uint32{
		F32: {0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffffffff},
		F16: {0x7c00, 0xfc00, 0x7e00, 0x7c01, 0xffff},
	}
	good := map[DType][]uint32{
		F32: {0, 0x7f7fffff, 0xff7fffff, 0x80000000, 0x00800000, 0x3f800000},
		F16: {0, 0x7bff, 0xfbff, 0x8000, 0x3c00, 0x0400},
	}
	for _, dt := range []DType{F32, F16} {
		es := dt.Size()
		for shift := range 2 {
			for n := range 11 {
				buf := make([]byte, n*es+shift)[shift:]
				for i := range n {
					putWord(buf[i*es:], es, good[dt][i%len(good[dt])])
				}
				if got := firstNonFinite(buf, dt); got != -1 {
					t.Fatalf("%s n=%d shift=%d: finite data reported bad at %d", dt, n, shift, got)
				}
				for pos := range n {
					for _, b := range bad[dt] {
						putWord(buf[pos*es:], es, b)
						if got := firstNonFinite(buf, dt); got != pos {
							t.Fatalf("%s n=%d shift=%d: %#x at %d reported at %d", dt, n, shift, b, pos, got)
						}
					}
					putWord(buf[pos*es:], es, good[dt][pos%len(good[dt])])
				}
			}
		}
	}
}

func putWord(b []byte, size int, v uint32) {
	for i := range size {
		b[i] = byte(v >> (8 * i))
	}
}
