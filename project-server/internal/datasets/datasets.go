// Package datasets is how the project server reads datasets: manifests (to resolve a
// campaign's classes and sample work units) and test images (to evaluate each round's
// model). The server only reads; the dataset-ftp server owns the data. Source is the seam:
// Dir reads a dataset-ftp root on the local disk, FTP reads through dataset-ftp's client.
package datasets

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sync"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
)

// ErrNotFound means the dataset, manifest version or image does not exist.
var ErrNotFound = errors.New("not found")

// Source reads datasets.
type Source interface {
	// Manifest returns the dataset's manifest; version "" means the current one, and a
	// non-empty version must match the current manifest's Version.
	Manifest(ctx context.Context, dataset, version string) (*manifest.Manifest, error)
	// Open returns one image's bytes, checked against the manifest entry's size and
	// sha256.
	Open(ctx context.Context, dataset string, im manifest.Image) (io.ReadCloser, error)
}

// Dir is a Source over a dataset-ftp root directory on the local disk
// (<root>/<dataset>/manifest.json and <root>/<dataset>/<class>/<image>).
type Dir struct {
	Root string
}

// Manifest reads and validates <root>/<dataset>/manifest.json.
func (d Dir) Manifest(_ context.Context, dataset, version string) (*manifest.Manifest, error) {
	if dataset == "" || dataset != path.Base(dataset) || dataset[0] == '.' {
		return nil, fmt.Errorf("dataset %q: %w", dataset, ErrNotFound)
	}
	b, err := os.ReadFile(filepath.Join(d.Root, dataset, manifest.FileName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("dataset %q has no manifest: %w", dataset, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("dataset %q: %w", dataset, err)
	}
	m, err := manifest.Parse(b)
	if err != nil {
		return nil, err
	}
	if version != "" && m.Version != version {
		return nil, fmt.Errorf("dataset %q: manifest version %.12s is not the current %.12s: %w", dataset, version, m.Version, ErrNotFound)
	}
	return m, nil
}

// Open reads <root>/<dataset>/<image path> and checks it against the manifest entry.
func (d Dir) Open(_ context.Context, dataset string, im manifest.Image) (io.ReadCloser, error) {
	if err := manifest.CheckPath(im.Path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(d.Root, dataset, filepath.FromSlash(im.Path)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s/%s: %w", dataset, im.Path, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	if int64(len(b)) != im.Size || hex.EncodeToString(sum[:]) != im.SHA256 {
		return nil, fmt.Errorf("%s/%s: %w", dataset, im.Path, ErrMismatch)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// ErrMismatch means an image's bytes differ from its manifest entry.
var ErrMismatch = errors.New("image does not match its manifest entry")

// Cache remembers manifests by dataset and version, which never change once written.
type Cache struct {
	Source
	mu sync.Mutex
	m  map[string]*manifest.Manifest
}

// NewCache wraps src.
func NewCache(src Source) *Cache { return &Cache{Source: src, m: map[string]*manifest.Manifest{}} }

// Manifest returns a cached manifest when version is given and was seen before.
func (c *Cache) Manifest(ctx context.Context, dataset, version string) (*manifest.Manifest, error) {
	key := dataset + "@" + version
	if version != "" {
		c.mu.Lock()
		m := c.m[key]
		c.mu.Unlock()
		if m != nil {
			return m, nil
		}
	}
	m, err := c.Source.Manifest(ctx, dataset, version)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.m[dataset+"@"+m.Version] = m
	c.mu.Unlock()
	return m, nil
}

// Lister is a Source that can also list its datasets (the web UI's dataset picker).
type Lister interface {
	Datasets(ctx context.Context) ([]string, error)
}

// Datasets lists the folders under the root that hold a manifest, sorted.
func (d Dir) Datasets(context.Context) ([]string, error) {
	entries, err := os.ReadDir(d.Root)
	if err != nil {
		return nil, fmt.Errorf("list datasets in %s: %w", d.Root, err)
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() || e.Name()[0] == '.' {
			continue
		}
		if _, err := os.Stat(filepath.Join(d.Root, e.Name(), manifest.FileName)); err == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
