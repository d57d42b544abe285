package grid

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/synth"
)

// DemoOptions configures RunDemo. Zero values take the defaults in brackets.
type DemoOptions struct {
	BinDir     string
	WorkDir    string // wiped and recreated [./demo-run]
	Data       string // a <class>/<image> folder; empty = generate a synthetic texture set
	Dataset    string // the dataset's name on the FTP store [the folder's name, or "synthetic"]
	Model      string // [tcnn-small]
	Size       int    // fragment side in pixels [128]
	Volunteers int    // [4]
	Rounds     int    // [8]
	Quorum     float64
	Epochs     int     // epochs per work unit [1]
	LR         float64 // [0.01]
	LRDecay    float64 // per round [0.85]; 1 keeps the rate constant
	FragMin    int     // [4500]
	FragMax    int     // [6000]
	Seed       uint64  // campaign seed [1]
	Upload     string  // scripted-upload method [lftp when installed, else dataset-ftp]
	Timeout    time.Duration
	// KeepServing keeps the grid (and so the web UI) up this long after the campaign
	// ends, or until ctx ends (Ctrl-C), so a person can look at the finished campaign.
	KeepServing time.Duration
	Out         io.Writer
}

func (o *DemoOptions) defaults() {
	if o.WorkDir == "" {
		o.WorkDir = "demo-run"
	}
	if o.Model == "" {
		o.Model = "tcnn-small"
	}
	if o.Size == 0 {
		o.Size = 128
	}
	if o.Volunteers == 0 {
		o.Volunteers = 4
	}
	if o.Rounds == 0 {
		o.Rounds = 8
	}
	if o.Quorum == 0 {
		o.Quorum = 0.75
	}
	if o.Epochs == 0 {
		o.Epochs = 1
	}
	if o.LR == 0 {
		o.LR = 0.01
	}
	if o.LRDecay == 0 {
		o.LRDecay = 0.85
	}
	if o.FragMin == 0 {
		o.FragMin = 4500
	}
	if o.FragMax == 0 {
		o.FragMax = 6000
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Upload == "" {
		o.Upload = UploadDatasetFTP
		if _, err := exec.LookPath("lftp"); err == nil {
			o.Upload = UploadLFTP
		}
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Minute
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
}

// DemoResult is what a demo run leaves behind, also written to summary.json.
type DemoResult struct {
	Dataset      string               `json:"dataset"`
	Images       int                  `json:"images"`
	Classes      []string             `json:"classes"`
	Campaign     protocol.Campaign    `json:"campaign"`
	Rounds       []protocol.RoundInfo `json:"rounds"`
	Samples      int64                `json:"samples_trained"`
	WallSeconds  float64              `json:"wall_seconds"`
	Weights      string               `json:"weights"`
	ONNX         string               `json:"onnx,omitempty"`
	Metrics      string               `json:"metrics"`
	ONNXErr      string               `json:"onnx_error,omitempty"`
	FinalImage   float64              `json:"final_image_accuracy"`
	FinalFragAcc float64              `json:"final_fragment_accuracy"`
}

// RunDemo starts a grid, uploads a dataset, runs a campaign with volunteers to the end
// while printing each round, and writes the final model and its metrics.
func RunDemo(ctx context.Context, o DemoOptions) (*DemoResult, error) {
	o.defaults()
	start := time.Now()
	work, err := filepath.Abs(o.WorkDir)
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(work); err != nil {
		return nil, err
	}
	out := o.Out
	data := o.Data
	if data == "" {
		data = filepath.Join(work, "synthetic")
		if o.Dataset == "" {
			o.Dataset = "synthetic"
		}
		fmt.Fprintf(out, "generating a synthetic texture dataset (6 families x 40 images, 192 px) in %s\n", data)
		if err := synth.Generate(data, 6, 40, 192, o.Seed); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
	} else if data, err = filepath.Abs(data); err != nil {
		return nil, err
	}
	if o.Dataset == "" {
		o.Dataset = filepath.Base(data)
	}
	g, err := Start(ctx, Options{BinDir: o.BinDir, WorkDir: work, Upload: o.Upload, Log: out})
	if err != nil {
		return nil, err
	}
	defer g.Close()
	fmt.Fprintf(out, "web UI:        %s/campaigns  (sign in as %q with password %s)\n", g.ServerURL, g.Researcher, g.Password)
	fmt.Fprintf(out, "uploading %s as dataset %q with %s\n", data, o.Dataset, o.Upload)
	m, err := g.UploadDataset(ctx, data, o.Dataset)
	if err != nil {
		return nil, err
	}
	camp, err := g.CreateCampaign(ctx, protocol.CampaignSpec{
		Name: "demo", Dataset: o.Dataset, Model: o.Model, FragmentSize: o.Size,
		FragmentsMin: o.FragMin, FragmentsMax: o.FragMax,
		Hyper:  protocol.Hyper{Epochs: o.Epochs, BatchSize: 32, LearningRate: o.LR, LRDecay: o.LRDecay, Momentum: 0.9},
		Quorum: o.Quorum, WorkUnitsPerRound: o.Volunteers, Rounds: o.Rounds,
		WUDeadline: protocol.Duration(10 * time.Minute), Seed: o.Seed, Start: true,
	})
	if err != nil {
		return nil, fmt.Errorf("demo: create campaign: %w", err)
	}
	fmt.Fprintf(out, "campaign %d: %s on %s, %d px fragments, %d-%d per work unit, %d work units a round, quorum %.2f, %d rounds\n",
		camp.ID, o.Model, o.Dataset, o.Size, o.FragMin, o.FragMax, o.Volunteers, o.Quorum, o.Rounds)
	for i := 0; i < o.Volunteers; i++ {
		if _, err := g.AddVolunteer(ctx, VolunteerOptions{}); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(out, "%d volunteers attached; logs in %s\n\n", o.Volunteers, filepath.Join(work, "logs"))
	fmt.Fprintf(out, "%5s  %9s  %9s  %8s  %4s  %8s  %8s\n", "round", "img acc", "frag acc", "accepted", "late", "samples", "time")
	prev := start
	camp, err = g.WaitCampaign(ctx, camp.ID, o.Timeout, func(r protocol.RoundInfo) {
		end := time.Now()
		if r.ClosedAt != nil {
			end = *r.ClosedAt
		}
		img, frag := "-", "-"
		if r.Metrics != nil {
			img = fmt.Sprintf("%.1f%%", 100*r.Metrics.ImageAccuracy)
			frag = fmt.Sprintf("%.1f%%", 100*r.Metrics.FragmentAccuracy)
		}
		fmt.Fprintf(out, "%5d  %9s  %9s  %8d  %4d  %8d  %7.1fs\n", r.Round, img, frag, r.Accepted, r.Late, r.SamplesTrained, end.Sub(prev).Seconds())
		prev = end
	})
	if err != nil {
		return nil, err
	}
	rounds, err := g.Rounds(ctx, camp.ID)
	if err != nil {
		return nil, err
	}
	res := &DemoResult{Dataset: o.Dataset, Images: len(m.Images), Classes: m.Classes, Campaign: camp, Rounds: rounds,
		WallSeconds: time.Since(start).Seconds()}
	for _, r := range rounds {
		res.Samples += r.SamplesTrained
		if r.Metrics != nil {
			res.FinalImage, res.FinalFragAcc = r.Metrics.ImageAccuracy, r.Metrics.FragmentAccuracy
		}
	}
	if err := g.writeFinal(ctx, work, o, camp, rounds, res); err != nil {
		return nil, err
	}
	if err := writeJSON(filepath.Join(work, "summary.json"), res, 0o644); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "\ncampaign %s after %d rounds: image accuracy %.1f%%, fragment accuracy %.1f%%, %d samples trained, %.0fs wall\n",
		camp.State, len(rounds), 100*res.FinalImage, 100*res.FinalFragAcc, res.Samples, res.WallSeconds)
	fmt.Fprintf(out, "final model:   %s\n", res.Weights)
	if res.ONNX != "" {
		fmt.Fprintf(out, "ONNX model:    %s\n", res.ONNX)
	} else {
		fmt.Fprintf(out, "ONNX model:    not written: %s\n", res.ONNXErr)
	}
	fmt.Fprintf(out, "metrics:       %s\nsummary:       %s\n", res.Metrics, filepath.Join(work, "summary.json"))
	if o.KeepServing > 0 {
		fmt.Fprintf(out, "\nweb UI:        %s/campaigns/%d  (sign in as %q with password %s)\nserving for %s; Ctrl-C stops sooner\n",
			g.ServerURL, camp.ID, g.Researcher, g.Password, o.KeepServing)
		select {
		case <-ctx.Done():
		case <-time.After(o.KeepServing):
		}
	}
	return res, nil
}

// writeFinal downloads the newest global model, exports it to ONNX and writes the last
// round's metrics.
func (g *Grid) writeFinal(ctx context.Context, work string, o DemoOptions, camp protocol.Campaign, rounds []protocol.RoundInfo, res *DemoResult) error {
	res.Weights = filepath.Join(work, "final.safetensors")
	if err := g.Blob(ctx, camp.ModelSHA256, res.Weights); err != nil {
		return err
	}
	var last *protocol.Metrics
	for _, r := range rounds {
		if r.Metrics != nil {
			last = r.Metrics
		}
	}
	res.Metrics = filepath.Join(work, "final-metrics.json")
	b, err := json.MarshalIndent(last, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(res.Metrics, b, 0o644); err != nil {
		return err
	}
	onnxPath := filepath.Join(work, "final.onnx")
	cmd := exec.CommandContext(ctx, filepath.Join(g.opt.BinDir, "trainer"), "export", "--model", o.Model,
		"--weights", res.Weights, "--classes", strings.Join(camp.Classes, ","), "--size", strconv.Itoa(o.Size), "-o", onnxPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		res.ONNXErr = fmt.Sprintf("%v: %s", err, strings.TrimSpace(string(out)))
	} else {
		res.ONNX = onnxPath
	}
	return nil
}
