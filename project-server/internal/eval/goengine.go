package eval

import (
	"context"
	"fmt"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/metrics"
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
	imgs, _ := data.Eligible(job.Manifest.Refs(data.Test), job.FragmentSize)
	if len(imgs) == 0 {
		return nil, fmt.Errorf("dataset %s has no test image of at least %d pixels", job.Dataset, job.FragmentSize)
	}
	stride := g.Stride
	if stride <= 0 {
		stride = max(1, job.FragmentSize/2)
	}
	var frags []data.Fragment
	labelOf := make([]int, len(imgs))
	for i, im := range imgs {
		frags = append(frags, data.GridFragments(i, im.Width, im.Height, job.FragmentSize, stride)...)
		labelOf[i] = im.Class
	}
	load := func(key string) (*data.Gray, error) {
		entry, ok := job.Manifest.ImageByPath(key)
		if !ok {
			return nil, fmt.Errorf("image %s is not in the manifest", key)
		}
		rc, err := job.Images.Open(ctx, job.Dataset, entry)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return data.DecodeGray(rc)
	}
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
	imageOf := make([]int, len(frags))
	for i, fr := range frags {
		imageOf[i] = fr.Image
	}
	byImage, err := metrics.ByImage(ev.Probs.Data, len(job.Classes), imageOf)
	if err != nil {
		return nil, err
	}
	ic, err := metrics.ImageConfusion(byImage, len(job.Classes), labelOf)
	if err != nil {
		return nil, err
	}
	out := &protocol.Metrics{Classes: job.Classes, Fragments: len(frags), Images: len(imgs),
		FragmentAccuracy: rep.Accuracy, ImageAccuracy: ic.Accuracy(), Loss: ev.Loss, MacroF1: rep.MacroF1,
		Precision: rep.Precision, Recall: rep.Recall, F1: rep.F1, Engine: "go"}
	for _, row := range rep.Confusion {
		r := make([]int, len(row))
		for j, v := range row {
			r[j] = int(v)
		}
		out.Confusion = append(out.Confusion, r)
	}
	return out, nil
}
