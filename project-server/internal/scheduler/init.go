package scheduler

import (
	"fmt"

	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// DefaultInit makes W(0) exactly as the trainer would start from it: trainer/nn's
// deterministic He initialisation for the seed.
func DefaultInit(r *spec.Resolved, seed uint64) ([]tensor.Named, error) {
	m, err := nn.New(r, seed)
	if err != nil {
		return nil, fmt.Errorf("initial weights: %w", err)
	}
	return m.Params(), nil
}
