// Package metrics scores a classifier: a confusion matrix and what is derived from it
// (accuracy, per-class precision, recall and F1, macro-F1), a JSON report, and the
// image-level vote that averages the class probabilities of an image's fragments.
//
// Undefined ratios are 0, never NaN, so reports always encode as JSON: the precision
// of a class never predicted, the recall of a class never present, the F1 of a class
// whose precision and recall are both 0, and the accuracy of an empty matrix.
package metrics

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// ErrLabel: a true or predicted class index outside [0, classes).
var ErrLabel = errors.New("class index out of range")

// Confusion counts predictions: M[t][p] is how many samples of true class t were
// predicted as class p.
type Confusion struct {
	M [][]int64
}

// NewConfusion returns an empty classes x classes matrix.
func NewConfusion(classes int) *Confusion {
	c := &Confusion{M: make([][]int64, classes)}
	cells := make([]int64, classes*classes)
	for i := range c.M {
		c.M[i] = cells[i*classes : (i+1)*classes : (i+1)*classes]
	}
	return c
}

// Classes returns the number of classes.
func (c *Confusion) Classes() int { return len(c.M) }

// Add counts one sample of class truth predicted as pred.
func (c *Confusion) Add(truth, pred int) error {
	n := len(c.M)
	if truth < 0 || truth >= n || pred < 0 || pred >= n {
		return fmt.Errorf("confusion add (true %d, predicted %d) with %d classes: %w", truth, pred, n, ErrLabel)
	}
	c.M[truth][pred]++
	return nil
}

// Merge adds another matrix of the same size into c (for results from several
// volunteers or several batches).
func (c *Confusion) Merge(o *Confusion) error {
	if len(o.M) != len(c.M) {
		return fmt.Errorf("merge a %d-class confusion matrix into a %d-class one: %w", len(o.M), len(c.M), ErrLabel)
	}
	for t := range o.M {
		if len(o.M[t]) != len(c.M) {
			return fmt.Errorf("merge: row %d has %d columns, want %d: %w", t, len(o.M[t]), len(c.M), ErrLabel)
		}
	}
	for t := range o.M {
		for p, v := range o.M[t] {
			c.M[t][p] += v
		}
	}
	return nil
}

// Total returns the number of samples counted.
func (c *Confusion) Total() int64 {
	var n int64
	for _, row := range c.M {
		for _, v := range row {
			n += v
		}
	}
	return n
}

// Correct returns the number of samples on the diagonal.
func (c *Confusion) Correct() int64 {
	var n int64
	for i := range c.M {
		n += c.M[i][i]
	}
	return n
}

// Accuracy returns Correct/Total, or 0 for an empty matrix.
func (c *Confusion) Accuracy() float64 {
	return ratio(c.Correct(), c.Total())
}

// Support returns how many samples of true class k were counted (row sum).
func (c *Confusion) Support(k int) int64 {
	var n int64
	for _, v := range c.M[k] {
		n += v
	}
	return n
}

// Predicted returns how many samples were predicted as class k (column sum).
func (c *Confusion) Predicted(k int) int64 {
	var n int64
	for t := range c.M {
		n += c.M[t][k]
	}
	return n
}

// Precision of class k: M[k][k] over the samples predicted as k; 0 when none was.
func (c *Confusion) Precision(k int) float64 { return ratio(c.M[k][k], c.Predicted(k)) }

// Recall of class k: M[k][k] over the samples of true class k; 0 when there were none.
func (c *Confusion) Recall(k int) float64 { return ratio(c.M[k][k], c.Support(k)) }

// F1 of class k: the harmonic mean of precision and recall; 0 when both are 0.
func (c *Confusion) F1(k int) float64 {
	p, r := c.Precision(k), c.Recall(k)
	if p+r == 0 {
		return 0
	}
	return 2 * p * r / (p + r)
}

// MacroF1 is the unweighted mean of the per-class F1 over the classes that occur, as
// a true class or as a prediction (scikit-learn's "macro" average over the labels
// present); 0 for an empty matrix.
func (c *Confusion) MacroF1() float64 {
	sum, n := 0.0, 0
	for k := range c.M {
		if c.Support(k) == 0 && c.Predicted(k) == 0 {
			continue
		}
		sum += c.F1(k)
		n++
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Report is the JSON form of a scored evaluation, written by `trainer train` and
// `trainer eval` and stored by the project server. Per-class arrays follow Classes.
type Report struct {
	Classes   []string  `json:"classes"`
	Samples   int64     `json:"samples"`
	Accuracy  float64   `json:"accuracy"`
	Precision []float64 `json:"precision"`
	Recall    []float64 `json:"recall"`
	F1        []float64 `json:"f1"`
	Support   []int64   `json:"support"`
	MacroF1   float64   `json:"macro_f1"`
	Confusion [][]int64 `json:"confusion"` // [true][predicted]
}

// Report summarises c with the given class names (nil names the classes "0", "1", ...).
func (c *Confusion) Report(classes []string) (*Report, error) {
	n := len(c.M)
	if classes == nil {
		for k := range n {
			classes = append(classes, fmt.Sprint(k))
		}
	}
	if len(classes) != n {
		return nil, fmt.Errorf("report: %d class names for a %d-class matrix: %w", len(classes), n, ErrLabel)
	}
	r := &Report{
		Classes: append([]string(nil), classes...), Samples: c.Total(), Accuracy: c.Accuracy(), MacroF1: c.MacroF1(),
		Precision: make([]float64, n), Recall: make([]float64, n), F1: make([]float64, n), Support: make([]int64, n),
		Confusion: make([][]int64, n),
	}
	for k := range n {
		r.Precision[k], r.Recall[k], r.F1[k], r.Support[k] = c.Precision(k), c.Recall(k), c.F1(k), c.Support(k)
		r.Confusion[k] = append([]int64(nil), c.M[k]...)
	}
	return r, nil
}

// Table formats the report for a terminal: one line per class, then the averages.
func (r *Report) Table() string {
	var b strings.Builder
	w := len("macro-F1")
	for _, c := range r.Classes {
		w = max(w, len(c))
	}
	fmt.Fprintf(&b, "%-*s  %9s  %9s  %9s  %7s\n", w, "class", "precision", "recall", "f1", "support")
	for k, c := range r.Classes {
		fmt.Fprintf(&b, "%-*s  %9.4f  %9.4f  %9.4f  %7d\n", w, c, r.Precision[k], r.Recall[k], r.F1[k], r.Support[k])
	}
	fmt.Fprintf(&b, "%-*s  %9.4f  (%d samples)\n", w, "accuracy", r.Accuracy, r.Samples)
	fmt.Fprintf(&b, "%-*s  %9.4f\n", w, "macro-F1", r.MacroF1)
	return b.String()
}

// Argmax returns the index of the largest value, the lowest index on ties; NaN never
// wins. It returns -1 for an empty slice or all NaN.
func Argmax[F float32 | float64](v []F) int {
	best := -1
	for i, x := range v {
		if math.IsNaN(float64(x)) {
			continue
		}
		if best < 0 || x > v[best] {
			best = i
		}
	}
	return best
}
