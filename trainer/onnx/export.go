// Package onnx writes texgrid networks as ONNX models, the format the rest of the
// ecosystem runs (ONNX Runtime, OpenCV, TensorRT ...), and reads back enough of an ONNX
// file to check it. The protobuf encoding is written by hand with protowire: only the
// onnx.proto fields texgrid needs are emitted, each documented with its field number in
// proto.go. The exported graph is inference-only: dropout is left out.
//
// The model interface every texgrid consumer relies on: one input "fragments"
// [N, C, S, S] float32 with a symbolic batch dimension "N" and pixels already scaled as
// MetaPixelScaling says, one output "logits" [N, classes], and the class names, fragment
// size, model name and spec in metadata_props under the Meta* keys.
package onnx

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// Versions written into every exported model.
const (
	IRVersion       = 8  // ONNX IR version (ONNX 1.10 and later read it)
	OpsetVersion    = 13 // default-domain operator set: Conv, Relu, MaxPool, GlobalAveragePool, Flatten, Gemm
	ProducerName    = "texgrid"
	ProducerVersion = "1"
)

// Names of the graph's input and output and of its symbolic batch dimension.
const (
	InputName  = "fragments"
	OutputName = "logits"
	BatchDim   = "N"
)

// Keys of the metadata_props texgrid writes. Values are strings, as ONNX requires.
const (
	MetaClasses       = "texgrid.classes"        // JSON list of class names, in logit order
	MetaPixelScaling  = "texgrid.pixel_scaling"  // how grey pixels become inputs; always PixelScaling
	MetaFragmentSize  = "texgrid.fragment_size"  // S, the input side in pixels, decimal
	MetaModel         = "texgrid.model"          // the spec's name, e.g. "tcnn-small"
	MetaSpec          = "texgrid.spec"           // the spec's canonical JSON
	MetaInputChannels = "texgrid.input_channels" // C, decimal
)

// PixelScaling is the input scaling of every texgrid model: x is the 8-bit grey value.
const PixelScaling = "x/255-0.5"

// ErrBadParams reports weights that do not fit the resolved network.
var ErrBadParams = errors.New("weights do not match the model")

// Export encodes the network r with the given weights as an ONNX ModelProto. params must
// hold exactly r.Params by name and shape (any order); classes names the r.Classes
// outputs in logit order. meta adds further metadata_props; it may not redefine a Meta*
// key. The weights are copied into the model, so params may change afterwards.
func Export(r *spec.Resolved, params []tensor.Named, classes []string, meta map[string]string) ([]byte, error) {
	if r == nil || r.Spec == nil {
		return nil, errors.New("onnx export: no resolved model")
	}
	byName, err := checkParams(r, params)
	if err != nil {
		return nil, fmt.Errorf("onnx export %s: %w", r.Spec.Name, err)
	}
	if len(classes) != r.Classes {
		return nil, fmt.Errorf("onnx export %s: %d class names for a model with %d classes", r.Spec.Name, len(classes), r.Classes)
	}
	seen := make(map[string]bool, len(classes))
	for i, c := range classes {
		if c == "" {
			return nil, fmt.Errorf("onnx export %s: class %d has an empty name", r.Spec.Name, i)
		}
		if seen[c] {
			return nil, fmt.Errorf("onnx export %s: class name %q appears twice", r.Spec.Name, c)
		}
		seen[c] = true
	}
	props, err := metadata(r, classes, meta)
	if err != nil {
		return nil, fmt.Errorf("onnx export %s: %w", r.Spec.Name, err)
	}

	g := make(enc, 0, 4*r.NumParams()+64*1024)
	cur := InputName
	last := len(r.Spec.Layers) - 1
	for i, l := range r.Spec.Layers {
		out := l.Name
		if out == "" {
			out = fmt.Sprintf("%s_%d", l.Type, i)
		}
		if i == last {
			out = OutputName
		}
		switch l.Type {
		case spec.Conv:
			g.message(fGraphNode, node(l.Name, "Conv",
				[]string{cur, l.Name + ".weight", l.Name + ".bias"}, []string{out},
				attrInts("kernel_shape", l.Kernel, l.Kernel),
				attrInts("strides", l.Stride, l.Stride),
				attrInts("pads", l.Pad, l.Pad, l.Pad, l.Pad),
				attrInts("dilations", 1, 1),
				attrInt("group", 1)))
		case spec.ReLU:
			g.message(fGraphNode, node(out, "Relu", []string{cur}, []string{out}))
		case spec.MaxPool:
			g.message(fGraphNode, node(out, "MaxPool", []string{cur}, []string{out},
				attrInts("kernel_shape", l.Kernel, l.Kernel),
				attrInts("strides", l.Stride, l.Stride),
				attrInts("pads", 0, 0, 0, 0),
				attrInt("ceil_mode", 0)))
		case spec.Energy:
			// The energy layer is the mean of each feature map: GlobalAveragePool gives
			// [N, C, 1, 1], which Flatten turns into the [N, C] the dense layers take.
			pooled := out + "_pooled"
			g.message(fGraphNode, node(pooled, "GlobalAveragePool", []string{cur}, []string{pooled}))
			g.message(fGraphNode, node(out, "Flatten", []string{pooled}, []string{out}, attrInt("axis", 1)))
		case spec.Dense:
			// Weights are stored [out, in], so Y = X * W^T + b is Gemm with transB = 1.
			g.message(fGraphNode, node(l.Name, "Gemm",
				[]string{cur, l.Name + ".weight", l.Name + ".bias"}, []string{out},
				attrInt("transB", 1)))
		case spec.Dropout:
			continue // identity at inference
		default:
			return nil, fmt.Errorf("onnx export %s: layer %d has type %q, which has no ONNX mapping", r.Spec.Name, i, l.Type)
		}
		cur = out
	}
	g.string(fGraphName, r.Spec.Name)
	g.string(fGraphDocString, fmt.Sprintf("texgrid %s, %d classes, %dx%d fragments scaled %s", r.Spec.Name, r.Classes, r.Size, r.Size, PixelScaling))
	in := r.In[0]
	g.message(fGraphInput, valueInfo(InputName, BatchDim, in.C, r.Size, r.Size))
	g.message(fGraphOutput, valueInfo(OutputName, BatchDim, r.Classes))
	for _, p := range r.Params {
		g.appendInitializer(fGraphInitializer, p.Name, p.Shape, byName[p.Name].Data)
	}

	var head enc
	head.int64(fModelIRVersion, IRVersion)
	head.string(fModelProducerName, ProducerName)
	head.string(fModelProducerVersion, ProducerVersion)
	head.string(fModelDomain, "org.texgrid")
	head.int64(fModelModelVersion, 1)
	head.string(fModelDocString, r.Spec.Description)
	var opset enc
	opset.string(fOpsetDomain, "")
	opset.int64(fOpsetVersion, OpsetVersion)
	head.message(fModelOpsetImport, opset)
	var tail enc
	for _, kv := range props {
		var e enc
		e.string(fEntryKey, kv[0])
		e.string(fEntryValue, kv[1])
		tail.message(fModelMetadataProps, e)
	}

	out := make([]byte, 0, len(head)+len(g)+len(tail)+16)
	out = append(out, head...)
	out = protowire.AppendTag(out, fModelGraph, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(len(g)))
	out = append(out, g...)
	out = append(out, tail...)
	return out, nil
}

