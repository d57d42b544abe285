package onnx

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// ErrNotONNX reports bytes that are not an ONNX model: not protobuf, or protobuf without
// the fields every ModelProto has (an IR version and a graph).
var ErrNotONNX = errors.New("not an ONNX model")

// Model is the part of a ModelProto texgrid reads back: enough to check an exported
// model and to learn a model's interface before running it. Fields of onnx.proto that
// are not listed here are skipped.
type Model struct {
	IRVersion       int64
	Opsets          []Opset
	ProducerName    string
	ProducerVersion string
	Graph           Graph
	Metadata        map[string]string // metadata_props; a repeated key keeps its last value
}

// Opset is one OperatorSetIdProto.
type Opset struct {
	Domain  string // "" is the default ONNX domain
	Version int64
}

// Graph is the part of a GraphProto texgrid reads.
type Graph struct {
	Name         string
	Nodes        []Node
	Inputs       []ValueInfo
	Outputs      []ValueInfo
	Initializers []Initializer
}

// Node is one NodeProto.
type Node struct {
	Name, OpType, Domain string
	Inputs, Outputs      []string
	Attrs                []Attribute
}

// Attr returns the attribute with the given name.
func (n *Node) Attr(name string) (Attribute, bool) {
	for _, a := range n.Attrs {
		if a.Name == name {
			return a, true
		}
	}
	return Attribute{}, false
}

// Attribute is one AttributeProto of a scalar, string or list type; graph and tensor
// valued attributes are not read.
type Attribute struct {
	Name   string
	Type   int64 // AttributeProto.AttributeType, e.g. AttrInts
	I      int64
	F      float32
	S      []byte
	Ints   []int64
	Floats []float32
}

// ValueInfo is a graph input or output: its name and, for tensors, element type and shape.
type ValueInfo struct {
	Name     string
	ElemType int64 // TensorProto.DataType; 0 when the value is not a tensor
	Dims     []Dim // nil when the shape is unknown
}

// Dim is one dimension of a ValueInfo: a fixed size, or a symbolic name such as "N".
type Dim struct {
	Value int64  // meaningful when Param is ""
	Param string // symbolic name, or "" for a fixed dimension
}

// String returns the size, or the symbolic name, or "?" for an unknown dimension.
func (d Dim) String() string {
	if d.Param != "" {
		return d.Param
	}
	if d.Value <= 0 {
		return "?"
	}
	return strconv.FormatInt(d.Value, 10)
}

// Initializer is one TensorProto of the graph's initializers. Raw aliases the decoded
// bytes.
type Initializer struct {
	Name      string
	DataType  int64
	Dims      []int64
	Raw       []byte
	FloatData []float32
}

// Floats returns the values of a FLOAT initializer from raw_data or float_data, checking
// that their number matches the dimensions.
func (t *Initializer) Floats() ([]float32, error) {
	if t.DataType != DataFloat {
		return nil, fmt.Errorf("initializer %q: data type %d is not FLOAT", t.Name, t.DataType)
	}
	n := int64(1)
	for _, d := range t.Dims {
		if d < 0 || (d > 0 && n > math.MaxInt32/d) {
			return nil, fmt.Errorf("initializer %q: bad dimensions %v", t.Name, t.Dims)
		}
		n *= d
	}
	switch {
	case t.Raw != nil:
		if int64(len(t.Raw)) != 4*n {
			return nil, fmt.Errorf("initializer %q: %d bytes of raw data for dimensions %v (%d floats)", t.Name, len(t.Raw), t.Dims, n)
		}
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Raw[4*i:]))
		}
		return out, nil
	default:
		if int64(len(t.FloatData)) != n {
			return nil, fmt.Errorf("initializer %q: %d floats for dimensions %v (%d)", t.Name, len(t.FloatData), t.Dims, n)
		}
		return t.FloatData, nil
	}
}

// Initializer returns the graph initializer with the given name.
func (g *Graph) Initializer(name string) (*Initializer, bool) {
	for i := range g.Initializers {
		if g.Initializers[i].Name == name {
			return &g.Initializers[i], true
		}
	}
	return nil, false
}

// Classes returns the class names from MetaClasses.
func (m *Model) Classes() ([]string, error) {
	s, ok := m.Metadata[MetaClasses]
	if !ok {
		return nil, fmt.Errorf("model has no %s metadata (not exported by texgrid?)", MetaClasses)
	}
	var cs []string
	if err := json.Unmarshal([]byte(s), &cs); err != nil {
		return nil, fmt.Errorf("metadata %s: %w", MetaClasses, err)
	}
	return cs, nil
}

