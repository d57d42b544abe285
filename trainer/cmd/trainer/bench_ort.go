package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/onnx"
	"github.com/texgrid/texgrid/trainer/ort"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

func init() {
	commands["bench-ort"] = command{summary: "measure ONNX Runtime inference speed on random data (one JSON line)", run: runBenchORT}
}

// benchORTResult is the line `trainer bench-ort` prints, with the field names of
// `trainer bench` so bench.sh can put the engines side by side.
type benchORTResult struct {
	Engine                string  `json:"engine"`
	ORTVersion            string  `json:"ort_version"`
	Model                 string  `json:"model"`
	Batch                 int     `json:"batch"`
	Threads               int     `json:"threads"`
	Size                  int     `json:"size"`
	Classes               int     `json:"classes"`
	InferSamplesPerS      float64 `json:"infer_samples_per_s"`
	InferGFLOPs           float64 `json:"infer_gflops"`
	ForwardGFLOPPerSample float64 `json:"forward_gflop_per_sample"`
	Batches               int     `json:"batches"`
	PeakRSSMB             float64 `json:"peak_rss_mb"`
}

func runBenchORT(ctx context.Context, args []string) error {
	return benchORT(ctx, args, os.Stdout)
}

// benchORT is bench-ort writing its JSON line to w.
func benchORT(ctx context.Context, args []string, w io.Writer) error {
	fs := flag.NewFlagSet("bench-ort", flag.ContinueOnError)
	fromSpec := fs.String("onnx-from-spec", "", "export this model spec (file or shipped name) with random weights and measure it")
	modelFile := fs.String("onnx", "", "measure this ONNX file instead")
	batch := fs.Int("batch", 32, "batch size")
	threads := fs.Int("threads", runtime.NumCPU(), "ONNX Runtime intra-op threads")
	size := fs.Int("size", 256, "fragment side in pixels (with --onnx-from-spec)")
	classes := fs.Int("classes", 6, "number of classes (with --onnx-from-spec)")
	seconds := fs.Float64("seconds", 10, "measuring time")
	ortLib := fs.String("ort-lib", "", "path to libonnxruntime.so.1 (default $"+ort.EnvLibrary+", then "+ort.DefaultLibrary+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*fromSpec == "") == (*modelFile == "") {
		return errors.New("give exactly one of --onnx-from-spec SPEC or --onnx FILE")
	}
	if *batch <= 0 || *seconds <= 0 {
		return fmt.Errorf("--batch %d and --seconds %v must be positive", *batch, *seconds)
	}
	if *ortLib != "" {
		ort.SetLibraryPath(*ortLib)
	}
	if err := ort.Available(); err != nil {
		return err
	}
	var model []byte
	var flops int64
	if *fromSpec != "" {
		sp, err := loadModelSpec(*fromSpec)
		if err != nil {
			return err
		}
		r, err := sp.Resolve(*classes, *size)
		if err != nil {
			return err
		}
		m, err := nn.New(r, 1)
		if err != nil {
			return err
		}
		names := make([]string, *classes)
		for i := range names {
			names[i] = "class" + strconv.Itoa(i)
		}
		if model, err = onnx.Export(r, m.Params(), names, nil); err != nil {
			return err
		}
		flops = r.FLOPs
	} else {
		var err error
		if model, err = os.ReadFile(*modelFile); err != nil {
			return err
		}
	}
	sess, err := ort.Open(model, *threads)
	if err != nil {
		return err
	}
	defer sess.Close()
	if sess.Size <= 0 || sess.Channels <= 0 {
		return errors.New("the model's input size is not fixed; bench-ort needs [N,C,S,S] with C and S known")
	}
	if flops == 0 {
		if flops, err = specFLOPs(sess); err != nil {
			return err
		}
	}
	x := tensor.New(*batch, sess.Channels, sess.Size, sess.Size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range x.Data {
		x.Data[i] = float32(rng.IntN(256))/255 - 0.5
	}
	for range 2 { // warm-up: first runs allocate and pick kernels
		if _, err := sess.Run(x); err != nil {
			return err
		}
	}
	n := 0
	start := time.Now()
	for time.Since(start).Seconds() < *seconds {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := sess.Run(x); err != nil {
			return err
		}
		n++
	}
	el := time.Since(start).Seconds()
	_, version := ort.Loaded()
	sps := float64(n**batch) / el
	res := benchORTResult{
		Engine: "onnxruntime", ORTVersion: version, Model: sess.Model, Batch: *batch, Threads: *threads,
		Size: sess.Size, Classes: len(sess.Classes), InferSamplesPerS: sps,
		InferGFLOPs: sps * float64(flops) / 1e9, ForwardGFLOPPerSample: float64(flops) / 1e9,
		Batches: n, PeakRSSMB: peakRSSMB(),
	}
	return json.NewEncoder(w).Encode(res)
}

// specFLOPs recomputes the forward cost from the spec a texgrid model carries.
func specFLOPs(sess *ort.Session) (int64, error) {
	js, ok := sess.Meta[onnx.MetaSpec]
	if !ok {
		return 0, fmt.Errorf("the model has no %s metadata, so its cost is unknown", onnx.MetaSpec)
	}
	sp, err := spec.Parse([]byte(js))
	if err != nil {
		return 0, err
	}
	r, err := sp.Resolve(len(sess.Classes), sess.Size)
	if err != nil {
		return 0, err
	}
	return r.FLOPs, nil
}
