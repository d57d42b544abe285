// Package nn is texgrid's CNN engine: a Model built from a resolved spec, with layers
// (conv2D, reluLayer, maxPool2D, energy, dense, dropout in layer.go; their kernels in
// kernels.go) that run forward and backward over buffers preallocated in a Workspace.
// Convolutions are im2col + GEMM through package gemm. Samples go to worker goroutines
// as they become free (for large convolutions the BLAS splits each product across the
// threads instead); each trunk gradient is summed per fixed chunk of the batch and the
// chunks are added in order, so the same weights, inputs, seed and thread count always
// give bit-identical results (and for models whose dense layers are too small
// to be split across threads, any thread count gives the same bits).
package nn

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"

	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// ErrShape reports an input, label or parameter whose shape does not match the model.
var ErrShape = errors.New("shape mismatch")

// initStream is the second PCG word for weight initialisation ("nn-init").
const initStream = 0x6e6e2d696e6974

// Model is a network's weights bound to its resolved spec. It is safe to call Forward
// from several goroutines; training goes through a Workspace, one per goroutine.
type Model struct {
	r      *spec.Resolved
	params []tensor.Named // spec order, weight before bias
	layers []layerInfo
	energy int // index of the energy layer: the end of the per-sample trunk

	mu    sync.Mutex
	infer *Workspace // cached inference workspace, guarded by mu
}

// layerInfo is one spec layer with its shapes and the indices of its parameters.
type layerInfo struct {
	spec.Layer
	in, out spec.Shape
	w, b    int // indices into Model.params, -1 when the layer has none
}

// New builds a model with He-initialised weights (normal, std sqrt(2/fan_in)) and zero
// biases, drawn in spec order from a PCG seeded with seed: the same seed always gives
// the same weights.
func New(r *spec.Resolved, seed uint64) (*Model, error) {
	if r == nil || r.Spec == nil {
		return nil, errors.New("nn: nil resolved spec")
	}
	m := &Model{r: r, energy: -1}
	for i, l := range r.Spec.Layers {
		li := layerInfo{Layer: l, in: r.In[i], out: r.Out[i], w: -1, b: -1}
		if l.Type == spec.Energy {
			if m.energy >= 0 {
				return nil, fmt.Errorf("nn: model %s has two energy layers", r.Spec.Name)
			}
			m.energy = i
		}
		m.layers = append(m.layers, li)
	}
	if m.energy < 0 {
		return nil, fmt.Errorf("nn: model %s has no energy layer", r.Spec.Name)
	}
	rng := rand.New(rand.NewPCG(seed, initStream))
	for pi, p := range r.Params {
		t := tensor.New(p.Shape...)
		if len(p.Shape) > 1 {
			fanIn := p.Size() / p.Shape[0]
			std := math.Sqrt(2 / float64(fanIn))
			for j := range t.Data {
				t.Data[j] = float32(rng.NormFloat64() * std)
			}
			m.layers[p.Layer].w = pi
		} else {
			m.layers[p.Layer].b = pi
		}
		m.params = append(m.params, tensor.Named{Name: p.Name, T: t})
	}
	for i, l := range m.layers {
		if (l.Type == spec.Conv || l.Type == spec.Dense) && (l.w < 0 || l.b < 0) {
			return nil, fmt.Errorf("nn: layer %d (%s) is missing its parameters", i, l.Name)
		}
	}
	return m, nil
}

// Resolved returns the spec the model was built from.
func (m *Model) Resolved() *spec.Resolved { return m.r }

// Params returns the live weights in spec order; writing to them changes the model.
func (m *Model) Params() []tensor.Named { return m.params }

// SetParams copies ps into the model. Every parameter must be present exactly once
// with its exact shape; on any mismatch nothing is changed.
func (m *Model) SetParams(ps []tensor.Named) error {
	if len(ps) != len(m.params) {
		return fmt.Errorf("nn: set params: got %d tensors, model %s has %d: %w", len(ps), m.r.Spec.Name, len(m.params), ErrShape)
	}
	src := make([]*tensor.Tensor, len(m.params))
	for _, p := range ps {
		idx := -1
		for i, q := range m.params {
			if q.Name == p.Name {
				idx = i
				break
			}
		}
		if idx < 0 {
			return fmt.Errorf("nn: set params: unknown tensor %q for model %s: %w", p.Name, m.r.Spec.Name, ErrShape)
		}
		if src[idx] != nil {
			return fmt.Errorf("nn: set params: tensor %q given twice: %w", p.Name, ErrShape)
		}
		want := m.params[idx].T.Shape
		if p.T == nil || !tensor.SameShape(p.T.Shape, want) || len(p.T.Data) != tensor.Numel(want) {
			var got []int
			if p.T != nil {
				got = p.T.Shape
			}
			return fmt.Errorf("nn: set params: tensor %q has shape %v, want %v: %w", p.Name, got, want, ErrShape)
		}
		src[idx] = p.T
	}
	for i, t := range src {
		copy(m.params[i].T.Data, t.Data)
	}
	return nil
}

// Forward runs inference on x, shaped [N, C, S, S] as the spec was resolved, and
// returns the logits [N, classes]. It panics on a wrong shape; use Infer to get an error.
func (m *Model) Forward(x *tensor.Tensor, threads int) *tensor.Tensor {
	y, err := m.Infer(x, threads)
	if err != nil {
		panic(err)
	}
	return y
}

// Infer is Forward returning an error instead of panicking on a wrong input shape or
// thread count. It reuses one cached workspace, so concurrent calls serialise.
func (m *Model) Infer(x *tensor.Tensor, threads int) (*tensor.Tensor, error) {
	in := m.r.In[0]
	if x == nil || len(x.Shape) != 4 || x.Shape[1] != in.C || x.Shape[2] != in.H || x.Shape[3] != in.W || len(x.Data) != tensor.Numel(x.Shape) {
		var got []int
		if x != nil {
			got = x.Shape
		}
		return nil, fmt.Errorf("nn: forward: input shape %v, want [N %d %d %d]: %w", got, in.C, in.H, in.W, ErrShape)
	}
	n := x.Shape[0]
	if n == 0 {
		return nil, fmt.Errorf("nn: forward: empty batch: %w", ErrShape)
	}
	if threads < 1 {
		return nil, fmt.Errorf("nn: forward: threads %d is not positive", threads)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.infer == nil || m.infer.batch < n || m.infer.threads != threads {
		ws, err := NewWorkspace(m, n, threads)
		if err != nil {
			return nil, err
		}
		m.infer = ws
	}
	ws := m.infer
	copy(ws.Input(n), x.Data)
	logits := ws.Forward(n, false, 0)
	out := tensor.New(n, m.r.Classes)
	copy(out.Data, logits)
	return out, nil
}
