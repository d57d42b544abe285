package server

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	ftpserver "goftp.io/server/v2"
)

// driver adapts the Server to goftp's Driver interface. goftp hands it cleaned absolute
// virtual paths ("/kylberg6/blanket1/a.png"); every one goes through Server.check.
type driver struct{ s *Server }

var _ ftpserver.Driver = driver{}

func notFound(err error, rel string) error {
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("/%s: %w", rel, ErrNotFound)
	}
	return err
}

// Stat implements ftpserver.Driver.
func (d driver) Stat(ctx *ftpserver.Context, vpath string) (os.FileInfo, error) {
	t, err := d.s.check(ctx, vpath, opRead)
	if err != nil {
		return nil, err
	}
	fi, err := d.s.root.Lstat(t.fsName())
	if err != nil {
		return nil, notFound(err, t.rel)
	}
	return fi, nil
}

// ListDir implements ftpserver.Driver. Symbolic links are never listed; hidden names
// (.quarantine, partial uploads) are listed only to accounts that may write the dataset.
func (d driver) ListDir(ctx *ftpserver.Context, vpath string, fn func(os.FileInfo) error) error {
	t, err := d.s.check(ctx, vpath, opRead)
	if err != nil {
		return err
	}
	f, err := d.s.root.Open(t.fsName())
	if err != nil {
		return notFound(err, t.rel)
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if err != nil {
		return fmt.Errorf("list /%s: %w", t.rel, err)
	}
	for _, e := range ents {
		if e.Type()&fs.ModeSymlink != 0 {
			continue
		}
		if strings.HasPrefix(e.Name(), ".") && (t.rel == "" || !t.acct.CanWrite(t.dataset)) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed while listing
		}
		if err := fn(fi); err != nil {
			return err
		}
	}
	return nil
}

// DeleteDir implements ftpserver.Driver; only empty folders are removed.
func (d driver) DeleteDir(ctx *ftpserver.Context, vpath string) error {
	t, err := d.s.check(ctx, vpath, opDelete)
	if err != nil {
		return err
	}
	if err := d.s.root.Remove(t.fsName()); err != nil {
		return notFound(err, t.rel)
	}
	d.s.changed(t.dataset)
	return nil
}

// DeleteFile implements ftpserver.Driver.
func (d driver) DeleteFile(ctx *ftpserver.Context, vpath string) error {
	t, err := d.s.check(ctx, vpath, opDelete)
	if err != nil {
		return err
	}
	if len(t.parts) < 2 {
		return fmt.Errorf("/%s: %w", t.rel, ErrPermission)
	}
	fi, err := d.s.root.Lstat(t.rel)
	if err != nil {
		return notFound(err, t.rel)
	}
	if fi.IsDir() {
		return fmt.Errorf("/%s is a folder: %w", t.rel, ErrBadName)
	}
	if err := d.s.root.Remove(t.rel); err != nil {
		return notFound(err, t.rel)
	}
	if err := d.s.ledger.Delete(t.rel); err != nil {
		d.s.log.Error("usage ledger", "err", err)
	}
	d.s.log.Info("deleted", "user", ctx.Sess.LoginUser(), "path", "/"+t.rel)
	d.s.changed(t.dataset)
	return nil
}

// Rename implements ftpserver.Driver. Both ends must be writable by the account.
func (d driver) Rename(ctx *ftpserver.Context, from, to string) error {
	if from == "" {
		return fmt.Errorf("RNTO without RNFR: %w", ErrNotFound)
	}
	src, err := d.s.check(&ftpserver.Context{Sess: ctx.Sess, Cmd: "RNFR"}, from, opWrite)
	if err != nil {
		return err
	}
	dst, err := d.s.check(ctx, to, opWrite)
	if err != nil {
		return err
	}
	if len(src.parts) < 2 || len(dst.parts) < 2 {
		return fmt.Errorf("datasets are renamed on the server's disk, not over FTP: %w", ErrPermission)
	}
	if _, err := d.s.root.Lstat(dst.rel); err == nil {
		return fmt.Errorf("/%s exists: %w", dst.rel, ErrBadName)
	}
	if err := d.s.root.Rename(src.rel, dst.rel); err != nil {
		return notFound(err, src.rel)
	}
	if err := d.s.ledger.Rename(src.rel, dst.rel); err != nil {
		d.s.log.Error("usage ledger", "err", err)
	}
	d.s.changed(src.dataset)
	d.s.changed(dst.dataset)
	return nil
}

// MakeDir implements ftpserver.Driver. A top-level folder is a new dataset and needs a
// grant for that name.
func (d driver) MakeDir(ctx *ftpserver.Context, vpath string) error {
	t, err := d.s.check(ctx, vpath, opWrite)
	if err != nil {
		return err
	}
	if t.rel == "" {
		return fmt.Errorf("/ exists: %w", ErrBadName)
	}
	if err := d.s.root.Mkdir(t.rel, 0o755); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("/%s exists", t.rel)
		}
		return notFound(err, path.Dir(t.rel))
	}
	return nil
}

// GetFile implements ftpserver.Driver: the file from offset on.
func (d driver) GetFile(ctx *ftpserver.Context, vpath string, offset int64) (int64, io.ReadCloser, error) {
	t, err := d.s.check(ctx, vpath, opRead)
	if err != nil {
		return 0, nil, err
	}
	f, err := d.s.root.Open(t.fsName())
	if err != nil {
		return 0, nil, notFound(err, t.rel)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return 0, nil, fmt.Errorf("/%s is not a file: %w", t.rel, ErrNotFound)
	}
	if offset < 0 || offset > fi.Size() {
		f.Close()
		return 0, nil, fmt.Errorf("/%s: restart offset %d beyond %d bytes: %w", t.rel, offset, fi.Size(), ErrBadOffset)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return 0, nil, fmt.Errorf("/%s: %w", t.rel, err)
	}
	return fi.Size() - offset, countingReader{ReadCloser: f, c: d.s.metrics.sent}, nil
}

// PutFile implements ftpserver.Driver with the same checks, limits and temp-then-rename
// as the STOR command (which the server replaces to give precise reply codes).
func (d driver) PutFile(ctx *ftpserver.Context, vpath string, r io.Reader, offset int64) (int64, error) {
	up, err := d.s.beginUpload(ctx, vpath, offset, false)
	if err != nil {
		return 0, err
	}
	n, err := up.receive(r, nil)
	if err != nil {
		up.fail(err)
		return n, err
	}
	return n, up.commit()
}
