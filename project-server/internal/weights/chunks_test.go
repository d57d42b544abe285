package weights

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// TestForEachChunk: three deltas of a model whose largest tensor spans several chunks
// are seen coordinate by coordinate, every value once, at its Sum.Values offset.
func TestForEachChunk(t *testing.T) {
	t.Parallel()
	ps := []spec.Param{{Name: "big", Shape: []int{3, foldChunk/2 + 5}}, {Name: "small", Shape: []int{7}}}
	cases := []struct {
		name  string
		dtype string
	}{
		{"float32", F32},
		{"float16", F16},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var ts [][]tensor.Named
			var rs []io.Reader
			for k := range 3 {
				d := random(ps, uint64(40+k))
				ts = append(ts, d)
				rs = append(rs, bytes.NewReader(encode(t, d, tc.dtype)))
			}
			// The expected values, as the fold reads them back (float16 rounds).
			want := make([][]float32, 3)
			for k := range ts {
				b := encode(t, ts[k], tc.dtype)
				back, _, err := ReadAll(bytes.NewReader(b))
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range ps {
					want[k] = append(want[k], tensor.Find(back, p.Name).Data...)
				}
			}
			seen := make([]int, len(want[0]))
			calls := 0
			err := ForEachChunk(rs, ps, tc.dtype, func(off int, vals [][]float32) error {
				calls++
				for k := range vals {
					for i, v := range vals[k] {
						if v != want[k][off+i] {
							t.Fatalf("delta %d value %d = %v, want %v", k, off+i, v, want[k][off+i])
						}
					}
				}
				for i := range vals[0] {
					seen[off+i]++
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for i, n := range seen {
				if n != 1 {
					t.Fatalf("coordinate %d seen %d times", i, n)
				}
			}
			if calls < 2 {
				t.Fatalf("%d chunk calls; the model spans several chunks", calls)
			}
		})
	}
}

func TestForEachChunkRefuses(t *testing.T) {
	t.Parallel()
	good := encode(t, random(testParams, 1), F32)
	stop := errors.New("stop")
	cases := []struct {
		name string
		rs   []io.Reader
		fn   func(int, [][]float32) error
		want error
	}{
		{"no delta", nil, nil, nil},
		{"truncated second", []io.Reader{bytes.NewReader(good), bytes.NewReader(good[:len(good)-8])}, nil, ErrTruncated},
		{"wrong dtype", []io.Reader{bytes.NewReader(good), bytes.NewReader(encode(t, random(testParams, 2), F16))}, nil, ErrInvalid},
		{"callback error", []io.Reader{bytes.NewReader(good)}, func(int, [][]float32) error { return stop }, stop},
	}
	for _, tc := range cases {
		fn := tc.fn
		if fn == nil {
			fn = func(int, [][]float32) error { return nil }
		}
		err := ForEachChunk(tc.rs, testParams, F32, fn)
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
