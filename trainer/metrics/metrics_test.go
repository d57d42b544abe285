package metrics

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

func fill(rows [][]int64) *Confusion {
	c := NewConfusion(len(rows))
	for t, row := range rows {
		for p, n := range row {
			for range n {
				if err := c.Add(t, p); err != nil {
					panic(err)
				}
			}
		}
	}
	return c
}

// TestConfusionHandComputed checks every derived number against values worked out by
// hand (shown in the comments).
func TestConfusionHandComputed(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name                  string
		m                     [][]int64
		acc                   float64
		precision, recall, f1 []float64
		macro                 float64
	}{
		{
			// predicted column sums 7, 4, 1, 0; supports 6, 6, 0, 0.
			// F1_0 = 2(5/7)(5/6)/(5/7+5/6) = 10/13; F1_1 = 2(3/4)(1/2)/(5/4) = 3/5.
			// Class 2 was predicted once, so it counts in the macro mean; class 3 never
			// occurs and does not: (10/13 + 3/5 + 0) / 3.
			name: "four classes, one never seen",
			m:    [][]int64{{5, 1, 0, 0}, {2, 3, 1, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}},
			acc:  8.0 / 12, precision: []float64{5.0 / 7, 3.0 / 4, 0, 0}, recall: []float64{5.0 / 6, 1.0 / 2, 0, 0},
			f1: []float64{10.0 / 13, 3.0 / 5, 0, 0}, macro: (10.0/13 + 3.0/5) / 3,
		},
		{
			name: "perfect", m: [][]int64{{3, 0}, {0, 4}},
			acc: 1, precision: []float64{1, 1}, recall: []float64{1, 1}, f1: []float64{1, 1}, macro: 1,
		},
		{
			// Everything predicted as class 0: p0 = 2/5, r0 = 1, F1_0 = 2(0.4)/(1.4) = 4/7.
			name: "always class 0", m: [][]int64{{2, 0}, {3, 0}},
			acc: 2.0 / 5, precision: []float64{2.0 / 5, 0}, recall: []float64{1, 0}, f1: []float64{4.0 / 7, 0}, macro: 2.0 / 7,
		},
		{
			name: "empty", m: [][]int64{{0, 0}, {0, 0}},
			acc: 0, precision: []float64{0, 0}, recall: []float64{0, 0}, f1: []float64{0, 0}, macro: 0,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := fill(c.m)
			if !near(m.Accuracy(), c.acc) || !near(m.MacroF1(), c.macro) {
				t.Errorf("accuracy %v macro-F1 %v, want %v %v", m.Accuracy(), m.MacroF1(), c.acc, c.macro)
			}
			for k := range c.m {
				if !near(m.Precision(k), c.precision[k]) || !near(m.Recall(k), c.recall[k]) || !near(m.F1(k), c.f1[k]) {
					t.Errorf("class %d: P %v R %v F1 %v, want %v %v %v", k, m.Precision(k), m.Recall(k), m.F1(k), c.precision[k], c.recall[k], c.f1[k])
				}
			}
			r, err := m.Report(nil)
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(r) // fails on NaN, so this also proves there is none
			if err != nil {
				t.Fatal(err)
			}
			var back Report
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if back.Classes[1] != "1" || !near(back.MacroF1, c.macro) || back.Confusion[0][0] != c.m[0][0] || back.Support[0] != c.m[0][0]+c.m[0][1] {
				t.Errorf("JSON round trip: %s", b)
			}
		})
	}
}

