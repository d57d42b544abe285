package grid

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/shareddata"
)

// accuracyCase is one federated-versus-centralised comparison of issue 7.
type accuracyCase struct {
	dataset string
	size    int
	// Centralised: `trainer train` for epochs x fragsPerEpoch samples, the learning
	// rate multiplied by centralDecay after every epoch.
	epochs, fragsPerEpoch int
	centralDecay          float64
	// Federated: rounds of 4 work units of fragMin..fragMax fragments x wuEpochs, the
	// learning rate fedLR multiplied by fedDecay after every round.
	rounds, fragMin, fragMax, wuEpochs int
	fedLR, fedDecay                    float64
}

// The protocol follows issue 7's PyTorch reference: the centralised run trains until
// its test accuracy has levelled off, and the federated run may compute (every work
// unit started, merged or not; see computedSamples) at most twice that, in work units of
// the reference shape on kth-tips-grey (4500 fragments x 2 epochs, 4 a round, 3 merged).
// Both decay the learning rate exponentially, per epoch and per round, so that neither
// ends on a large step that leaves its last accuracy to chance. The federated run starts
// at twice the centralised rate: averaging three deltas cancels much of their noise, and
// a round moves the model about as far as one volunteer's 9,000 samples, not 27,000.
// Measured on kth-tips-grey: 0.01 decaying by 0.7 a round reached 95.3% after 8 rounds
// (testdata/accuracy-results.jsonl), 0.02 decaying by 0.8 reached 97.7% (texgrid-demo,
// same work units, no weight decay). A shorter
// centralised run would measure how fast FedAvg converges, not where it gets to.
var accuracyCases = []accuracyCase{
	{dataset: "kth-tips-grey", size: 128, epochs: 22, fragsPerEpoch: 8000, centralDecay: 0.88,
		rounds: 9, fragMin: 4500, fragMax: 4500, wuEpochs: 2, fedLR: 0.02, fedDecay: 0.8},
	{dataset: "kylberg6", size: 256, epochs: 12, fragsPerEpoch: 2000, centralDecay: 0.85,
		rounds: 6, fragMin: 2000, fragMax: 2000, wuEpochs: 1, fedLR: 0.02, fedDecay: 0.8},
}

// accuracyResult is one line of the results file: enough to compare runs over time.
type accuracyResult struct {
	When             time.Time `json:"when"`
	Dataset          string    `json:"dataset"`
	Size             int       `json:"size"`
	CentralLRDecay   float64   `json:"central_lr_decay,omitempty"` // per epoch; absent: constant
	FedLR            float64   `json:"fed_lr,omitempty"`           // first round; absent: 0.01
	FedLRDecay       float64   `json:"fed_lr_decay,omitempty"`     // per round; absent: constant
	CentralSamples   int64     `json:"central_samples"`
	CentralImageAcc  float64   `json:"central_image_accuracy"`
	CentralFragAcc   float64   `json:"central_fragment_accuracy"`
	CentralSeconds   float64   `json:"central_seconds"`
	FedRounds        int       `json:"fed_rounds"`
	FedComputed      int64     `json:"fed_samples_computed"`
	FedMerged        int64     `json:"fed_samples_merged"`
	FedImageAcc      float64   `json:"fed_image_accuracy"`
	FedFragAcc       float64   `json:"fed_fragment_accuracy"`
	FedSeconds       float64   `json:"fed_seconds"`
	FedLate          int       `json:"fed_late"`
	FedImageAccCurve []float64 `json:"fed_image_accuracy_by_round"`
	FedRoundSeconds  []float64 `json:"fed_round_seconds"`
}

// TestFederatedMatchesCentralised trains tcnn-small on real textures twice, centralised
// with `trainer train` and federated with four volunteer processes at quorum 0.75, and
// requires the federated model's image-level test accuracy to be within 2 points of the
// centralised one while computing at most twice the samples. It takes several minutes
// per dataset, so it runs only with TEXGRID_E2E_ACCURACY=1 (`make e2e`);
// TEXGRID_E2E_CASES=kylberg6 (a comma-separated list) picks datasets.
func TestFederatedMatchesCentralised(t *testing.T) {
	if os.Getenv("TEXGRID_E2E_ACCURACY") != "1" {
		t.Skip("set TEXGRID_E2E_ACCURACY=1 (make e2e) to run the accuracy comparison")
	}
	pick := map[string]bool{}
	for _, name := range strings.Split(os.Getenv("TEXGRID_E2E_CASES"), ",") {
		if name = strings.TrimSpace(name); name != "" {
			pick[name] = true
		}
	}
	for _, c := range accuracyCases {
		if len(pick) > 0 && !pick[c.dataset] {
			continue
		}
		t.Run(c.dataset, func(t *testing.T) {
			data := shareddata.Path(t, c.dataset)
			res := runAccuracyCase(t, c, data)
			appendResult(t, res)
			t.Logf("%s: centralised %.1f%% image accuracy after %d samples (%.0fs); federated %.1f%% after %d computed / %d merged samples in %d rounds (%.0fs), %d late",
				c.dataset, 100*res.CentralImageAcc, res.CentralSamples, res.CentralSeconds,
				100*res.FedImageAcc, res.FedComputed, res.FedMerged, res.FedRounds, res.FedSeconds, res.FedLate)
			if res.FedComputed > 2*res.CentralSamples {
				t.Errorf("federated run computed %d samples, more than twice the centralised %d", res.FedComputed, res.CentralSamples)
			}
			if res.FedImageAcc < res.CentralImageAcc-0.02 {
				t.Errorf("federated image accuracy %.2f%% is more than 2 points below centralised %.2f%%",
					100*res.FedImageAcc, 100*res.CentralImageAcc)
			}
		})
	}
}

