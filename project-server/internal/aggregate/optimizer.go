package aggregate

import (
	"fmt"
	"io"
	"math"

	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// Optimizer turns a version's aggregated mean delta (the pseudo-gradient, pointing
// towards better weights) into the step added to the model. Its state is Moments()
// model-sized vectors, zero before the first version, persisted by the caller between
// versions in float32 (EncodeState, DecodeState); Step reads the state as stored, so a
// fold gives the same model whether or not the server restarted before it.
type Optimizer interface {
	// Moments is how many state vectors the optimiser keeps.
	Moments() int
	// Step replaces mean by the step and updates state in place.
	Step(mean []float64, state [][]float32)
}

// Optimizer names, as in protocol.CampaignSpec.ServerOptimizer.
const (
	OptSGD      = "sgd"
	OptMomentum = "momentum"
	OptAdam     = "adam"
)

// AdamBeta2 and AdamEpsilon are FedAdam's second-moment decay and adaptivity constant.
const (
	AdamBeta2   = 0.99
	AdamEpsilon = 1e-3
)

// NewOptimizer returns the server optimiser of a name with learning rate lr and
// momentum beta (beta1 for adam).
func NewOptimizer(name string, lr, beta float64) (Optimizer, error) {
	switch name {
	case "", OptSGD:
		return SGD{LR: lr}, nil
	case OptMomentum:
		return Momentum{LR: lr, Beta: beta}, nil
	case OptAdam:
		return Adam{LR: lr, Beta1: beta, Beta2: AdamBeta2, Eps: AdamEpsilon}, nil
	}
	return nil, fmt.Errorf("unknown server optimizer %q: want %s, %s or %s", name, OptSGD, OptMomentum, OptAdam)
}

// SGD is plain server averaging: step = LR x mean.
type SGD struct{ LR float64 }

// Moments implements Optimizer.
func (SGD) Moments() int { return 0 }

// Step implements Optimizer.
func (o SGD) Step(mean []float64, _ [][]float32) {
	if o.LR == 1 {
		return
	}
	for i := range mean {
		mean[i] *= o.LR
	}
}

// Momentum is FedAvgM: m = Beta x m + mean, step = LR x m.
type Momentum struct{ LR, Beta float64 }

// Moments implements Optimizer.
func (Momentum) Moments() int { return 1 }

// Step implements Optimizer.
func (o Momentum) Step(mean []float64, state [][]float32) {
	m := state[0][:len(mean)]
	for i, d := range mean {
		v := o.Beta*float64(m[i]) + d
		m[i] = float32(v)
		mean[i] = o.LR * v
	}
}

// Adam is FedAdam (Reddi et al., without bias correction): m = Beta1 x m + (1 - Beta1)
// x mean, v = Beta2 x v + (1 - Beta2) x mean^2, step = LR x m / (sqrt(v) + Eps).
type Adam struct{ LR, Beta1, Beta2, Eps float64 }

// Moments implements Optimizer.
func (Adam) Moments() int { return 2 }

// Step implements Optimizer.
func (o Adam) Step(mean []float64, state [][]float32) {
	m, v := state[0][:len(mean)], state[1][:len(mean)]
	for i, d := range mean {
		mi := o.Beta1*float64(m[i]) + (1-o.Beta1)*d
		vi := o.Beta2*float64(v[i]) + (1-o.Beta2)*d*d
		m[i], v[i] = float32(mi), float32(vi)
		mean[i] = o.LR * mi / (math.Sqrt(vi) + o.Eps)
	}
}

// stateName is the tensor name of parameter p in state vector k.
func stateName(k int, p string) string { return fmt.Sprintf("m%d/%s", k, p) }

// NewState returns n zero state vectors over params.
func NewState(params []spec.Param, n int) [][]float32 {
	size := 0
	for _, p := range params {
		size += p.Size()
	}
	st := make([][]float32, n)
	for k := range st {
		st[k] = make([]float32, size)
	}
	return st
}

// EncodeState writes state vectors laid out over params (as weights.Sum.Values is) as
// one F32 safetensors file.
func EncodeState(w io.Writer, params []spec.Param, state [][]float32) error {
	var ts []tensor.Named
	for k, vec := range state {
		off := 0
		for _, p := range params {
			t := tensor.New(p.Shape...)
			off += copy(t.Data, vec[off:off+p.Size()])
			ts = append(ts, tensor.Named{Name: stateName(k, p.Name), T: t})
		}
	}
	if err := weights.Encode(w, ts, weights.F32, map[string]string{"kind": "server-optimizer-state"}); err != nil {
		return fmt.Errorf("encode optimizer state: %w", err)
	}
	return nil
}

// DecodeState reads n state vectors over params written by EncodeState.
func DecodeState(r io.Reader, params []spec.Param, n int) ([][]float32, error) {
	ts, _, err := weights.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("decode optimizer state: %w", err)
	}
	byName := make(map[string]*tensor.Tensor, len(ts))
	for _, t := range ts {
		byName[t.Name] = t.T
	}
	if len(byName) != n*len(params) {
		return nil, fmt.Errorf("decode optimizer state: %d tensors, want %d", len(byName), n*len(params))
	}
	st := NewState(params, n)
	for k := range st {
		off := 0
		for _, p := range params {
			t := byName[stateName(k, p.Name)]
			if t == nil || len(t.Data) != p.Size() {
				return nil, fmt.Errorf("decode optimizer state: tensor %s is missing or has the wrong size", stateName(k, p.Name))
			}
			off += copy(st[k][off:], t.Data)
		}
	}
	return st, nil
}
