package state_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/volunteer-client/internal/state"
)

func TestOpenModes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		setup   func(t *testing.T) string
		create  bool
		wantErr error
		wantMsg string
	}{
		{"created 0700", func(t *testing.T) string { return filepath.Join(t.TempDir(), "a", "b") }, true, nil, ""},
		{"missing without create", func(t *testing.T) string { return filepath.Join(t.TempDir(), "x") }, false, state.ErrNotAttached, "does not exist"},
		{"group readable", func(t *testing.T) string {
			d := filepath.Join(t.TempDir(), "s")
			os.Mkdir(d, 0o700)
			os.Chmod(d, 0o750)
			return d
		}, false, state.ErrBadMode, "mode 0750"},
		{"world readable", func(t *testing.T) string {
			d := filepath.Join(t.TempDir(), "s")
			os.Mkdir(d, 0o700)
			os.Chmod(d, 0o755)
			return d
		}, true, state.ErrBadMode, "chmod 700"},
		{"a file", func(t *testing.T) string {
			f := filepath.Join(t.TempDir(), "f")
			os.WriteFile(f, nil, 0o600)
			return f
		}, false, nil, "not a directory"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := c.setup(t)
			d, err := state.Open(p, c.create)
			if c.wantErr == nil && c.wantMsg == "" {
				if err != nil {
					t.Fatal(err)
				}
				fi, _ := os.Stat(d.Path)
				if fi.Mode().Perm() != 0o700 {
					t.Errorf("mode %04o, want 0700", fi.Mode().Perm())
				}
				return
			}
			if err == nil || (c.wantErr != nil && !errors.Is(err, c.wantErr)) || !strings.Contains(err.Error(), c.wantMsg) {
				t.Errorf("Open = %v, want %v mentioning %q", err, c.wantErr, c.wantMsg)
			}
		})
	}
}

func TestIdentityRoundTripAndModes(t *testing.T) {
	t.Parallel()
	d, err := state.Open(filepath.Join(t.TempDir(), "s"), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.LoadIdentity(); !errors.Is(err, state.ErrNotAttached) {
		t.Fatalf("fresh dir: %v, want ErrNotAttached", err)
	}
	id := state.Identity{Server: "http://x", HostID: 9, Name: "h"}
	if err := d.SaveIdentity(id, "tok"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{state.TokenFile, state.IdentityFile} {
		fi, err := os.Stat(d.File(f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", f, fi.Mode().Perm(), err)
		}
	}
	got, tok, err := d.LoadIdentity()
	if err != nil || got.HostID != 9 || tok != "tok" {
		t.Fatalf("LoadIdentity = %+v %q %v", got, tok, err)
	}
	os.Chmod(d.File(state.TokenFile), 0o644)
	if _, _, err := d.LoadIdentity(); !errors.Is(err, state.ErrBadMode) || !strings.Contains(err.Error(), "0600") {
		t.Errorf("token readable by others: %v, want ErrBadMode naming 0600", err)
	}
	os.Chmod(d.File(state.TokenFile), 0o600)
	if err := d.RemoveIdentity(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.LoadIdentity(); !errors.Is(err, state.ErrNotAttached) {
		t.Errorf("after RemoveIdentity: %v", err)
	}
}

func TestLockExcludesSecondClient(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "s")
	a, _ := state.Open(p, true)
	b, _ := state.Open(p, false)
	other, _ := state.Open(filepath.Join(t.TempDir(), "o"), true)
	if err := a.Lock(); err != nil {
		t.Fatal(err)
	}
	if err := b.Lock(); !errors.Is(err, state.ErrLocked) {
		t.Errorf("second lock on the same dir: %v, want ErrLocked", err)
	}
	if err := other.Lock(); err != nil {
		t.Errorf("a different state dir must not be locked: %v", err)
	}
	a.Unlock()
	if err := b.Lock(); err != nil {
		t.Errorf("lock after unlock: %v", err)
	}
	b.Unlock()
	other.Unlock()
}

func TestWriteFileAtomic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := state.WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := state.WriteFile(p, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(b) != "two" || fi.Mode().Perm() != 0o600 {
		t.Errorf("content %q mode %04o", b, fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left: %d entries", len(ents))
	}
	if err := state.WriteFile(filepath.Join(dir, "missing", "f"), nil, 0o600); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}
