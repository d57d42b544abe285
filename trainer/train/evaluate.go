package train

import (
	"context"
	"fmt"

	"github.com/texgrid/texgrid/trainer/metrics"
	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// Evaluation is the fragment-level outcome of running a model over a Source.
type Evaluation struct {
	Classes []string
	Labels  []int          // true class of every sample, in Source order
	Pred    []int          // arg-max class of every sample
	Probs   *tensor.Tensor // softmax probabilities [samples, classes]
	Loss    float64        // mean cross-entropy
	Correct int
}

// Accuracy returns the share of samples classified right.
func (e *Evaluation) Accuracy() float64 {
	if len(e.Labels) == 0 {
		return 0
	}
	return float64(e.Correct) / float64(len(e.Labels))
}

// Evaluate runs m (dropout off) over every sample of src in batches and returns the
// per-sample probabilities and predictions. classes names the model's outputs.
func Evaluate(ctx context.Context, m *nn.Model, src Source, classes []string, threads, batch int) (*Evaluation, error) {
	nc := m.Resolved().Classes
	if len(classes) != nc {
		return nil, fmt.Errorf("train: evaluate: %d class names for a model with %d classes", len(classes), nc)
	}
	if src.Len() < 1 {
		return nil, ErrEmptySource
	}
	ws, err := nn.NewWorkspace(m, batch, threads)
	if err != nil {
		return nil, fmt.Errorf("train: evaluate: %w", err)
	}
	total := src.Len()
	e := &Evaluation{Classes: classes, Labels: make([]int, total), Pred: make([]int, total), Probs: tensor.New(total, nc)}
	for lo := 0; lo < total; lo += batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(batch, total-lo)
		in := ws.Input(n)
		size := len(in) / n
		for k := 0; k < n; k++ {
			y, err := src.Sample(lo+k, in[k*size:(k+1)*size])
			if err != nil {
				return nil, fmt.Errorf("train: evaluate: sample %d: %w", lo+k, err)
			}
			if y < 0 || y >= nc {
				return nil, fmt.Errorf("train: evaluate: sample %d has label %d outside [0, %d)", lo+k, y, nc)
			}
			e.Labels[lo+k] = y
		}
		logits := ws.Forward(n, false, 0)
		for k := 0; k < n; k++ {
			y := e.Labels[lo+k]
			loss, am := nn.SoftmaxXentRow(logits[k*nc:(k+1)*nc], e.Probs.Data[(lo+k)*nc:(lo+k+1)*nc], y)
			e.Loss += loss
			e.Pred[lo+k] = am
			if am == y {
				e.Correct++
			}
		}
	}
	e.Loss /= float64(total)
	return e, nil
}

// Report scores the predictions: accuracy, per-class precision, recall and F1,
// macro-F1 and the confusion matrix.
func (e *Evaluation) Report() (*metrics.Report, error) {
	c, err := metrics.FromProbs(e.Probs.Data, len(e.Classes), e.Labels)
	if err != nil {
		return nil, fmt.Errorf("train: evaluation report: %w", err)
	}
	return c.Report(e.Classes)
}
