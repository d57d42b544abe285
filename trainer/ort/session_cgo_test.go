//go:build cgo

package ort

import (
	"testing"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/texgrid/texgrid/trainer/onnx"
)

// TestORTReadsOurEncoding checks the hand-written protobuf with ONNX Runtime's own
// parser rather than ours: the interface, producer and metadata it reports.
func TestORTReadsOurEncoding(t *testing.T) {
	requireORT(t)
	t.Parallel()
	r := shipped(t, "tcnn-small", 3, 96)
	b, err := onnx.Export(r, newModel(t, r, 1).Params(), []string{"bark", "brick", "sand"}, map[string]string{"texgrid.round": "12"})
	if err != nil {
		t.Fatal(err)
	}
	ins, outs, err := ortgo.GetInputOutputInfoWithONNXData(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) != 1 || ins[0].Name != onnx.InputName || ins[0].Dimensions.String() != "[-1 1 96 96]" ||
		ins[0].DataType != ortgo.TensorElementDataTypeFloat {
		t.Errorf("ORT sees inputs %v", ins)
	}
	if len(outs) != 1 || outs[0].Name != onnx.OutputName || outs[0].Dimensions.String() != "[-1 3]" {
		t.Errorf("ORT sees outputs %v", outs)
	}
	md, err := ortgo.GetModelMetadataWithONNXData(b)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Destroy()
	if p, _ := md.GetProducerName(); p != onnx.ProducerName {
		t.Errorf("producer %q", p)
	}
	if g, _ := md.GetGraphName(); g != "tcnn-small" {
		t.Errorf("graph name %q", g)
	}
	for k, want := range map[string]string{
		onnx.MetaClasses:      `["bark","brick","sand"]`,
		onnx.MetaPixelScaling: "x/255-0.5",
		onnx.MetaFragmentSize: "96",
		"texgrid.round":       "12",
	} {
		got, ok, err := md.LookupCustomMetadataMap(k)
		if err != nil || !ok || got != want {
			t.Errorf("ORT metadata %s = %q (present %v, %v), want %q", k, got, ok, err, want)
		}
	}
}
