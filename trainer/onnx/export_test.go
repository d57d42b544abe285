package onnx

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/texgrid/texgrid/configs"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

func resolve(t testing.TB, model string, classes, size int) *spec.Resolved {
	t.Helper()
	b, err := configs.Model(model)
	if err != nil {
		t.Fatal(err)
	}
	s, err := spec.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Resolve(classes, size)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// randomParams fills every parameter with distinct pseudo-random values, so a swapped or
// transposed tensor cannot go unnoticed.
func randomParams(r *spec.Resolved, seed uint64) []tensor.Named {
	rng := rand.New(rand.NewPCG(seed, 1))
	var out []tensor.Named
	for _, p := range r.Params {
		t := tensor.New(p.Shape...)
		for i := range t.Data {
			t.Data[i] = float32(rng.NormFloat64())
		}
		out = append(out, tensor.Named{Name: p.Name, T: t})
	}
	return out
}

func classNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "class-" + strconv.Itoa(i)
	}
	return out
}

func TestExportReadsBack(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		model   string
		classes int
		size    int
		ops     string
	}{
		{"tcnn-small 64px", "tcnn-small", 3, 64,
			"Conv Relu MaxPool Conv Relu MaxPool Conv Relu GlobalAveragePool Flatten Gemm Relu Gemm Relu Gemm"},
		{"tcnn-small 256px", "tcnn-small", 6, 256,
			"Conv Relu MaxPool Conv Relu MaxPool Conv Relu GlobalAveragePool Flatten Gemm Relu Gemm Relu Gemm"},
		{"tcnn3 96px", "tcnn3", 10, 96,
			"Conv Relu MaxPool Conv Relu MaxPool Conv Relu GlobalAveragePool Flatten Gemm Relu Gemm Relu Gemm"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := resolve(t, tc.model, tc.classes, tc.size)
			params := randomParams(r, 7)
			classes := classNames(tc.classes)
			b, err := Export(r, params, classes, map[string]string{"texgrid.campaign": "42"})
			if err != nil {
				t.Fatal(err)
			}
			m, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if m.IRVersion != IRVersion || m.ProducerName != ProducerName {
				t.Errorf("ir_version %d producer %q", m.IRVersion, m.ProducerName)
			}
			if len(m.Opsets) != 1 || m.Opsets[0].Domain != "" || m.Opsets[0].Version != OpsetVersion {
				t.Errorf("opsets %+v", m.Opsets)
			}
			g := m.Graph
			if len(g.Inputs) != 1 || g.Inputs[0].Name != InputName || g.Inputs[0].ElemType != DataFloat {
				t.Fatalf("inputs %+v", g.Inputs)
			}
			if got, want := dims(g.Inputs[0].Dims), "N,1,"+strconv.Itoa(tc.size)+","+strconv.Itoa(tc.size); got != want {
				t.Errorf("input dims %s, want %s", got, want)
			}
			if len(g.Outputs) != 1 || g.Outputs[0].Name != OutputName {
				t.Fatalf("outputs %+v", g.Outputs)
			}
			if got, want := dims(g.Outputs[0].Dims), "N,"+strconv.Itoa(tc.classes); got != want {
				t.Errorf("output dims %s, want %s", got, want)
			}
			var ops []string
			for _, n := range g.Nodes {
				ops = append(ops, n.OpType)
			}
			if got := strings.Join(ops, " "); got != tc.ops {
				t.Errorf("ops\n got %s\nwant %s", got, tc.ops)
			}
			// The nodes chain from the input to the output through their data inputs.
			cur := InputName
			for _, n := range g.Nodes {
				if n.Inputs[0] != cur {
					t.Errorf("node %s (%s) reads %q, want %q", n.Name, n.OpType, n.Inputs[0], cur)
				}
				cur = n.Outputs[0]
			}
			if cur != OutputName {
				t.Errorf("last node writes %q, want %q", cur, OutputName)
			}
			checkAttrs(t, r, g)
			if len(g.Initializers) != len(r.Params) {
				t.Errorf("%d initializers, want %d", len(g.Initializers), len(r.Params))
			}
			for _, p := range params {
				init, ok := g.Initializer(p.Name)
				if !ok {
					t.Errorf("initializer %s missing", p.Name)
					continue
				}
				if got, want := int64s(init.Dims), p.T.Shape; !tensor.SameShape(got, want) {
					t.Errorf("%s dims %v, want %v", p.Name, got, want)
				}
				vals, err := init.Floats()
				if err != nil {
					t.Fatal(err)
				}
				for i := range vals {
					if vals[i] != p.T.Data[i] {
						t.Fatalf("%s[%d] = %v, want %v", p.Name, i, vals[i], p.T.Data[i])
					}
				}
			}
			got, err := m.Classes()
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, ",") != strings.Join(classes, ",") {
				t.Errorf("classes %v", got)
			}
			for k, want := range map[string]string{
				MetaPixelScaling:   "x/255-0.5",
				MetaFragmentSize:   strconv.Itoa(tc.size),
				MetaModel:          tc.model,
				MetaInputChannels:  "1",
				"texgrid.campaign": "42",
			} {
				if m.Metadata[k] != want {
					t.Errorf("metadata %s = %q, want %q", k, m.Metadata[k], want)
				}
			}
			back, err := spec.Parse([]byte(m.Metadata[MetaSpec]))
			if err != nil {
				t.Fatalf("metadata spec: %v", err)
			}
			if string(back.JSON()) != string(r.Spec.JSON()) {
				t.Errorf("metadata spec differs:\n%s\n%s", back.JSON(), r.Spec.JSON())
			}
			// Network gives back the spec, weights and classes that went in.
			r2, p2, cs2, err := m.Network()
			if err != nil {
				t.Fatal(err)
			}
			if r2.Size != tc.size || r2.Classes != tc.classes || string(r2.Spec.JSON()) != string(r.Spec.JSON()) {
				t.Errorf("Network resolved %s for %d classes at %d px", r2.Spec.JSON(), r2.Classes, r2.Size)
			}
			if strings.Join(cs2, ",") != strings.Join(classes, ",") || len(p2) != len(params) {
				t.Fatalf("Network: classes %v, %d params", cs2, len(p2))
			}
			for i, p := range params {
				if p2[i].Name != p.Name || !tensor.SameShape(p2[i].T.Shape, p.T.Shape) || !slices.Equal(p2[i].T.Data, p.T.Data) {
					t.Errorf("Network param %d: %s %v, want %s %v", i, p2[i].Name, p2[i].T.Shape, p.Name, p.T.Shape)
				}
			}
		})
	}
}

