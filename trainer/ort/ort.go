// Package ort runs texgrid's exported ONNX models with ONNX Runtime (through
// github.com/yalue/onnxruntime_go) and classifies fragments and whole images with them.
//
// ONNX Runtime is a shared library loaded at run time, not linked: `make ort` fetches
// it into .cache/onnxruntime, and LibraryPath says where it is looked for. Without it,
// or in a binary built without cgo, Available and Open return an error wrapping
// ErrNoLibrary that names the path tried and the fix, and callers fall back to the Go
// engine. The library is loaded once per process.
package ort

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/texgrid/texgrid/trainer/onnx"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// EnvLibrary is the environment variable naming the ONNX Runtime shared library.
const EnvLibrary = "TEXGRID_ORT_LIB"

// DefaultLibrary is where `make ort` puts the library, relative to the repository root.
const DefaultLibrary = ".cache/onnxruntime/libonnxruntime.so.1"

// Errors callers act on.
var (
	// ErrNoLibrary: ONNX Runtime cannot be used in this process (library missing, not
	// loadable, or no cgo). Fall back to the Go engine.
	ErrNoLibrary = errors.New("ONNX Runtime is not available")
	// ErrBadModel: the bytes are ONNX but not a texgrid classifier (input "fragments"
	// [N,C,S,S] float, output "logits").
	ErrBadModel = errors.New("not a texgrid ONNX classifier")
	// ErrShape: the input tensor does not have the shape the model takes.
	ErrShape = errors.New("input shape does not match the model")
)

var (
	pathMu       sync.Mutex
	explicitPath string
)

// SetLibraryPath makes path the library Available loads, overriding EnvLibrary and the
// default (a command's --ort-lib flag). It has no effect once the library is loaded.
func SetLibraryPath(path string) {
	pathMu.Lock()
	defer pathMu.Unlock()
	explicitPath = path
}

// LibraryPath returns the library Available would load: the SetLibraryPath path, else
// $TEXGRID_ORT_LIB, else DefaultLibrary under the first directory, walking up from the
// working directory and then from the executable's directory, that has it. When none
// does it returns DefaultLibrary under the working directory (for error messages).
func LibraryPath() string {
	pathMu.Lock()
	p := explicitPath
	pathMu.Unlock()
	if p != "" {
		return p
	}
	if p := os.Getenv(EnvLibrary); p != "" {
		return p
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			cand := filepath.Join(d, DefaultLibrary)
			if _, err := os.Stat(cand); err == nil {
				return cand
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if len(starts) > 0 {
		return filepath.Join(starts[0], DefaultLibrary)
	}
	return DefaultLibrary
}

// Info is what a Session knows about its model from the ONNX file itself.
type Info struct {
	Classes  []string          // class names in logit order (metadata texgrid.classes); nil if absent
	Channels int               // C of the input, or 0 when symbolic
	Size     int               // S of the input, or 0 when symbolic
	Model    string            // spec name (metadata texgrid.model)
	Meta     map[string]string // all metadata_props
}

// inspect checks that model is a texgrid classifier and returns its interface.
func inspect(model []byte) (Info, []onnx.Dim, error) {
	m, err := onnx.Decode(model)
	if err != nil {
		return Info{}, nil, err
	}
	g := &m.Graph
	var inputs []onnx.ValueInfo
	for _, in := range g.Inputs {
		if _, isWeight := g.Initializer(in.Name); !isWeight {
			inputs = append(inputs, in)
		}
	}
	if len(inputs) != 1 || inputs[0].Name != onnx.InputName {
		names := make([]string, len(inputs))
		for i, in := range inputs {
			names[i] = strconv.Quote(in.Name)
		}
		return Info{}, nil, fmt.Errorf("%w: the model's inputs are [%s], want one named %q",
			ErrBadModel, strings.Join(names, " "), onnx.InputName)
	}
	in := inputs[0]
	if in.ElemType != onnx.DataFloat {
		return Info{}, nil, fmt.Errorf("%w: input %q has element type %d, want float32 (1)", ErrBadModel, in.Name, in.ElemType)
	}
	if len(in.Dims) != 4 {
		return Info{}, nil, fmt.Errorf("%w: input %q has shape [%s], want [N,C,S,S]", ErrBadModel, in.Name, dimString(in.Dims))
	}
	if len(g.Outputs) != 1 || g.Outputs[0].Name != onnx.OutputName {
		return Info{}, nil, fmt.Errorf("%w: the model must have one output named %q", ErrBadModel, onnx.OutputName)
	}
	info := Info{Meta: m.Metadata, Model: m.Metadata[onnx.MetaModel]}
	if in.Dims[1].Param == "" {
		info.Channels = int(in.Dims[1].Value)
	}
	if in.Dims[2].Param == "" && in.Dims[2] == in.Dims[3] {
		info.Size = int(in.Dims[2].Value)
	}
	if _, ok := m.Metadata[onnx.MetaClasses]; ok {
		if info.Classes, err = m.Classes(); err != nil {
			return Info{}, nil, fmt.Errorf("%w: %v", ErrBadModel, err)
		}
	}
	return info, in.Dims, nil
}

func dimString(ds []onnx.Dim) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.String()
	}
	return strings.Join(s, ",")
}

// Softmax returns the row-wise softmax of logits [N, C] as a new tensor; logits is not
// changed.
func Softmax(logits *tensor.Tensor) *tensor.Tensor {
	out := logits.Clone()
	if len(out.Shape) != 2 {
		return out
	}
	c := out.Shape[1]
	for r := 0; r+c <= len(out.Data); r += c {
		row := out.Data[r : r+c]
		mx := slices.Max(row)
		var sum float64
		for i, v := range row {
			e := math.Exp(float64(v - mx))
			row[i] = float32(e)
			sum += e
		}
		for i := range row {
			row[i] = float32(float64(row[i]) / sum)
		}
	}
	return out
}
