package eval

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/metrics"
	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/onnx"
	"github.com/texgrid/texgrid/trainer/ort"
	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
	"github.com/texgrid/texgrid/trainer/train"
)

// Model is one campaign model as the classifier needs it.
type Model struct {
	Spec         []byte // canonical spec JSON
	Path         string // F32 safetensors weights
	Classes      []string
	FragmentSize int
}

// Classification is one image's verdict: the mean of its grid fragments' softmax
// probabilities, as the evaluation computes image accuracy.
type Classification struct {
	Probs     []float64 // per class, in Model.Classes order
	Top       int
	Fragments int
	Engine    string // "onnxruntime" or "go"
	Elapsed   time.Duration
}

// ErrSmallImage means the image is smaller than the model's fragment size.
var ErrSmallImage = errors.New("image smaller than the fragment size")

// Classify classifies img with ONNX Runtime when its library loads, and with the Go
// engine otherwise. Fragments cover the image on a grid with half-fragment stride.
func Classify(ctx context.Context, m Model, img *data.Gray, threads int) (*Classification, error) {
	size := m.FragmentSize
	frags := data.GridFragments(0, img.W, img.H, size, max(1, size/2))
	if len(frags) == 0 {
		return nil, fmt.Errorf("%w: the image is %dx%d pixels, the model reads %dx%d fragments", ErrSmallImage, img.W, img.H, size, size)
	}
	sp, err := spec.Parse(m.Spec)
	if err != nil {
		return nil, err
	}
	r, err := sp.Resolve(len(m.Classes), size)
	if err != nil {
		return nil, err
	}
	f, err := safetensors.ReadFile(m.Path, safetensors.Options{Expect: r.Params, RequireFinite: true})
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	start := time.Now()
	var probs []float32
	engine := "go"
	if ort.Available() == nil {
		engine = "onnxruntime"
		probs, err = classifyORT(ctx, r, f.Tensors, m.Classes, img, frags, threads)
	} else {
		probs, err = classifyGo(ctx, r, f.Tensors, m.Classes, img, frags, threads)
	}
	if err != nil {
		return nil, err
	}
	res, err := metrics.ByImage(probs, len(m.Classes), make([]int, len(frags)))
	if err != nil {
		return nil, err
	}
	return &Classification{Probs: res[0].Mean, Top: res[0].Pred, Fragments: len(frags), Engine: engine, Elapsed: time.Since(start)}, nil
}

func classifyGo(ctx context.Context, r *spec.Resolved, params []tensor.Named, classes []string, img *data.Gray, frags []data.Fragment, threads int) ([]float32, error) {
	net, err := nn.New(r, 0)
	if err != nil {
		return nil, err
	}
	if err := net.SetParams(params); err != nil {
		return nil, err
	}
	src, err := data.NewFragmentSource([]data.ImageRef{{Key: "upload", Width: img.W, Height: img.H}}, frags,
		func(string) (*data.Gray, error) { return img, nil }, 0)
	if err != nil {
		return nil, err
	}
	ev, err := train.Evaluate(ctx, net, src, classes, max(1, threads), 32)
	if err != nil {
		return nil, err
	}
	return ev.Probs.Data, nil
}

func classifyORT(ctx context.Context, r *spec.Resolved, params []tensor.Named, classes []string, img *data.Gray, frags []data.Fragment, threads int) ([]float32, error) {
	model, err := onnx.Export(r, params, classes, nil)
	if err != nil {
		return nil, err
	}
	sess, err := ort.Open(model, max(1, threads))
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	nc, size := len(classes), frags[0].Size
	per := size * size
	probs := make([]float32, len(frags)*nc)
	const batch = 32
	for lo := 0; lo < len(frags); lo += batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		part := frags[lo:min(lo+batch, len(frags))]
		x := tensor.New(len(part), 1, size, size)
		for i, fr := range part {
			if err := img.Cut(fr, x.Data[i*per:(i+1)*per]); err != nil {
				return nil, err
			}
		}
		logits, err := sess.Run(x)
		if err != nil {
			return nil, err
		}
		for i := range part {
			softmax(logits.Data[i*nc:(i+1)*nc], probs[(lo+i)*nc:(lo+i+1)*nc])
		}
	}
	return probs, nil
}
