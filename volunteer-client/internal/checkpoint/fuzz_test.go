package checkpoint_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/texgrid/texgrid/volunteer-client/internal/checkpoint"
)

// FuzzLoadState: any bytes in the checkpoint file give a state that passed its hash
// check, or an error; never a panic.
func FuzzLoadState(f *testing.F) {
	dir := f.TempDir()
	s, err := checkpoint.Open(filepath.Join(dir, "seed"))
	if err != nil {
		f.Fatal(err)
	}
	if err := s.SaveState(checkpoint.Meta{WorkUnit: 1, Progress: 0.5}, []byte("state")); err != nil {
		f.Fatal(err)
	}
	good, _ := os.ReadFile(s.StatePath())
	f.Add(good)
	f.Add([]byte("TXGCKPT1\xff\xff\xff\xff"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(s.StatePath(), b, 0o600); err != nil {
			t.Fatal(err)
		}
		m, _, err := s.LoadState(1)
		if err == nil && m != nil && m.WorkUnit != 1 {
			t.Errorf("accepted a state of work unit %d for work unit 1", m.WorkUnit)
		}
	})
}