// Decode parses an ONNX ModelProto. It fails with ErrNotONNX when b is not protobuf or
// lacks an IR version or graph, and with a descriptive error for a known field of the
// wrong wire type. Unknown fields are skipped.
func Decode(b []byte) (*Model, error) {
	m := &Model{Metadata: map[string]string{}}
	var graph []byte
	haveGraph := false
	err := walk(b, func(num protowire.Number, typ protowire.Type, v uint64, p []byte) error {
		switch num {
		case fModelIRVersion:
			return want(typ, protowire.VarintType, "ir_version", func() { m.IRVersion = int64(v) })
		case fModelProducerName:
			return want(typ, protowire.BytesType, "producer_name", func() { m.ProducerName = string(p) })
		case fModelProducerVersion:
			return want(typ, protowire.BytesType, "producer_version", func() { m.ProducerVersion = string(p) })
		case fModelGraph:
			return want(typ, protowire.BytesType, "graph", func() { graph, haveGraph = p, true })
		case fModelOpsetImport:
			if typ != protowire.BytesType {
				return wireErr("opset_import", typ)
			}
			var o Opset
			err := walk(p, func(num protowire.Number, typ protowire.Type, v uint64, p []byte) error {
				switch num {
				case fOpsetDomain:
					return want(typ, protowire.BytesType, "opset domain", func() { o.Domain = string(p) })
				case fOpsetVersion:
					return want(typ, protowire.VarintType, "opset version", func() { o.Version = int64(v) })
				}
				return nil
			})
			m.Opsets = append(m.Opsets, o)
			return err
		case fModelMetadataProps:
			if typ != protowire.BytesType {
				return wireErr("metadata_props", typ)
			}
			var k, val string
			err := walk(p, func(num protowire.Number, typ protowire.Type, v uint64, p []byte) error {
				switch num {
				case fEntryKey:
					return want(typ, protowire.BytesType, "metadata key", func() { k = string(p) })
				case fEntryValue:
					return want(typ, protowire.BytesType, "metadata value", func() { val = string(p) })
				}
				return nil
			})
			m.Metadata[k] = val
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotONNX, err)
	}
	if m.IRVersion <= 0 {
		return nil, fmt.Errorf("%w: no ir_version", ErrNotONNX)
	}
	if !haveGraph {
		return nil, fmt.Errorf("%w: no graph", ErrNotONNX)
	}
	if err := decodeGraph(graph, &m.Graph); err != nil {
		return nil, fmt.Errorf("%w: graph: %v", ErrNotONNX, err)
	}
	return m, nil
}

func decodeGraph(b []byte, g *Graph) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v uint64, p []byte) error {
		switch num {
		case fGraphName:
			return want(typ, protowire.BytesType, "graph name", func() { g.Name = string(p) })
		case fGraphNode:
			if typ != protowire.BytesType {
				return wireErr("node", typ)
			}
			n, err := decodeNode(p)
			if err != nil {
				return fmt.Errorf("node %d: %w", len(g.Nodes), err)
			}
			g.Nodes = append(g.Nodes, n)
		case fGraphInput, fGraphOutput:
			if typ != protowire.BytesType {
				return wireErr("input/output", typ)
			}
			vi, err := decodeValueInfo(p)
			if err != nil {
				return err
			}
			if num == fGraphInput {
				g.Inputs = append(g.Inputs, vi)
			} else {
				g.Outputs = append(g.Outputs, vi)
			}
		case fGraphInitializer:
			if typ != protowire.BytesType {
				return wireErr("initializer", typ)
			}
			t, err := decodeTensor(p)
			if err != nil {
				return fmt.Errorf("initializer %d: %w", len(g.Initializers), err)
			}
			g.Initializers = append(g.Initializers, t)
		}
		return nil
	})
}

