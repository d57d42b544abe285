package safetensors_test

import (
	"fmt"

	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// A volunteer marshals its weight delta; the server checks it and folds it into a
// running sum without decoding a second copy of the model.
func ExampleAddInto() {
	delta := []tensor.Named{
		{Name: "fc1.weight", T: &tensor.Tensor{Shape: []int{2, 2}, Data: []float32{0.5, -1, 0, 2}}},
		{Name: "fc1.bias", T: &tensor.Tensor{Shape: []int{2}, Data: []float32{0.25, 0}}},
	}
	b, err := safetensors.Marshal(delta, safetensors.F16, map[string]string{"wu": "42"})
	if err != nil {
		panic(err)
	}
	sum := []tensor.Named{
		{Name: "fc1.weight", T: tensor.New(2, 2)},
		{Name: "fc1.bias", T: tensor.New(2)},
	}
	for range 2 {
		if err := safetensors.AddInto(sum, b, safetensors.Options{RequireFinite: true}); err != nil {
			panic(err)
		}
	}
	fmt.Println(sum[0].T.Data, sum[1].T.Data)

	// A delta for another model is refused, naming the difference, and sum is unchanged.
	other, _ := safetensors.Marshal(delta[:1], safetensors.F32, nil)
	fmt.Println(safetensors.AddInto(sum, other, safetensors.Options{}))
	// Output:
	// [1 -2 0 4] [0.5 0]
	// safetensors: missing fc1.bias: safetensors tensors do not match
}
