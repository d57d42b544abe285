package configs

import (
	"strings"
	"testing"

	"github.com/texgrid/texgrid/trainer/spec"
)

func TestShippedModelsParse(t *testing.T) {
	t.Parallel()
	names := ModelNames()
	if strings.Join(names, ",") != "tcnn-small,tcnn3" {
		t.Fatalf("ModelNames = %v", names)
	}
	for _, n := range names {
		b, err := Model(n)
		if err != nil {
			t.Fatal(err)
		}
		s, err := spec.Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if s.Name != n {
			t.Errorf("spec %s has name %q", n, s.Name)
		}
	}
	if _, err := Model("alexnet"); err == nil || !strings.Contains(err.Error(), "tcnn-small, tcnn3") {
		t.Fatalf("unknown model error = %v", err)
	}
}
