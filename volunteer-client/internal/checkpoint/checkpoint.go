// Package checkpoint keeps the current work unit on disk so no more than one
// checkpoint interval of work is lost to a crash, a kill -9 or a reboot: the work
// unit's descriptor, the trainer's state, the verified base model, and a finished
// delta that still has to be uploaded. Every file is replaced atomically
// (temp + fsync + rename + directory fsync), and every file names the work unit it
// belongs to, so a file left from another work unit is never mixed in.
package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/volunteer-client/internal/state"
)

// File names inside the work directory.
const (
	DescriptorFile = "wu.json"
	StateFile      = "train.ckpt"
	ResultFile     = "result.json"
	DeltaFile      = "delta.safetensors"
)

// ErrCorrupt means a file failed its integrity check; the caller discards it.
var ErrCorrupt = errors.New("checkpoint file is corrupt")

// Descriptor is the accepted work unit and the settings that must not change while
// it runs (the trainer is only bit-exact for the same thread count).
type Descriptor struct {
	WorkUnit protocol.WorkUnit `json:"work_unit"`
	Threads  int               `json:"threads"`
	Accepted time.Time         `json:"accepted"`
}

// Meta describes a saved training state.
type Meta struct {
	WorkUnit int64     `json:"work_unit"`
	Progress float64   `json:"progress"`
	Epoch    int       `json:"epoch"`
	Samples  int       `json:"samples"`
	Written  time.Time `json:"written"`
	SHA256   string    `json:"sha256"` // of the state bytes
}

// Result is a finished delta waiting for its upload.
type Result struct {
	WorkUnit int64   `json:"work_unit"`
	SHA256   string  `json:"sha256"` // of the delta file
	Size     int64   `json:"size"`
	Samples  int     `json:"samples"`
	Loss     float64 `json:"loss"`
}

// Store is a work directory.
type Store struct{ dir string }

// Open creates (mode 0700) or opens a work directory.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	return &Store{dir: dir}, nil
}

// Dir returns the directory path.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(name string) string { return filepath.Join(s.dir, name) }

// StatePath is the training state file.
func (s *Store) StatePath() string { return s.path(StateFile) }

// BasePath is where the verified base model of a work unit is kept.
func (s *Store) BasePath(sha string) string { return s.path("base-" + sha + ".safetensors") }

// SaveDescriptor records an accepted work unit; it is the first file of a work unit.
func (s *Store) SaveDescriptor(d Descriptor) error {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	return state.WriteFile(s.path(DescriptorFile), b, 0o600)
}

// LoadDescriptor returns the unfinished work unit, or nil when there is none.
func (s *Store) LoadDescriptor() (*Descriptor, error) {
	b, err := os.ReadFile(s.path(DescriptorFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("work unit descriptor: %w", err)
	}
	var d Descriptor
	if err := json.Unmarshal(b, &d); err != nil || d.WorkUnit.ID == 0 || d.Threads < 1 {
		return nil, fmt.Errorf("work unit descriptor %s: %w", s.path(DescriptorFile), ErrCorrupt)
	}
	return &d, nil
}

var magic = []byte("TXGCKPT1")

// SaveState writes a training state: magic, a length-prefixed JSON Meta (carrying the
// state's sha256), then the state bytes.
func (s *Store) SaveState(m Meta, st []byte) error {
	sum := sha256.Sum256(st)
	m.SHA256 = hex.EncodeToString(sum[:])
	mj, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	buf.Grow(len(magic) + 4 + len(mj) + len(st))
	buf.Write(magic)
	binary.Write(&buf, binary.LittleEndian, uint32(len(mj)))
	buf.Write(mj)
	buf.Write(st)
	return state.WriteFile(s.path(StateFile), buf.Bytes(), 0o600)
}

// LoadState returns the saved training state of work unit wu; (nil, nil, nil) when
// there is none. A state of another work unit or one that fails its hash is ErrCorrupt.
func (s *Store) LoadState(wu int64) (*Meta, []byte, error) {
	b, err := os.ReadFile(s.path(StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint: %w", err)
	}
	bad := func(why string) error { return fmt.Errorf("checkpoint %s: %s: %w", s.path(StateFile), why, ErrCorrupt) }
	if len(b) < len(magic)+4 || !bytes.Equal(b[:len(magic)], magic) {
		return nil, nil, bad("bad header")
	}
	n := int(binary.LittleEndian.Uint32(b[len(magic):]))
	rest := b[len(magic)+4:]
	if n > len(rest) {
		return nil, nil, bad("truncated")
	}
	var m Meta
	if err := json.Unmarshal(rest[:n], &m); err != nil {
		return nil, nil, bad("bad meta")
	}
	st := rest[n:]
	sum := sha256.Sum256(st)
	if hex.EncodeToString(sum[:]) != m.SHA256 {
		return nil, nil, bad("state does not match its sha256")
	}
	if m.WorkUnit != wu {
		return nil, nil, bad(fmt.Sprintf("belongs to work unit %d, not %d", m.WorkUnit, wu))
	}
	return &m, st, nil
}

// SaveResult persists a finished delta before its upload starts: the delta first,
// then result.json, whose presence means the delta is complete.
func (s *Store) SaveResult(r Result, delta []byte) error {
	sum := sha256.Sum256(delta)
	r.SHA256 = hex.EncodeToString(sum[:])
	r.Size = int64(len(delta))
	if err := state.WriteFile(s.path(DeltaFile), delta, 0o600); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return state.WriteFile(s.path(ResultFile), b, 0o600)
}

// LoadResult returns a finished delta still to upload, or (nil, nil, nil).
func (s *Store) LoadResult() (*Result, []byte, error) {
	b, err := os.ReadFile(s.path(ResultFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("pending result: %w", err)
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, nil, fmt.Errorf("pending result %s: %w", s.path(ResultFile), ErrCorrupt)
	}
	delta, err := os.ReadFile(s.path(DeltaFile))
	if err != nil {
		return nil, nil, fmt.Errorf("pending result delta: %w", err)
	}
	sum := sha256.Sum256(delta)
	if hex.EncodeToString(sum[:]) != r.SHA256 || int64(len(delta)) != r.Size {
		return nil, nil, fmt.Errorf("pending result %s: delta does not match its sha256: %w", s.path(DeltaFile), ErrCorrupt)
	}
	return &r, delta, nil
}

// Clear removes every file of the current work unit (after its upload, a late answer
// or an abort). The descriptor goes last, so a crash half-way leaves a work unit that
// restarts rather than a state without its descriptor.
func (s *Store) Clear() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("clear work dir: %w", err)
	}
	for _, e := range entries {
		if e.Name() == DescriptorFile {
			continue
		}
		if err := os.Remove(s.path(e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("clear work dir: %w", err)
		}
	}
	if err := os.Remove(s.path(DescriptorFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("clear work dir: %w", err)
	}
	return state.SyncDir(s.dir)
}

// Size returns the bytes the work directory holds.
func (s *Store) Size() (int64, error) { return state.DirSize(s.dir) }
