package grid

import (
	"testing"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
)

func TestAccountsFor(t *testing.T) {
	t.Parallel()
	m := &manifest.Manifest{
		Images:      []manifest.Image{{Path: "a/1.png"}, {Path: "b/2.png"}},
		Quarantined: []manifest.Quarantined{{Path: "b/bad.png"}, {Path: "SHA256SUMS"}},
	}
	cases := []struct {
		name  string
		files []string
		want  bool
	}{
		{"all indexed", []string{"a/1.png", "b/2.png"}, true},
		{"one quarantined", []string{"a/1.png", "b/bad.png"}, true},
		{"extra root files do not matter", []string{"a/1.png"}, true},
		{"one not yet indexed", []string{"a/1.png", "c/3.png"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := accountsFor(m, c.files); got != c.want {
				t.Fatalf("accountsFor(%v) = %v, want %v", c.files, got, c.want)
			}
		})
	}
}
