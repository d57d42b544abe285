// Package shareddata finds the real image datasets the tests share. They live in
// ../shared/data beside the module root and are not part of the repository, so a test
// that needs one skips when it is missing, or fails when TEXGRID_REQUIRE_DATA=1 (as
// `make test` sets it), so that CI cannot pass by skipping.
package shareddata

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// RequireEnv is the environment variable that turns a missing dataset from a skip into
// a failure when set to "1".
const RequireEnv = "TEXGRID_REQUIRE_DATA"

// Root returns the shared data directory, ../shared/data from the module root (the
// nearest directory above the working directory that holds go.mod), whether or not it
// exists.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("shared data: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "..", "shared", "data"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("shared data: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Path returns ../shared/data/<elem...> (a dataset, a class folder or an image) for t:
// when it is missing, t is skipped, or failed when RequireEnv is "1".
func Path(t testing.TB, elem ...string) string {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	return find(t, root, os.Getenv(RequireEnv) == "1", elem...)
}

// find is Path under root, with the requirement given rather than read.
func find(t testing.TB, root string, required bool, elem ...string) string {
	t.Helper()
	p := filepath.Join(append([]string{root}, elem...)...)
	if _, err := os.Stat(p); err != nil {
		if required {
			t.Fatalf("shared test data %s missing (%s=1): %v", p, RequireEnv, err)
		}
		t.Skipf("shared test data %s missing: %v", p, err)
	}
	return p
}