func TestReportJSONFields(t *testing.T) {
	t.Parallel()
	c := fill([][]int64{{1, 1}, {0, 2}})
	r, err := c.Report([]string{"bark", "wool"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(r)
	for _, k := range []string{`"classes":["bark","wool"]`, `"accuracy":0.75`, `"macro_f1":`, `"confusion":[[1,1],[0,2]]`, `"precision":[1,0.6666666666666666]`, `"recall":[0.5,1]`, `"support":[2,2]`, `"samples":4`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("JSON %s lacks %s", b, k)
		}
	}
	tab := r.Table()
	if !strings.Contains(tab, "wool") || !strings.Contains(tab, "0.7500") {
		t.Errorf("table:\n%s", tab)
	}
	// The report is a copy: later counts do not change it.
	c.Add(0, 0)
	if r.Confusion[0][0] != 1 {
		t.Error("report aliases the matrix")
	}
}

func TestConfusionRejects(t *testing.T) {
	t.Parallel()
	c := NewConfusion(3)
	c.Add(1, 1)
	cases := []struct {
		name string
		err  error
	}{
		{"true label too large", c.Add(3, 0)},
		{"predicted label negative", c.Add(0, -1)},
		{"merge different size", c.Merge(NewConfusion(2))},
		{"merge ragged", c.Merge(&Confusion{M: [][]int64{{1}, {1}, {1}}})},
		{"report with wrong names", func() error { _, err := c.Report([]string{"a"}); return err }()},
	}
	for _, k := range cases {
		if !errors.Is(k.err, ErrLabel) {
			t.Errorf("%s: got %v, want ErrLabel", k.name, k.err)
		}
	}
	if c.Total() != 1 || c.M[1][1] != 1 {
		t.Errorf("rejected input changed the matrix: %v", c.M)
	}
	o := fill([][]int64{{1, 0, 0}, {0, 0, 2}, {0, 0, 0}})
	if err := c.Merge(o); err != nil || c.Total() != 4 || c.M[1][2] != 2 {
		t.Errorf("merge: %v %v", err, c.M)
	}
}

func TestArgmax(t *testing.T) {
	t.Parallel()
	nan := math.NaN()
	cases := []struct {
		name string
		v    []float64
		want int
	}{
		{"plain", []float64{0.1, 0.7, 0.2}, 1},
		{"tie takes the lowest index", []float64{0.4, 0.2, 0.4}, 0},
		{"NaN never wins", []float64{nan, 0.1, nan, 0.05}, 1},
		{"all NaN", []float64{nan, nan}, -1},
		{"empty", nil, -1},
		{"negative logits", []float64{-3, -1, -2}, 1},
	}
	for _, c := range cases {
		if got := Argmax(c.v); got != c.want {
			t.Errorf("%s: Argmax(%v) = %d, want %d", c.name, c.v, got, c.want)
		}
	}
}

func TestByImage(t *testing.T) {
	t.Parallel()
	// Image 2: fragments (0.6,0.4) and (0.2,0.8): mean (0.4,0.6), class 1 although
	// its first fragment voted 0. Image 0: (0.9,0.1),(0.5,0.5),(0.1,0.9): mean
	// (0.5,0.5), a tie, class 0. Image 5: one fragment (0.3,0.7).
	probs := []float32{0.6, 0.4, 0.9, 0.1, 0.2, 0.8, 0.5, 0.5, 0.3, 0.7, 0.1, 0.9}
	imageOf := []int{2, 0, 2, 0, 5, 0}
	res, err := ByImage(probs, 2, imageOf)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		image, frags, pred int
		mean0              float64
	}{{0, 3, 0, 0.5}, {2, 2, 1, 0.4}, {5, 1, 1, 0.3}}
	if len(res) != len(want) {
		t.Fatalf("%d results, want %d", len(res), len(want))
	}
	for i, w := range want {
		r := res[i]
		if r.Image != w.image || r.Fragments != w.frags || r.Pred != w.pred || math.Abs(r.Mean[0]-w.mean0) > 1e-7 || math.Abs(r.Mean[0]+r.Mean[1]-1) > 1e-7 {
			t.Errorf("result %d = %+v, want image %d frags %d pred %d mean0 %v", i, r, w.image, w.frags, w.pred, w.mean0)
		}
	}
	labels := []int{0, 1, 0, 1, 1, 0} // labels of images 0..5
	ic, err := ImageConfusion(res, 2, labels)
	if err != nil {
		t.Fatal(err)
	}
	// image 0: true 0 pred 0; image 2: true 0 pred 1; image 5: true 0 pred 1.
	if ic.M[0][0] != 1 || ic.M[0][1] != 2 || ic.Total() != 3 {
		t.Errorf("image confusion %v", ic.M)
	}
	fragLabels := []int{0, 0, 0, 0, 0, 0}
	fc, err := FromProbs(probs, 2, fragLabels)
	if err != nil {
		t.Fatal(err)
	}
	// fragment argmaxes: 0, 0, 1, 0 (tie), 1, 1.
	if fc.M[0][0] != 3 || fc.M[0][1] != 3 {
		t.Errorf("fragment confusion %v", fc.M)
	}

	bad := []struct {
		name string
		err  error
	}{
		{"rows not matching", func() error { _, err := ByImage(probs[:5], 2, imageOf); return err }()},
		{"zero classes", func() error { _, err := ByImage(nil, 0, nil); return err }()},
		{"label out of range", func() error { _, err := FromProbs(probs, 2, []int{0, 0, 0, 0, 0, 2}); return err }()},
		{"image without label", func() error { _, err := ImageConfusion(res, 2, labels[:3]); return err }()},
		{"all-NaN row", func() error {
			n := float32(math.NaN())
			_, err := FromProbs([]float32{n, n}, 2, []int{0})
			return err
		}()},
	}
	for _, b := range bad {
		if !errors.Is(b.err, ErrLabel) {
			t.Errorf("%s: got %v, want ErrLabel", b.name, b.err)
		}
	}
}
