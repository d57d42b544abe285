package scheduler

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/spec"
)

func TestNamedModelSpec(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	custom := `{"name":"tiny","layers":[{"type":"conv","filters":4,"kernel":3},{"type":"energy"},{"type":"dense","units":"classes"}]}`
	if err := os.WriteFile(filepath.Join(dir, "tiny.json"), []byte(custom), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, modelsDir, model string
		wantName               string // parsed spec name on success
		wantCode               string // protocol error code on failure
	}{
		{"shipped without a models dir", "", "tcnn-small", "tcnn-small", ""},
		{"shipped beside a models dir", dir, "tcnn3", "tcnn3", ""},
		{"from the models dir", dir, "tiny", "tiny", ""},
		{"models dir spec unknown without it", "", "tiny", "", protocol.CodeNotFound},
		{"unknown", dir, "alexnet", "", protocol.CodeNotFound},
		{"path traversal", dir, "../tiny", "", protocol.CodeBadRequest},
		{"hidden", dir, ".tiny", "", protocol.CodeBadRequest},
		{"empty", dir, "", "", protocol.CodeBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &Scheduler{cfg: Config{ModelsDir: c.modelsDir}}
			b, err := s.namedModelSpec(c.model)
			if c.wantCode != "" {
				var e *Error
				if !errors.As(err, &e) || e.Code != c.wantCode {
					t.Fatalf("namedModelSpec(%q) error = %v, want code %s", c.model, err, c.wantCode)
				}
				if c.wantCode == protocol.CodeNotFound && !strings.Contains(err.Error(), "tcnn-small, tcnn3") {
					t.Errorf("not-found error %q does not list the shipped specs", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sp, err := spec.Parse(b)
			if err != nil || sp.Name != c.wantName {
				t.Fatalf("got spec %v, %v; want %s", sp, err, c.wantName)
			}
		})
	}
}

// TestDefaultsLRDecay: hyper.lr_decay is optional (absent or 0 means a constant rate),
// must be in (0, 1] otherwise, and may not take the last round's rate to zero.
func TestDefaultsLRDecay(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		json    string // the hyper object of a campaign spec
		rounds  int
		want    float64 // lr_decay after Defaults
		wantErr string  // substring of the 400 message; empty for success
	}{
		{"absent", `{}`, 10, 0, ""},
		{"explicit zero is the default", `{"lr_decay":0}`, 10, 0, ""},
		{"one", `{"lr_decay":1}`, 10, 1, ""},
		{"half", `{"lr_decay":0.5}`, 10, 0.5, ""},
		{"tiny but fine", `{"lr_decay":0.01,"learning_rate":0.1}`, 5, 0.01, ""},
		{"negative", `{"lr_decay":-0.5}`, 10, 0, "hyper.lr_decay -0.5 must be in (0, 1]"},
		{"above one", `{"lr_decay":1.5}`, 10, 0, "hyper.lr_decay 1.5 must be in (0, 1]"},
		{"barely above one", `{"lr_decay":1.0000001}`, 10, 0, "hyper.lr_decay 1.0000001 must be in (0, 1]"},
		{"underflows by the last round", `{"lr_decay":0.001}`, 20, 0, "takes the learning rate of round 19"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var cs protocol.CampaignSpec
			js := `{"name":"n","dataset":"d","model":"tiny","rounds":` + strconv.Itoa(c.rounds) + `,"hyper":` + c.json + `}`
			if err := json.Unmarshal([]byte(js), &cs); err != nil {
				t.Fatal(err)
			}
			err := Defaults(&cs)
			if c.wantErr != "" {
				var e *Error
				if !errors.As(err, &e) || e.Code != protocol.CodeBadRequest || !strings.Contains(e.Message, c.wantErr) {
					t.Fatalf("Defaults(%s) = %v, want a bad_request containing %q", js, err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Defaults(%s): %v", js, err)
			}
			if cs.Hyper.LRDecay != c.want {
				t.Fatalf("lr_decay after Defaults = %g, want %g", cs.Hyper.LRDecay, c.want)
			}
		})
	}
}

// TestRoundLearningRate: round r (counted from 0) trains at lr x lr_decay^r; 0 and 1
// keep the rate constant.
func TestRoundLearningRate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		h     protocol.Hyper
		round int
		want  float64
	}{
		{"no decay", protocol.Hyper{LearningRate: 0.01}, 7, 0.01},
		{"decay one", protocol.Hyper{LearningRate: 0.01, LRDecay: 1}, 7, 0.01},
		{"first round", protocol.Hyper{LearningRate: 0.01, LRDecay: 0.5}, 0, 0.01},
		{"second round", protocol.Hyper{LearningRate: 0.01, LRDecay: 0.5}, 1, 0.005},
		{"third round", protocol.Hyper{LearningRate: 0.01, LRDecay: 0.5}, 2, 0.0025},
		{"0.9 over 10 rounds", protocol.Hyper{LearningRate: 0.1, LRDecay: 0.9}, 10, 0.1 * math.Pow(0.9, 10)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := RoundLearningRate(c.h, c.round); got != c.want {
				t.Fatalf("RoundLearningRate(%+v, %d) = %v, want %v", c.h, c.round, got, c.want)
			}
		})
	}
}