// checkAttrs compares each Conv, MaxPool and Gemm node's attributes with its spec layer.
func checkAttrs(t *testing.T, r *spec.Resolved, g Graph) {
	t.Helper()
	var convs, pools []spec.Layer
	for _, l := range r.Spec.Layers {
		switch l.Type {
		case spec.Conv:
			convs = append(convs, l)
		case spec.MaxPool:
			pools = append(pools, l)
		}
	}
	ints := func(n Node, name string) string {
		a, ok := n.Attr(name)
		if !ok {
			return "missing"
		}
		if a.Type != AttrInts {
			return "type " + strconv.FormatInt(a.Type, 10)
		}
		return dims(dimsOf(a.Ints))
	}
	for _, n := range g.Nodes {
		switch n.OpType {
		case "Conv":
			l := convs[0]
			convs = convs[1:]
			k, s, p := strconv.Itoa(l.Kernel), strconv.Itoa(l.Stride), strconv.Itoa(l.Pad)
			if ints(n, "kernel_shape") != k+","+k || ints(n, "strides") != s+","+s || ints(n, "pads") != p+","+p+","+p+","+p {
				t.Errorf("conv %s: kernel_shape %s strides %s pads %s, want %s %s %s", l.Name,
					ints(n, "kernel_shape"), ints(n, "strides"), ints(n, "pads"), k, s, p)
			}
			if n.Inputs[1] != l.Name+".weight" || n.Inputs[2] != l.Name+".bias" {
				t.Errorf("conv %s inputs %v", l.Name, n.Inputs)
			}
		case "MaxPool":
			l := pools[0]
			pools = pools[1:]
			k, s := strconv.Itoa(l.Kernel), strconv.Itoa(l.Stride)
			if ints(n, "kernel_shape") != k+","+k || ints(n, "strides") != s+","+s {
				t.Errorf("maxpool: kernel_shape %s strides %s, want %s %s", ints(n, "kernel_shape"), ints(n, "strides"), k, s)
			}
		case "Gemm":
			a, ok := n.Attr("transB")
			if !ok || a.Type != AttrInt || a.I != 1 {
				t.Errorf("gemm %s: transB %+v", n.Name, a)
			}
		}
	}
}

