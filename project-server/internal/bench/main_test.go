package bench

import (
	"os"
	"testing"
)

// TestMain removes the aggregation fixtures (a few hundred MB) after the run.
func TestMain(m *testing.M) {
	code := m.Run()
	if agg.dir != "" {
		os.RemoveAll(agg.dir)
	}
	os.Exit(code)
}