// checkParams returns the weights by name after checking they are exactly r.Params with
// the right shapes, the right amount of data and finite values.
func checkParams(r *spec.Resolved, params []tensor.Named) (map[string]*tensor.Tensor, error) {
	byName := make(map[string]*tensor.Tensor, len(params))
	for _, p := range params {
		if _, dup := byName[p.Name]; dup {
			return nil, fmt.Errorf("%w: tensor %q appears twice", ErrBadParams, p.Name)
		}
		if _, ok := r.Param(p.Name); !ok {
			return nil, fmt.Errorf("%w: unexpected tensor %q (the model has no such parameter)", ErrBadParams, p.Name)
		}
		if p.T == nil {
			return nil, fmt.Errorf("%w: tensor %q is nil", ErrBadParams, p.Name)
		}
		byName[p.Name] = p.T
	}
	for _, want := range r.Params {
		t, ok := byName[want.Name]
		if !ok {
			return nil, fmt.Errorf("%w: tensor %q %v is missing", ErrBadParams, want.Name, want.Shape)
		}
		if !tensor.SameShape(t.Shape, want.Shape) {
			return nil, fmt.Errorf("%w: tensor %q has shape %v, want %v", ErrBadParams, want.Name, t.Shape, want.Shape)
		}
		if len(t.Data) != want.Size() {
			return nil, fmt.Errorf("%w: tensor %q has %d values for shape %v (%d)", ErrBadParams, want.Name, len(t.Data), want.Shape, want.Size())
		}
		for i, v := range t.Data {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("%w: tensor %q value %d is %v", ErrBadParams, want.Name, i, v)
			}
		}
	}
	return byName, nil
}

// metadata returns the metadata_props as sorted key/value pairs.
func metadata(r *spec.Resolved, classes []string, extra map[string]string) ([][2]string, error) {
	cj, err := json.Marshal(classes)
	if err != nil {
		return nil, fmt.Errorf("class names: %w", err)
	}
	m := map[string]string{
		MetaClasses:       string(cj),
		MetaPixelScaling:  PixelScaling,
		MetaFragmentSize:  strconv.Itoa(r.Size),
		MetaModel:         r.Spec.Name,
		MetaSpec:          string(r.Spec.JSON()),
		MetaInputChannels: strconv.Itoa(r.In[0].C),
	}
	for k, v := range extra {
		if _, reserved := m[k]; reserved {
			return nil, fmt.Errorf("metadata key %q is written by the exporter and cannot be set", k)
		}
		if k == "" {
			return nil, errors.New("metadata key is empty")
		}
		m[k] = v
	}
	out := make([][2]string, 0, len(m))
	for k, v := range m {
		out = append(out, [2]string{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out, nil
}