func runAccuracyCase(t *testing.T, c accuracyCase, data string) accuracyResult {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	res := accuracyResult{When: time.Now().UTC(), Dataset: c.dataset, Size: c.size, CentralLRDecay: c.centralDecay, FedLR: c.fedLR, FedLRDecay: c.fedDecay}

	// Centralised.
	out := t.TempDir()
	start := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "trainer"), "train", "--data", data, "--model", "tcnn-small",
		"--size", strconv.Itoa(c.size), "--epochs", strconv.Itoa(c.epochs), "--fragments-per-epoch", strconv.Itoa(c.fragsPerEpoch),
		"--batch", "32", "--lr", "0.01", "--lr-decay", strconv.FormatFloat(c.centralDecay, 'g', -1, 64), "--momentum", "0.9", "--threads", "2", "--seed", "1",
		"--progress", "none", "--out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("trainer train: %v\n%s", err, b)
	}
	res.CentralSeconds = time.Since(start).Seconds()
	res.CentralSamples = int64(c.epochs) * int64(c.fragsPerEpoch)
	var m struct {
		Fragment struct{ Accuracy float64 } `json:"fragment_level"`
		Image    struct{ Accuracy float64 } `json:"image_level"`
	}
	b, err := os.ReadFile(filepath.Join(out, "metrics.json"))
	if err != nil || json.Unmarshal(b, &m) != nil {
		t.Fatalf("centralised metrics: %v", err)
	}
	res.CentralImageAcc, res.CentralFragAcc = m.Image.Accuracy, m.Fragment.Accuracy

	// Federated.
	start = time.Now()
	g, err := Start(ctx, Options{BinDir: binDir, WorkDir: filepath.Join(t.TempDir(), "grid"), Upload: UploadLFTP, Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.UploadDataset(ctx, data, c.dataset); err != nil {
		t.Fatal(err)
	}
	camp, err := g.CreateCampaign(ctx, protocol.CampaignSpec{
		Name: "accuracy-" + c.dataset, Dataset: c.dataset, Model: "tcnn-small", FragmentSize: c.size,
		FragmentsMin: c.fragMin, FragmentsMax: c.fragMax,
		Hyper:  protocol.Hyper{Epochs: c.wuEpochs, BatchSize: 32, LearningRate: c.fedLR, LRDecay: c.fedDecay, Momentum: 0.9, WeightDecay: 0.0005},
		Quorum: 0.75, WorkUnitsPerRound: 4, Rounds: c.rounds, WUDeadline: protocol.Duration(20 * time.Minute), Seed: 1, Start: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if _, err := g.AddVolunteer(ctx, VolunteerOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	prev := start
	_, err = g.WaitCampaign(ctx, camp.ID, 25*time.Minute, func(r protocol.RoundInfo) {
		end := time.Now()
		if r.ClosedAt != nil {
			end = *r.ClosedAt
		}
		res.FedImageAccCurve = append(res.FedImageAccCurve, r.Metrics.ImageAccuracy)
		res.FedRoundSeconds = append(res.FedRoundSeconds, end.Sub(prev).Seconds())
		prev = end
		t.Logf("round %d: image %.1f%%, fragment %.1f%%, accepted %d, late %d", r.Round,
			100*r.Metrics.ImageAccuracy, 100*r.Metrics.FragmentAccuracy, r.Accepted, r.Late)
	})
	if err != nil {
		t.Fatal(err)
	}
	res.FedSeconds = time.Since(start).Seconds()
	rounds, err := g.Rounds(ctx, camp.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rounds {
		res.FedMerged += r.SamplesTrained
		res.FedLate += r.Late
		if r.Metrics != nil {
			res.FedImageAcc, res.FedFragAcc = r.Metrics.ImageAccuracy, r.Metrics.FragmentAccuracy
		}
	}
	res.FedRounds = len(rounds)
	res.FedComputed = computedSamples(t, g)
	return res
}

// computedSamples counts, from the volunteers' logs, fragments x epochs of every work
// unit they started: merged, late or abandoned alike.
func computedSamples(t *testing.T, g *Grid) int64 {
	t.Helper()
	var n int64
	eachLogLine(t, g.Volunteers, func(line []byte) {
		var e struct {
			Msg       string `json:"msg"`
			Fragments int64  `json:"fragments"`
			Epochs    int64  `json:"epochs"`
		}
		if json.Unmarshal(line, &e) == nil && e.Msg == "work unit" {
			n += e.Fragments * e.Epochs
		}
	})
	return n
}

// appendResult adds the run to the results file named by TEXGRID_E2E_RESULTS (default
// testdata/accuracy-results.jsonl), one JSON line per run, so runs can be compared.
func appendResult(t *testing.T, r accuracyResult) {
	t.Helper()
	path := os.Getenv("TEXGRID_E2E_RESULTS")
	if path == "" {
		path = filepath.Join("testdata", "accuracy-results.jsonl")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := json.Marshal(r)
	if _, err := fmt.Fprintf(f, "%s\n", b); err != nil {
		t.Fatal(err)
	}
	t.Logf("results appended to %s", path)
}
