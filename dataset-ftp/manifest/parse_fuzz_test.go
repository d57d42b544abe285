package manifest

import (
	"path"
	"testing"
	"time"

	"github.com/texgrid/texgrid/trainer/data"
)

func fuzzSeed() []byte {
	m := &Manifest{Dataset: "ds", Created: time.Unix(0, 0).UTC(), TestFraction: 0.2,
		Images: []Image{
			{Path: "a/1.png", Class: "a", Size: 10, SHA256: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Width: 4, Height: 4, Split: data.Train},
			{Path: "b/2.png", Class: "b", Size: 11, SHA256: "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210", Width: 5, Height: 3, Split: data.Test},
		},
		Quarantined: []Quarantined{{Path: "a/x.txt", Stored: ".quarantine/a/x.txt", Size: 3, Reason: "not an image"}}}
	m.Finish()
	return m.Encode()
}

// FuzzParse: Parse never panics, and whatever it accepts is valid, re-encodes to a
// manifest that parses to the same version, and only lists well-formed image paths.
func FuzzParse(f *testing.F) {
	f.Add(fuzzSeed())
	f.Add([]byte(`{"format":1,"dataset":"x","version":""}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid manifest: %v", err)
		}
		for _, im := range m.Images {
			if CheckPath(im.Path) != nil || path.IsAbs(im.Path) || path.Clean(im.Path) != im.Path {
				t.Fatalf("accepted path %q", im.Path)
			}
		}
		again, err := Parse(m.Encode())
		if err != nil || again.Version != m.Version {
			t.Fatalf("re-encoded manifest: %v", err)
		}
	})
}