func decodeNode(b []byte) (Node, error) {
	var n Node
	err := walk(b, func(num protowire.Number, typ protowire.Type, v uint64, p []byte) error {
		switch num {
		case fNodeInput:
			return want(typ, protowire.BytesType, "node input", func() { n.Inputs = append(n.Inputs, string(p)) })
		case fNodeOutput:
			return want(typ, protowire.BytesType, "node output", func() { n.Outputs = append(n.Outputs, string(p)) })
		case fNodeName:
			return want(typ, protowire.BytesType, "node name", func() { n.Name = string(p) })
		case fNodeOpType:
			return want(typ, protowire.BytesType, "op_type", func() { n.OpType = string(p) })
		case fNodeDomain:
			return want(typ, protowire.BytesType, "node domain", func() { n.Domain = string(p) })
		case fNodeAttribute:
			if typ != protowire.BytesType {
				return wireErr("attribute", typ)
			}
			a, err := decodeAttr(p)
			if err != nil {
				return err
			}
			n.Attrs = append(n.Attrs, a)
		}
		return nil
	})
	return n, err
}

func decodeAttr(b []byte) (Attribute, error) {
	var a Attribute
	err := walk(b, func(num protowire.Number, typ protowire.Type, v uint64, p []byte) error {
		switch num {
		case fAttrName:
			return want(typ, protowire.BytesType, "attribute name", func() { a.Name = string(p) })
		case fAttrType:
			return want(typ, protowire.VarintType, "attribute type", func() { a.Type = int64(v) })
		case fAttrI:
			return want(typ, protowire.VarintType, "attribute i", func() { a.I = int64(v) })
		case fAttrF:
			return want(typ, protowire.Fixed32Type, "attribute f", func() { a.F = math.Float32frombits(uint32(v)) })
		case fAttrS:
			return want(typ, protowire.BytesType, "attribute s", func() { a.S = p })
		case fAttrInts:
			return repeatedVarint(typ, v, p, "attribute ints", func(x uint64) { a.Ints = append(a.Ints, int64(x)) })
		case fAttrFloats:
			return repeatedFixed32(typ, v, p, "attribute floats", func(x uint32) { a.Floats = append(a.Floats, math.Float32frombits(x)) })
		}
		return nil
	})
	if err != nil {
		return a, fmt.Errorf("attribute %q: %w", a.Name, err)
	}
	return a, nil
}

func decodeValueInfo(b []byte) (ValueInfo, error) {
	var vi ValueInfo
	err := walk(b, func(num protowire.Number, typ protowire.Type, v uint64, p []byte) error {
		switch num {
		case fValueName:
			return want(typ, protowire.BytesType, "value name", func() { vi.Name = string(p) })
		case fValueType:
			if typ != protowire.BytesType {
				return wireErr("value type", typ)
			}
			return walk(p, func(num protowire.Number, typ protowire.Type, v uint64, p []byte) error {
				if num != fTypeTensor {
					return nil
				}
				if typ != protowire.BytesType {
					return wireErr("tensor_type", typ)
				}
				return walk(p, func(num protowire.Number, typ protowire.Type, v uint64, p []byte) error {
					switch num {
					case fTensorTypeElem:
						return want(typ, protowire.VarintType, "elem_type", func() { vi.ElemType = int64(v) })
					case fTensorTypeShape:
						if typ != protowire.BytesType {
							return wireErr("shape", typ)
						}
						vi.Dims = []Dim{}
						return walk(p, func(num protowire.Number, typ protowire.Type, v uint64, p []byte) error {
							if num != fShapeDim {
								return nil
							}
							if typ != protowire.BytesType {
								return wireErr("dim", typ)
							}
							var d Dim
							err := walk(p, func(num protowire.Number, typ protowire.Type, v uint64, p []byte) error {
								switch num {
								case fDimValue:
									return want(typ, protowire.VarintType, "dim_value", func() { d.Value = int64(v) })
								case fDimParam:
									return want(typ, protowire.BytesType, "dim_param", func() { d.Param = string(p) })
								}
								return nil
							})
							vi.Dims = append(vi.Dims, d)
							return err
						})
					}
					return nil
				})
			})
		}
		return nil
	})
	if err != nil {
		return vi, fmt.Errorf("value %q: %w", vi.Name, err)
	}
	return vi, nil
}