func dimsOf(vs []int64) []Dim {
	out := make([]Dim, len(vs))
	for i, v := range vs {
		out[i] = Dim{Value: v}
	}
	return out
}

func dims(ds []Dim) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.String()
	}
	return strings.Join(s, ",")
}

func int64s(vs []int64) []int {
	out := make([]int, len(vs))
	for i, v := range vs {
		out[i] = int(v)
	}
	return out
}

func TestExportThreeChannels(t *testing.T) {
	t.Parallel()
	s, err := spec.Parse([]byte(`{"name":"rgb","input_channels":3,"layers":[
		{"type":"conv","filters":4,"kernel":3},{"type":"relu"},{"type":"energy"},
		{"type":"dense","units":"classes"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Resolve(2, 16)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Export(r, randomParams(r, 1), []string{"a", "b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := dims(m.Graph.Inputs[0].Dims); got != "N,3,16,16" {
		t.Errorf("input dims %s", got)
	}
	if m.Metadata[MetaInputChannels] != "3" {
		t.Errorf("input channels metadata %q", m.Metadata[MetaInputChannels])
	}
}

func TestExportRejectsBadInput(t *testing.T) {
	t.Parallel()
	r := resolve(t, "tcnn-small", 3, 64)
	good := func() []tensor.Named { return randomParams(r, 3) }
	cases := []struct {
		name    string
		params  func() []tensor.Named
		classes []string
		meta    map[string]string
		want    string
		bad     bool // wraps ErrBadParams
	}{
		{"missing tensor", func() []tensor.Named { return good()[1:] }, classNames(3), nil, `"conv1.weight" [32 1 11 11] is missing`, true},
		{"unexpected tensor", func() []tensor.Named {
			return append(good(), tensor.Named{Name: "fc9.weight", T: tensor.New(1)})
		}, classNames(3), nil, `unexpected tensor "fc9.weight"`, true},
		{"wrong shape", func() []tensor.Named {
			p := good()
			p[0].T = tensor.New(32, 1, 5, 5)
			return p
		}, classNames(3), nil, `"conv1.weight" has shape [32 1 5 5], want [32 1 11 11]`, true},
		{"short data", func() []tensor.Named {
			p := good()
			p[1].T.Data = p[1].T.Data[:5]
			return p
		}, classNames(3), nil, `"conv1.bias" has 5 values`, true},
		{"nan", func() []tensor.Named {
			p := good()
			p[4].T.Data[17] = float32(math.NaN())
			return p
		}, classNames(3), nil, `"conv3.weight" value 17 is NaN`, true},
		{"duplicate tensor", func() []tensor.Named { p := good(); return append(p, p[0]) }, classNames(3), nil, `"conv1.weight" appears twice`, true},
		{"nil tensor", func() []tensor.Named { p := good(); p[2].T = nil; return p }, classNames(3), nil, `"conv2.weight" is nil`, true},
		{"too few classes", good, classNames(2), nil, "2 class names for a model with 3 classes", false},
		{"empty class", good, []string{"a", "", "c"}, nil, "class 1 has an empty name", false},
		{"repeated class", good, []string{"a", "b", "a"}, nil, `class name "a" appears twice`, false},
		{"reserved metadata", good, classNames(3), map[string]string{MetaClasses: "[]"}, `"texgrid.classes" is written by the exporter`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := Export(r, tc.params(), tc.classes, tc.meta)
			if err == nil {
				t.Fatalf("no error; %d bytes", len(b))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if errors.Is(err, ErrBadParams) != tc.bad {
				t.Errorf("errors.Is(err, ErrBadParams) = %v, want %v", !tc.bad, tc.bad)
			}
		})
	}
}

func TestDecodeRejectsNonONNX(t *testing.T) {
	t.Parallel()
	r := resolve(t, "tcnn-small", 2, 64)
	model, err := Export(r, randomParams(r, 2), classNames(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(map[string]string{"ir_version": "8"})
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "no ir_version"},
		{"text", []byte("hello, this is not a model\n"), "not an ONNX model"},
		{"png header", []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), "not an ONNX model"},
		{"json", js, "not an ONNX model"},
		{"truncated", model[:len(model)/2], "not an ONNX model"},
		{"graph missing", model[:2], "no graph"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, err := Decode(tc.b)
			if err == nil {
				t.Fatalf("decoded %+v", m)
			}
			if !errors.Is(err, ErrNotONNX) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q: want ErrNotONNX mentioning %q", err, tc.want)
			}
		})
	}
}

func TestDecodeAcceptsPackedAndFloatData(t *testing.T) {
	t.Parallel()
	// A hand-built tensor with packed dims and float_data instead of raw_data, the other
	// legal encodings writers use.
	var packed enc
	packed = appendPackedVarints(packed, fTensorDims, 2, 3)
	packed.int64(fTensorDataType, DataFloat)
	packed.string(fTensorName, "w")
	var fl []byte
	for _, f := range []float32{1, 2, 3, 4, 5, 6} {
		fl = binary.LittleEndian.AppendUint32(fl, math.Float32bits(f))
	}
	packed.bytes(fTensorFloatData, fl)
	init, err := decodeTensor(packed)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := init.Floats()
	if err != nil {
		t.Fatal(err)
	}
	if len(init.Dims) != 2 || init.Dims[0] != 2 || init.Dims[1] != 3 || len(vals) != 6 || vals[5] != 6 {
		t.Errorf("decoded %+v values %v", init, vals)
	}
	init.Dims = []int64{7}
	if _, err := init.Floats(); err == nil || !strings.Contains(err.Error(), "6 floats for dimensions [7]") {
		t.Errorf("mismatched dims: %v", err)
	}
}

func appendPackedVarints(e enc, num protowire.Number, vs ...uint64) enc {
	var p []byte
	for _, v := range vs {
		p = protowire.AppendVarint(p, v)
	}
	e.bytes(num, p)
	return e
}

func FuzzDecode(f *testing.F) {
	s, err := spec.Parse([]byte(`{"name":"tiny","layers":[
		{"type":"conv","filters":2,"kernel":3},{"type":"relu"},{"type":"maxpool","kernel":2},
		{"type":"energy"},{"type":"dense","units":"classes"}]}`))
	if err != nil {
		f.Fatal(err)
	}
	r, err := s.Resolve(2, 8)
	if err != nil {
		f.Fatal(err)
	}
	model, err := Export(r, randomParams(r, 1), []string{"a", "b"}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(model)
	f.Add([]byte{})
	f.Add([]byte("\x08\x08:\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrNotONNX) {
				t.Fatalf("error %v does not wrap ErrNotONNX", err)
			}
			return
		}
		if m.IRVersion <= 0 {
			t.Fatalf("accepted a model without ir_version")
		}
		for i := range m.Graph.Initializers {
			_, _ = m.Graph.Initializers[i].Floats()
		}
		_, _ = m.Classes()
	})
}

func TestNetworkRejectsForeignModels(t *testing.T) {
	t.Parallel()
	r := resolve(t, "tcnn-small", 2, 64)
	good, err := Export(r, randomParams(r, 2), classNames(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		edit func(m *Model)
		want string
	}{
		{"no spec", func(m *Model) { delete(m.Metadata, MetaSpec) }, "no texgrid.spec metadata"},
		{"no classes", func(m *Model) { delete(m.Metadata, MetaClasses) }, "no texgrid.classes metadata"},
		{"bad size", func(m *Model) { m.Metadata[MetaFragmentSize] = "big" }, "texgrid.fragment_size"},
		{"missing weight", func(m *Model) { m.Graph.Initializers = m.Graph.Initializers[1:] }, `initializer "conv1.weight" is missing`},
		{"short weight", func(m *Model) { m.Graph.Initializers[1].Raw = m.Graph.Initializers[1].Raw[:8] }, "8 bytes of raw data"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, err := Decode(good)
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(m)
			if _, _, _, err := m.Network(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
