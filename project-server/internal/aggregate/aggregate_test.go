package aggregate

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// params is a model of two tensors, small enough to write every value out by hand.
var params = []spec.Param{{Name: "a", Shape: []int{2}}, {Name: "b", Shape: []int{1}}}

func file(t *testing.T, a0, a1, b0 float32) []byte {
	t.Helper()
	ta, tb := tensor.New(2), tensor.New(1)
	ta.Data[0], ta.Data[1], tb.Data[0] = a0, a1, b0
	var buf bytes.Buffer
	if err := weights.Encode(&buf, []tensor.Named{{Name: "a", T: ta}, {Name: "b", T: tb}}, weights.F32, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func delta(name string, b []byte, samples int64, w float64) Delta {
	return Delta{Name: name, Samples: samples, Weight: w, Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}}
}

// apply folds deltas with agg and applies the update to a zero model.
func apply(t *testing.T, agg Aggregator, ds []Delta) ([]float32, error) {
	t.Helper()
	sum := weights.NewSum(params)
	if err := agg.Aggregate(context.Background(), ds, weights.F32, sum); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := sum.Apply(&out, bytes.NewReader(file(t, 0, 0, 0)), nil); err != nil {
		t.Fatal(err)
	}
	ts, _, err := weights.ReadAll(&out)
	if err != nil {
		t.Fatal(err)
	}
	return append(tensor.Find(ts, "a").Data, tensor.Find(ts, "b").Data...), nil
}

func TestMean(t *testing.T) {
	t.Parallel()
	d1 := file(t, 1, 2, -3)
	d2 := file(t, 4, -2, 3)
	d3 := file(t, 0, 0, 6)
	many := make([]Delta, 0, 2*weights.MaxBatch+1)
	for i := range cap(many) {
		many = append(many, delta(string(rune('a'+i)), d1, 1, 1))
	}
	cases := []struct {
		name string
		agg  Aggregator
		ds   []Delta
		want []float32
	}{
		// (1 + 4) / 2, (2 - 2) / 2, (-3 + 3) / 2
		{"plain mean", Mean{}, []Delta{delta("1", d1, 10, 1), delta("2", d2, 30, 1)}, []float32{2.5, 0, 0}},
		// weights 1 and 1/2: (1 + 2) / 1.5 = 2, (2 - 1) / 1.5 = 2/3, (-3 + 1.5) / 1.5 = -1
		{"mode weights", Mean{}, []Delta{delta("1", d1, 10, 1), delta("2", d2, 30, 0.5)}, []float32{2, 2.0 / 3, -1}},
		// samples 10 and 30: (10 + 120) / 40 = 3.25, (20 - 60) / 40 = -1, (-30 + 90) / 40 = 1.5
		{"sample weights", Mean{BySamples: true}, []Delta{delta("1", d1, 10, 1), delta("2", d2, 30, 1)}, []float32{3.25, -1, 1.5}},
		// weights 10 x 1, 30 x 0.5, 0 samples (counts as weight 1) x 1:
		// a0 = (10 + 60) / 26 = 70/26, a1 = (20 - 30) / 26, b = (-30 + 45 + 6) / 26
		{"sample and mode weights", Mean{BySamples: true}, []Delta{delta("1", d1, 10, 1), delta("2", d2, 30, 0.5), delta("3", d3, 0, 1)},
			[]float32{70.0 / 26, -10.0 / 26, 21.0 / 26}},
		// more than one batch: the mean of equal deltas is the delta
		{"three batches", Mean{}, many, []float32{1, 2, -3}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := apply(t, tc.agg, tc.ds)
			if err != nil {
				t.Fatal(err)
			}
			for i := range tc.want {
				if math.Abs(float64(got[i]-tc.want[i])) > 1e-6 {
					t.Fatalf("value %d = %v, want %v (all %v)", i, got[i], tc.want[i], got)
				}
			}
		})
	}
}

func TestMeanRefuses(t *testing.T) {
	t.Parallel()
	good := file(t, 1, 2, 3)
	wrong := func() []byte {
		var buf bytes.Buffer
		ta := tensor.New(3)
		if err := weights.Encode(&buf, []tensor.Named{{Name: "a", T: ta}}, weights.F32, nil); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}()
	gone := Delta{Name: "gone", Weight: 1, Open: func() (io.ReadCloser, error) { return nil, errors.New("no such blob") }}
	cases := []struct {
		name string
		ds   []Delta
		want string
	}{
		{"no delta", nil, "no delta"},
		{"zero weight", []Delta{delta("z", good, 1, 0)}, "weight 0"},
		{"wrong tensors", []Delta{delta("good", good, 1, 1), delta("bad", wrong, 1, 1)}, "bad"},
		{"missing blob", []Delta{delta("good", good, 1, 1), gone}, "no such blob"},
		{"not finite", []Delta{delta("big", file(t, math.MaxFloat32, 0, 0), 1, math.MaxFloat64)}, "not finite"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := apply(t, Mean{}, tc.ds)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Aggregate: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestFor(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		want Aggregator
		err  bool
	}{
		{"", Mean{}, false},
		{NameMean, Mean{}, false},
		{NameSampleWeight, Mean{BySamples: true}, false},
		{"median", nil, true},
	}
	for _, tc := range cases {
		got, err := For(tc.name)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("For(%q) = %v, %v; want %v (error %v)", tc.name, got, err, tc.want, tc.err)
		}
	}
}

// median is a coordinate-wise median written against the Aggregator interface and
// weights.ForEachChunk, as a robust aggregator would be: it checks that the interface
// lets an implementation read every delta of a fold chunk by chunk.
type median struct{}

func (median) Aggregate(ctx context.Context, deltas []Delta, dtype string, out *weights.Sum) error {
	rs := make([]io.Reader, len(deltas))
	for k, d := range deltas {
		f, err := d.Open()
		if err != nil {
			return err
		}
		defer f.Close()
		rs[k] = f
	}
	dst := out.Values()
	col := make([]float64, len(deltas))
	err := weights.ForEachChunk(rs, out.Params(), dtype, func(off int, vals [][]float32) error {
		for i := range vals[0] {
			for k := range vals {
				col[k] = float64(vals[k][i])
			}
			slices.Sort(col)
			dst[off+i] = col[len(col)/2]
		}
		return nil
	})
	out.SetUpdate(len(deltas))
	return err
}

func TestChunkedAggregator(t *testing.T) {
	t.Parallel()
	ds := []Delta{
		delta("1", file(t, 1, 2, -3), 1, 1),
		delta("2", file(t, 4, -2, 3), 1, 1),
		delta("3", file(t, 100, 0, 6), 1, 1), // an outlier in a
	}
	got, err := apply(t, median{}, ds)
	if err != nil {
		t.Fatal(err)
	}
	// medians: a0 of {1, 4, 100} = 4, a1 of {2, -2, 0} = 0, b of {-3, 3, 6} = 3
	want := []float32{4, 0, 3}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("median update %v, want %v", got, want)
		}
	}
	// Deltas that do not match the model are refused by name.
	bad := append(ds[:2:2], delta("short", file(t, 1, 2, 3)[:20], 1, 1))
	if _, err := apply(t, median{}, bad); err == nil || !strings.Contains(err.Error(), "delta 3 of 3") {
		t.Fatalf("a truncated third delta: %v", err)
	}
}
