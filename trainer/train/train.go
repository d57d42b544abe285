// Package train runs SGD over a Source of labelled samples one batch at a time, so
// that callers (the trainer command, the volunteer client) can report progress, stop
// and checkpoint between any two batches. A Run is deterministic: the same model
// weights, Source, Config and thread count give bit-identical weights, and Resume from
// a Checkpoint continues exactly as if the run had not stopped.
package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/texgrid/texgrid/trainer/nn"

	"github.com/texgrid/texgrid/trainer/internal/par"
)

// Source is a dataset of labelled samples. Sample writes sample i, shaped like the
// model input (C x S x S floats, pixels scaled x/255 - 0.5), into dst and returns its
// class index. Sample is called from one goroutine at a time.
type Source interface {
	Len() int
	Sample(i int, dst []float32) (label int, err error)
}

// EpochSource is a Source whose samples change from epoch to epoch, such as fresh
// random fragments each epoch. A Run calls SetEpoch before the first sample of every
// epoch (also after Resume); Len must stay the same.
type EpochSource interface {
	Source
	SetEpoch(epoch int) error
}

// Config sets the optimiser and schedule. SGD follows PyTorch: v = Momentum*v +
// (g + WeightDecay*w); w -= lr*v, weight decay on every parameter, where the rate of
// epoch e (from 0) is lr = LR * LRDecay^e, PyTorch's ExponentialLR stepped per epoch.
type Config struct {
	Epochs    int
	BatchSize int
	LR        float64
	// LRDecay multiplies the learning rate after every epoch; 0 or 1 keeps it constant.
	// The project server applies the same factor per round to its campaigns' work units.
	LRDecay     float64
	Momentum    float64
	WeightDecay float64
	Seed        uint64 // drives the epoch shuffles and the dropout masks
	Threads     int    // worker goroutines; results are bit-identical for the same value
}

// Validate reports the first unusable field.
func (c Config) Validate() error {
	switch {
	case c.Epochs < 1:
		return fmt.Errorf("train: epochs %d is not positive", c.Epochs)
	case c.BatchSize < 1:
		return fmt.Errorf("train: batch size %d is not positive", c.BatchSize)
	case !(c.LR > 0) || math.IsInf(c.LR, 0):
		return fmt.Errorf("train: learning rate %g must be positive and finite", c.LR)
	case !(c.LRDecay >= 0 && c.LRDecay <= 1):
		return fmt.Errorf("train: learning-rate decay %g is outside [0, 1] (0 means none)", c.LRDecay)
	case !(c.Momentum >= 0 && c.Momentum < 1):
		return fmt.Errorf("train: momentum %g is outside [0, 1)", c.Momentum)
	case !(c.WeightDecay >= 0) || math.IsInf(c.WeightDecay, 0):
		return fmt.Errorf("train: weight decay %g must be non-negative and finite", c.WeightDecay)
	case c.Threads < 1:
		return fmt.Errorf("train: threads %d is not positive", c.Threads)
	}
	return nil
}

// EpochLR returns the learning rate of epoch e (from 0): LR * LRDecay^e.
func (c Config) EpochLR(e int) float64 {
	if c.LRDecay == 0 || c.LRDecay == 1 {
		return c.LR
	}
	return c.LR * math.Pow(c.LRDecay, float64(e))
}

// ErrEmptySource is returned for a Source without samples.
var ErrEmptySource = errors.New("train: the source has no samples")

// StepInfo describes one trained batch.
type StepInfo struct {
	Epoch   int     // epoch of the batch, from 0
	Batch   int     // batch index within the epoch, from 0
	Loss    float64 // mean cross-entropy over the batch, before the update
	Done    bool    // the run has finished (this was its last batch, or nothing was left)
	Samples int     // samples in this batch (0 when nothing was left to train)
	Correct int     // samples of this batch the model classified right before the update
}

// Run is one training run in progress. It is owned by a single goroutine.
type Run struct {
	m   *nn.Model
	src Source
	cfg Config
	ws  *nn.Workspace

	rng       *rand.PCG
	rnd       *rand.Rand
	perm      []int
	permReady bool
	epoch     int
	batch     int
	velocity  [][]float32 // momentum buffers, spec order
	labels    []int
	srcEpoch  int // the epoch an EpochSource was last set to, -1 before the first
}

// trainStream is the second PCG word of the run's generator ("trainrun").
const trainStream = 0x747261696e72756e

