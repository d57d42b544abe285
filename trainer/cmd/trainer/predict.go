package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"

	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/onnx"
	"github.com/texgrid/texgrid/trainer/ort"
	"github.com/texgrid/texgrid/trainer/tensor"
)

func init() {
	commands["predict"] = command{summary: "classify images with an ONNX model through ONNX Runtime", run: runPredict}
}

// prediction is one line of `trainer predict --json`.
type prediction struct {
	Image     string             `json:"image"`
	Class     string             `json:"class,omitempty"`
	Prob      float32            `json:"prob,omitempty"`
	Probs     map[string]float32 `json:"probs,omitempty"`
	Fragments int                `json:"fragments,omitempty"`
	Error     string             `json:"error,omitempty"`
}

func runPredict(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("predict", flag.ContinueOnError)
	model := fs.String("onnx", "", "ONNX model written by `trainer export`")
	size := fs.Int("size", 0, "fragment side in pixels (default: the model's input size)")
	stride := fs.Int("stride", 0, "grid step between fragments (default: the fragment size)")
	threads := fs.Int("threads", runtime.NumCPU(), "inference threads")
	engine := fs.String("engine", engineAuto, "onnxruntime, go, or auto (ONNX Runtime when its library loads, else the Go engine)")
	ortLib := fs.String("ort-lib", "", "path to libonnxruntime.so.1 (default $"+ort.EnvLibrary+", then "+ort.DefaultLibrary+")")
	asJSON := fs.Bool("json", false, "print one JSON object per image with every class probability")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: trainer predict --onnx model.onnx [--size S] [--stride S] IMAGE...\n\nprints: IMAGE<TAB>CLASS<TAB>PROBABILITY, the mean of the fragment probabilities")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *model == "" {
		return errors.New("--onnx is required")
	}
	if fs.NArg() == 0 {
		return errors.New("no images given")
	}
	if *ortLib != "" {
		ort.SetLibraryPath(*ortLib)
	}
	b, err := os.ReadFile(*model)
	if err != nil {
		return err
	}
	c, err := openClassifier(b, *engine, *threads, os.Stderr)
	if err != nil {
		return fmt.Errorf("%s: %w", *model, err)
	}
	defer c.Close()
	if *size != 0 && *size != c.size {
		return fmt.Errorf("%s takes %d px fragments; --size %d cannot be used with it", *model, c.size, *size)
	}
	failed := predictImages(ctx, c, fs.Args(), *stride, *asJSON, os.Stdout, os.Stderr)
	if failed > 0 {
		return fmt.Errorf("%d of %d images could not be classified", failed, fs.NArg())
	}
	return nil
}

// Engines a classifier can run on.
const (
	engineAuto = "auto"
	engineORT  = "onnxruntime"
	engineGo   = "go"
)

// classifier is an exported model ready to classify: on ONNX Runtime, or on the Go
// engine rebuilt from the spec and weights the ONNX file carries.
type classifier struct {
	ort.Runner
	engine  string
	classes []string
	size    int
	close   func() error
}

// Close frees the ONNX Runtime session, if any.
func (c *classifier) Close() error { return c.close() }

// goEngineRunner runs the Go engine behind ort.Runner.
type goEngineRunner struct {
	m       *nn.Model
	threads int
}

func (g goEngineRunner) Run(x *tensor.Tensor) (*tensor.Tensor, error) { return g.m.Infer(x, g.threads) }

// openClassifier loads an exported model on the chosen engine. With engineAuto a
// missing ONNX Runtime is reported on notes and the Go engine serves instead.
func openClassifier(model []byte, engine string, threads int, notes io.Writer) (*classifier, error) {
	switch engine {
	case engineORT, engineAuto:
		err := ort.Available()
		if err == nil {
			s, err := ort.Open(model, threads)
			if err != nil {
				return nil, err
			}
			if s.Size <= 0 || s.Channels != 1 {
				s.Close()
				return nil, fmt.Errorf("%w: the model takes [%d channels, %d px]; texgrid classifies grey fragments of a fixed size", ort.ErrBadModel, s.Channels, s.Size)
			}
			return &classifier{Runner: s, engine: engineORT, classes: s.Classes, size: s.Size, close: s.Close}, nil
		}
		if engine == engineORT {
			return nil, err
		}
		fmt.Fprintf(notes, "note: %v\nnote: using the Go engine instead\n", err)
	case engineGo:
	default:
		return nil, fmt.Errorf("unknown engine %q: want %s, %s or %s", engine, engineORT, engineGo, engineAuto)
	}
	m, err := onnx.Decode(model)
	if err != nil {
		return nil, err
	}
	r, params, classes, err := m.Network()
	if err != nil {
		return nil, fmt.Errorf("the Go engine needs a model exported by texgrid: %w", err)
	}
	if r.In[0].C != 1 {
		return nil, fmt.Errorf("%w: the model takes %d channels; texgrid classifies grey fragments", ort.ErrBadModel, r.In[0].C)
	}
	net, err := nn.New(r, 0)
	if err != nil {
		return nil, err
	}
	if err := net.SetParams(params); err != nil {
		return nil, err
	}
	return &classifier{Runner: goEngineRunner{m: net, threads: max(threads, 1)}, engine: engineGo, classes: classes, size: r.Size,
		close: func() error { return nil }}, nil
}

// predictImages classifies each image and prints a line for it; an image that fails is
// reported on errw (or as a JSON error line) and the others still print. It returns
// how many failed.
func predictImages(ctx context.Context, c *classifier, paths []string, stride int, asJSON bool, w, errw io.Writer) int {
	enc := json.NewEncoder(w)
	failed := 0
	for _, path := range paths {
		if ctx.Err() != nil {
			fmt.Fprintf(errw, "%s: %v\n", path, ctx.Err())
			failed++
			continue
		}
		p, err := predictOne(c, path, stride)
		if err != nil {
			failed++
			if asJSON {
				enc.Encode(prediction{Image: path, Error: err.Error()})
			} else {
				fmt.Fprintf(errw, "%s: %v\n", path, err)
			}
			continue
		}
		if asJSON {
			enc.Encode(p)
		} else {
			fmt.Fprintf(w, "%s\t%s\t%.4f\n", p.Image, p.Class, p.Prob)
		}
	}
	return failed
}

func predictOne(c *classifier, path string, stride int) (prediction, error) {
	g, err := data.LoadGray(path)
	if err != nil {
		return prediction{}, err
	}
	p, err := ort.Classify(c, g, c.size, stride)
	if err != nil {
		return prediction{}, err
	}
	name := func(i int) string {
		if i < len(c.classes) {
			return c.classes[i]
		}
		return strconv.Itoa(i)
	}
	out := prediction{Image: path, Class: name(p.Class), Prob: p.Prob, Probs: map[string]float32{}, Fragments: p.Fragments}
	for i, v := range p.Probs {
		out.Probs[name(i)] = v
	}
	return out, nil
}
