package aggregate

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/texgrid/texgrid/project-server/internal/weights"
)

// Names of the robust aggregators For selects (protocol.CampaignSpec.Aggregator).
const (
	NameTrimmedMean = "trimmed_mean" // coordinate-wise beta-trimmed mean
	NameMedian      = "median"       // coordinate-wise (weighted) median
	NameNormClip    = "norm_clip"    // mean of deltas clipped to c x the median norm
	NameMultiKrum   = "multi_krum"   // mean of the m deltas with the best Krum scores
)

// Robust rules read every delta of a fold in lockstep, chunk values of each at a time
// (weights.ForEachChunkN), and write the update straight into the Sum's values: their
// memory is k x chunk float32 plus per-coordinate scratch of k values, beside the Sum
// (two model sizes); never k model sizes. A Chunk of 0 takes DefaultChunk.

// DefaultChunk is the values per delta a robust pass reads at a time.
const DefaultChunk = 1 << 14

// weightOf is the weight a delta carries into a rule: its mode Weight (1 in sync
// rounds, s(tau) in async), times its Samples when bySamples is set and they are
// positive, as in Mean.
func weightOf(d Delta, bySamples bool) float64 {
	w := d.Weight
	if bySamples && d.Samples > 0 {
		w *= float64(d.Samples)
	}
	return w
}

// chunked opens deltas, checks their weights and runs fn over their values in lockstep
// runs of chunk values; it closes every delta it opened.
func chunked(ctx context.Context, deltas []Delta, dtype string, out *weights.Sum, chunk int,
	fn func(offset int, vals [][]float32) error) error {
	if len(deltas) == 0 {
		return fmt.Errorf("aggregate: no delta")
	}
	if chunk <= 0 {
		chunk = DefaultChunk
	}
	rs := make([]io.Reader, len(deltas))
	for k, d := range deltas {
		if !(d.Weight > 0) {
			return fmt.Errorf("aggregate: delta %s has weight %g; weights must be positive", d.Name, d.Weight)
		}
		f, err := d.Open()
		if err != nil {
			return fmt.Errorf("aggregate: open delta %s: %w", d.Name, err)
		}
		defer f.Close()
		rs[k] = f
	}
	err := weights.ForEachChunkN(rs, out.Params(), dtype, chunk, func(off int, vals [][]float32) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fn(off, vals)
	})
	if err != nil {
		return fmt.Errorf("aggregate %d deltas: %w", len(deltas), err)
	}
	return nil
}

// finish declares out the update of k deltas and checks it is finite.
func finish(out *weights.Sum, k int, rule string) error {
	out.SetUpdate(k)
	if !out.Finite() {
		return fmt.Errorf("aggregate: the %s of %d deltas is not finite", rule, k)
	}
	return nil
}

// entry is one delta's value at one coordinate, with its weight and its place in the
// fold, which breaks ties so that equal values sort the same way every time.
type entry struct {
	v float64
	w float64
	k int
}

func byValue(a, b entry) int {
	if c := cmp.Compare(a.v, b.v); c != 0 {
		return c
	}
	return cmp.Compare(a.k, b.k)
}

// column fills col with coordinate i of every delta and sorts it by value, then by
// the delta's place in the fold.
func column(col []entry, vals [][]float32, ws []float64, i int) {
	for k := range vals {
		col[k] = entry{v: float64(vals[k][i]), w: ws[k], k: k}
	}
	slices.SortFunc(col, byValue)
}

func weightsOf(deltas []Delta, bySamples bool) []float64 {
	ws := make([]float64, len(deltas))
	for k, d := range deltas {
		ws[k] = weightOf(d, bySamples)
	}
	return ws
}

// TrimmedMean is the coordinate-wise beta-trimmed mean: at every coordinate it sorts
// the k values, drops the floor(Beta x k) smallest and as many largest, and takes the
// weighted mean of the rest. Weights do not decide what is trimmed (a stale or a
// large-sample delta is trimmed like any other; equal values are trimmed in fold
// order); the kept values are averaged under their weights, so in async mode the
// staleness discount still applies to what survives. Beta is in [0, 0.5): at least
// one value is always kept. Beta 0 is the weighted mean, and a Beta x k under 1
// trims nothing.
type TrimmedMean struct {
	Beta      float64
	BySamples bool
	Chunk     int
}

