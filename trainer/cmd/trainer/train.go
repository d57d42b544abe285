package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/gemm"
	"github.com/texgrid/texgrid/trainer/metrics"
	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/train"
)

func init() {
	commands["train"] = command{summary: "train a model on a <class>/<image> folder; writes weights and metrics", run: runTrain}
}

// trainFlags are the options of `trainer train`.
type trainFlags struct {
	data, model, out      string
	size, epochs, batch   int
	lr, lrDecay, momentum float64
	wd                    float64
	seed                  uint64
	threads, fragments    int
	testFraction          float64
	evalStride, evalBatch int
	progress              string
}

func parseTrainFlags(args []string) (*trainFlags, error) {
	f := &trainFlags{}
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.StringVar(&f.data, "data", "", "dataset folder: <class>/<image> (required)")
	fs.StringVar(&f.model, "model", "tcnn-small", "model spec file or shipped name")
	fs.StringVar(&f.out, "out", "", "output folder for weights.safetensors and metrics.json (required)")
	fs.IntVar(&f.size, "size", 256, "fragment side in pixels")
	fs.IntVar(&f.epochs, "epochs", 10, "epochs")
	fs.IntVar(&f.batch, "batch", 32, "batch size")
	fs.Float64Var(&f.lr, "lr", 0.01, "learning rate")
	fs.Float64Var(&f.lrDecay, "lr-decay", 0, "multiply the learning rate by this after every epoch (0: constant)")
	fs.Float64Var(&f.momentum, "momentum", 0.9, "SGD momentum")
	fs.Float64Var(&f.wd, "wd", 5e-4, "weight decay")
	fs.Uint64Var(&f.seed, "seed", 1, "seed for weights, fragments, shuffles and dropout")
	fs.IntVar(&f.threads, "threads", runtime.NumCPU(), "worker threads")
	fs.IntVar(&f.fragments, "fragments-per-epoch", 0, "random training fragments per epoch (default 10 per training image)")
	fs.Float64Var(&f.testFraction, "test-fraction", data.DefaultTestFraction, "share of images held out for testing (split by image identity)")
	fs.IntVar(&f.evalStride, "eval-stride", 0, "grid stride of the test fragments (default size/2)")
	fs.IntVar(&f.evalBatch, "eval-batch", 64, "batch size for evaluation")
	fs.StringVar(&f.progress, "progress", "auto", "progress display: auto (bar on a terminal), bar, log or none")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if f.data == "" || f.out == "" {
		return nil, errors.New("--data and --out are required")
	}
	if f.size <= 0 || f.fragments < 0 || f.evalStride < 0 || f.evalBatch <= 0 {
		return nil, errors.New("--size and --eval-batch must be positive, --fragments-per-epoch and --eval-stride not negative")
	}
	if f.evalStride == 0 {
		f.evalStride = max(1, f.size/2)
	}
	switch f.progress {
	case "auto", "bar", "log", "none":
	default:
		return nil, fmt.Errorf("--progress %q: want auto, bar, log or none", f.progress)
	}
	return f, nil
}

// epochFragments is the training Source of `trainer train`: each epoch draws fresh
// random fragments with data.SampleFragments, seeded by the run seed and the epoch.
type epochFragments struct {
	images []data.ImageRef
	grays  []*data.Gray
	count  int
	size   int
	seed   uint64
	cur    *data.FragmentSource
}

