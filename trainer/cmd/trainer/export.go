package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/onnx"
	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/spec"
)

func init() {
	commands["export"] = command{summary: "write trained weights as an ONNX model", run: runExport}
}

// metaFlags collects repeated --meta key=value flags.
type metaFlags map[string]string

func (m metaFlags) String() string { return fmt.Sprint(map[string]string(m)) }

func (m metaFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	m[k] = v
	return nil
}

func runExport(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	model := fs.String("model", "", "model spec file or shipped name (default: the spec stored in the weights' metadata)")
	weights := fs.String("weights", "", "trained weights (safetensors, F32 or F16)")
	classList := fs.String("classes", "", "class names in logit order, comma separated (default: the weights' metadata)")
	classesFrom := fs.String("classes-from", "", "dataset folder whose class sub-folders (sorted) name the classes")
	size := fs.Int("size", 0, "fragment side in pixels the model takes (default: the weights' metadata, else 256)")
	out := fs.String("o", "", "output ONNX file")
	meta := metaFlags{}
	fs.Var(meta, "meta", "extra metadata_props entry key=value (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: trainer export [--model SPEC] --weights W.safetensors [--classes a,b,c | --classes-from DIR] [--size S] -o model.onnx\n\n"+
			"Model, classes and size default to what `trainer train` stored in the weights' metadata.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *weights == "" || *out == "" {
		return errors.New("--weights and -o are required")
	}
	if *size < 0 {
		return fmt.Errorf("--size %d is negative", *size)
	}
	f, err := safetensors.ReadFile(*weights, safetensors.Options{RequireFinite: true})
	if err != nil {
		return err
	}
	classes, err := exportClasses(*classList, *classesFrom, f.Meta)
	if err != nil {
		return err
	}
	sp, err := exportSpec(*model, f.Meta)
	if err != nil {
		return err
	}
	if *size == 0 {
		*size = 256
		if s, err := strconv.Atoi(f.Meta["size"]); err == nil && s > 0 {
			*size = s
		}
	}
	r, err := sp.Resolve(len(classes), *size)
	if err != nil {
		return err
	}
	b, err := onnx.Export(r, f.Tensors, classes, meta)
	if err != nil {
		return fmt.Errorf("%s for %s with %d classes at %d px: %w", *weights, sp.Name, len(classes), *size, err)
	}
	if err := writeFileAtomic(*out, b); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s: %s, %d classes, %dx%d input, %.1f MB\n", *out, sp.Name, len(classes), *size, *size, float64(len(b))/1e6)
	return nil
}

// exportSpec returns the --model spec, else the spec `trainer train` stored in the
// weights' metadata ("spec", then "model" by name).
func exportSpec(model string, meta map[string]string) (*spec.Spec, error) {
	if model != "" {
		return loadModelSpec(model)
	}
	if js, ok := meta["spec"]; ok {
		sp, err := spec.Parse([]byte(js))
		if err != nil {
			return nil, fmt.Errorf("the weights' metadata spec: %w", err)
		}
		return sp, nil
	}
	if name, ok := meta["model"]; ok {
		return loadModelSpec(name)
	}
	return nil, errors.New("--model is required: the weights' metadata names no model")
}

// exportClasses returns the class names from --classes or --classes-from (at most one),
// else from the weights' metadata "classes" (a JSON list).
func exportClasses(list, from string, meta map[string]string) ([]string, error) {
	switch {
	case list != "" && from != "":
		return nil, errors.New("give --classes or --classes-from, not both")
	case list != "":
		var cs []string
		for _, c := range strings.Split(list, ",") {
			cs = append(cs, strings.TrimSpace(c))
		}
		return cs, nil
	case from != "":
		fo, err := data.ScanFolder(from, data.DefaultTestFraction)
		if err != nil {
			return nil, fmt.Errorf("--classes-from: %w", err)
		}
		return fo.Classes, nil
	}
	if js, ok := meta["classes"]; ok {
		var cs []string
		if err := json.Unmarshal([]byte(js), &cs); err != nil {
			return nil, fmt.Errorf("the weights' metadata classes: %w", err)
		}
		return cs, nil
	}
	return nil, errors.New("the class names are required: --classes a,b,c or --classes-from DATASET_DIR (the weights' metadata has none)")
}

// writeFileAtomic writes b to path through a temporary file in the same directory, so a
// reader never sees a half-written model.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
