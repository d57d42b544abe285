package train

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// ErrBadCheckpoint reports a checkpoint that is corrupt or belongs to another run.
var ErrBadCheckpoint = errors.New("train: bad checkpoint")

// checkpointMagic starts every checkpoint; the digit is the format version.
const checkpointMagic = "TGCKPT1\n"

// checkpointHeader is the JSON part of a checkpoint. The weights and momentum buffers
// follow it as little-endian float32, parameter by parameter in Names order.
type checkpointHeader struct {
	Model     string   `json:"model"`
	Names     []string `json:"names"`
	Shapes    [][]int  `json:"shapes"`
	Config    Config   `json:"config"`
	Samples   int      `json:"samples"`
	Epoch     int      `json:"epoch"`
	Batch     int      `json:"batch"`
	PermReady bool     `json:"perm_ready"`
	Perm      []int    `json:"perm,omitempty"`
	RNG       []byte   `json:"rng"`
}

// Checkpoint captures everything the rest of the run depends on: weights, momentum
// buffers, the generator state, the position and the epoch's sample order.
func (r *Run) Checkpoint() ([]byte, error) {
	rng, err := r.rng.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("train: checkpoint: %w", err)
	}
	h := checkpointHeader{
		Model: r.m.Resolved().Spec.Name, Config: r.cfg, Samples: len(r.perm),
		Epoch: r.epoch, Batch: r.batch, PermReady: r.permReady, RNG: rng,
	}
	if r.permReady {
		h.Perm = r.perm
	}
	n := 0
	for _, p := range r.m.Params() {
		h.Names = append(h.Names, p.Name)
		h.Shapes = append(h.Shapes, p.T.Shape)
		n += len(p.T.Data)
	}
	js, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("train: checkpoint: %w", err)
	}
	out := make([]byte, 0, len(checkpointMagic)+4+len(js)+8*n)
	out = append(out, checkpointMagic...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(js)))
	out = append(out, js...)
	for pi, p := range r.m.Params() {
		out = appendFloats(out, p.T.Data)
		out = appendFloats(out, r.velocity[pi])
	}
	return out, nil
}

func appendFloats(b []byte, xs []float32) []byte {
	for _, x := range xs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// Resume rebuilds a run from a checkpoint: m gets the checkpoint's weights, and src
// and cfg must match the ones the checkpoint was taken with (Threads may differ, but
// then results are no longer bit-identical to an uninterrupted run).
func Resume(m *nn.Model, src Source, cfg Config, state []byte) (*Run, error) {
	r, err := NewRun(m, src, cfg)
	if err != nil {
		return nil, err
	}
	if len(state) < len(checkpointMagic)+4 || !bytes.Equal(state[:len(checkpointMagic)], []byte(checkpointMagic)) {
		return nil, fmt.Errorf("%w: not a texgrid checkpoint (magic missing)", ErrBadCheckpoint)
	}
	rest := state[len(checkpointMagic):]
	hl := int(binary.LittleEndian.Uint32(rest))
	rest = rest[4:]
	if hl > len(rest) {
		return nil, fmt.Errorf("%w: header of %d bytes but only %d follow", ErrBadCheckpoint, hl, len(rest))
	}
	var h checkpointHeader
	if err := json.Unmarshal(rest[:hl], &h); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrBadCheckpoint, err)
	}
	rest = rest[hl:]
	got, want := h.Config, cfg
	got.Threads, want.Threads = 0, 0
	if got != want {
		return nil, fmt.Errorf("%w: taken with config %+v, resuming with %+v", ErrBadCheckpoint, h.Config, cfg)
	}
	if h.Samples != src.Len() {
		return nil, fmt.Errorf("%w: taken over %d samples, the source has %d", ErrBadCheckpoint, h.Samples, src.Len())
	}
	params := m.Params()
	if h.Model != m.Resolved().Spec.Name || len(h.Names) != len(params) || len(h.Shapes) != len(params) {
		return nil, fmt.Errorf("%w: taken for model %s with %d tensors, resuming %s with %d", ErrBadCheckpoint,
			h.Model, len(h.Names), m.Resolved().Spec.Name, len(params))
	}
	total := 0
	for i, p := range params {
		if h.Names[i] != p.Name || !tensor.SameShape(h.Shapes[i], p.T.Shape) {
			return nil, fmt.Errorf("%w: tensor %d is %s %v, the model has %s %v", ErrBadCheckpoint, i, h.Names[i], h.Shapes[i], p.Name, p.T.Shape)
		}
		total += 2 * 4 * len(p.T.Data)
	}
	if len(rest) != total {
		return nil, fmt.Errorf("%w: %d bytes of weights, want %d (truncated?)", ErrBadCheckpoint, len(rest), total)
	}
	if h.Epoch < 0 || h.Epoch > cfg.Epochs || h.Batch < 0 || h.Batch >= r.batches() || (h.Epoch == cfg.Epochs && h.Batch != 0) {
		return nil, fmt.Errorf("%w: position epoch %d batch %d is outside the run", ErrBadCheckpoint, h.Epoch, h.Batch)
	}
	if h.PermReady {
		if len(h.Perm) != len(r.perm) || !isPerm(h.Perm) {
			return nil, fmt.Errorf("%w: the sample order is not a permutation of %d samples", ErrBadCheckpoint, len(r.perm))
		}
		copy(r.perm, h.Perm)
	}
	var pcg rand.PCG
	if err := pcg.UnmarshalBinary(h.RNG); err != nil {
		return nil, fmt.Errorf("%w: generator state: %v", ErrBadCheckpoint, err)
	}
	*r.rng = pcg
	ws := make([]tensor.Named, len(params))
	for i, p := range params {
		t := tensor.New(p.T.Shape...)
		rest = readFloats(rest, t.Data)
		rest = readFloats(rest, r.velocity[i])
		ws[i] = tensor.Named{Name: p.Name, T: t}
	}
	if err := m.SetParams(ws); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCheckpoint, err)
	}
	r.epoch, r.batch, r.permReady = h.Epoch, h.Batch, h.PermReady
	return r, nil
}

func readFloats(b []byte, dst []float32) []byte {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return b[4*len(dst):]
}

func isPerm(p []int) bool {
	seen := make([]bool, len(p))
	for _, v := range p {
		if v < 0 || v >= len(p) || seen[v] {
			return false
		}
		seen[v] = true
	}
	return true
}
