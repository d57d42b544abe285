package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

func TestProgressBar(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	b := newBar(&Env{Stderr: &buf})
	b.show(localapi.WorkUnit{ID: 5, Round: 2, Phase: localapi.PhaseDownloading})
	b.show(localapi.WorkUnit{ID: 5, Round: 2, Phase: localapi.PhaseTraining, Progress: 0.5, Epoch: 1, Loss: 0.75})
	b.show(localapi.WorkUnit{ID: 6, Round: 3, Phase: localapi.PhaseTraining, Progress: 0.25})
	b.close()
	out := buf.String()
	for _, want := range []string{"work unit 5 (round 2)", "epoch 2 loss 0.750", "work unit 6 (round 3)"} {
		if !strings.Contains(out, want) {
			t.Errorf("progress output lacks %q:\n%q", want, out)
		}
	}
	if isTerminal(&buf) {
		t.Error("a buffer counted as a terminal")
	}
}
