package eval

import (
	"context"
	"fmt"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/train"
)

// Go evaluates with texgrid's own engine (trainer/nn and trainer/train.Evaluate). Each
// eligible test image is covered by grid fragments (data.GridFragments); fragment
// metrics come from every fragment, image accuracy from the argmax of each image's mean
// fragment probabilities.
type Go struct {
	// Stride between grid fragments; 0 means half the fragment size.
	Stride int
	// Batch is the forward batch size; 0 means 32.
	Batch int
	// CacheBytes bounds the decoded test images held at once; 0 means the trainer default.
	CacheBytes int64
}

// Evaluate implements Engine.
func (g Go) Evaluate(ctx context.Context, job *Job) (*protocol.Metrics, error) {
	sp, err := spec.Parse(job.ModelSpec)
	if err != nil {
		return nil, err
	}
	r, err := sp.Resolve(len(job.Classes), job.FragmentSize)
	if err != nil {
		return nil, err
	}
	f, err := safetensors.ReadFile(job.ModelPath, safetensors.Options{Expect: r.Params, RequireFinite: true})
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	m, err := nn.New(r, 0)
	if err != nil {
		return nil, err
	}
	if err := m.SetParams(f.Tensors); err != nil {
		return nil, err
	}
	imgs, frags, labelOf, err := testFragments(job, g.Stride)
	if err != nil {
		return nil, err
	}
	load := func(key string) (*data.Gray, error) { return loadGray(ctx, job, key) }
	src, err := data.NewFragmentSource(imgs, frags, load, g.CacheBytes)
	if err != nil {
		return nil, err
	}
	batch := g.Batch
	if batch <= 0 {
		batch = 32
	}
	ev, err := train.Evaluate(ctx, m, src, job.Classes, max(1, job.Threads), batch)
	if err != nil {
		return nil, err
	}
	rep, err := ev.Report()
	if err != nil {
		return nil, err
	}
	return finish(job, rep, ev.Probs.Data, frags, labelOf, len(imgs), ev.Loss, "go")
}
