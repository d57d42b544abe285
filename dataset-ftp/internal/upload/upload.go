// Package upload sends a local <dataset>/<class>/<image> tree to dataset-ftp over FTP(S)
// with a progress bar. It resumes: a remote file of the local size is skipped, a shorter
// one (or a partial upload the server kept) is continued with REST + STOR, and a
// dropped connection is redialled and the file continued from what the server has.
package upload

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/jlaffaye/ftp"
	"github.com/schollz/progressbar/v3"
)

// Options configure an upload.
type Options struct {
	Addr, User, Password string
	TLS                  *tls.Config // explicit FTPS when set
	Dataset              string      // remote dataset name; default: the folder's base name
	Progress             io.Writer   // where the progress bar is drawn; nil = no bar
	Retries              int         // attempts per file after a failure; default 3
	Timeout              time.Duration
	Log                  *slog.Logger
	// DialFunc, if set, opens the connections (plain FTP only; for tests and proxies).
	DialFunc func(network, address string) (net.Conn, error)
}

// Result counts what an upload did.
type Result struct {
	Files   int   // files sent in full
	Resumed int   // files continued from a partial upload
	Skipped int   // files already complete on the server
	Bytes   int64 // bytes sent
}

type localFile struct {
	class, name, path string
	size              int64
}

// ErrLayout is returned when the folder holds no <class>/<image> files.
var ErrLayout = errors.New("folder is not a <dataset>/<class>/<image> tree")

// Tree uploads dir (the dataset folder) to the server.
func Tree(ctx context.Context, dir string, opt Options) (Result, error) {
	var res Result
	if opt.Retries <= 0 {
		opt.Retries = 3
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 30 * time.Second
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return res, fmt.Errorf("upload: %w", err)
	}
	if opt.Dataset == "" {
		opt.Dataset = filepath.Base(abs)
	}
	if strings.ContainsAny(opt.Dataset, "/\\") || strings.HasPrefix(opt.Dataset, ".") {
		return res, fmt.Errorf("upload: bad dataset name %q", opt.Dataset)
	}
	files, total, err := scan(abs, opt.Log)
	if err != nil {
		return res, err
	}
	u := &uploader{opt: opt}
	defer u.close()
	if err := u.ensureDir(ctx, "/"+opt.Dataset); err != nil {
		return res, err
	}
	classes := map[string]bool{}
	for _, f := range files {
		if !classes[f.class] {
			classes[f.class] = true
			if err := u.ensureDir(ctx, "/"+opt.Dataset+"/"+f.class); err != nil {
				return res, err
			}
		}
	}
	var bar *progressbar.ProgressBar
	if opt.Progress != nil {
		bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(opt.Progress), progressbar.OptionShowBytes(true),
			progressbar.OptionSetDescription("upload "+opt.Dataset), progressbar.OptionShowCount(),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionOnCompletion(func() { fmt.Fprintln(opt.Progress) }))
	}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := u.file(ctx, f, &res, bar); err != nil {
			return res, err
		}
	}
	if bar != nil {
		bar.Finish()
	}
	return res, nil
}

// scan lists the <class>/<image> files of dir, skipping hidden names and warning about
// files elsewhere.
func scan(dir string, log *slog.Logger) ([]localFile, int64, error) {
	var files []localFile
	var total int64
	classes, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, fmt.Errorf("upload: %w", err)
	}
	for _, c := range classes {
		if strings.HasPrefix(c.Name(), ".") {
			continue
		}
		if !c.IsDir() {
			log.Warn("upload: skipping a file outside any class folder", "file", c.Name())
			continue
		}
		ents, err := os.ReadDir(filepath.Join(dir, c.Name()))
		if err != nil {
			return nil, 0, fmt.Errorf("upload: %w", err)
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			info, err := os.Stat(filepath.Join(dir, c.Name(), e.Name()))
			if err != nil || !info.Mode().IsRegular() {
				log.Warn("upload: skipping", "path", path.Join(c.Name(), e.Name()), "reason", "not a regular file")
				continue
			}
			files = append(files, localFile{c.Name(), e.Name(), filepath.Join(dir, c.Name(), e.Name()), info.Size()})
			total += info.Size()
		}
	}
	if len(files) == 0 {
		return nil, 0, fmt.Errorf("upload %s: %w", dir, ErrLayout)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].class+"/"+files[i].name < files[j].class+"/"+files[j].name })
	return files, total, nil
}

