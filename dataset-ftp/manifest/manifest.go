// Package manifest is the public format of a dataset's index, <dataset>/manifest.json on
// the dataset-ftp server. The project server cites a manifest by its Version in every
// work unit, and volunteers verify each downloaded image against the sha256 listed here.
// The package depends only on the standard library and trainer/data.
package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/texgrid/texgrid/trainer/data"
)

// FileName is the manifest's name inside a dataset folder.
const FileName = "manifest.json"

// QuarantineDir is the folder inside a dataset where rejected files are moved.
const QuarantineDir = ".quarantine"

// FormatVersion is bumped when the JSON layout changes incompatibly.
const FormatVersion = 1

// Image is one usable image of the dataset.
type Image struct {
	Path   string     `json:"path"` // "<class>/<name>", slash-separated, relative to the dataset
	Class  string     `json:"class"`
	Size   int64      `json:"size"`   // bytes
	SHA256 string     `json:"sha256"` // lowercase hex of the file's bytes
	Width  int        `json:"width"`
	Height int        `json:"height"`
	Split  data.Split `json:"split"`
}

// Quarantined is a file that was moved aside instead of indexed.
type Quarantined struct {
	Path   string `json:"path"`   // where it was uploaded, "<class>/<name>"
	Stored string `json:"stored"` // where it is now, under .quarantine/
	Size   int64  `json:"size"`
	Reason string `json:"reason"`
}

// Manifest indexes one dataset.
type Manifest struct {
	Format       int           `json:"format"`
	Dataset      string        `json:"dataset"`
	Version      string        `json:"version"` // see ComputeVersion
	Created      time.Time     `json:"created"`
	TestFraction float64       `json:"test_fraction"`
	Classes      []string      `json:"classes"` // sorted; a class's index is its label
	Images       []Image       `json:"images"`  // sorted by Path
	Quarantined  []Quarantined `json:"quarantined,omitempty"`
}

