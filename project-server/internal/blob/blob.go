// Package blob is the project server's content-addressed file store: global model
// versions and received deltas, each named by the sha256 of its bytes. A blob is written
// to a temporary file, fsynced and renamed into place (and its directory fsynced) before
// any database row may point at it, so a crash never leaves a row naming a missing or
// partial file.
package blob

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Store keeps blobs under Dir/blobs/xx/<sha256> with temporaries in Dir/tmp.
type Store struct {
	dir    string
	shards sync.Map // shard directories known to exist
}

// Open creates the store's directories under dir and removes temporaries left by a crash.
func Open(dir string) (*Store, error) {
	s := &Store{dir: dir}
	for _, d := range []string{s.blobDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("blob store: %w", err)
		}
	}
	ents, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	for _, e := range ents {
		os.Remove(filepath.Join(s.tmpDir(), e.Name()))
	}
	return s, nil
}

func (s *Store) blobDir() string { return filepath.Join(s.dir, "blobs") }
func (s *Store) tmpDir() string  { return filepath.Join(s.dir, "tmp") }

// ErrBadName means a string is not 64 lowercase hex digits.
var ErrBadName = errors.New("not a sha256 in lowercase hex")

// ValidName reports whether name is a lowercase hex sha256.
func ValidName(name string) bool {
	if len(name) != 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Path returns where the blob named sha lives (whether or not it exists).
func (s *Store) Path(sha string) (string, error) {
	if !ValidName(sha) {
		return "", fmt.Errorf("blob %q: %w", sha, ErrBadName)
	}
	return filepath.Join(s.blobDir(), sha[:2], sha), nil
}

// Has reports whether the blob exists.
func (s *Store) Has(sha string) bool {
	p, err := s.Path(sha)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

// Open opens a blob for reading.
func (s *Store) Open(sha string) (*os.File, error) {
	p, err := s.Path(sha)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", sha, err)
	}
	return f, nil
}

// Remove deletes a blob; a missing blob is not an error.
func (s *Store) Remove(sha string) error {
	p, err := s.Path(sha)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove blob %s: %w", sha, err)
	}
	return nil
}

// Writer receives a blob's bytes and hashes them as they pass.
type Writer struct {
	s    *Store
	f    *os.File
	bw   *bufio.Writer
	h    hash.Hash
	n    int64
	done bool
}

// writeBuffer is the write-behind buffer of a Writer: small blobs cost one write call.
const writeBuffer = 256 << 10

var bufPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBuffer) }}

// Create starts a new blob in a temporary file.
func (s *Store) Create() (*Writer, error) {
	f, err := os.CreateTemp(s.tmpDir(), "blob-*")
	if err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	bw := bufPool.Get().(*bufio.Writer)
	bw.Reset(f)
	return &Writer{s: s, f: f, bw: bw, h: sha256.New()}, nil
}

func (w *Writer) release() {
	if w.bw != nil {
		w.bw.Reset(nil)
		bufPool.Put(w.bw)
		w.bw = nil
	}
}

// Write appends to the blob.
func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.bw.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	return n, err
}

// Size returns the bytes written so far.
func (w *Writer) Size() int64 { return w.n }

// Sum returns the hex sha256 of the bytes written so far.
func (w *Writer) Sum() string { return hex.EncodeToString(w.h.Sum(nil)) }

// Commit makes the blob durable under its hash and returns the hash. When the blob
// already exists the temporary copy is dropped.
func (w *Writer) Commit() (string, error) {
	if w.done {
		return "", errors.New("blob: commit after commit or abort")
	}
	w.done = true
	sha := w.Sum()
	name := w.f.Name()
	err := w.bw.Flush()
	w.release()
	if err != nil {
		w.f.Close()
		os.Remove(name)
		return "", fmt.Errorf("blob %s: write: %w", sha, err)
	}
	if err := w.f.Sync(); err != nil {
		w.f.Close()
		os.Remove(name)
		return "", fmt.Errorf("blob %s: sync: %w", sha, err)
	}
	if err := w.f.Close(); err != nil {
		os.Remove(name)
		return "", fmt.Errorf("blob %s: close: %w", sha, err)
	}
	dst, _ := w.s.Path(sha)
	shard := filepath.Dir(dst)
	if _, ok := w.s.shards.Load(shard); !ok {
		if err := os.MkdirAll(shard, 0o755); err != nil {
			os.Remove(name)
			return "", fmt.Errorf("blob %s: %w", sha, err)
		}
		w.s.shards.Store(shard, true)
	}
	// Renaming over an existing copy is harmless: same name, same bytes.
	if err := os.Rename(name, dst); err != nil {
		os.Remove(name)
		return "", fmt.Errorf("blob %s: %w", sha, err)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return "", fmt.Errorf("blob %s: %w", sha, err)
	}
	return sha, nil
}

// Abort discards the temporary file. It is safe to call after Commit.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.release()
	name := w.f.Name()
	w.f.Close()
	os.Remove(name)
}

// Put stores b and returns its hash.
func (s *Store) Put(b []byte) (string, error) {
	w, err := s.Create()
	if err != nil {
		return "", err
	}
	if _, err := w.Write(b); err != nil {
		w.Abort()
		return "", fmt.Errorf("blob store: %w", err)
	}
	return w.Commit()
}

// Copy stores everything read from r and returns its hash and size.
func (s *Store) Copy(r io.Reader) (string, int64, error) {
	w, err := s.Create()
	if err != nil {
		return "", 0, err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Abort()
		return "", 0, fmt.Errorf("blob store: %w", err)
	}
	sha, err := w.Commit()
	return sha, w.n, err
}

// List returns the names of every stored blob.
func (s *Store) List() ([]string, error) {
	var out []string
	err := filepath.WalkDir(s.blobDir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && ValidName(d.Name()) && strings.HasPrefix(d.Name(), filepath.Base(filepath.Dir(p))) {
			out = append(out, d.Name())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	return out, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
