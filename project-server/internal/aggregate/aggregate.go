// Package aggregate turns the accepted deltas of one model version into the update the
// server applies to it. An Aggregator sees every delta of a fold (so robust rules such
// as a trimmed mean or a coordinate-wise median can read all of them chunk by chunk)
// and leaves the update in a weights.Sum; the streaming safetensors fold itself is
// project-server/internal/weights. The mean and the sample-weighted mean here stream
// the deltas in batches and hold one model's worth of float64 whatever their number.
package aggregate

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/texgrid/texgrid/project-server/internal/weights"
)

// Delta is one accepted delta of a fold.
type Delta struct {
	// Name identifies the delta in errors (its sha256).
	Name string
	// Samples is how many samples it was trained on (the result's Texgrid-Samples).
	Samples int64
	// Weight is the weight the campaign's mode gives it: 1 in synchronous rounds, the
	// staleness discount s(tau) in asynchronous mode.
	Weight float64
	// Open returns its bytes, a safetensors delta; the aggregator closes it.
	Open func() (io.ReadCloser, error)
}

// Aggregator folds a version's accepted deltas into out, a zero weights.Sum over the
// model's parameters whose Apply then writes W + update. dtype is the deltas' header
// dtype (weights.F32 or weights.F16). Implementations may read the deltas in any order
// and as often as they need; they must not keep more than a bounded number of model
// sizes in memory (the mean keeps none beyond out).
type Aggregator interface {
	Aggregate(ctx context.Context, deltas []Delta, dtype string, out *weights.Sum) error
}

// Names of the aggregators For selects.
const (
	NameMean         = "mean"          // the mean of the deltas under their mode weights
	NameSampleWeight = "sample_weight" // the same, each weight times the delta's samples
)

// For returns the aggregator of a name; "" is the mean.
func For(name string) (Aggregator, error) {
	switch name {
	case "", NameMean:
		return Mean{}, nil
	case NameSampleWeight:
		return Mean{BySamples: true}, nil
	}
	return nil, fmt.Errorf("unknown aggregator %q: want %s or %s", name, NameMean, NameSampleWeight)
}

// Mean is the weighted mean sum(w_i x delta_i) / sum(w_i), with w_i the delta's Weight,
// times its Samples when BySamples is set and Samples is positive. It folds the deltas
// in order, weights.MaxBatch at a time, with exactly the arithmetic of weights.Sum.Add.
type Mean struct {
	BySamples bool
}

// Aggregate implements Aggregator.
func (m Mean) Aggregate(ctx context.Context, deltas []Delta, dtype string, out *weights.Sum) error {
	if len(deltas) == 0 {
		return fmt.Errorf("aggregate: no delta")
	}
	for start := 0; start < len(deltas); start += weights.MaxBatch {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("aggregate: %w", err)
		}
		batch := deltas[start:min(start+weights.MaxBatch, len(deltas))]
		if err := m.fold(batch, dtype, out); err != nil {
			return err
		}
	}
	if !out.Finite() {
		return fmt.Errorf("aggregate: the weighted sum of %d deltas is not finite", len(deltas))
	}
	return nil
}

func (m Mean) weight(d Delta) float64 {
	w := d.Weight
	if m.BySamples && d.Samples > 0 {
		w *= float64(d.Samples)
	}
	return w
}

// fold adds one batch in one pass over out.
func (m Mean) fold(batch []Delta, dtype string, out *weights.Sum) error {
	rs := make([]io.Reader, len(batch))
	ws := make([]float64, len(batch))
	for k, d := range batch {
		if !(d.Weight > 0) {
			return fmt.Errorf("aggregate: delta %s has weight %g; weights must be positive", d.Name, d.Weight)
		}
		f, err := d.Open()
		if err != nil {
			return fmt.Errorf("aggregate: open delta %s: %w", d.Name, err)
		}
		defer f.Close()
		rs[k], ws[k] = f, m.weight(d)
	}
	if err := out.AddAll(rs, dtype, ws); err != nil {
		names := make([]string, len(batch))
		for k, d := range batch {
			names[k] = d.Name
		}
		return fmt.Errorf("aggregate deltas %s: %w", strings.Join(names, ", "), err)
	}
	return nil
}