type uploader struct {
	opt  Options
	conn *ftp.ServerConn
}

func (u *uploader) connect(ctx context.Context) (*ftp.ServerConn, error) {
	if u.conn != nil {
		return u.conn, nil
	}
	opts := []ftp.DialOption{ftp.DialWithContext(ctx), ftp.DialWithTimeout(u.opt.Timeout), ftp.DialWithShutTimeout(u.opt.Timeout)}
	if u.opt.TLS != nil {
		opts = append(opts, ftp.DialWithExplicitTLS(u.opt.TLS))
	} else if u.opt.DialFunc != nil {
		opts = append(opts, ftp.DialWithDialFunc(u.opt.DialFunc))
	}
	c, err := ftp.Dial(u.opt.Addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("upload: dial %s: %w", u.opt.Addr, err)
	}
	if err := c.Login(u.opt.User, u.opt.Password); err != nil {
		c.Quit()
		return nil, fmt.Errorf("upload: login as %q: %w", u.opt.User, err)
	}
	u.conn = c
	return c, nil
}

func (u *uploader) close() {
	if u.conn != nil {
		u.conn.Quit()
		u.conn = nil
	}
}

func code(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// ensureDir creates a remote folder unless it exists.
func (u *uploader) ensureDir(ctx context.Context, dir string) error {
	c, err := u.connect(ctx)
	if err != nil {
		return err
	}
	if err := c.MakeDir(dir); err == nil {
		return nil
	} else if code(err) == 0 {
		u.close()
		return fmt.Errorf("upload: mkdir %s: %w", dir, err)
	}
	if e, err := c.GetEntry(dir); err == nil && e.Type == ftp.EntryTypeFolder {
		return nil
	}
	if err := c.ChangeDir(dir); err != nil {
		return fmt.Errorf("upload: cannot create or enter %s: %w", dir, err)
	}
	return c.ChangeDir("/")
}

// remoteSize is what the server holds for a file (final or partial), -1 if nothing.
func (u *uploader) remoteSize(c *ftp.ServerConn, remote string) int64 {
	n, err := c.FileSize(remote)
	if err != nil {
		return -1
	}
	return n
}

func (u *uploader) file(ctx context.Context, f localFile, res *Result, bar *progressbar.ProgressBar) error {
	remote := "/" + u.opt.Dataset + "/" + f.class + "/" + f.name
	var lastErr error
	for attempt := 0; attempt <= u.opt.Retries; attempt++ {
		if attempt > 0 {
			u.opt.Log.Warn("upload: retrying", "file", remote, "attempt", attempt, "err", lastErr)
			select {
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		c, err := u.connect(ctx)
		if err != nil {
			lastErr = err
			continue
		}
		have := u.remoteSize(c, remote)
		if have == f.size && f.size > 0 {
			if attempt == 0 {
				res.Skipped++
			}
			if bar != nil {
				bar.Add64(f.size)
			}
			return nil
		}
		offset := int64(0)
		if have > 0 && have < f.size {
			offset = have
		}
		n, err := u.send(c, f, remote, offset, bar)
		res.Bytes += n
		if err == nil {
			if offset > 0 {
				res.Resumed++
			} else {
				res.Files++
			}
			if bar != nil && offset > 0 {
				bar.Add64(offset)
			}
			return nil
		}
		lastErr = err
		switch code(err) {
		case 550, 552, 553, 530:
			return fmt.Errorf("upload %s: %w", remote, err) // refused: retrying will not help
		}
		u.close()
	}
	return fmt.Errorf("upload %s: giving up: %w", remote, lastErr)
}

func (u *uploader) send(c *ftp.ServerConn, f localFile, remote string, offset int64, bar *progressbar.ProgressBar) (int64, error) {
	fh, err := os.Open(f.path)
	if err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	defer fh.Close()
	if _, err := fh.Seek(offset, io.SeekStart); err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	cr := &countReader{r: fh, bar: bar}
	err = c.StorFrom(remote, cr, uint64(offset))
	if err != nil && bar != nil {
		bar.Add64(-cr.n) // redrawn when the retry sends the bytes again
	}
	return cr.n, err
}

type countReader struct {
	r   io.Reader
	n   int64
	bar *progressbar.ProgressBar
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.bar != nil && n > 0 {
		c.bar.Add(n)
	}
	return n, err
}
