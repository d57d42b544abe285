package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/metrics"
	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

func init() {
	commands["eval"] = command{summary: "evaluate trained weights on a <class>/<image> folder (fragment and image level)", run: runEval}
}

// evalRunner computes logits [N, classes] for fragments [N, C, S, S].
type evalRunner interface {
	Run(x *tensor.Tensor) (*tensor.Tensor, error)
	Close() error
}

// evalEngine opens an inference engine for `trainer eval` from a resolved spec, its
// trained weights (spec order) and the class names.
type evalEngine func(r *spec.Resolved, params []tensor.Named, classes []string, threads int) (evalRunner, error)

// evalEngines are the engines `trainer eval --engine` accepts. Other files add theirs
// in init (the ONNX Runtime one registers "onnxruntime").
var evalEngines = map[string]evalEngine{"go": openGoEval}

// goEval runs the Go engine.
type goEval struct {
	m       *nn.Model
	threads int
}

func (g *goEval) Run(x *tensor.Tensor) (*tensor.Tensor, error) { return g.m.Infer(x, g.threads) }
func (g *goEval) Close() error                                 { return nil }

func openGoEval(r *spec.Resolved, params []tensor.Named, _ []string, threads int) (evalRunner, error) {
	m, err := nn.New(r, 0)
	if err != nil {
		return nil, err
	}
	if err := m.SetParams(params); err != nil {
		return nil, err
	}
	return &goEval{m: m, threads: threads}, nil
}

// evalReport is what `trainer eval` prints (and writes with --out).
type evalReport struct {
	Model      string          `json:"model"`
	Engine     string          `json:"engine"`
	Weights    string          `json:"weights"`
	Data       string          `json:"data"`
	Split      string          `json:"split"`
	Size       int             `json:"size"`
	EvalStride int             `json:"eval_stride"`
	Images     int             `json:"images"`
	Skipped    []data.Skip     `json:"skipped"`
	Fragment   *metrics.Report `json:"fragment_level"`
	Image      *metrics.Report `json:"image_level"`
	Loss       float64         `json:"fragment_loss"`
}

func runEval(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	dataDir := fs.String("data", "", "dataset folder: <class>/<image> (required)")
	model := fs.String("model", "", "model spec file or shipped name (default: the weights' metadata)")
	weights := fs.String("weights", "", "weights.safetensors (required)")
	size := fs.Int("size", 0, "fragment side in pixels (default: the weights' metadata, else 256)")
	split := fs.String("split", "test", "images to evaluate: test, train or all")
	testFraction := fs.Float64("test-fraction", data.DefaultTestFraction, "share of images held out, as in training")
	stride := fs.Int("eval-stride", 0, "grid stride of the fragments (default size/2)")
	batch := fs.Int("batch", 64, "fragments per inference call")
	threads := fs.Int("threads", runtime.NumCPU(), "threads")
	engine := fs.String("engine", "go", "inference engine: "+strings.Join(engineNames(), ", "))
	out := fs.String("out", "", "also write the JSON report to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dataDir == "" || *weights == "" {
		return errors.New("--data and --weights are required")
	}
	open, ok := evalEngines[*engine]
	if !ok {
		return fmt.Errorf("--engine %q: have %s", *engine, strings.Join(engineNames(), ", "))
	}
	if *split != "test" && *split != "train" && *split != "all" {
		return fmt.Errorf("--split %q: want test, train or all", *split)
	}
	if *batch <= 0 || *threads <= 0 || *stride < 0 {
		return errors.New("--batch and --threads must be positive and --eval-stride not negative")
	}
	f, err := safetensors.ReadFile(*weights, safetensors.Options{RequireFinite: true})
	if err != nil {
		return err
	}
	if *model == "" {
		*model = f.Meta["model"]
	}
	sp, err := loadModelSpec(*model)
	if err != nil {
		return err
	}
	if *size == 0 {
		*size = 256
		if s, err := strconv.Atoi(f.Meta["size"]); err == nil && s > 0 {
			*size = s
		}
	}
	if *stride == 0 {
		*stride = max(1, *size/2)
	}
	fo, err := data.ScanFolder(*dataDir, *testFraction)
	if err != nil {
		return err
	}
	if cj, ok := f.Meta["classes"]; ok {
		var want []string
		if err := json.Unmarshal([]byte(cj), &want); err == nil && strings.Join(want, "\x00") != strings.Join(fo.Classes, "\x00") {
			return fmt.Errorf("the weights were trained on classes %v but %s has %v", want, fo.Dir, fo.Classes)
		}
	}
	r, err := sp.Resolve(len(fo.Classes), *size)
	if err != nil {
		return err
	}
	params, err := inSpecOrder(r, f.Tensors)
	if err != nil {
		return fmt.Errorf("%s: %w", *weights, err)
	}
	runner, err := open(r, params, fo.Classes, *threads)
	if err != nil {
		return err
	}
	defer runner.Close()

	trainRefs, testRefs, tooSmall := fo.Eligible(*size)
	refs := testRefs
	switch *split {
	case "train":
		refs = trainRefs
	case "all":
		refs = append(append([]data.ImageRef(nil), trainRefs...), testRefs...)
		sort.Slice(refs, func(i, j int) bool { return refs[i].Key < refs[j].Key })
	}
	if len(refs) == 0 {
		return fmt.Errorf("%s: no %s images of at least %dx%d pixels", fo.Dir, *split, *size, *size)
	}
	grays, err := fo.Load(refs)
	if err != nil {
		return err
	}
	rep := &evalReport{Model: sp.Name, Engine: *engine, Weights: *weights, Data: fo.Dir, Split: *split, Size: *size,
		EvalStride: *stride, Images: len(refs), Skipped: append(append([]data.Skip(nil), fo.Skipped...), tooSmall...)}
	if err := scoreImages(ctx, runner, r, fo.Classes, refs, grays, *stride, *batch, rep); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	fmt.Println(string(b))
	if *out != "" {
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "%s on %d %s images: fragment accuracy %.4f, image accuracy %.4f, macro-F1 %.4f\n",
		*engine, len(refs), *split, rep.Fragment.Accuracy, rep.Image.Accuracy, rep.Image.MacroF1)
	return nil
}

