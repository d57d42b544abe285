package scheduler

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// DefaultInit makes deterministic He-normal weights (zero biases) from the seed. It is
// the fallback when no engine initialiser is wired in; the server passes
// trainer/nn's initialiser so W(0) is exactly what the trainer would start from.
func DefaultInit(r *spec.Resolved, seed uint64) ([]tensor.Named, error) {
	rng := rand.New(rand.NewPCG(seed, 0x696e6974)) // "init"
	out := make([]tensor.Named, 0, len(r.Params))
	for _, p := range r.Params {
		t := tensor.New(p.Shape...)
		if len(p.Shape) >= 2 {
			fanIn := 1
			for _, d := range p.Shape[1:] {
				fanIn *= d
			}
			if fanIn <= 0 {
				return nil, fmt.Errorf("init %s: fan-in %d", p.Name, fanIn)
			}
			std := math.Sqrt(2 / float64(fanIn))
			for i := range t.Data {
				t.Data[i] = float32(rng.NormFloat64() * std)
			}
		}
		out = append(out, tensor.Named{Name: p.Name, T: t})
	}
	return out, nil
}
