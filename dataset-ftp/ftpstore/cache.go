package ftpstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
)

// lruList is a doubly linked list of cache entries, most recently used first.
type lruList struct{ head, tail *entry }

func (l *lruList) pushFront(e *entry) {
	e.prev, e.next = nil, l.head
	if l.head != nil {
		l.head.prev = e
	}
	l.head = e
	if l.tail == nil {
		l.tail = e
	}
}

func (l *lruList) remove(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (l *lruList) moveToFront(e *entry) {
	if l.head == e {
		return
	}
	l.remove(e)
	l.pushFront(e)
}

func isSHA(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// loadCache indexes the files already in CacheDir, oldest modification first, so the
// recency order survives a restart (a cache hit refreshes the file's mtime).
func (s *Store) loadCache() error {
	if err := os.MkdirAll(s.tmpDir(), 0o755); err != nil {
		return fmt.Errorf("ftpstore: cache: %w", err)
	}
	type found struct {
		sha  string
		size int64
		mod  time.Time
	}
	var all []found
	dirs, err := os.ReadDir(s.cfg.CacheDir)
	if err != nil {
		return fmt.Errorf("ftpstore: cache: %w", err)
	}
	for _, d := range dirs {
		if !d.IsDir() || len(d.Name()) != 2 {
			continue
		}
		files, err := os.ReadDir(filepath.Join(s.cfg.CacheDir, d.Name()))
		if err != nil {
			return fmt.Errorf("ftpstore: cache: %w", err)
		}
		for _, f := range files {
			info, err := f.Info()
			if err != nil || !info.Mode().IsRegular() || !isSHA(f.Name()) || f.Name()[:2] != d.Name() {
				continue
			}
			all = append(all, found{f.Name(), info.Size(), info.ModTime()})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].mod.Before(all[j].mod) })
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range all {
		e := &entry{sha: f.sha, size: f.size}
		s.entries[f.sha] = e
		s.lru.pushFront(e)
		s.total += f.size
	}
	s.evictLocked()
	return nil
}

// Pin keeps the images' files from eviction until release is called; a work unit pins
// its images for as long as it may read them. Pins nest.
func (s *Store) Pin(imgs []manifest.Image) (release func()) {
	shas := uniqueSHAs(imgs)
	s.mu.Lock()
	for _, sha := range shas {
		s.pins[sha]++
	}
	s.mu.Unlock()
	done := false
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if done {
			return
		}
		done = true
		for _, sha := range shas {
			if s.pins[sha]--; s.pins[sha] <= 0 {
				delete(s.pins, sha)
			}
		}
		s.evictLocked()
	}
}

func uniqueSHAs(imgs []manifest.Image) []string {
	seen := map[string]bool{}
	var out []string
	for _, im := range imgs {
		if !seen[im.SHA256] {
			seen[im.SHA256] = true
			out = append(out, im.SHA256)
		}
	}
	return out
}

// evictLocked removes least recently used, unpinned files until the cache fits.
func (s *Store) evictLocked() {
	if s.cfg.MaxCacheBytes <= 0 {
		return
	}
	for e := s.lru.tail; e != nil && s.total > s.cfg.MaxCacheBytes; {
		prev := e.prev
		if s.pins[e.sha] == 0 {
			s.removeLocked(e)
			s.evictions.Add(1)
		}
		e = prev
	}
}

func (s *Store) removeLocked(e *entry) {
	os.Remove(s.path(e.sha))
	s.forgetLocked(e)
}

// forgetLocked drops an entry from the index, leaving the file alone.
func (s *Store) forgetLocked(e *entry) {
	s.lru.remove(e)
	delete(s.entries, e.sha)
	s.total -= e.size
}

// Fetch makes every image available at Path(image.SHA256), verified against its size
// and sha256: cached files are re-hashed (a damaged one is deleted and downloaded
// again), missing ones are downloaded. The images are pinned while Fetch runs; pin them
// with Pin for longer. The first image that cannot be fetched ends Fetch with an error
// naming it.
func (s *Store) Fetch(ctx context.Context, dataset string, imgs []manifest.Image) error {
	if err := checkDataset(dataset); err != nil {
		return err
	}
	uniq := map[string]manifest.Image{}
	var need int64
	for _, im := range imgs {
		if err := manifest.CheckPath(im.Path); err != nil {
			return fmt.Errorf("ftpstore: %w", err)
		}
		if !isSHA(im.SHA256) || im.Size <= 0 {
			return fmt.Errorf("ftpstore: image %s: bad sha256 %q or size %d", im.Path, im.SHA256, im.Size)
		}
		if _, ok := uniq[im.SHA256]; !ok {
			uniq[im.SHA256] = im
			need += im.Size
		}
	}
	if s.cfg.MaxCacheBytes > 0 && need > s.cfg.MaxCacheBytes {
		return fmt.Errorf("ftpstore: %d images of %d bytes, cache limit %d: %w", len(uniq), need, s.cfg.MaxCacheBytes, ErrCacheFull)
	}
	release := s.Pin(imgs)
	defer release()
	for _, im := range imgs {
		if _, ok := uniq[im.SHA256]; !ok {
			continue // a duplicate, already done
		}
		delete(uniq, im.SHA256)
		if err := s.fetchOne(ctx, dataset, im); err != nil {
			return err
		}
	}
	return nil
}

