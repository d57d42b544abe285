package aggregate

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// wide is a model of two tensors, 5 + 2 values, so that chunks of 2 or 3 values end
// inside a tensor and chunks of 5 or 7 end at (or beyond) one.
var wide = []spec.Param{{Name: "a", Shape: []int{5}}, {Name: "b", Shape: []int{2}}}

// chunkSizes are the chunk lengths every rule is checked with (0: DefaultChunk).
var chunkSizes = []int{1, 2, 3, 5, 7, 0}

func wideFile(t testing.TB, v [7]float32) []byte {
	t.Helper()
	ta, tb := tensor.New(5), tensor.New(2)
	copy(ta.Data, v[:5])
	copy(tb.Data, v[5:])
	var buf bytes.Buffer
	if err := weights.Encode(&buf, []tensor.Named{{Name: "a", T: ta}, {Name: "b", T: tb}}, weights.F32, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// wideDeltas makes one delta per vector, with weights ws (nil: all 1).
func wideDeltas(t *testing.T, vs [][7]float32, ws []float64) []Delta {
	t.Helper()
	ds := make([]Delta, len(vs))
	for i, v := range vs {
		w := 1.0
		if ws != nil {
			w = ws[i]
		}
		ds[i] = delta(fmt.Sprintf("d%d", i+1), wideFile(t, v), 1, w)
	}
	return ds
}

// applyWide runs agg over ds into a zero sum and returns the update it declared.
func applyWide(t *testing.T, agg Aggregator, ds []Delta) ([]float64, error) {
	t.Helper()
	sum := weights.NewSum(wide)
	if err := agg.Aggregate(context.Background(), ds, weights.F32, sum); err != nil {
		return nil, err
	}
	if sum.Weight() != 1 || sum.Count() != len(ds) {
		t.Fatalf("update declared with weight %g over %d deltas, want 1 over %d", sum.Weight(), sum.Count(), len(ds))
	}
	return sum.Values(), nil
}

// withChunk returns agg reading chunk values per delta at a time.
func withChunk(agg Aggregator, chunk int) Aggregator {
	switch a := agg.(type) {
	case TrimmedMean:
		a.Chunk = chunk
		return a
	case Median:
		a.Chunk = chunk
		return a
	case NormClip:
		a.Chunk = chunk
		return a
	case MultiKrum:
		a.Chunk = chunk
		return a
	}
	panic(fmt.Sprintf("no chunk setting on %T", agg))
}

// Honest deltas d1..d4 and an attacker d5 far off in most coordinates; coordinate 2 is
// a tie across all five, coordinate 6 too.
var (
	d1 = [7]float32{1, 0, 2, -1, 5, 0, 1}
	d2 = [7]float32{2, 0, 2, -2, 4, 1, 1}
	d3 = [7]float32{3, 1, 2, -3, 3, 2, 1}
	d4 = [7]float32{4, 1, 2, -4, 2, 3, 1}
	d5 = [7]float32{100, -50, 2, -100, 1, -100, 1}
)

// Norm-clip deltas: norms 5, 10, 100 and 0.
var (
	e1 = [7]float32{3, 4, 0, 0, 0, 0, 0}
	e2 = [7]float32{0, 0, 0, 0, 0, 6, 8}
	e3 = [7]float32{0, 0, 0, 0, 60, 0, 80}
	e4 = [7]float32{}
)

// Krum deltas: every value x for x = 0, 1, 2, 3, 4, and an attacker that is 1.5
// everywhere but 100 in the first coordinate (the first chunk).
func flat(x float32) [7]float32 { return [7]float32{x, x, x, x, x, x, x} }

var g5 = [7]float32{100, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5}

func TestRobustRules(t *testing.T) {
	t.Parallel()
	g := [][7]float32{flat(0), flat(1), flat(2), flat(3), g5}
	cases := []struct {
		name string
		agg  Aggregator
		vs   [][7]float32
		ws   []float64
		want [7]float64
	}{
		// sorted columns: {1,2,3,4,100} {-50,0,0,1,1} {2,2,2,2,2} {-100,-4,-3,-2,-1}
		// {1,2,3,4,5} {-100,0,1,2,3} {1,1,1,1,1}: the middle values
		{"median odd k", Median{}, [][7]float32{d1, d2, d3, d4, d5}, nil, [7]float64{3, 0, 2, -3, 3, 1, 1}},
		// {1,2,3,4} -> 2.5, {0,0,1,1} -> 0.5, ..., {2,3,4,5} -> 3.5, {0,1,2,3} -> 1.5
		{"median even k", Median{}, [][7]float32{d1, d2, d3, d4}, nil, [7]float64{2.5, 0.5, 2, -2.5, 3.5, 1.5, 1}},
		// d1 holds 1 of 1.5: more than half the weight, so the median is d1
		{"median heavy weight", Median{}, [][7]float32{d1, d2, d3}, []float64{1, 0.25, 0.25}, [7]float64{1, 0, 2, -1, 5, 0, 1}},
		// weights 0.5, 0.25, 0.25: a run that weighs exactly half takes the midpoint:
		// {1(.5),2,3} -> 1.5; {0(.5),0,1} -> 0; {-3,-2 (cum .5),-1} -> -1.5;
		// {3,4 (cum .5),5} -> 4.5; {0(.5),1,2} -> 0.5
		{"median half weight", Median{}, [][7]float32{d1, d2, d3}, []float64{0.5, 0.25, 0.25}, [7]float64{1.5, 0, 2, -1.5, 4.5, 0.5, 1}},
		{"median one delta", Median{}, [][7]float32{d5}, nil, [7]float64{100, -50, 2, -100, 1, -100, 1}},

		// beta 0.2 of 5 trims one per side: {2,3,4} {0,0,1} {2,2,2} {-4,-3,-2} {2,3,4} {0,1,2} {1,1,1}
		{"trimmed odd k", TrimmedMean{Beta: 0.2}, [][7]float32{d1, d2, d3, d4, d5}, nil, [7]float64{3, 1.0 / 3, 2, -3, 3, 1, 1}},
		// 0.2 x 4 < 1 trims nothing: the plain mean of d1..d4
		{"trimmed even k trims nothing", TrimmedMean{Beta: 0.2}, [][7]float32{d1, d2, d3, d4}, nil, [7]float64{2.5, 0.5, 2, -2.5, 3.5, 1.5, 1}},
		// 0.25 x 4 trims one per side of d1, d2, d4, d5: {2,4} {0,0} {2,2} {-4,-2} {2,4} {0,1} {1,1}
		{"trimmed even k", TrimmedMean{Beta: 0.25}, [][7]float32{d1, d2, d4, d5}, nil, [7]float64{3, 0, 2, -3, 3, 0.5, 1}},
		// kept values under weights 1, 0.5, 1, 1, 1 (d2 is 0.5):
		// c0 keeps d2,d3,d4: (1+3+4)/2.5; c1 keeps d1,d2,d3 (ties by order): 1/2.5;
		// c3 keeps d4,d3,d2: (-4-3-1)/2.5; c4 keeps d4,d3,d2: (2+3+2)/2.5; c5 keeps d1,d2,d3: 2.5/2.5
		{"trimmed weighted", TrimmedMean{Beta: 0.2}, [][7]float32{d1, d2, d3, d4, d5}, []float64{1, 0.5, 1, 1, 1}, [7]float64{3.2, 0.4, 2, -3.2, 2.8, 1, 1}},
		{"trimmed beta 0 is the mean", TrimmedMean{}, [][7]float32{d1, d2}, []float64{1, 3}, [7]float64{1.75, 0, 2, -1.75, 4.25, 0.75, 1}},

		// median norm 10, bound 10: e3 scaled by 0.1
		{"clip odd k", NormClip{C: 1}, [][7]float32{e1, e2, e3}, nil, [7]float64{1, 4.0 / 3, 0, 0, 2, 2, 16.0 / 3}},
		// bound 20: e3 scaled by 0.2
		{"clip factor 2", NormClip{C: 2}, [][7]float32{e1, e2, e3}, nil, [7]float64{1, 4.0 / 3, 0, 0, 4, 2, 8}},
		// weights 1, 1, 0.5 (total 2.5) on the clipped deltas
		{"clip weighted", NormClip{C: 1}, [][7]float32{e1, e2, e3}, []float64{1, 1, 0.5}, [7]float64{1.2, 1.6, 0, 0, 1.2, 2.4, 4.8}},
		// norms {0,5,10,100}: median 7.5; e2 x 0.75, e3 x 0.075, then / 4
		{"clip even k", NormClip{C: 1}, [][7]float32{e1, e2, e3, e4}, nil, [7]float64{0.75, 1, 0, 0, 1.125, 1.125, 3}},
		{"clip all zero", NormClip{C: 1}, [][7]float32{e4, e4}, nil, [7]float64{}},

		// scores (sum of the 2 nearest squared distances): flat(1), flat(2): 14;
		// flat(0), flat(3): 35; g5: about 19400. m = k - f = 4 keeps x = 0..3
		{"krum default m", MultiKrum{F: 1}, g, nil, [7]float64{1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5}},
		// m 3: flat(1), flat(2) and, of the tie at 35, the earlier flat(0)
		{"krum m 3 tie", MultiKrum{F: 1, M: 3}, g, nil, [7]float64{1, 1, 1, 1, 1, 1, 1}},
		// m 1: the tie at 14 goes to flat(1)
		{"krum m 1", MultiKrum{F: 1, M: 1}, g, nil, [7]float64{1, 1, 1, 1, 1, 1, 1}},
		// the four kept, flat(0) weighing 2: (0 + 1 + 2 + 3) / 5
		{"krum weighted", MultiKrum{F: 1}, g, []float64{2, 1, 1, 1, 1}, [7]float64{1.2, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2}},
		// even k = 6, 3 nearest: flat(1..3): 6 x 7; flat(0), flat(4): 14 x 7; m 4 keeps
		// flat(1..3) and, of the tie, flat(0)
		{"krum even k", MultiKrum{F: 1, M: 4}, append(g[:4:4], g5, flat(4)), nil, [7]float64{1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5}},
		// k = 4 <= 2f + 2: the coordinate-wise median {0,1,2,100} -> 1.5, {0,1,1.5,2} -> 1.25
		{"krum too few folds the median", MultiKrum{F: 1}, [][7]float32{flat(0), flat(1), flat(2), g5}, nil, [7]float64{1.5, 1.25, 1.25, 1.25, 1.25, 1.25, 1.25}},
	}
	for _, tc := range cases {
		for _, chunk := range chunkSizes {
			t.Run(fmt.Sprintf("%s/chunk %d", tc.name, chunk), func(t *testing.T) {
				t.Parallel()
				got, err := applyWide(t, withChunk(tc.agg, chunk), wideDeltas(t, tc.vs, tc.ws))
				if err != nil {
					t.Fatal(err)
				}
				for i, w := range tc.want {
					if math.Abs(got[i]-w) > 1e-9 {
						t.Fatalf("value %d = %v, want %v (all %v)", i, got[i], w, got)
					}
				}
			})
		}
	}
}

// TestRobustAgainstMean shows what the rules are for: one attacker in five moves the
// mean by 20 in coordinate 0 and none of the robust rules by more than 1.
func TestRobustAgainstMean(t *testing.T) {
	t.Parallel()
	ds := wideDeltas(t, [][7]float32{d1, d2, d3, d4, d5}, nil)
	mean, err := applyWide(t, meanUpdate{}, ds)
	if err != nil {
		t.Fatal(err)
	}
	if mean[0] != 22 { // (1+2+3+4+100)/5
		t.Fatalf("mean coordinate 0 = %v, want 22", mean[0])
	}
	for _, agg := range []Aggregator{TrimmedMean{Beta: 0.2}, Median{}, NormClip{C: 1}, MultiKrum{F: 1}} {
		got, err := applyWide(t, agg, ds)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(got[0]-2.5) > 1 {
			t.Errorf("%T coordinate 0 = %v, want within 1 of the honest mean 2.5", agg, got[0])
		}
	}
}

// meanUpdate is Mean normalised, so it compares with the robust rules' updates.
type meanUpdate struct{}

func (meanUpdate) Aggregate(ctx context.Context, ds []Delta, dtype string, out *weights.Sum) error {
	if err := (Mean{}).Aggregate(ctx, ds, dtype, out); err != nil {
		return err
	}
	out.Normalize()
	return nil
}

func TestRobustRefuses(t *testing.T) {
	t.Parallel()
	good := wideFile(t, d1)
	short := wideFile(t, d2)[:30]
	gone := Delta{Name: "gone", Weight: 1, Open: func() (io.ReadCloser, error) { return nil, fmt.Errorf("no such blob") }}
	huge := [7]float32{math.MaxFloat32, math.MaxFloat32}
	rules := []Aggregator{TrimmedMean{Beta: 0.2}, Median{}, NormClip{C: 2}, MultiKrum{F: 1}}
	cases := []struct {
		name string
		ds   []Delta
		want string
	}{
		{"no delta", nil, "no delta"},
		{"zero weight", []Delta{delta("z", good, 1, 0)}, "weight 0"},
		{"negative weight", []Delta{delta("good", good, 1, 1), delta("n", good, 1, -1)}, "weight -1"},
		{"truncated delta", []Delta{delta("good", good, 1, 1), delta("short", short, 1, 1)}, "delta 2 of 2"},
		{"missing blob", []Delta{delta("good", good, 1, 1), gone}, "no such blob"},
	}
	for _, agg := range rules {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%T/%s", agg, tc.name), func(t *testing.T) {
				t.Parallel()
				_, err := applyWide(t, agg, tc.ds)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Aggregate: %v, want an error mentioning %q", err, tc.want)
				}
			})
		}
	}
	// Huge but finite deltas (float32's largest value) give a finite update under every
	// rule: the rules sum in float64.
	for _, agg := range rules {
		if _, err := applyWide(t, agg, wideDeltas(t, [][7]float32{huge, huge, huge}, nil)); err != nil {
			t.Errorf("%T of finite deltas: %v", agg, err)
		}
	}
	params := []struct {
		name string
		agg  Aggregator
		want string
	}{
		{"beta 0.5", TrimmedMean{Beta: 0.5}, "beta 0.5: want [0, 0.5)"},
		{"beta negative", TrimmedMean{Beta: -0.1}, "beta -0.1"},
		{"beta NaN", TrimmedMean{Beta: math.NaN()}, "beta NaN"},
		{"clip 0", NormClip{}, "clip factor 0"},
		{"clip inf", NormClip{C: math.Inf(1)}, "clip factor +Inf"},
		{"krum negative f", MultiKrum{F: -1}, "f -1"},
		{"krum negative m", MultiKrum{F: 1, M: -2}, "m -2"},
	}
	for _, tc := range params {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := applyWide(t, tc.agg, wideDeltas(t, [][7]float32{d1, d2, d3, d4, d5}, nil))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Aggregate: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		p    Params
		want Aggregator
		err  string
	}{
		{"", Params{}, Mean{}, ""},
		{NameMean, Params{BySamples: true}, Mean{BySamples: true}, ""},
		{NameTrimmedMean, Params{Beta: 0.3}, TrimmedMean{Beta: 0.3}, ""},
		{NameMedian, Params{BySamples: true}, Median{BySamples: true}, ""},
		{NameNormClip, Params{C: 3}, NormClip{C: 3}, ""},
		{NameMultiKrum, Params{F: 2, M: 3}, MultiKrum{F: 2, M: 3}, ""},
		{NameTrimmedMean, Params{Beta: 0.5}, nil, "beta 0.5"},
		{NameNormClip, Params{C: -1}, nil, "clip factor -1"},
		{NameMultiKrum, Params{F: -1}, nil, "f -1"},
		{"krum", Params{}, nil, `unknown aggregator "krum"`},
	}
	for _, tc := range cases {
		got, err := New(tc.name, tc.p)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("New(%q, %+v) = %v, %v; want an error mentioning %q", tc.name, tc.p, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("New(%q, %+v) = %v, %v; want %v", tc.name, tc.p, got, err, tc.want)
		}
	}
}