// ComputeVersion hashes what a work unit depends on: the dataset name, test fraction,
// classes and every image's path, class, hash, size, dimensions and split, in order.
// The creation time and the quarantine list are left out, so re-indexing unchanged
// data gives the same version.
func (m *Manifest) ComputeVersion() string {
	h := sha256.New()
	fmt.Fprintf(h, "texgrid-manifest/v%d\x00%s\x00%g\x00", FormatVersion, m.Dataset, m.TestFraction)
	for _, c := range m.Classes {
		fmt.Fprintf(h, "class\x00%s\x00", c)
	}
	for _, im := range m.Images {
		fmt.Fprintf(h, "image\x00%s\x00%s\x00%s\x00%d\x00%d\x00%d\x00%s\x00", im.Path, im.Class, im.SHA256, im.Size, im.Width, im.Height, im.Split)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Finish sorts the lists, derives the class list from the images, and sets Version.
func (m *Manifest) Finish() {
	m.Format = FormatVersion
	sort.Slice(m.Images, func(i, j int) bool { return m.Images[i].Path < m.Images[j].Path })
	sort.Slice(m.Quarantined, func(i, j int) bool { return m.Quarantined[i].Path < m.Quarantined[j].Path })
	set := map[string]bool{}
	for _, im := range m.Images {
		set[im.Class] = true
	}
	m.Classes = m.Classes[:0]
	for c := range set {
		m.Classes = append(m.Classes, c)
	}
	sort.Strings(m.Classes)
	m.Version = m.ComputeVersion()
}

// Encode returns the indented JSON form written to manifest.json.
func (m *Manifest) Encode() []byte {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}

// MaxBytes bounds a manifest a client will read (about 200 bytes per image).
const MaxBytes = 256 << 20

// Parse decodes a manifest and checks that it is internally consistent: format, sorted
// unique paths under known classes, well-formed hashes, positive sizes, and a Version
// that matches the content.
func Parse(b []byte) (*Manifest, error) {
	if len(b) > MaxBytes {
		return nil, fmt.Errorf("manifest: %d bytes, over the %d byte limit", len(b), MaxBytes)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", m.Dataset, err)
	}
	return &m, nil
}

// Validate reports the first inconsistency in m.
func (m *Manifest) Validate() error {
	if m.Format != FormatVersion {
		return fmt.Errorf("format %d, this build reads %d", m.Format, FormatVersion)
	}
	if m.Dataset == "" || strings.ContainsAny(m.Dataset, "/\\") {
		return fmt.Errorf("bad dataset name %q", m.Dataset)
	}
	classes := map[string]bool{}
	for i, c := range m.Classes {
		if i > 0 && m.Classes[i-1] >= c {
			return errors.New("classes are not sorted and unique")
		}
		classes[c] = true
	}
	for i, im := range m.Images {
		if i > 0 && m.Images[i-1].Path >= im.Path {
			return fmt.Errorf("images are not sorted and unique at %q", im.Path)
		}
		if err := CheckPath(im.Path); err != nil {
			return err
		}
		if path.Dir(im.Path) != im.Class || !classes[im.Class] {
			return fmt.Errorf("image %q: class %q does not match its folder or the class list", im.Path, im.Class)
		}
		if len(im.SHA256) != 64 || strings.ToLower(im.SHA256) != im.SHA256 {
			return fmt.Errorf("image %q: sha256 %q is not 64 lowercase hex digits", im.Path, im.SHA256)
		}
		if _, err := hex.DecodeString(im.SHA256); err != nil {
			return fmt.Errorf("image %q: sha256: %w", im.Path, err)
		}
		if im.Size <= 0 || im.Width <= 0 || im.Height <= 0 {
			return fmt.Errorf("image %q: size %d bytes, %dx%d pixels", im.Path, im.Size, im.Width, im.Height)
		}
		if im.Split != data.Train && im.Split != data.Test {
			return fmt.Errorf("image %q: split %q", im.Path, im.Split)
		}
	}
	if v := m.ComputeVersion(); v != m.Version {
		return fmt.Errorf("version %q does not match the content (%s)", m.Version, v)
	}
	return nil
}

// CheckPath accepts "<class>/<name>" with no empty, dot or hidden parts.
func CheckPath(p string) error {
	parts := strings.Split(p, "/")
	if len(parts) != 2 {
		return fmt.Errorf("path %q is not <class>/<image>", p)
	}
	for _, s := range parts {
		if s == "" || strings.HasPrefix(s, ".") || strings.ContainsAny(s, "\\\x00") {
			return fmt.Errorf("path %q has an empty, hidden or invalid part", p)
		}
	}
	return nil
}

// NewImage describes the file contents b stored as <class>/<name>, w x h pixels, with
// its hash and its split (data.SplitOf). The indexer and test fixtures both build
// entries with it, so an entry always means the same thing.
func NewImage(class, name string, b []byte, w, h int, testFraction float64) Image {
	sum := sha256.Sum256(b)
	return Image{Path: class + "/" + name, Class: class, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:]),
		Width: w, Height: h, Split: data.SplitOf(class, name, testFraction)}
}

// ClassIndex returns the label of a class, or -1.
func (m *Manifest) ClassIndex(class string) int {
	i := sort.SearchStrings(m.Classes, class)
	if i < len(m.Classes) && m.Classes[i] == class {
		return i
	}
	return -1
}

// Refs returns the images of one split as sampler input, in manifest (Path) order;
// Ref.Key is the image's Path, so ImageByPath maps a fragment back to its file.
func (m *Manifest) Refs(split data.Split) []data.ImageRef {
	var out []data.ImageRef
	for _, im := range m.Images {
		if im.Split == split {
			out = append(out, data.ImageRef{Key: im.Path, Class: m.ClassIndex(im.Class), Width: im.Width, Height: im.Height})
		}
	}
	return out
}

// ImageByPath finds an image entry by its Path.
func (m *Manifest) ImageByPath(p string) (Image, bool) {
	i := sort.Search(len(m.Images), func(i int) bool { return m.Images[i].Path >= p })
	if i < len(m.Images) && m.Images[i].Path == p {
		return m.Images[i], true
	}
	return Image{}, false
}

// TrainFragments derives a work unit's fragments: the documented sampler over the
// training images at least size pixels on a side. It returns the eligible images (the
// fragments' Image fields index into it) with the fragments.
func (m *Manifest) TrainFragments(seed uint64, count, size int) ([]data.ImageRef, []data.Fragment, error) {
	imgs, _ := data.Eligible(m.Refs(data.Train), size)
	fr, err := data.SampleFragments(imgs, seed, count, size)
	if err != nil {
		return nil, nil, fmt.Errorf("dataset %s@%.12s: %w", m.Dataset, m.Version, err)
	}
	return imgs, fr, nil
}