// shaLock serializes fetches of one file, so concurrent work units never write the
// same partial download; refs counts holders and waiters.
type shaLock struct {
	mu   sync.Mutex
	refs int
}

func (s *Store) lockSHA(sha string) func() {
	s.mu.Lock()
	l := s.busy[sha]
	if l == nil {
		l = &shaLock{}
		s.busy[sha] = l
	}
	l.refs++
	s.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.busy, sha)
		}
		s.mu.Unlock()
	}
}

func (s *Store) fetchOne(ctx context.Context, dataset string, im manifest.Image) error {
	unlock := s.lockSHA(im.SHA256)
	defer unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	e := s.entries[im.SHA256]
	s.mu.Unlock()
	if e != nil {
		p := s.path(im.SHA256)
		if err := verifyFile(p, im.Size, im.SHA256); err == nil {
			s.hits.Add(1)
			now := time.Now()
			os.Chtimes(p, now, now)
			s.mu.Lock()
			if s.entries[im.SHA256] == e {
				s.lru.moveToFront(e)
			}
			s.mu.Unlock()
			return nil
		} else {
			s.verifyFails.Add(1)
			s.cfg.Log.Warn("ftpstore: cached file damaged, fetching again", "sha256", im.SHA256, "err", err)
			s.mu.Lock()
			if s.entries[im.SHA256] == e {
				s.removeLocked(e)
			}
			s.mu.Unlock()
		}
	}
	what := fmt.Sprintf("image %s/%s (sha256 %.12s)", dataset, im.Path, im.SHA256)
	var mismatch error
	err := s.retry(ctx, what, func() error {
		err := s.download(ctx, dataset, im)
		if errors.Is(err, errMismatch) {
			mismatch = err
			s.verifyFails.Add(1)
		}
		return err
	})
	if err != nil {
		if mismatch != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("ftpstore: %s: %w: %v", what, ErrVerify, err)
		}
		return fmt.Errorf("ftpstore: %w", err)
	}
	return nil
}

var errMismatch = errors.New("size or sha256 mismatch")

// download transfers one image into tmp/<sha>.part, resuming from whatever an earlier
// attempt left there, verifies it and moves it into the cache.
func (s *Store) download(ctx context.Context, dataset string, im manifest.Image) error {
	part := filepath.Join(s.tmpDir(), im.SHA256+".part")
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	defer f.Close()
	off, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	if off > im.Size {
		if err := f.Truncate(0); err != nil {
			return fmt.Errorf("cache: %w", err)
		}
		off, _ = f.Seek(0, io.SeekStart)
	}
	if off < im.Size {
		if err := s.retrInto(ctx, "/"+dataset+"/"+im.Path, f, off, im.Size-off); err != nil {
			return err
		}
	}
	// No fsync: every cache hit is re-verified, so a file torn by a crash is simply
	// fetched again.
	if err := verifyFile(part, im.Size, im.SHA256); err != nil {
		os.Remove(part)
		return fmt.Errorf("%w: %v", errMismatch, err)
	}
	dst := s.path(im.SHA256)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	if err := os.Rename(part, dst); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	s.fetched.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.entries[im.SHA256]; old != nil {
		s.forgetLocked(old) // the file was just replaced by the verified download
	}
	e := &entry{sha: im.SHA256, size: im.Size}
	s.entries[im.SHA256] = e
	s.lru.pushFront(e)
	s.total += im.Size
	s.evictLocked()
	return nil
}

// retrInto appends the remote file from offset to f, reading at most want bytes (a
// longer file is a mismatch).
func (s *Store) retrInto(ctx context.Context, remote string, f *os.File, offset, want int64) error {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	c, err := s.connect(ctx)
	if err != nil {
		return err
	}
	resp, err := c.RetrFrom(remote, uint64(offset))
	if err != nil {
		return s.transferErr(remote, err)
	}
	stop := context.AfterFunc(ctx, func() { resp.SetDeadline(time.Now()) })
	defer stop()
	n, err := io.Copy(f, io.LimitReader(&deadlineReader{r: resp, timeout: s.cfg.Timeout}, want+1))
	s.bytes.Add(n)
	if err != nil {
		resp.Close()
		s.drop()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("ftpstore: %s after %d bytes: %w", remote, offset+n, err)
	}
	if n > want {
		resp.Close()
		s.drop()
		return fmt.Errorf("%w: %s is longer than the manifest says", errMismatch, remote)
	}
	if err := resp.Close(); err != nil {
		s.drop()
		return fmt.Errorf("ftpstore: %s: %w", remote, err)
	}
	return nil
}

// verifyFile checks a file's size and sha256.
func verifyFile(p string, size int64, sha string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("%d bytes, want %d", n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return fmt.Errorf("sha256 %.12s, want %.12s", got, sha)
	}
	return nil
}