func engineNames() []string {
	var names []string
	for n := range evalEngines {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// inSpecOrder returns the tensors in the spec's parameter order, requiring exactly
// the spec's names and shapes.
func inSpecOrder(r *spec.Resolved, ts []tensor.Named) ([]tensor.Named, error) {
	if len(ts) != len(r.Params) {
		return nil, fmt.Errorf("%d tensors, model %s has %d", len(ts), r.Spec.Name, len(r.Params))
	}
	out := make([]tensor.Named, len(r.Params))
	for i, p := range r.Params {
		t := tensor.Find(ts, p.Name)
		if t == nil {
			return nil, fmt.Errorf("tensor %s is missing", p.Name)
		}
		if !tensor.SameShape(t.Shape, p.Shape) {
			return nil, fmt.Errorf("tensor %s has shape %v, model %s wants %v", p.Name, t.Shape, r.Spec.Name, p.Shape)
		}
		out[i] = tensor.Named{Name: p.Name, T: t}
	}
	return out, nil
}

// scoreImages runs every grid fragment of every image through runner in batches and
// fills rep's fragment- and image-level reports.
func scoreImages(ctx context.Context, runner evalRunner, r *spec.Resolved, classes []string, refs []data.ImageRef, grays []*data.Gray, stride, batch int, rep *evalReport) error {
	var frags []data.Fragment
	for i, im := range refs {
		frags = append(frags, data.GridFragments(i, im.Width, im.Height, r.Size, stride)...)
	}
	src, err := data.NewMemorySource(refs, grays, frags)
	if err != nil {
		return err
	}
	nc := len(classes)
	per := r.In[0].Size()
	probs := make([]float32, len(frags)*nc)
	labels := make([]int, len(frags))
	imageOf := make([]int, len(frags))
	var loss float64
	for lo := 0; lo < len(frags); lo += batch {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(batch, len(frags)-lo)
		x := tensor.New(n, r.In[0].C, r.Size, r.Size)
		for k := 0; k < n; k++ {
			y, err := src.Sample(lo+k, x.Data[k*per:(k+1)*per])
			if err != nil {
				return err
			}
			labels[lo+k], imageOf[lo+k] = y, frags[lo+k].Image
		}
		logits, err := runner.Run(x)
		if err != nil {
			return err
		}
		if len(logits.Data) != n*nc {
			return fmt.Errorf("engine returned %v logits for %d fragments of %d classes", logits.Shape, n, nc)
		}
		for k := 0; k < n; k++ {
			loss += softmaxInto(logits.Data[k*nc:(k+1)*nc], probs[(lo+k)*nc:(lo+k+1)*nc], labels[lo+k])
		}
	}
	fc, err := metrics.FromProbs(probs, nc, labels)
	if err != nil {
		return err
	}
	if rep.Fragment, err = fc.Report(classes); err != nil {
		return err
	}
	byImage, err := metrics.ByImage(probs, nc, imageOf)
	if err != nil {
		return err
	}
	labelOf := make([]int, len(refs))
	for i, im := range refs {
		labelOf[i] = im.Class
	}
	ic, err := metrics.ImageConfusion(byImage, nc, labelOf)
	if err != nil {
		return err
	}
	rep.Image, err = ic.Report(classes)
	rep.Loss = loss / float64(len(frags))
	return err
}

// softmaxInto writes the softmax of logits into p and returns the cross-entropy
// against label.
func softmaxInto(logits, p []float32, label int) float64 {
	mx := logits[0]
	for _, v := range logits {
		mx = max(mx, v)
	}
	var sum float64
	for j, v := range logits {
		e := math.Exp(float64(v - mx))
		p[j] = float32(e)
		sum += e
	}
	for j := range p {
		p[j] = float32(float64(p[j]) / sum)
	}
	return math.Log(sum) - float64(logits[label]-mx)
}
