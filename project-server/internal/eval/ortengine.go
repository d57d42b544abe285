package eval

import (
	"context"
	"fmt"
	"math"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/metrics"
	"github.com/texgrid/texgrid/trainer/onnx"
	"github.com/texgrid/texgrid/trainer/ort"
	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// ORT evaluates with ONNX Runtime: the round's weights are exported to ONNX
// (trainer/onnx) and run in batches over the same grid fragments as the Go engine.
type ORT struct {
	Stride int // 0: half the fragment size
	Batch  int // 0: 32
}

// Auto uses ONNX Runtime when its library loads and the Go engine otherwise.
type Auto struct {
	Go  Go
	ORT ORT
}

// Evaluate implements Engine.
func (a Auto) Evaluate(ctx context.Context, job *Job) (*protocol.Metrics, error) {
	if ort.Available() == nil {
		return a.ORT.Evaluate(ctx, job)
	}
	return a.Go.Evaluate(ctx, job)
}

// Evaluate implements Engine.
func (o ORT) Evaluate(ctx context.Context, job *Job) (*protocol.Metrics, error) {
	if err := ort.Available(); err != nil {
		return nil, err
	}
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
	model, err := onnx.Export(r, f.Tensors, job.Classes, nil)
	if err != nil {
		return nil, err
	}
	sess, err := ort.Open(model, max(1, job.Threads))
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	imgs, frags, labelOf, err := testFragments(job, o.Stride)
	if err != nil {
		return nil, err
	}
	batch := o.Batch
	if batch <= 0 {
		batch = 32
	}
	nc := len(job.Classes)
	size := job.FragmentSize
	per := size * size
	probs := make([]float32, len(frags)*nc)
	labels := make([]int, len(frags))
	var loss float64
	var cur *data.Gray
	curImage := -1
	for lo := 0; lo < len(frags); lo += batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		part := frags[lo:min(lo+batch, len(frags))]
		x := tensor.New(len(part), 1, size, size)
		for i, fr := range part {
			if fr.Image != curImage {
				if cur, err = loadGray(ctx, job, imgs[fr.Image].Key); err != nil {
					return nil, err
				}
				curImage = fr.Image
			}
			if err := cur.Cut(fr, x.Data[i*per:(i+1)*per]); err != nil {
				return nil, err
			}
			labels[lo+i] = labelOf[fr.Image]
		}
		logits, err := sess.Run(x)
		if err != nil {
			return nil, err
		}
		for i := range part {
			row := logits.Data[i*nc : (i+1)*nc]
			lse := softmax(row, probs[(lo+i)*nc:(lo+i+1)*nc])
			loss += lse - float64(row[labels[lo+i]])
		}
	}
	conf, err := metrics.FromProbs(probs, nc, labels)
	if err != nil {
		return nil, err
	}
	rep, err := conf.Report(job.Classes)
	if err != nil {
		return nil, err
	}
	return finish(job, rep, probs, frags, labelOf, len(imgs), loss/float64(len(frags)), "onnxruntime")
}

// softmax writes the softmax of one row of logits to dst and returns the row's
// log-sum-exp, so the cross-entropy of label l is lse - row[l].
func softmax(row, dst []float32) (lse float64) {
	mx := row[0]
	for _, v := range row {
		mx = max(mx, v)
	}
	var sum float64
	for _, v := range row {
		sum += math.Exp(float64(v - mx))
	}
	for j, v := range row {
		dst[j] = float32(math.Exp(float64(v-mx)) / sum)
	}
	return math.Log(sum) + float64(mx)
}

// testFragments lists the grid fragments of the eligible test images (the images are
// sorted by key and grouped, so each is decoded once).
func testFragments(job *Job, stride int) ([]data.ImageRef, []data.Fragment, []int, error) {
	imgs, _ := data.Eligible(job.Manifest.Refs(data.Test), job.FragmentSize)
	if len(imgs) == 0 {
		return nil, nil, nil, fmt.Errorf("dataset %s has no test image of at least %d pixels", job.Dataset, job.FragmentSize)
	}
	if stride <= 0 {
		stride = max(1, job.FragmentSize/2)
	}
	var frags []data.Fragment
	labelOf := make([]int, len(imgs))
	for i, im := range imgs {
		frags = append(frags, data.GridFragments(i, im.Width, im.Height, job.FragmentSize, stride)...)
		labelOf[i] = im.Class
	}
	return imgs, frags, labelOf, nil
}

func loadGray(ctx context.Context, job *Job, key string) (*data.Gray, error) {
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

// finish turns fragment results into protocol.Metrics, adding the image-level accuracy.
func finish(job *Job, rep *metrics.Report, probs []float32, frags []data.Fragment, labelOf []int, images int, loss float64, engine string) (*protocol.Metrics, error) {
	imageOf := make([]int, len(frags))
	for i, fr := range frags {
		imageOf[i] = fr.Image
	}
	byImage, err := metrics.ByImage(probs, len(job.Classes), imageOf)
	if err != nil {
		return nil, err
	}
	ic, err := metrics.ImageConfusion(byImage, len(job.Classes), labelOf)
	if err != nil {
		return nil, err
	}
	out := &protocol.Metrics{Classes: job.Classes, Fragments: len(frags), Images: images,
		FragmentAccuracy: rep.Accuracy, ImageAccuracy: ic.Accuracy(), Loss: loss, MacroF1: rep.MacroF1,
		Precision: rep.Precision, Recall: rep.Recall, F1: rep.F1, Engine: engine}
	for _, row := range rep.Confusion {
		r := make([]int, len(row))
		for j, v := range row {
			r[j] = int(v)
		}
		out.Confusion = append(out.Confusion, r)
	}
	return out, nil
}
