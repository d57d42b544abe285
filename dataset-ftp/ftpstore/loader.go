package ftpstore

import (
	"context"
	"fmt"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/trainer/data"
)

// Loader returns a data.ImageLoader for trainer/data.FragmentSource over manifest m:
// the key is an image's Path in the manifest; the image is fetched (and verified) if
// the cache does not hold it, then decoded to grey. Pin the work unit's images for as
// long as the source may load them.
func (s *Store) Loader(ctx context.Context, m *manifest.Manifest) data.ImageLoader {
	return func(key string) (*data.Gray, error) {
		im, ok := m.ImageByPath(key)
		if !ok {
			return nil, fmt.Errorf("ftpstore: dataset %s has no image %q: %w", m.Dataset, key, ErrNotFound)
		}
		if !s.Has(im.SHA256) {
			if err := s.Fetch(ctx, m.Dataset, []manifest.Image{im}); err != nil {
				return nil, err
			}
		}
		g, err := data.LoadGray(s.Path(im.SHA256))
		if err != nil {
			return nil, fmt.Errorf("ftpstore: %s/%s: %w", m.Dataset, key, err)
		}
		return g, nil
	}
}
