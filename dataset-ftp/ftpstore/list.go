package ftpstore

import (
	"context"
	"fmt"
	"sort"

	"github.com/jlaffaye/ftp"
)

// Datasets lists the dataset folders at the server's root, sorted. A folder whose
// upload has not been indexed yet is listed too; FetchManifest tells them apart.
func (s *Store) Datasets(ctx context.Context) ([]string, error) {
	var names []string
	err := s.retry(ctx, "list datasets", func() error {
		s.connMu.Lock()
		defer s.connMu.Unlock()
		c, err := s.connect(ctx)
		if err != nil {
			return err
		}
		entries, err := c.List("/")
		if err != nil {
			s.drop()
			return fmt.Errorf("ftpstore: list /: %w", err)
		}
		names = names[:0]
		for _, e := range entries {
			if e.Type == ftp.EntryTypeFolder && checkDataset(e.Name) == nil {
				names = append(names, e.Name)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}
