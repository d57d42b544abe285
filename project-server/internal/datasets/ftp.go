package datasets

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/texgrid/texgrid/dataset-ftp/ftpstore"
	"github.com/texgrid/texgrid/dataset-ftp/manifest"
)

// FTP is a Source over a dataset-ftp server, read with a read-only account through
// dataset-ftp's client (ftpstore), which verifies every image and caches it in CacheDir.
// The connection is opened on first use, so the server starts while dataset-ftp is down.
type FTP struct {
	Addr     string
	User     string
	Password string
	CacheDir string

	mu    sync.Mutex
	store *ftpstore.Store
}

func (f *FTP) open(ctx context.Context) (*ftpstore.Store, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.store != nil {
		return f.store, nil
	}
	user := f.User
	if user == "" {
		user = "anonymous"
	}
	s, err := ftpstore.Open(ctx, ftpstore.Config{Addr: f.Addr, User: user, Password: f.Password, CacheDir: f.CacheDir})
	if err != nil {
		return nil, fmt.Errorf("dataset-ftp %s: %w", f.Addr, err)
	}
	f.store = s
	return s, nil
}

// Manifest fetches <dataset>/manifest.json, requiring version when it is not empty.
func (f *FTP) Manifest(ctx context.Context, dataset, version string) (*manifest.Manifest, error) {
	s, err := f.open(ctx)
	if err != nil {
		return nil, err
	}
	var m *manifest.Manifest
	if version == "" {
		m, err = s.FetchManifest(ctx, dataset)
	} else {
		m, err = s.FetchManifestVersion(ctx, dataset, version)
	}
	if errors.Is(err, ftpstore.ErrNotFound) || errors.Is(err, ftpstore.ErrVersion) {
		return nil, fmt.Errorf("dataset %q: %v: %w", dataset, err, ErrNotFound)
	}
	return m, err
}

// Open fetches one image into the cache (verified) and opens it.
func (f *FTP) Open(ctx context.Context, dataset string, im manifest.Image) (io.ReadCloser, error) {
	s, err := f.open(ctx)
	if err != nil {
		return nil, err
	}
	release := s.Pin([]manifest.Image{im})
	defer release()
	if err := s.Fetch(ctx, dataset, []manifest.Image{im}); err != nil {
		if errors.Is(err, ftpstore.ErrNotFound) {
			return nil, fmt.Errorf("%s/%s: %w", dataset, im.Path, ErrNotFound)
		}
		return nil, err
	}
	return os.Open(s.Path(im.SHA256))
}

// Close logs out.
func (f *FTP) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.store == nil {
		return nil
	}
	err := f.store.Close()
	f.store = nil
	return err
}

// Datasets lists the dataset folders on the FTP server.
func (f *FTP) Datasets(ctx context.Context) ([]string, error) {
	s, err := f.open(ctx)
	if err != nil {
		return nil, err
	}
	return s.Datasets(ctx)
}