// Aggregate implements Aggregator.
func (m TrimmedMean) Aggregate(ctx context.Context, deltas []Delta, dtype string, out *weights.Sum) error {
	if !(m.Beta >= 0 && m.Beta < 0.5) {
		return fmt.Errorf("aggregate: trimmed mean beta %g: want [0, 0.5)", m.Beta)
	}
	k := len(deltas)
	trim := int(math.Floor(m.Beta * float64(k)))
	ws := weightsOf(deltas, m.BySamples)
	col := make([]entry, k)
	dst := out.Values()
	err := chunked(ctx, deltas, dtype, out, m.Chunk, func(off int, vals [][]float32) error {
		for i := range vals[0] {
			column(col, vals, ws, i)
			var s, w float64
			for _, e := range col[trim : k-trim] {
				s += e.w * e.v
				w += e.w
			}
			dst[off+i] = s / w
		}
		return nil
	})
	if err != nil {
		return err
	}
	return finish(out, k, "trimmed mean")
}

// Median is the coordinate-wise weighted median: at every coordinate, the value at
// which the weight of the sorted values first reaches half the total. When the values
// up to one of them weigh exactly half (within 1e-12 of the total), the median is the
// midpoint of that value and the next, so with equal weights (sync rounds) it is the
// textbook median: the middle value for odd k, the mean of the two middle values for
// even k. In async mode a staler delta (smaller s(tau)) pulls the median less.
type Median struct {
	BySamples bool
	Chunk     int
}

