package train

import (
	"context"
	"testing"
)

// FuzzResume feeds corrupted checkpoints to Resume: it must return an error or a run
// that can keep training, never panic.
func FuzzResume(f *testing.F) {
	src := &textures{n: 20, seed: 4, fail: -1}
	m := newModel(f, 9)
	r, err := NewRun(m, src, baseCfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(mustCheckpoint(f, r))
	r.Step(context.Background())
	good := mustCheckpoint(f, r)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte(checkpointMagic + "\xff\xff\xff\xff{}"))
	f.Fuzz(func(t *testing.T, state []byte) {
		m := newModel(t, 1)
		r, err := Resume(m, src, baseCfg, state)
		if err != nil {
			return
		}
		if _, err := r.Step(context.Background()); err != nil {
			t.Fatalf("a resumed run cannot step: %v", err)
		}
	})
}

func mustCheckpoint(f *testing.F, r *Run) []byte {
	b, err := r.Checkpoint()
	if err != nil {
		f.Fatal(err)
	}
	return b
}
