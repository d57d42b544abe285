package agent

import (
	"strings"
	"testing"

	"github.com/texgrid/texgrid/project-server/protocol"
)

// TestCheckWorkUnitKind: a unit of a kind this client does not run is refused by name;
// a unit without a kind (a version-1 server) or of kind train is run.
func TestCheckWorkUnitKind(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, kind, err string
	}{
		{"no kind (version 1 server)", "", ""},
		{"train", protocol.KindTrain, ""},
		{"unknown kind", "evaluate", `kind "evaluate"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wu := &protocol.WorkUnit{ID: 7, Kind: tc.kind, BaseModel: protocol.BlobRef{SHA256: strings.Repeat("a", 64)},
				FragmentCount: 10, FragmentSize: 16, Hyper: protocol.Hyper{Epochs: 1, BatchSize: 4}, Classes: []string{"x", "y"}}
			err := checkWorkUnit(wu)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("checkWorkUnit: %v, want %q", err, tc.err)
			}
		})
	}
}
