// Package index turns a dataset folder <root>/<dataset>/<class>/<image> into its
// manifest.json: every image decoded once in full, hashed and measured, and every file
// that is not a usable image moved to <dataset>/.quarantine/ with the reason recorded.
// Hidden names (the quarantine, partial uploads) are never indexed. Scheduler debounces
// indexing after uploads.
package index

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/trainer/data"
)

// Options tune indexing.
type Options struct {
	TestFraction  float64 // share of images in the test split; pass data.DefaultTestFraction for the default
	MaxImageBytes int64   // larger files are quarantined; 0 = no limit (data.MaxFileBytes still applies)
	// Rehash decodes and hashes every file. Without it, a file whose size matches the
	// previous manifest and that was last modified before that manifest was created
	// keeps its recorded hash and dimensions.
	Rehash  bool
	Workers int // parallel decoders; 0 = GOMAXPROCS
	Log     *slog.Logger
	Now     func() time.Time
}

// ErrBadDataset is returned for a dataset name that is not a plain folder name.
var ErrBadDataset = errors.New("bad dataset name")

// Quarantine reasons; a reason in the manifest starts with one of these.
const (
	ReasonEmpty     = "empty file"
	ReasonTooLarge  = "larger than the size limit"
	ReasonNotImage  = "not an image"
	ReasonTruncated = "truncated image"
	ReasonCorrupt   = "corrupt image"
	ReasonPlace     = "not in a <class>/<image> folder"
	ReasonName      = "file name not allowed"
	ReasonSymlink   = "symbolic link"
	ReasonNotFile   = "not a regular file"
)

type candidate struct {
	rel  string // "<class>/<name>"
	info fs.FileInfo
}

type result struct {
	img    manifest.Image
	reason string
	gone   bool // removed while indexing (deleted or replaced): leave it to the next run
}

// Dataset indexes <root>/<name> and writes <root>/<name>/manifest.json atomically.
func Dataset(ctx context.Context, root, name string, opt Options) (*manifest.Manifest, error) {
	if name == "" || strings.ContainsAny(name, "/\\\x00") || strings.HasPrefix(name, ".") {
		return nil, fmt.Errorf("index %q: %w", name, ErrBadDataset)
	}
	if opt.TestFraction < 0 || opt.TestFraction >= 1 {
		return nil, fmt.Errorf("index %s: test fraction %g not in [0,1)", name, opt.TestFraction)
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := time.Now
	if opt.Now != nil {
		now = opt.Now
	}
	top, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", name, err)
	}
	defer top.Close()
	r, err := top.OpenRoot(name)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", name, err)
	}
	defer r.Close()
	created := now().UTC()

	var old *manifest.Manifest
	if b, err := r.ReadFile(manifest.FileName); err == nil {
		if m, err := manifest.Parse(b); err == nil {
			old = m
		} else {
			log.Warn("index: previous manifest unreadable, rebuilding", "dataset", name, "err", err)
		}
	}

	m := &manifest.Manifest{Dataset: name, Created: created, TestFraction: opt.TestFraction}
	var cands []candidate
	quarantine := func(rel string, size int64, reason string) error {
		q, err := moveToQuarantine(r, rel)
		if err != nil {
			return fmt.Errorf("index %s: quarantine %s: %w", name, rel, err)
		}
		log.Warn("quarantined", "dataset", name, "path", rel, "stored", q, "reason", reason)
		m.Quarantined = append(m.Quarantined, manifest.Quarantined{Path: rel, Stored: q, Size: size, Reason: reason})
		return nil
	}
	err = fs.WalkDir(r.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p == "." {
			return nil
		}
		depth := strings.Count(p, "/") + 1
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if depth == 1 && d.Name() == manifest.FileName {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // vanished while walking
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			return quarantine(p, info.Size(), ReasonSymlink)
		case d.IsDir():
			return nil
		case !info.Mode().IsRegular():
			return quarantine(p, 0, ReasonNotFile)
		case depth != 2:
			return quarantine(p, info.Size(), ReasonPlace)
		case manifest.CheckPath(p) != nil:
			return quarantine(p, info.Size(), ReasonName)
		}
		cands = append(cands, candidate{rel: p, info: info})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", name, err)
	}

	results := make([]result, len(cands))
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i] = examine(r, cands[i], old, opt)
			}
		}()
	}
	for i := range cands {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("index %s: %w", name, err)
	}
	for i, res := range results {
		if res.gone {
			continue
		}
		if res.reason != "" {
			if err := quarantine(cands[i].rel, cands[i].info.Size(), res.reason); err != nil {
				return nil, err
			}
			continue
		}
		m.Images = append(m.Images, res.img)
	}
	// Files quarantined earlier stay listed while they are still in the quarantine.
	if old != nil {
		for _, q := range old.Quarantined {
			if _, err := r.Lstat(q.Stored); err == nil {
				m.Quarantined = append(m.Quarantined, q)
			}
		}
	}
	m.Finish()
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("index %s: built an invalid manifest: %w", name, err)
	}
	if err := writeAtomic(r, manifest.FileName, m.Encode()); err != nil {
		return nil, fmt.Errorf("index %s: %w", name, err)
	}
	return m, nil
}