// NewRun prepares a run of cfg over src starting from m's current weights, which it
// updates in place.
func NewRun(m *nn.Model, src Source, cfg Config) (*Run, error) {
	if m == nil || src == nil {
		return nil, errors.New("train: nil model or source")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if src.Len() < 1 {
		return nil, ErrEmptySource
	}
	ws, err := nn.NewWorkspace(m, cfg.BatchSize, cfg.Threads)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	r := &Run{m: m, src: src, cfg: cfg, ws: ws, rng: rand.NewPCG(cfg.Seed, trainStream), srcEpoch: -1}
	r.rnd = rand.New(r.rng)
	r.perm = make([]int, src.Len())
	r.labels = make([]int, cfg.BatchSize)
	for _, p := range m.Params() {
		r.velocity = append(r.velocity, make([]float32, len(p.T.Data)))
	}
	return r, nil
}

// batches returns the number of batches per epoch; the last one may be short.
func (r *Run) batches() int { return (len(r.perm) + r.cfg.BatchSize - 1) / r.cfg.BatchSize }

// Done reports whether every epoch has been trained.
func (r *Run) Done() bool { return r.epoch >= r.cfg.Epochs }

// Progress returns the share of batches trained, in [0, 1].
func (r *Run) Progress() float64 {
	total := r.cfg.Epochs * r.batches()
	return float64(min(r.epoch*r.batches()+r.batch, total)) / float64(total)
}

// Epoch returns the epoch the next Step trains.
func (r *Run) Epoch() int { return r.epoch }

// Model returns the model being trained.
func (r *Run) Model() *nn.Model { return r.m }

// shuffle draws the epoch's sample order: Fisher-Yates from the last position down,
// with j = IntN(i+1) from the run's generator.
func (r *Run) shuffle() {
	for i := range r.perm {
		r.perm[i] = i
	}
	for i := len(r.perm) - 1; i > 0; i-- {
		j := r.rnd.IntN(i + 1)
		r.perm[i], r.perm[j] = r.perm[j], r.perm[i]
	}
	r.permReady = true
}

// Step trains one batch. A Source error or a cancelled ctx leaves the run as it was
// (the weights untouched), so the same Step can be retried.
func (r *Run) Step(ctx context.Context) (StepInfo, error) {
	if err := ctx.Err(); err != nil {
		return StepInfo{}, err
	}
	if r.Done() {
		return StepInfo{Epoch: r.epoch, Done: true}, nil
	}
	if es, ok := r.src.(EpochSource); ok && r.srcEpoch != r.epoch {
		if err := es.SetEpoch(r.epoch); err != nil {
			return StepInfo{}, fmt.Errorf("train: epoch %d: %w", r.epoch, err)
		}
		if es.Len() != len(r.perm) {
			return StepInfo{}, fmt.Errorf("train: epoch %d: the source has %d samples, it had %d", r.epoch, es.Len(), len(r.perm))
		}
		r.srcEpoch = r.epoch
	}
	if !r.permReady {
		r.shuffle()
	}
	lo := r.batch * r.cfg.BatchSize
	hi := min(lo+r.cfg.BatchSize, len(r.perm))
	n := hi - lo
	in := r.ws.Input(n)
	size := len(in) / n
	classes := r.m.Resolved().Classes
	for k := 0; k < n; k++ {
		idx := r.perm[lo+k]
		y, err := r.src.Sample(idx, in[k*size:(k+1)*size])
		if err != nil {
			return StepInfo{}, fmt.Errorf("train: epoch %d batch %d: sample %d: %w", r.epoch, r.batch, idx, err)
		}
		if y < 0 || y >= classes {
			return StepInfo{}, fmt.Errorf("train: epoch %d batch %d: sample %d has label %d outside [0, %d)", r.epoch, r.batch, idx, y, classes)
		}
		r.labels[k] = y
	}
	seed := r.rng.Uint64()
	loss, correct, err := r.ws.TrainBatch(n, r.labels[:n], seed)
	if err != nil {
		return StepInfo{}, fmt.Errorf("train: epoch %d batch %d: %w", r.epoch, r.batch, err)
	}
	r.update()
	info := StepInfo{Epoch: r.epoch, Batch: r.batch, Loss: loss / float64(n), Samples: n, Correct: correct}
	r.batch++
	if r.batch == r.batches() {
		r.epoch++
		r.batch = 0
		r.permReady = false
	}
	info.Done = r.Done()
	return info, nil
}

// update applies one SGD step with momentum and weight decay.
func (r *Run) update() {
	lr, mu, wd := float32(r.cfg.EpochLR(r.epoch)), float32(r.cfg.Momentum), float32(r.cfg.WeightDecay)
	grads := r.ws.Grads()
	for pi, p := range r.m.Params() {
		w, g, v := p.T.Data, grads[pi].T.Data, r.velocity[pi]
		parts := min(r.cfg.Threads, max(1, len(w)/(1<<16)))
		par.Do(parts, func(part int) {
			lo, hi := part*len(w)/parts, (part+1)*len(w)/parts
			ww, gg, vv := w[lo:hi], g[lo:hi], v[lo:hi]
			for j := range ww {
				d := gg[j] + wd*ww[j]
				vj := mu*vv[j] + d
				vv[j] = vj
				ww[j] -= lr * vj
			}
		})
	}
}
