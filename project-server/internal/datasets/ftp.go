package datasets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"path"
	"time"

	"github.com/jlaffaye/ftp"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
)

// FTP is a Source that reads from a dataset-ftp server with a read-only account.
type FTP struct {
	Addr     string
	User     string
	Password string
	Timeout  time.Duration // per connection, default 30s
}

func (f *FTP) dial(ctx context.Context) (*ftp.ServerConn, error) {
	t := f.Timeout
	if t == 0 {
		t = 30 * time.Second
	}
	c, err := ftp.Dial(f.Addr, ftp.DialWithContext(ctx), ftp.DialWithTimeout(t))
	if err != nil {
		return nil, fmt.Errorf("dataset-ftp %s: %w", f.Addr, err)
	}
	user := f.User
	if user == "" {
		user = "anonymous"
	}
	if err := c.Login(user, f.Password); err != nil {
		c.Quit()
		return nil, fmt.Errorf("dataset-ftp %s: login as %s: %w", f.Addr, user, err)
	}
	return c, nil
}

func (f *FTP) get(ctx context.Context, p string, limit int64) ([]byte, error) {
	c, err := f.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Quit()
	r, err := c.Retr(p)
	if err != nil {
		var te *textproto.Error
		if errors.As(err, &te) && te.Code == ftp.StatusFileUnavailable {
			return nil, fmt.Errorf("dataset-ftp %s: %s: %w", f.Addr, p, ErrNotFound)
		}
		return nil, fmt.Errorf("dataset-ftp %s: %s: %w", f.Addr, p, err)
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("dataset-ftp %s: %s: %w", f.Addr, p, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("dataset-ftp %s: %s is over %d bytes", f.Addr, p, limit)
	}
	return b, nil
}

// Manifest downloads and validates <dataset>/manifest.json.
func (f *FTP) Manifest(ctx context.Context, dataset, version string) (*manifest.Manifest, error) {
	if dataset == "" || dataset != path.Base(dataset) || dataset[0] == '.' {
		return nil, fmt.Errorf("dataset %q: %w", dataset, ErrNotFound)
	}
	b, err := f.get(ctx, "/"+dataset+"/"+manifest.FileName, manifest.MaxBytes)
	if err != nil {
		return nil, err
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

// MaxImageBytes bounds one downloaded image.
const MaxImageBytes = 256 << 20

// Open downloads one image.
func (f *FTP) Open(ctx context.Context, dataset, imagePath string) (io.ReadCloser, error) {
	if err := manifest.CheckPath(imagePath); err != nil {
		return nil, err
	}
	b, err := f.get(ctx, "/"+dataset+"/"+imagePath, MaxImageBytes)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}