// epochSeed derives epoch e's fragment seed from the run seed (splitmix64 of both).
func epochSeed(seed uint64, e int) uint64 {
	z := seed ^ (uint64(e)+1)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

func (s *epochFragments) SetEpoch(e int) error {
	frags, err := data.SampleFragments(s.images, epochSeed(s.seed, e), s.count, s.size)
	if err != nil {
		return err
	}
	src, err := data.NewMemorySource(s.images, s.grays, frags)
	if err != nil {
		return err
	}
	s.cur = src
	return nil
}

func (s *epochFragments) Len() int { return s.count }

func (s *epochFragments) Sample(i int, dst []float32) (int, error) {
	if s.cur == nil {
		return 0, errors.New("epoch fragments: SetEpoch was not called")
	}
	return s.cur.Sample(i, dst)
}

// trainMetrics is metrics.json.
type trainMetrics struct {
	Model        string            `json:"model"`
	Spec         json.RawMessage   `json:"spec"`
	Data         string            `json:"data"`
	Classes      []string          `json:"classes"`
	Size         int               `json:"size"`
	Config       train.Config      `json:"config"`
	Fragments    int               `json:"fragments_per_epoch"`
	TestFraction float64           `json:"test_fraction"`
	EvalStride   int               `json:"eval_stride"`
	TrainImages  int               `json:"train_images"`
	TestImages   int               `json:"test_images"`
	Skipped      []data.Skip       `json:"skipped"`
	BLAS         string            `json:"blas"`
	Epochs       []epochLog        `json:"epochs"`
	TrainSeconds float64           `json:"train_seconds"`
	SamplesPerS  float64           `json:"train_samples_per_s"`
	Fragment     *metrics.Report   `json:"fragment_level"`
	Image        *metrics.Report   `json:"image_level"`
	TestLoss     float64           `json:"test_loss"`
	Weights      string            `json:"weights"`
	Meta         map[string]string `json:"weights_meta"`
}

type epochLog struct {
	Epoch    int     `json:"epoch"`
	LR       float64 `json:"lr"`
	Loss     float64 `json:"loss"`
	Accuracy float64 `json:"train_accuracy"`
	Seconds  float64 `json:"seconds"`
}

func runTrain(ctx context.Context, args []string) error {
	f, err := parseTrainFlags(args)
	if err != nil {
		return err
	}
	sp, err := loadModelSpec(f.model)
	if err != nil {
		return err
	}
	fo, err := data.ScanFolder(f.data, f.testFraction)
	if err != nil {
		return err
	}
	trainRefs, testRefs, tooSmall := fo.Eligible(f.size)
	skipped := append(append([]data.Skip(nil), fo.Skipped...), tooSmall...)
	for _, s := range skipped {
		fmt.Fprintf(os.Stderr, "skipped %s: %s\n", s.Path, s.Reason)
	}
	if len(trainRefs) == 0 || len(testRefs) == 0 {
		return fmt.Errorf("%s: %d training and %d test images of at least %dx%d pixels; need both", f.data, len(trainRefs), len(testRefs), f.size, f.size)
	}
	r, err := sp.Resolve(len(fo.Classes), f.size)
	if err != nil {
		return err
	}
	m, err := nn.New(r, f.seed)
	if err != nil {
		return err
	}
	trainGrays, err := fo.Load(trainRefs)
	if err != nil {
		return err
	}
	count := f.fragments
	if count == 0 {
		count = 10 * len(trainRefs)
	}
	src := &epochFragments{images: trainRefs, grays: trainGrays, count: count, size: f.size, seed: f.seed}
	cfg := train.Config{Epochs: f.epochs, BatchSize: f.batch, LR: f.lr, LRDecay: f.lrDecay, Momentum: f.momentum, WeightDecay: f.wd, Seed: f.seed, Threads: f.threads}
	run, err := train.NewRun(m, src, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "training %s on %s: %d classes, %d train / %d test images, %d fragments of %d px per epoch, %d epochs, blas %s, %d threads\n",
		sp.Name, fo.Dir, len(fo.Classes), len(trainRefs), len(testRefs), count, f.size, f.epochs, gemm.Backend(), f.threads)

	rep := newReporter(f.progress, f.epochs*((count+f.batch-1)/f.batch))
	res := &trainMetrics{
		Model: sp.Name, Spec: sp.JSON(), Data: fo.Dir, Classes: fo.Classes, Size: f.size, Config: cfg, Fragments: count,
		TestFraction: f.testFraction, EvalStride: f.evalStride, TrainImages: len(trainRefs), TestImages: len(testRefs),
		Skipped: skipped, BLAS: gemm.Backend(),
	}
	start, epochStart := time.Now(), time.Now()
	var loss float64
	var correct, seen, total int
	for !run.Done() {
		info, err := run.Step(ctx)
		if err != nil {
			return err
		}
		loss += info.Loss * float64(info.Samples)
		correct += info.Correct
		seen += info.Samples
		total += info.Samples
		rep.step(info, loss/float64(seen), float64(correct)/float64(seen))
		if run.Epoch() != info.Epoch || info.Done {
			e := epochLog{Epoch: info.Epoch, LR: cfg.EpochLR(info.Epoch), Loss: loss / float64(seen), Accuracy: float64(correct) / float64(seen), Seconds: time.Since(epochStart).Seconds()}
			res.Epochs = append(res.Epochs, e)
			rep.epoch(e, f.epochs)
			loss, correct, seen, epochStart = 0, 0, 0, time.Now()
		}
	}
	rep.finish()
	res.TrainSeconds = time.Since(start).Seconds()
	res.SamplesPerS = float64(total) / res.TrainSeconds

	if err := os.MkdirAll(f.out, 0o755); err != nil {
		return err
	}
	meta := map[string]string{"model": sp.Name, "classes": mustJSON(fo.Classes), "size": strconv.Itoa(f.size), "spec": string(sp.JSON())}
	res.Weights = filepath.Join(f.out, "weights.safetensors")
	res.Meta = meta
	if err := safetensors.WriteFile(res.Weights, m.Params(), safetensors.F32, meta); err != nil {
		return err
	}

	testGrays, err := fo.Load(testRefs)
	if err != nil {
		return err
	}
	var ev evalReport
	if err := scoreImages(ctx, &goEval{m: m, threads: f.threads}, r, fo.Classes, testRefs, testGrays, f.evalStride, f.evalBatch, &ev); err != nil {
		return err
	}
	res.Fragment, res.Image, res.TestLoss = ev.Fragment, ev.Image, ev.Loss
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(filepath.Join(f.out, "metrics.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "test: fragment accuracy %.4f (%d fragments), image accuracy %.4f (%d images), macro-F1 %.4f; wrote %s and metrics.json\n",
		ev.Fragment.Accuracy, ev.Fragment.Samples, ev.Image.Accuracy, ev.Image.Samples, ev.Image.MacroF1, res.Weights)
	return nil
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// reporter shows training progress: a bar on a terminal, log lines otherwise.
type reporter struct {
	bar     *progressbar.ProgressBar
	log     io.Writer
	lastLog time.Time
	batches int
	done    int
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func newReporter(mode string, batches int) *reporter {
	rp := &reporter{batches: batches, lastLog: time.Now()}
	if mode == "auto" {
		mode = "log"
		if isTerminal(os.Stderr) {
			mode = "bar"
		}
	}
	switch mode {
	case "bar":
		rp.bar = progressbar.NewOptions(batches, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetDescription("training"),
			progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionFullWidth())
	case "log":
		rp.log = os.Stderr
	}
	return rp
}

func (rp *reporter) step(info train.StepInfo, loss, acc float64) {
	rp.done++
	if rp.bar != nil {
		rp.bar.Describe(fmt.Sprintf("epoch %d loss %.3f acc %.3f", info.Epoch+1, loss, acc))
		rp.bar.Add(1)
	}
	if rp.log != nil && time.Since(rp.lastLog) > 10*time.Second {
		fmt.Fprintf(rp.log, "epoch %d batch %d: %d/%d batches, loss %.4f, accuracy %.4f\n", info.Epoch+1, info.Batch+1, rp.done, rp.batches, loss, acc)
		rp.lastLog = time.Now()
	}
}

func (rp *reporter) epoch(e epochLog, epochs int) {
	line := fmt.Sprintf("epoch %d/%d: lr %.3g, loss %.4f, train accuracy %.4f, %.1f s", e.Epoch+1, epochs, e.LR, e.Loss, e.Accuracy, e.Seconds)
	if rp.bar != nil {
		rp.bar.Clear()
		fmt.Fprintln(os.Stderr, line)
		return
	}
	if rp.log != nil {
		fmt.Fprintln(rp.log, line)
	}
}

func (rp *reporter) finish() {
	if rp.bar != nil {
		rp.bar.Finish()
		fmt.Fprintln(os.Stderr)
	}
}
