package scheduler

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/spec"
)

func TestNamedModelSpec(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	custom := `{"name":"tiny","layers":[{"type":"conv","filters":4,"kernel":3},{"type":"energy"},{"type":"dense","units":"classes"}]}`
	if err := os.WriteFile(filepath.Join(dir, "tiny.json"), []byte(custom), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, modelsDir, model string
		wantName               string // parsed spec name on success
		wantCode               string // protocol error code on failure
	}{
		{"shipped without a models dir", "", "tcnn-small", "tcnn-small", ""},
		{"shipped beside a models dir", dir, "tcnn3", "tcnn3", ""},
		{"from the models dir", dir, "tiny", "tiny", ""},
		{"models dir spec unknown without it", "", "tiny", "", protocol.CodeNotFound},
		{"unknown", dir, "alexnet", "", protocol.CodeNotFound},
		{"path traversal", dir, "../tiny", "", protocol.CodeBadRequest},
		{"hidden", dir, ".tiny", "", protocol.CodeBadRequest},
		{"empty", dir, "", "", protocol.CodeBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &Scheduler{cfg: Config{ModelsDir: c.modelsDir}}
			b, err := s.namedModelSpec(c.model)
			if c.wantCode != "" {
				var e *Error
				if !errors.As(err, &e) || e.Code != c.wantCode {
					t.Fatalf("namedModelSpec(%q) error = %v, want code %s", c.model, err, c.wantCode)
				}
				if c.wantCode == protocol.CodeNotFound && !strings.Contains(err.Error(), "tcnn-small, tcnn3") {
					t.Errorf("not-found error %q does not list the shipped specs", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sp, err := spec.Parse(b)
			if err != nil || sp.Name != c.wantName {
				t.Fatalf("got spec %v, %v; want %s", sp, err, c.wantName)
			}
		})
	}
}