// Aggregate implements Aggregator.
func (m Median) Aggregate(ctx context.Context, deltas []Delta, dtype string, out *weights.Sum) error {
	k := len(deltas)
	ws := weightsOf(deltas, m.BySamples)
	var total float64
	for _, w := range ws {
		total += w
	}
	half, eps := total/2, total*1e-12
	col := make([]entry, k)
	dst := out.Values()
	err := chunked(ctx, deltas, dtype, out, m.Chunk, func(off int, vals [][]float32) error {
		for i := range vals[0] {
			column(col, vals, ws, i)
			var c float64
			for j, e := range col {
				c += e.w
				if c < half-eps {
					continue
				}
				if math.Abs(c-half) <= eps && j+1 < k {
					dst[off+i] = (e.v + col[j+1].v) / 2
				} else {
					dst[off+i] = e.v
				}
				break
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return finish(out, k, "median")
}

// NormClip clips every delta to C times the median L2 norm of the fold's deltas and
// takes the weighted mean of the clipped deltas: delta_i x min(1, C x median / |delta_i|).
// The median norm is the plain median of the k norms (the mean of the two middle
// norms for even k): weights do not decide the clipping bound, so a host cannot raise
// it by claiming samples; they weight the mean as in Mean. It reads the deltas twice:
// once for the norms, once for the mean. C must be positive and finite.
type NormClip struct {
	C         float64
	BySamples bool
	Chunk     int
}

// Aggregate implements Aggregator.
func (m NormClip) Aggregate(ctx context.Context, deltas []Delta, dtype string, out *weights.Sum) error {
	if !(m.C > 0) || math.IsInf(m.C, 0) {
		return fmt.Errorf("aggregate: norm clip factor %g: want a positive finite number", m.C)
	}
	k := len(deltas)
	sq := make([]float64, k)
	err := chunked(ctx, deltas, dtype, out, m.Chunk, func(_ int, vals [][]float32) error {
		for j, v := range vals {
			for _, x := range v {
				sq[j] += float64(x) * float64(x)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	norms := make([]float64, k)
	for j := range sq {
		norms[j] = math.Sqrt(sq[j])
	}
	sorted := slices.Clone(norms)
	slices.Sort(sorted)
	med := sorted[k/2]
	if k%2 == 0 {
		med = (sorted[k/2-1] + sorted[k/2]) / 2
	}
	bound := m.C * med
	ws := weightsOf(deltas, m.BySamples)
	scale := make([]float64, k)
	var total float64
	for j := range scale {
		scale[j] = 1
		if norms[j] > bound {
			scale[j] = bound / norms[j]
		}
		total += ws[j]
	}
	dst := out.Values()
	err = chunked(ctx, deltas, dtype, out, m.Chunk, func(off int, vals [][]float32) error {
		for i := range vals[0] {
			var s float64
			for j := range vals {
				s += ws[j] * scale[j] * float64(vals[j][i])
			}
			dst[off+i] = s / total
		}
		return nil
	})
	if err != nil {
		return err
	}
	return finish(out, k, "clipped mean")
}

// MultiKrum is Multi-Krum (Blanchard et al., 2017): the score of a delta is the sum of
// its squared L2 distances to its k - F - 2 nearest other deltas; the M deltas with the
// lowest scores (ties go to the earlier delta of the fold) are averaged under their
// weights. Weights do not decide the selection, only the mean of the selected.
// M 0 selects k - F. Krum needs k > 2F + 2 deltas to tell F attackers apart: with fewer
// (a round that closed short, a small async buffer) the rule cannot hold and MultiKrum
// folds the coordinate-wise weighted Median of the deltas instead, which resists any
// minority of attackers; the campaign's validation keeps this from happening while
// rounds reach their quorum. It reads the deltas twice: once for the k x k distances
// (k x k float64 beside the chunks; the scheduler caps k for this rule), once for the
// mean.
type MultiKrum struct {
	F, M      int
	BySamples bool
	Chunk     int
}

// Aggregate implements Aggregator.
func (m MultiKrum) Aggregate(ctx context.Context, deltas []Delta, dtype string, out *weights.Sum) error {
	if m.F < 0 || m.M < 0 {
		return fmt.Errorf("aggregate: multi-krum f %d and m %d must not be negative", m.F, m.M)
	}
	k := len(deltas)
	if k <= 2*m.F+2 {
		return Median{BySamples: m.BySamples, Chunk: m.Chunk}.Aggregate(ctx, deltas, dtype, out)
	}
	sel := m.M
	if sel == 0 || sel > k {
		sel = k - m.F
	}
	d2 := make([]float64, k*k)
	err := chunked(ctx, deltas, dtype, out, m.Chunk, func(_ int, vals [][]float32) error {
		for a := range vals {
			for b := a + 1; b < len(vals); b++ {
				va, vb := vals[a], vals[b]
				var s float64
				for i := range va {
					d := float64(va[i]) - float64(vb[i])
					s += d * d
				}
				d2[a*k+b] += s
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	scores := make([]entry, k)
	near := make([]float64, 0, k-1)
	for a := range k {
		near = near[:0]
		for b := range k {
			switch {
			case a < b:
				near = append(near, d2[a*k+b])
			case b < a:
				near = append(near, d2[b*k+a])
			}
		}
		slices.Sort(near)
		var s float64
		for _, d := range near[:k-m.F-2] {
			s += d
		}
		scores[a] = entry{v: s, k: a}
	}
	slices.SortFunc(scores, byValue)
	ws := weightsOf(deltas, m.BySamples)
	keep := make([]float64, k) // the weight of a selected delta, 0 for the others
	var total float64
	for _, e := range scores[:sel] {
		keep[e.k] = ws[e.k]
		total += ws[e.k]
	}
	dst := out.Values()
	err = chunked(ctx, deltas, dtype, out, m.Chunk, func(off int, vals [][]float32) error {
		for i := range vals[0] {
			var s float64
			for j := range vals {
				if keep[j] != 0 {
					s += keep[j] * float64(vals[j][i])
				}
			}
			dst[off+i] = s / total
		}
		return nil
	})
	if err != nil {
		return err
	}
	return finish(out, k, "multi-krum mean")
}

// Params are a campaign's aggregation settings (protocol.CampaignSpec Aggregator,
// TrimBeta, ClipFactor, KrumF, KrumM, WeightBySamples), already defaulted and
// validated by the scheduler; New still refuses values its rule cannot use.
type Params struct {
	Beta      float64 // trimmed_mean
	C         float64 // norm_clip
	F, M      int     // multi_krum
	BySamples bool    // weight every rule's mean by the deltas' samples
}

// New returns the aggregator of a name ("" is the mean) with its parameters.
func New(name string, p Params) (Aggregator, error) {
	switch name {
	case "", NameMean:
		return Mean{BySamples: p.BySamples}, nil
	case NameSampleWeight:
		return Mean{BySamples: true}, nil
	case NameTrimmedMean:
		if !(p.Beta >= 0 && p.Beta < 0.5) {
			return nil, fmt.Errorf("aggregator %s: beta %g: want [0, 0.5)", name, p.Beta)
		}
		return TrimmedMean{Beta: p.Beta, BySamples: p.BySamples}, nil
	case NameMedian:
		return Median{BySamples: p.BySamples}, nil
	case NameNormClip:
		if !(p.C > 0) || math.IsInf(p.C, 0) {
			return nil, fmt.Errorf("aggregator %s: clip factor %g: want a positive finite number", name, p.C)
		}
		return NormClip{C: p.C, BySamples: p.BySamples}, nil
	case NameMultiKrum:
		if p.F < 0 || p.M < 0 {
			return nil, fmt.Errorf("aggregator %s: f %d and m %d must not be negative", name, p.F, p.M)
		}
		return MultiKrum{F: p.F, M: p.M, BySamples: p.BySamples}, nil
	}
	return nil, fmt.Errorf("unknown aggregator %q: want %s, %s, %s, %s, %s or %s", name,
		NameMean, NameSampleWeight, NameTrimmedMean, NameMedian, NameNormClip, NameMultiKrum)
}

// Defaults of the robust rules' parameters (a campaign's zero values take them).
const (
	DefaultBeta  = 0.2 // trimmed_mean: trims one value per side of 5..9 deltas
	DefaultClip  = 2.0 // norm_clip: twice the median norm
	DefaultKrumF = 1   // multi_krum: one attacker tolerated, needs 5 deltas
)
