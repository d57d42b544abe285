package server

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"time"

	ftpserver "goftp.io/server/v2"
)

// upload is one STOR/APPE in progress. Bytes go to the hidden partial file; only
// commit renames it to the final name, so a dropped connection leaves at most a
// partial file that the indexer never sees and that REST + STOR can resume.
type upload struct {
	s        *Server
	t        target
	user     string
	part     string
	f        *os.File
	offset   int64 // bytes already in the partial file
	total    int64
	quota    int64 // the account's quota; 0 = unlimited
	reserved int64 // bytes claimed in the ledger for this upload
	closed   bool
	begun    bool // registered with the scheduler and the busy set
}

// beginUpload checks the target, enforces the limits it can check before any byte
// arrives, and opens the partial file. offset is the REST position (-1: none); appe
// continues the partial (or final) file from its end.
func (s *Server) beginUpload(ctx *ftpserver.Context, vpath string, offset int64, appe bool) (*upload, error) {
	t, err := s.check(ctx, vpath, opWrite)
	if err != nil {
		return nil, err
	}
	if len(t.parts) < 2 {
		return nil, fmt.Errorf("/%s: files go in <dataset>/<class>/<image>: %w", t.rel, ErrBadName)
	}
	if fi, err := s.root.Lstat(path.Dir(t.rel)); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("/%s: no such folder (MKD it first): %w", path.Dir(t.rel), ErrNotFound)
	}
	if fi, err := s.root.Lstat(t.rel); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("/%s is not a regular file: %w", t.rel, ErrBadName)
	}
	s.mu.Lock()
	busy := s.uploading[t.rel]
	if !busy {
		s.uploading[t.rel] = true
	}
	s.mu.Unlock()
	if busy {
		return nil, fmt.Errorf("/%s: %w", t.rel, ErrBusy)
	}
	up, err := s.openUpload(t, offset, appe)
	if err != nil {
		s.mu.Lock()
		delete(s.uploading, t.rel)
		s.mu.Unlock()
		return nil, err
	}
	up.begun = true
	s.sched.Begin(t.dataset)
	return up, nil
}

func (s *Server) openUpload(t target, offset int64, appe bool) (*upload, error) {
	up := &upload{s: s, t: t, user: t.acct.Name, part: partName(t.rel), quota: t.acct.QuotaBytes}
	if up.quota > 0 {
		if !s.ledger.Reserve(up.user, 1, up.quota) {
			return nil, fmt.Errorf("%s has used its %d bytes: %w", up.user, up.quota, ErrQuota)
		}
		s.ledger.Release(up.user, 1)
	}
	partSize := int64(-1)
	if fi, err := s.root.Lstat(up.part); err == nil && fi.Mode().IsRegular() {
		partSize = fi.Size()
	}
	finalSize := int64(-1)
	if fi, err := s.root.Lstat(t.rel); err == nil {
		finalSize = fi.Size()
	}
	switch {
	case appe && partSize >= 0:
		offset = partSize
	case appe && finalSize >= 0:
		offset = finalSize
	case appe || offset < 0:
		offset = 0
	}
	if offset > 0 && offset > max(partSize, finalSize) {
		return nil, fmt.Errorf("/%s: restart at %d but only %d bytes are stored: %w", t.rel, offset, max(partSize, finalSize, 0), ErrBadOffset)
	}
	if s.cfg.MaxUploadBytes > 0 && offset > s.cfg.MaxUploadBytes {
		return nil, fmt.Errorf("/%s: %w (%d bytes)", t.rel, ErrTooLarge, s.cfg.MaxUploadBytes)
	}
	f, err := s.root.OpenFile(up.part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("/%s: %w", up.part, err)
	}
	up.f = f
	if offset > 0 && offset > partSize {
		// Resuming over a complete earlier upload: start from its first offset bytes.
		if err := up.copyFinal(offset); err != nil {
			up.fail(err)
			return nil, err
		}
	}
	if err := f.Truncate(offset); err != nil {
		up.fail(err)
		return nil, fmt.Errorf("/%s: %w", up.part, err)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		up.fail(err)
		return nil, fmt.Errorf("/%s: %w", up.part, err)
	}
	up.offset, up.total = offset, offset
	if !s.ledger.Reserve(up.user, offset, up.quota) {
		err := fmt.Errorf("%s: resuming %d bytes: %w", up.user, offset, ErrQuota)
		up.fail(err)
		return nil, err
	}
	up.reserved = offset
	return up, nil
}

