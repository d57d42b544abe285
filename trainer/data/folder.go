package data

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ErrNoClasses: a dataset folder has no class sub-folder holding a readable image.
var ErrNoClasses = errors.New("no class folders with readable images")

// Skip is a file (or folder) a dataset scan left out, with the reason in words.
type Skip struct {
	Path   string // absolute path, or the image key for images too small for a fragment size
	Reason string
}

// Folder is a scanned "<dir>/<class>/<image>" dataset: the sorted class list, every
// readable image on its side of the train/test split (SplitOf), and what was skipped.
type Folder struct {
	Dir     string   // absolute path of the dataset root
	Classes []string // sorted; ImageRef.Class indexes it
	// Train and Test are sorted by Key ("<class>/<name>"), Width and Height filled in.
	Train, Test []ImageRef
	// Paths maps every Key in Train and Test to its absolute file path.
	Paths map[string]string
	// Skipped lists, sorted by path, the files that are not usable images (empty,
	// unreadable, not an image, corrupt), hidden files, nested folders, and class
	// folders left without any image.
	Skipped []Skip
}

// ScanFolder scans a dataset folder: each sub-folder of dir is a class, each file in it
// an image. Every image is fully decoded once so that a corrupt file is reported here,
// with its reason, rather than failing a training run halfway; the pixels are not kept.
// Files directly in dir (README, checksums) are ignored. testFraction is the share of
// images held out (see SplitOf). The error is ErrNoClasses when nothing usable is found.
func ScanFolder(dir string, testFraction float64) (*Folder, error) {
	if testFraction < 0 || testFraction > 1 {
		return nil, fmt.Errorf("scan %s: test fraction %v is not in [0, 1]", dir, testFraction)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", dir, err)
	}
	top, err := os.ReadDir(abs)
	if err != nil {
		return nil, fmt.Errorf("scan dataset: %w", err)
	}
	fo := &Folder{Dir: abs, Paths: map[string]string{}}
	type found struct {
		class, name string
		w, h        int
	}
	var images []found
	for _, e := range top {
		classDir := filepath.Join(abs, e.Name())
		if strings.HasPrefix(e.Name(), ".") || !isDir(classDir, e) {
			continue
		}
		entries, err := os.ReadDir(classDir)
		if err != nil {
			fo.skip(classDir, fmt.Sprintf("class folder unreadable: %v", err))
			continue
		}
		n := 0
		for _, f := range entries {
			path := filepath.Join(classDir, f.Name())
			switch {
			case strings.HasPrefix(f.Name(), "."):
				fo.skip(path, "hidden file")
				continue
			case isDir(path, f):
				fo.skip(path, "folder inside a class folder (not scanned)")
				continue
			}
			g, err := LoadGray(path)
			if err != nil {
				fo.skip(path, skipReason(err))
				continue
			}
			images = append(images, found{e.Name(), f.Name(), g.W, g.H})
			n++
		}
		if n == 0 {
			fo.skip(classDir, "class folder has no readable image; not used as a class")
			continue
		}
		fo.Classes = append(fo.Classes, e.Name())
	}
	sort.Slice(fo.Skipped, func(i, j int) bool { return fo.Skipped[i].Path < fo.Skipped[j].Path })
	if len(fo.Classes) == 0 {
		return fo, fmt.Errorf("scan %s: %w", abs, ErrNoClasses)
	}
	sort.Strings(fo.Classes)
	index := make(map[string]int, len(fo.Classes))
	for i, c := range fo.Classes {
		index[c] = i
	}
	for _, im := range images {
		ref := ImageRef{Key: im.class + "/" + im.name, Class: index[im.class], Width: im.w, Height: im.h}
		fo.Paths[ref.Key] = filepath.Join(abs, im.class, im.name)
		if SplitOf(im.class, im.name, testFraction) == Test {
			fo.Test = append(fo.Test, ref)
		} else {
			fo.Train = append(fo.Train, ref)
		}
	}
	sort.Slice(fo.Train, func(i, j int) bool { return fo.Train[i].Key < fo.Train[j].Key })
	sort.Slice(fo.Test, func(i, j int) bool { return fo.Test[i].Key < fo.Test[j].Key })
	return fo, nil
}

func (fo *Folder) skip(path, reason string) {
	fo.Skipped = append(fo.Skipped, Skip{Path: path, Reason: reason})
}

// isDir follows symbolic links, so a class folder may be a link to elsewhere.
func isDir(path string, e os.DirEntry) bool {
	if e.IsDir() {
		return true
	}
	if e.Type()&os.ModeSymlink == 0 {
		return false
	}
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// skipReason turns a load error into the short reason a user reads.
func skipReason(err error) string {
	switch {
	case errors.Is(err, ErrEmptyImage):
		return "empty file or image without pixels"
	case errors.Is(err, ErrImageTooLarge):
		return "too large: " + err.Error()
	case errors.Is(err, ErrFormat):
		return "not a readable PNG, JPEG, GIF, TIFF or BMP image: " + err.Error()
	case errors.Is(err, os.ErrPermission):
		return "unreadable: permission denied"
	}
	return "unreadable: " + err.Error()
}

// Eligible returns the train and test images at least size pixels on each side
// (sorted by Key, as SampleFragments needs) and a Skip for each smaller one, naming its
// size. The receiver is not changed.
func (fo *Folder) Eligible(size int) (train, test []ImageRef, tooSmall []Skip) {
	dims := make(map[string]ImageRef, len(fo.Train)+len(fo.Test))
	for _, set := range [][]ImageRef{fo.Train, fo.Test} {
		for _, im := range set {
			dims[im.Key] = im
		}
	}
	var small []string
	train, small = Eligible(fo.Train, size)
	var smallTest []string
	test, smallTest = Eligible(fo.Test, size)
	small = append(small, smallTest...)
	sort.Strings(small)
	for _, k := range small {
		im := dims[k]
		tooSmall = append(tooSmall, Skip{Path: fo.Paths[k],
			Reason: fmt.Sprintf("image is %dx%d, smaller than the %dx%d fragment", im.Width, im.Height, size, size)})
	}
	return train, test, tooSmall
}

// Loader returns an ImageLoader reading this folder's images by key.
func (fo *Folder) Loader() ImageLoader {
	return func(key string) (*Gray, error) {
		p, ok := fo.Paths[key]
		if !ok {
			return nil, fmt.Errorf("image %q is not in dataset %s", key, fo.Dir)
		}
		return LoadGray(p)
	}
}

// Load decodes the given images into memory, in order, for NewMemorySource.
func (fo *Folder) Load(refs []ImageRef) ([]*Gray, error) {
	load := fo.Loader()
	out := make([]*Gray, len(refs))
	for i, r := range refs {
		g, err := load(r.Key)
		if err != nil {
			return nil, err
		}
		out[i] = g
	}
	return out, nil
}