// examine decodes, hashes and measures one candidate, or gives the reason to reject it.
func examine(r *os.Root, c candidate, old *manifest.Manifest, opt Options) result {
	class, file := path.Split(c.rel)
	class = strings.TrimSuffix(class, "/")
	size := c.info.Size()
	if size == 0 {
		return result{reason: ReasonEmpty}
	}
	if opt.MaxImageBytes > 0 && size > opt.MaxImageBytes {
		return result{reason: fmt.Sprintf("%s (%d bytes > %d)", ReasonTooLarge, size, opt.MaxImageBytes)}
	}
	split := data.SplitOf(class, file, opt.TestFraction)
	if old != nil && !opt.Rehash && c.info.ModTime().Before(old.Created) {
		if im, ok := old.ImageByPath(c.rel); ok && im.Size == size {
			im.Split = split
			return result{img: im}
		}
	}
	b, err := r.ReadFile(c.rel)
	if errors.Is(err, os.ErrNotExist) {
		return result{gone: true}
	}
	if err != nil {
		return result{reason: fmt.Sprintf("%s: %v", ReasonNotFile, err)}
	}
	w, h, reason := decodeAll(b)
	if reason != "" {
		return result{reason: reason}
	}
	return result{img: manifest.NewImage(class, file, b, w, h, opt.TestFraction)}
}

// decodeAll decodes the whole image with trainer/data, the decoder every volunteer uses
// (a file counts as corrupt unless it fully decodes), and returns its dimensions or a
// quarantine reason.
func decodeAll(b []byte) (w, h int, reason string) {
	g, err := data.DecodeGray(bytes.NewReader(b))
	if err != nil {
		return 0, 0, decodeReason(err)
	}
	return g.W, g.H, ""
}

func decodeReason(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, data.ErrEmptyImage):
		return ReasonEmpty + ": " + msg
	case errors.Is(err, data.ErrImageTooLarge):
		return ReasonTooLarge + ": " + msg
	case strings.Contains(msg, image.ErrFormat.Error()):
		return ReasonNotImage + " (unknown format)"
	case errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(msg, io.ErrUnexpectedEOF.Error()),
		strings.Contains(msg, "not enough pixel data"), strings.HasSuffix(strings.TrimSuffix(msg, ": "+data.ErrFormat.Error()), ": EOF"):
		return ReasonTruncated + ": " + msg
	default:
		return ReasonCorrupt + ": " + msg
	}
}

// moveToQuarantine moves rel to .quarantine/rel (with a numeric suffix if taken) and
// returns the new path.
func moveToQuarantine(r *os.Root, rel string) (string, error) {
	dst := manifest.QuarantineDir + "/" + rel
	if err := r.MkdirAll(path.Dir(dst), 0o755); err != nil {
		return "", err
	}
	for i := 1; ; i++ {
		if _, err := r.Lstat(dst); errors.Is(err, os.ErrNotExist) {
			break
		}
		dst = manifest.QuarantineDir + "/" + rel + "." + strconv.Itoa(i)
	}
	if err := r.Rename(rel, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// writeAtomic writes name through a temporary file, fsync and rename.
func writeAtomic(r *os.Root, name string, b []byte) error {
	tmp := "." + name + ".tmp"
	f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.Rename(tmp, name)
	}
	if err != nil {
		r.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	if d, err := r.Open("."); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
