package onnx

import (
	"encoding/binary"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of the onnx.proto messages this package writes or reads (onnx/onnx.proto,
// IR version 8). onnx.proto is proto2: repeated scalars are written unpacked unless the
// .proto says packed (TensorProto.float_data); the decoder accepts both forms, as every
// protobuf parser must.
const (
	// ModelProto
	fModelIRVersion       = 1  // int64
	fModelProducerName    = 2  // string
	fModelProducerVersion = 3  // string
	fModelDomain          = 4  // string
	fModelModelVersion    = 5  // int64
	fModelDocString       = 6  // string
	fModelGraph           = 7  // GraphProto
	fModelOpsetImport     = 8  // repeated OperatorSetIdProto
	fModelMetadataProps   = 14 // repeated StringStringEntryProto

	// OperatorSetIdProto
	fOpsetDomain  = 1 // string
	fOpsetVersion = 2 // int64

	// StringStringEntryProto
	fEntryKey   = 1 // string
	fEntryValue = 2 // string

	// GraphProto
	fGraphNode        = 1  // repeated NodeProto
	fGraphName        = 2  // string
	fGraphInitializer = 5  // repeated TensorProto
	fGraphDocString   = 10 // string
	fGraphInput       = 11 // repeated ValueInfoProto
	fGraphOutput      = 12 // repeated ValueInfoProto

	// NodeProto
	fNodeInput     = 1 // repeated string
	fNodeOutput    = 2 // repeated string
	fNodeName      = 3 // string
	fNodeOpType    = 4 // string
	fNodeAttribute = 5 // repeated AttributeProto
	fNodeDomain    = 7 // string

	// AttributeProto
	fAttrName   = 1  // string
	fAttrF      = 2  // float
	fAttrI      = 3  // int64
	fAttrS      = 4  // bytes
	fAttrFloats = 7  // repeated float
	fAttrInts   = 8  // repeated int64
	fAttrType   = 20 // AttributeType enum

	// TensorProto
	fTensorDims      = 1 // repeated int64
	fTensorDataType  = 2 // int32 (TensorProto.DataType)
	fTensorFloatData = 4 // repeated float, packed
	fTensorName      = 8 // string
	fTensorRawData   = 9 // bytes, little-endian

	// ValueInfoProto
	fValueName = 1 // string
	fValueType = 2 // TypeProto

	// TypeProto
	fTypeTensor = 1 // TypeProto.Tensor

	// TypeProto.Tensor
	fTensorTypeElem  = 1 // int32 (TensorProto.DataType)
	fTensorTypeShape = 2 // TensorShapeProto

	// TensorShapeProto
	fShapeDim = 1 // repeated TensorShapeProto.Dimension

	// TensorShapeProto.Dimension
	fDimValue = 1 // int64
	fDimParam = 2 // string
)

// AttributeProto.AttributeType values.
const (
	AttrFloat  = 1
	AttrInt    = 2
	AttrString = 3
	AttrFloats = 6
	AttrInts   = 7
)

// DataFloat is TensorProto.DataType FLOAT, the only element type texgrid writes.
const DataFloat = 1

// enc appends protobuf fields to a byte slice. Nested messages are built into their own
// enc first and then appended as a length-delimited field.
type enc []byte

func (e *enc) varint(num protowire.Number, v uint64) {
	*e = protowire.AppendTag(*e, num, protowire.VarintType)
	*e = protowire.AppendVarint(*e, v)
}

func (e *enc) int64(num protowire.Number, v int64) { e.varint(num, uint64(v)) }

func (e *enc) bytes(num protowire.Number, b []byte) {
	*e = protowire.AppendTag(*e, num, protowire.BytesType)
	*e = protowire.AppendBytes(*e, b)
}

func (e *enc) string(num protowire.Number, s string) {
	*e = protowire.AppendTag(*e, num, protowire.BytesType)
	*e = protowire.AppendString(*e, s)
}

func (e *enc) message(num protowire.Number, m enc) { e.bytes(num, m) }

// attrInts is an INTS attribute such as kernel_shape or pads.
func attrInts(name string, vs ...int) enc {
	var a enc
	a.string(fAttrName, name)
	a.int64(fAttrType, AttrInts)
	for _, v := range vs {
		a.int64(fAttrInts, int64(v))
	}
	return a
}

// attrInt is an INT attribute such as transB or axis.
func attrInt(name string, v int) enc {
	var a enc
	a.string(fAttrName, name)
	a.int64(fAttrType, AttrInt)
	a.int64(fAttrI, int64(v))
	return a
}

// node encodes a NodeProto.
func node(name, op string, inputs, outputs []string, attrs ...enc) enc {
	var n enc
	for _, in := range inputs {
		n.string(fNodeInput, in)
	}
	for _, out := range outputs {
		n.string(fNodeOutput, out)
	}
	n.string(fNodeName, name)
	n.string(fNodeOpType, op)
	for _, a := range attrs {
		n.message(fNodeAttribute, a)
	}
	return n
}

// valueInfo encodes a float tensor ValueInfoProto; a dim is either an int (fixed) or a
// string (symbolic, such as the batch dimension "N").
func valueInfo(name string, dims ...any) enc {
	var shape enc
	for _, d := range dims {
		var dim enc
		switch d := d.(type) {
		case int:
			dim.int64(fDimValue, int64(d))
		case string:
			dim.string(fDimParam, d)
		default:
			panic("onnx: valueInfo dim must be int or string")
		}
		shape.message(fShapeDim, dim)
	}
	var tt enc
	tt.int64(fTensorTypeElem, DataFloat)
	tt.message(fTensorTypeShape, shape)
	var typ enc
	typ.message(fTypeTensor, tt)
	var v enc
	v.string(fValueName, name)
	v.message(fValueType, typ)
	return v
}

// appendInitializer appends a float TensorProto with raw little-endian data as field num
// of e, writing the data once, straight into e.
func (e *enc) appendInitializer(num protowire.Number, name string, dims []int, data []float32) {
	var head enc
	for _, d := range dims {
		head.int64(fTensorDims, int64(d))
	}
	head.int64(fTensorDataType, DataFloat)
	head.string(fTensorName, name)
	head = protowire.AppendTag(head, fTensorRawData, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(4*len(data)))
	*e = protowire.AppendTag(*e, num, protowire.BytesType)
	*e = protowire.AppendVarint(*e, uint64(len(head)+4*len(data)))
	*e = append(*e, head...)
	for _, f := range data {
		*e = binary.LittleEndian.AppendUint32(*e, math.Float32bits(f))
	}
}
