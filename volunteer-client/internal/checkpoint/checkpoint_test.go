package checkpoint_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/volunteer-client/internal/checkpoint"
)

func TestStateRoundTripAndCorruption(t *testing.T) {
	t.Parallel()
	s, err := checkpoint.Open(filepath.Join(t.TempDir(), "work"))
	if err != nil {
		t.Fatal(err)
	}
	if m, b, err := s.LoadState(1); m != nil || b != nil || err != nil {
		t.Fatalf("empty dir: %v %v %v", m, b, err)
	}
	st := []byte("training state bytes")
	if err := s.SaveState(checkpoint.Meta{WorkUnit: 1, Progress: 0.5}, st); err != nil {
		t.Fatal(err)
	}
	m, b, err := s.LoadState(1)
	if err != nil || string(b) != string(st) || m.Progress != 0.5 {
		t.Fatalf("LoadState = %+v %q %v", m, b, err)
	}
	if _, _, err := s.LoadState(2); !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Errorf("state of another work unit: %v, want ErrCorrupt", err)
	}
	raw, _ := os.ReadFile(s.StatePath())
	cases := []struct {
		name string
		b    []byte
	}{
		{"flipped byte", append(append([]byte{}, raw[:len(raw)-1]...), raw[len(raw)-1]^1)},
		{"truncated", raw[:len(raw)-5]},
		{"no header", []byte("xx")},
		{"meta cut", raw[:14]},
	}
	for _, c := range cases {
		os.WriteFile(s.StatePath(), c.b, 0o600)
		if _, _, err := s.LoadState(1); !errors.Is(err, checkpoint.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", c.name, err)
		}
	}
}

func TestResultAndClear(t *testing.T) {
	t.Parallel()
	s, _ := checkpoint.Open(filepath.Join(t.TempDir(), "work"))
	d := checkpoint.Descriptor{WorkUnit: protocol.WorkUnit{ID: 3}, Threads: 2}
	if err := s.SaveDescriptor(d); err != nil {
		t.Fatal(err)
	}
	if got, err := s.LoadDescriptor(); err != nil || got.WorkUnit.ID != 3 || got.Threads != 2 {
		t.Fatalf("LoadDescriptor = %+v %v", got, err)
	}
	delta := []byte("delta bytes")
	if err := s.SaveResult(checkpoint.Result{WorkUnit: 3, Samples: 10, Loss: 0.5}, delta); err != nil {
		t.Fatal(err)
	}
	r, b, err := s.LoadResult()
	if err != nil || string(b) != string(delta) || r.Samples != 10 || r.SHA256 == "" {
		t.Fatalf("LoadResult = %+v %q %v", r, b, err)
	}
	os.WriteFile(filepath.Join(s.Dir(), checkpoint.DeltaFile), []byte("delta bytez"), 0o600)
	if _, _, err := s.LoadResult(); !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Errorf("damaged delta: %v, want ErrCorrupt", err)
	}
	os.WriteFile(filepath.Join(s.Dir(), checkpoint.DescriptorFile), []byte("{"), 0o600)
	if _, err := s.LoadDescriptor(); !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Errorf("damaged descriptor: %v, want ErrCorrupt", err)
	}
	if err := s.Clear(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(s.Dir())
	if len(ents) != 0 {
		t.Errorf("Clear left %d files", len(ents))
	}
	if d, err := s.LoadDescriptor(); d != nil || err != nil {
		t.Errorf("after Clear: %+v %v", d, err)
	}
}
