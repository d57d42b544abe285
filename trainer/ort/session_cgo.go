//go:build cgo

package ort

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/texgrid/texgrid/trainer/onnx"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// haveCgo tells tests which build this is.
const haveCgo = true

var (
	envMu     sync.Mutex
	envLoaded string // the library the process's ORT environment was created from
)

// Available loads ONNX Runtime if it is not loaded yet and reports whether it can be
// used. A missing or unloadable library gives an error wrapping ErrNoLibrary that names
// the path tried and how to fix it; a later call retries, so installing the library
// while a process runs works.
func Available() error {
	path := LibraryPath()
	envMu.Lock()
	defer envMu.Unlock()
	if envLoaded != "" {
		return nil
	}
	if _, err := os.Stat(path); err != nil {
		return missingLibrary(path, err)
	}
	ortgo.SetSharedLibraryPath(path)
	if err := ortgo.InitializeEnvironment(ortgo.WithLogLevelError()); err != nil {
		return fmt.Errorf("%w: loading %s: %v; run `make ort` for a known-good copy", ErrNoLibrary, path, err)
	}
	envLoaded = path
	return nil
}

// Loaded returns the path of the loaded library and its ONNX Runtime version, or empty
// strings before Available succeeds.
func Loaded() (path, version string) {
	envMu.Lock()
	defer envMu.Unlock()
	if envLoaded == "" {
		return "", ""
	}
	return envLoaded, ortgo.GetVersion()
}

// Session is one loaded model. Run may be called from several goroutines at once;
// Close must not overlap a Run.
type Session struct {
	Info
	dims []onnx.Dim
	rt   *ortgo.DynamicAdvancedSession
}

// Open checks that model is a texgrid ONNX classifier (see package onnx) and loads it
// into an ONNX Runtime session that uses threads intra-op threads (threads <= 0: ORT's
// default, one per core). Bytes that are not ONNX give an error wrapping onnx.ErrNotONNX,
// an ONNX model of another interface one wrapping ErrBadModel.
func Open(model []byte, threads int) (*Session, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	info, dims, err := inspect(model)
	if err != nil {
		return nil, fmt.Errorf("ort: open model: %w", err)
	}
	opts, err := ortgo.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("ort: session options: %w", err)
	}
	defer opts.Destroy()
	if threads > 0 {
		if err := opts.SetIntraOpNumThreads(threads); err != nil {
			return nil, fmt.Errorf("ort: set %d threads: %w", threads, err)
		}
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		return nil, fmt.Errorf("ort: set inter-op threads: %w", err)
	}
	// ORT's pool threads spin while waiting for work by default. On a volunteer's
	// desktop, shared with other programs, that burns cycles others need, and here it was
	// slower too: tcnn-small, batch 32, 2 threads, 256 px on a loaded 2-core machine ran
	// 260-350 samples/s spinning and 380-580 without, alternating in one run.
	if err := opts.AddSessionConfigEntry("session.intra_op.allow_spinning", "0"); err != nil {
		return nil, fmt.Errorf("ort: disable spinning: %w", err)
	}
	rt, err := ortgo.NewDynamicAdvancedSessionWithONNXData(model,
		[]string{onnx.InputName}, []string{onnx.OutputName}, opts)
	if err != nil {
		return nil, fmt.Errorf("ort: ONNX Runtime rejected the model: %w", err)
	}
	return &Session{Info: info, dims: dims, rt: rt}, nil
}

// Run returns the logits [N, classes] for fragments x [N, C, S, S] (pixels scaled as
// onnx.PixelScaling says). A shape the model does not take gives ErrShape naming both.
func (s *Session) Run(x *tensor.Tensor) (*tensor.Tensor, error) {
	if s == nil || s.rt == nil {
		return nil, errors.New("ort: run on a closed session")
	}
	if err := checkInput(s.dims, x); err != nil {
		return nil, fmt.Errorf("ort: run: %w", err)
	}
	shape := make(ortgo.Shape, 4)
	for i, d := range x.Shape {
		shape[i] = int64(d)
	}
	in, err := ortgo.NewTensor(shape, x.Data)
	if err != nil {
		return nil, fmt.Errorf("ort: input tensor: %w", err)
	}
	defer in.Destroy()
	outs := []ortgo.Value{nil}
	err = s.rt.Run([]ortgo.Value{in}, outs)
	runtime.KeepAlive(x.Data) // ORT read it through a C pointer
	if err != nil {
		return nil, fmt.Errorf("ort: run %v: %w", x.Shape, err)
	}
	defer outs[0].Destroy()
	ot, ok := outs[0].(*ortgo.Tensor[float32])
	if !ok {
		return nil, fmt.Errorf("ort: output %q is %T, want a float32 tensor", onnx.OutputName, outs[0])
	}
	oshape := ot.GetShape()
	if len(oshape) != 2 || oshape[0] != int64(x.Shape[0]) {
		return nil, fmt.Errorf("ort: output %q has shape %v, want [%d, classes]", onnx.OutputName, oshape, x.Shape[0])
	}
	out := tensor.New(int(oshape[0]), int(oshape[1]))
	copy(out.Data, ot.GetData())
	return out, nil
}

// Close frees the session. It is safe to call twice.
func (s *Session) Close() error {
	if s == nil || s.rt == nil {
		return nil
	}
	err := s.rt.Destroy()
	s.rt = nil
	if err != nil {
		return fmt.Errorf("ort: close session: %w", err)
	}
	return nil
}

// missingLibrary is the error for a library file that does not exist.
func missingLibrary(path string, err error) error {
	return fmt.Errorf("%w: %s: %v; run `make ort` to fetch it, or point %s (or --ort-lib) at a libonnxruntime.so.1",
		ErrNoLibrary, path, errors.Unwrap(err), EnvLibrary)
}

// checkInput compares x with the model's input dimensions.
func checkInput(dims []onnx.Dim, x *tensor.Tensor) error {
	if x == nil {
		return fmt.Errorf("%w: no input tensor", ErrShape)
	}
	if len(x.Shape) != 4 {
		return fmt.Errorf("%w: fragments have shape %v, want [N,C,S,S] (model takes [%s])", ErrShape, x.Shape, dimString(dims))
	}
	if len(x.Data) != tensor.Numel(x.Shape) {
		return fmt.Errorf("%w: fragments have %d values for shape %v", ErrShape, len(x.Data), x.Shape)
	}
	if x.Shape[0] <= 0 {
		return fmt.Errorf("%w: empty batch %v", ErrShape, x.Shape)
	}
	what := [4]string{"batch", "channels", "height", "width"}
	for i := 1; i < 4; i++ {
		d := dims[i]
		if d.Param == "" && d.Value > 0 && int64(x.Shape[i]) != d.Value {
			return fmt.Errorf("%w: fragments are [%s] but the model takes [%s]: %s %d, want %d",
				ErrShape, intsString(x.Shape), dimString(dims), what[i], x.Shape[i], d.Value)
		}
	}
	return nil
}

func intsString(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}
