package main

import (
	"github.com/texgrid/texgrid/trainer/onnx"
	"github.com/texgrid/texgrid/trainer/ort"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

func init() {
	evalEngines[engineORT] = openORTEval
}

// openORTEval exports the weights to ONNX in memory and opens them in ONNX Runtime, so
// `trainer eval --engine onnxruntime` scores exactly what `trainer export` would ship.
// A missing library is an error naming the path and `make ort`; --engine go needs none.
func openORTEval(r *spec.Resolved, params []tensor.Named, classes []string, threads int) (evalRunner, error) {
	if err := ort.Available(); err != nil {
		return nil, err
	}
	b, err := onnx.Export(r, params, classes, nil)
	if err != nil {
		return nil, err
	}
	s, err := ort.Open(b, threads)
	if err != nil {
		return nil, err // not a typed nil inside the interface
	}
	return s, nil
}
