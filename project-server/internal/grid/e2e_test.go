package grid

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/safetensors"
)

// TestDemo runs the demo itself, shortened, on generated textures: lftp upload, a
// campaign through the API, four volunteer processes, rounds closing at quorum, the final
// model downloaded and exported to ONNX.
func TestDemo(t *testing.T) {
	requireTool(t, "lftp")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var out bytes.Buffer
	res, err := RunDemo(ctx, DemoOptions{BinDir: binDir, WorkDir: filepath.Join(t.TempDir(), "demo"),
		Rounds: 3, FragMin: 400, FragMax: 600, Upload: UploadLFTP, Out: &out})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.Campaign.State != protocol.StateDone || len(res.Rounds) != 3 {
		t.Fatalf("campaign %s with %d rounds, want done with 3", res.Campaign.State, len(res.Rounds))
	}
	for _, r := range res.Rounds {
		// Quorum 0.75 of 4 work units: the round closes on exactly the 3rd valid result.
		if r.State != "closed" || r.Needed != 3 || r.Accepted != 3 || r.Metrics == nil {
			t.Errorf("round %d: state %s, needed %d, accepted %d, metrics %v", r.Round, r.State, r.Needed, r.Accepted, r.Metrics != nil)
		}
		if r.SamplesTrained < 3*400 || r.SamplesTrained > 3*600 {
			t.Errorf("round %d merged %d samples; 3 work units of 400-600 fragments x 1 epoch", r.Round, r.SamplesTrained)
		}
	}
	// The final model is the last round's result, is a valid weight file, and moved.
	last := res.Rounds[len(res.Rounds)-1]
	if res.Campaign.ModelSHA256 != last.ResultModel {
		t.Errorf("campaign model %s is not the last round's result %s", res.Campaign.ModelSHA256, last.ResultModel)
	}
	final, err := safetensors.ReadFile(res.Weights, safetensors.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(final.Tensors) != 12 {
		t.Errorf("final model has %d tensors, want 12", len(final.Tensors))
	}
	if res.ONNX == "" {
		t.Errorf("no ONNX model: %s", res.ONNXErr)
	} else if b, err := os.ReadFile(res.ONNX); err != nil || len(b) < 1000 {
		t.Errorf("ONNX model %s: %d bytes, %v", res.ONNX, len(b), err)
	}
	var summary DemoResult
	b, err := os.ReadFile(filepath.Join(filepath.Dir(res.Weights), "summary.json"))
	if err != nil || json.Unmarshal(b, &summary) != nil || summary.Samples != res.Samples {
		t.Errorf("summary.json unreadable or different: %v", err)
	}
	for _, want := range []string{"round", "img acc", "campaign done after 3 rounds", "final model:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
}