// finish releases the target for other uploads and lets indexing proceed.
func (up *upload) finish() {
	up.s.mu.Lock()
	delete(up.s.uploading, up.t.rel)
	up.s.mu.Unlock()
	up.s.sched.End(up.t.dataset)
}

func (up *upload) copyFinal(n int64) error {
	src, err := up.s.root.Open(up.t.rel)
	if err != nil {
		return fmt.Errorf("/%s: %w", up.t.rel, err)
	}
	defer src.Close()
	if _, err := io.Copy(up.f, io.LimitReader(src, n)); err != nil {
		return fmt.Errorf("/%s: %w", up.part, err)
	}
	return nil
}

// receive copies the data connection into the partial file, stopping with ErrTooLarge
// or ErrQuota as soon as a limit is crossed. closeData, if set, is called when the
// peer sends nothing for the idle timeout, which unblocks the read.
func (up *upload) receive(r io.Reader, closeData func()) (int64, error) {
	idle := time.Duration(up.s.cfg.IdleTimeout)
	var watchdog *time.Timer
	if closeData != nil && idle > 0 {
		watchdog = time.AfterFunc(idle, closeData)
		defer watchdog.Stop()
	}
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			if watchdog != nil {
				watchdog.Reset(idle)
			}
			up.total += int64(k)
			up.s.metrics.received.Add(float64(k))
			n += int64(k)
			if max := up.s.cfg.MaxUploadBytes; max > 0 && up.total > max {
				return n, fmt.Errorf("/%s: %w (%d bytes)", up.t.rel, ErrTooLarge, max)
			}
			if !up.s.ledger.Reserve(up.user, int64(k), up.quota) {
				return n, fmt.Errorf("%s: %w (%d bytes)", up.user, ErrQuota, up.quota)
			}
			up.reserved += int64(k)
			if _, err := up.f.Write(buf[:k]); err != nil {
				return n, fmt.Errorf("/%s: %w", up.part, err)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, fmt.Errorf("%w: %v", ErrAborted, rerr)
		}
	}
}

// fail ends the upload without committing. An aborted transfer keeps its partial file
// for a later REST; a refused one removes it.
func (up *upload) fail(err error) {
	if up.closed {
		return
	}
	up.closed = true
	up.f.Close()
	up.s.ledger.Release(up.user, up.reserved)
	keep := errors.Is(err, ErrAborted)
	if !keep {
		up.s.root.Remove(up.part)
	}
	if up.begun {
		up.finish()
	}
	up.s.log.Warn("upload failed", "user", up.user, "path", "/"+up.t.rel, "bytes", up.total, "kept_partial", keep, "err", err)
}

// commit makes the upload visible under its name and records it for the quota.
func (up *upload) commit() error {
	up.closed = true
	defer func() {
		up.s.ledger.Release(up.user, up.reserved) // after Put: the bytes move from reserved to used
		up.finish()
	}()
	if err := up.f.Sync(); err != nil {
		up.f.Close()
		return fmt.Errorf("/%s: %w", up.part, err)
	}
	if err := up.f.Close(); err != nil {
		return fmt.Errorf("/%s: %w", up.part, err)
	}
	if err := up.s.root.Rename(up.part, up.t.rel); err != nil {
		return fmt.Errorf("/%s: %w", up.t.rel, err)
	}
	if err := up.s.ledger.Put(up.user, up.t.rel, up.total); err != nil {
		up.s.log.Error("usage ledger", "err", err)
	}
	up.s.log.Info("stored", "user", up.user, "path", "/"+up.t.rel, "bytes", up.total, "resumed_at", up.offset)
	up.s.changed(up.t.dataset)
	return nil
}
