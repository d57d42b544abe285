package train_test

import (
	"context"
	"fmt"

	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/train"
)

// constant is a toy Source: sample i is a flat image of brightness by class.
type constant struct{ n int }

func (c constant) Len() int { return c.n }

func (c constant) Sample(i int, dst []float32) (int, error) {
	label := i % 2
	for j := range dst {
		dst[j] = float32(label) - 0.5
	}
	return label, nil
}

// A run trains one batch per Step, so the caller can report progress, stop, and
// checkpoint between batches; Resume continues bit for bit.
func Example() {
	s, _ := spec.Parse([]byte(`{"name":"toy","layers":[{"type":"conv","filters":4,"kernel":3},{"type":"relu"},
		{"type":"energy"},{"type":"dense","units":"classes"}]}`))
	r, _ := s.Resolve(2, 8)
	m, _ := nn.New(r, 1)
	cfg := train.Config{Epochs: 2, BatchSize: 4, LR: 0.1, Momentum: 0.9, Seed: 7, Threads: 2}
	run, _ := train.NewRun(m, constant{n: 8}, cfg)
	ctx := context.Background()
	run.Step(ctx)
	state, _ := run.Checkpoint() // e.g. written to disk before the volunteer's machine sleeps

	resumed, _ := train.Resume(m, constant{n: 8}, cfg, state)
	for !resumed.Done() {
		info, err := resumed.Step(ctx)
		if err != nil {
			panic(err)
		}
		fmt.Printf("epoch %d batch %d: %d samples\n", info.Epoch, info.Batch, info.Samples)
	}
	fmt.Println("progress", resumed.Progress())
	// Output:
	// epoch 0 batch 1: 4 samples
	// epoch 1 batch 0: 4 samples
	// epoch 1 batch 1: 4 samples
	// progress 1
}