func decodeTensor(b []byte) (Initializer, error) {
	var t Initializer
	err := walk(b, func(num protowire.Number, typ protowire.Type, v uint64, p []byte) error {
		switch num {
		case fTensorName:
			return want(typ, protowire.BytesType, "tensor name", func() { t.Name = string(p) })
		case fTensorDataType:
			return want(typ, protowire.VarintType, "data_type", func() { t.DataType = int64(v) })
		case fTensorDims:
			return repeatedVarint(typ, v, p, "dims", func(x uint64) { t.Dims = append(t.Dims, int64(x)) })
		case fTensorRawData:
			return want(typ, protowire.BytesType, "raw_data", func() { t.Raw = p })
		case fTensorFloatData:
			return repeatedFixed32(typ, v, p, "float_data", func(x uint32) { t.FloatData = append(t.FloatData, math.Float32frombits(x)) })
		}
		return nil
	})
	if err != nil {
		return t, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return t, nil
}

// walk calls f for every field of the message b. For varint and fixed fields v holds the
// value; for length-delimited fields p holds the bytes (aliasing b). Groups are skipped.
func walk(b []byte, f func(num protowire.Number, typ protowire.Type, v uint64, p []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad field tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		var v uint64
		var p []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var x uint32
			x, n = protowire.ConsumeFixed32(b)
			v = uint64(x)
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			p, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.StartGroupType {
			continue
		}
		if err := f(num, typ, v, p); err != nil {
			return err
		}
	}
	return nil
}

func wireErr(field string, got protowire.Type) error {
	return fmt.Errorf("field %s has wire type %d", field, got)
}

func want(got, want protowire.Type, field string, set func()) error {
	if got != want {
		return wireErr(field, got)
	}
	set()
	return nil
}

// repeatedVarint reads one element (unpacked) or a packed run.
func repeatedVarint(typ protowire.Type, v uint64, p []byte, field string, add func(uint64)) error {
	switch typ {
	case protowire.VarintType:
		add(v)
	case protowire.BytesType:
		for len(p) > 0 {
			x, n := protowire.ConsumeVarint(p)
			if n < 0 {
				return fmt.Errorf("packed %s: %w", field, protowire.ParseError(n))
			}
			add(x)
			p = p[n:]
		}
	default:
		return wireErr(field, typ)
	}
	return nil
}

// repeatedFixed32 reads one element (unpacked) or a packed run.
func repeatedFixed32(typ protowire.Type, v uint64, p []byte, field string, add func(uint32)) error {
	switch typ {
	case protowire.Fixed32Type:
		add(uint32(v))
	case protowire.BytesType:
		if len(p)%4 != 0 {
			return fmt.Errorf("packed %s: %d bytes is not a multiple of 4", field, len(p))
		}
		for ; len(p) > 0; p = p[4:] {
			add(binary.LittleEndian.Uint32(p))
		}
	default:
		return wireErr(field, typ)
	}
	return nil
}

// Network reads back a model texgrid exported: the spec from MetaSpec resolved for the
// model's classes and input size, the weights from the initializers (in spec order),
// and the class names. It lets the Go engine run an exported model when ONNX Runtime
// is not available.
func (m *Model) Network() (*spec.Resolved, []tensor.Named, []string, error) {
	js, ok := m.Metadata[MetaSpec]
	if !ok {
		return nil, nil, nil, fmt.Errorf("model has no %s metadata (not exported by texgrid?)", MetaSpec)
	}
	sp, err := spec.Parse([]byte(js))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("metadata %s: %w", MetaSpec, err)
	}
	classes, err := m.Classes()
	if err != nil {
		return nil, nil, nil, err
	}
	size, err := strconv.Atoi(m.Metadata[MetaFragmentSize])
	if err != nil {
		return nil, nil, nil, fmt.Errorf("metadata %s: %w", MetaFragmentSize, err)
	}
	r, err := sp.Resolve(len(classes), size)
	if err != nil {
		return nil, nil, nil, err
	}
	params := make([]tensor.Named, 0, len(r.Params))
	for _, p := range r.Params {
		init, ok := m.Graph.Initializer(p.Name)
		if !ok {
			return nil, nil, nil, fmt.Errorf("initializer %q is missing", p.Name)
		}
		vals, err := init.Floats()
		if err != nil {
			return nil, nil, nil, err
		}
		shape := make([]int, len(init.Dims))
		for i, d := range init.Dims {
			shape[i] = int(d)
		}
		if !tensor.SameShape(shape, p.Shape) {
			return nil, nil, nil, fmt.Errorf("initializer %q has shape %v, the spec wants %v", p.Name, shape, p.Shape)
		}
		params = append(params, tensor.Named{Name: p.Name, T: &tensor.Tensor{Shape: shape, Data: vals}})
	}
	return r, params, classes, nil
}
