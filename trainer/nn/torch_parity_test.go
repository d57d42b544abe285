package nn

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/texgrid/texgrid/trainer/spec"
)

// torchScript builds the network with trainer/bench/peer_torch.py's build(), loads the
// weights, input and labels the test wrote, and writes the logits and every parameter
// gradient of the mean cross-entropy, all as little-endian float32.
const torchScript = `
import sys, json, numpy as np, torch
sys.path.insert(0, sys.argv[1])
from peer_torch import build
d = sys.argv[2]
spec = json.load(open(d + "/spec.json"))
meta = json.load(open(d + "/meta.json"))
net, _ = build(spec, meta["classes"], meta["size"])
w = np.fromfile(d + "/weights.bin", dtype="<f4")
at = 0
for p in net.parameters():
    n = p.numel()
    p.data = torch.from_numpy(w[at:at + n].copy()).reshape(p.shape)
    at += n
assert at == w.size
x = torch.from_numpy(np.fromfile(d + "/x.bin", dtype="<f4")).reshape(meta["n"], 1, meta["size"], meta["size"])
y = torch.tensor(meta["labels"])
net.train()
out = net(x)
torch.nn.functional.cross_entropy(out, y).backward()
parts = [out.detach().numpy().ravel()] + [p.grad.numpy().ravel() for p in net.parameters()]
np.concatenate(parts).astype("<f4").tofile(d + "/out.bin")
`

func writeFloats(t *testing.T, path string, parts ...[]float32) {
	t.Helper()
	var b []byte
	for _, p := range parts {
		for _, v := range p {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGradientsMatchPyTorch runs tcnn-small (dropout rate 0) through the Go engine and
// through PyTorch with the same weights and input, and compares logits and gradients.
// It checks that peer_torch.py builds the identical network, so the speed and accuracy
// comparisons compare like with like. Skipped when /usr/bin/python3 has no torch, unless
// TEXGRID_REQUIRE_TOOLS=1 (make test) makes that a failure.
func TestGradientsMatchPyTorch(t *testing.T) {
	t.Parallel()
	if err := exec.Command("/usr/bin/python3", "-c", "import torch, numpy").Run(); err != nil {
		if os.Getenv("TEXGRID_REQUIRE_TOOLS") == "1" {
			t.Fatalf("PyTorch is required (TEXGRID_REQUIRE_TOOLS=1) but /usr/bin/python3 cannot import it (make deps): %v", err)
		}
		t.Skipf("no PyTorch for /usr/bin/python3: %v", err)
	}
	sp := shippedSpec(t, "tcnn-small")
	for i := range sp.Layers {
		if sp.Layers[i].Type == spec.Dropout {
			sp.Layers[i].Rate = 0
		}
	}
	const classes, size, n = 3, 67, 4
	r, err := sp.Resolve(classes, size)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(r, 5)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(6, 7))
	var all []float32
	for _, p := range m.Params() {
		if len(p.T.Shape) == 1 {
			copy(p.T.Data, randSlice(rng, len(p.T.Data), 0.1))
		}
		all = append(all, p.T.Data...)
	}
	ws, _ := NewWorkspace(m, n, 2)
	x := randSlice(rng, n*size*size, 0.3)
	copy(ws.Input(n), x)
	labels := []int{0, 2, 1, 2}
	if _, _, err := ws.TrainBatch(n, labels, 1); err != nil {
		t.Fatal(err)
	}
	logits := append([]float32(nil), ws.acts[len(ws.acts)-1][:n*classes]...)

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "spec.json"), sp.JSON(), 0o644)
	os.WriteFile(filepath.Join(dir, "meta.json"), []byte(`{"classes":3,"size":67,"n":4,"labels":[0,2,1,2]}`), 0o644)
	writeFloats(t, filepath.Join(dir, "weights.bin"), all)
	writeFloats(t, filepath.Join(dir, "x.bin"), x)
	bench, _ := filepath.Abs(filepath.Join(filepath.Dir(shippedSpecPath(t)), "..", "..", "trainer", "bench"))
	cmd := exec.Command("/usr/bin/python3", "-c", torchScript, bench, dir)
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "out.bin"))
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float32, len(b)/4)
	for i := range got {
		got[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	closeTo(t, "logits (Go vs PyTorch)", logits, got[:n*classes])
	at := n * classes
	for _, g := range ws.Grads() {
		if at+len(g.T.Data) > len(got) {
			t.Fatalf("PyTorch returned %d values, fewer than the gradients need", len(got))
		}
		closeTo(t, "grad "+g.Name+" (Go vs PyTorch)", g.T.Data, got[at:at+len(g.T.Data)])
		at += len(g.T.Data)
	}
	if at != len(got) {
		t.Fatalf("PyTorch returned %d values, want %d", len(got), at)
	}
}