// TestRobustMemory checks the bound every robust rule promises: beside the Sum, a pass
// allocates about k x chunk float32 and per-delta bookkeeping, never a model per
// delta. The model is 1 Mi values (4 MiB a delta), the chunk 4096 values.
func TestRobustMemory(t *testing.T) {
	const n, chunk, k = 1 << 20, 4096, 5
	big := []spec.Param{{Name: "w", Shape: []int{1024, 1024}}, {Name: "b", Shape: []int{7}}}
	files := make([][]byte, k)
	for j := range files {
		tw, tb := tensor.New(1024, 1024), tensor.New(7)
		for i := range tw.Data {
			tw.Data[i] = float32((i*(j+3))%17) - 8
		}
		var buf bytes.Buffer
		if err := weights.Encode(&buf, []tensor.Named{{Name: "w", T: tw}, {Name: "b", T: tb}}, weights.F32, nil); err != nil {
			t.Fatal(err)
		}
		files[j] = buf.Bytes()
	}
	ds := make([]Delta, k)
	for j := range ds {
		ds[j] = delta(fmt.Sprint(j), files[j], 1, 1)
	}
	model := int64(4 * n)
	// k chunk buffers of float32, plus room for headers, readers and per-delta slices.
	bound := int64(k*chunk*4) + 256<<10
	for _, agg := range []Aggregator{
		TrimmedMean{Beta: 0.2, Chunk: chunk}, Median{Chunk: chunk}, NormClip{C: 2, Chunk: chunk}, MultiKrum{F: 1, Chunk: chunk},
	} {
		sum := weights.NewSum(big)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		if err := agg.Aggregate(context.Background(), ds, weights.F32, sum); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		got := int64(after.TotalAlloc - before.TotalAlloc)
		t.Logf("%T: allocated %d bytes over %d deltas of %d bytes (bound %d, k x model %d)", agg, got, k, model, bound, k*model)
		if got > bound {
			t.Errorf("%T allocated %d bytes, over the bound k x chunk + slack = %d (one model is %d)", agg, got, bound, model)
		}
	}
}
