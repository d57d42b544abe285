package texgrid

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/texgrid/texgrid"

// rule says which texgrid packages a tree may import. Prefixes are module-relative;
// a package matches the longest prefix that names it.
type rule struct {
	tree  string
	allow []string // module-relative prefixes this tree may import ("" = nothing from texgrid)
}

// The import table of ARCHITECTURE.md. Keep the two in step.
var rules = []rule{
	{"project-server/protocol", nil},
	{"project-server/client", []string{"project-server/protocol"}},
	{"volunteer-client/localapi", nil},
	{"volunteer-client/internal/tray", []string{"volunteer-client/localapi"}},
	{"volunteer-client/cmd/volunteer-tray", []string{"volunteer-client/internal/tray"}},
	{"dataset-ftp/manifest", []string{"trainer/data"}},
	{"trainer", []string{"trainer", "configs"}},
	{"dataset-ftp", []string{"dataset-ftp", "trainer"}},
	{"project-server/internal/policy", []string{"project-server/protocol"}},
	{"project-server/internal/aggregate", []string{"project-server/internal/weights", "trainer"}},
	{"project-server/internal/weights", []string{"trainer"}},
	{"project-server", []string{"project-server", "dataset-ftp/manifest", "dataset-ftp/ftpstore", "trainer", "migrations", "web", "configs"}},
	{"volunteer-client", []string{"volunteer-client", "project-server/protocol", "dataset-ftp/manifest", "dataset-ftp/ftpstore", "trainer", "configs"}},
	{"migrations", nil},
	{"web", nil},
	{"configs", []string{"trainer/spec"}},
	{"", []string{"trainer", "dataset-ftp", "project-server", "volunteer-client", "migrations", "web", "configs"}},
}

type pkg struct {
	ImportPath string
	Name       string
	Doc        string
	Imports    []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "./...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// allows reports whether a tree under r may import the module-relative package imp.
func (r rule) allows(imp string) bool {
	for _, a := range r.allow {
		if imp == a || strings.HasPrefix(imp, a+"/") {
			return true
		}
	}
	return false
}

func ruleFor(rel string) rule {
	best := rule{tree: "-"}
	for _, r := range rules {
		if (rel == r.tree || strings.HasPrefix(rel, r.tree+"/") || r.tree == "") &&
			(best.tree == "-" || len(r.tree) > len(best.tree)) {
			best = r
		}
	}
	return best
}

func TestImportRules(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		r := ruleFor(rel)
		check := func(imps []string) {
			for _, imp := range imps {
				if !strings.HasPrefix(imp, module+"/") {
					continue
				}
				if irel := strings.TrimPrefix(imp, module+"/"); !r.allows(irel) {
					t.Errorf("%s (rule %q) imports %s, which ARCHITECTURE.md does not allow", rel, r.tree, irel)
				}
			}
		}
		// Only non-test imports are ruled: integration tests may start the real peer
		// of the tree they test, and Go's internal/ rule already keeps them from
		// reaching into another tree's internals.
		check(p.Imports)
	}
}

func TestEveryPackageHasADocComment(t *testing.T) {
	for _, p := range listPackages(t) {
		if p.Name == "main" {
			if p.Doc == "" {
				t.Errorf("command %s has no doc comment (// Command x ...)", p.ImportPath)
			}
			continue
		}
		if p.Doc == "" {
			t.Errorf("package %s has no doc comment", p.ImportPath)
		}
	}
}

func TestRuleFor(t *testing.T) {
	cases := []struct {
		pkg, imp string
		allowed  bool
	}{
		{"project-server/protocol", "trainer/spec", false},
		{"volunteer-client/internal/agent", "project-server/protocol", true},
		{"volunteer-client/internal/agent", "project-server/internal/store", false},
		{"dataset-ftp/manifest", "trainer/data", true},
		{"dataset-ftp/manifest", "dataset-ftp/internal/server", false},
		{"trainer/nn", "dataset-ftp/manifest", false},
		{"project-server/internal/api", "volunteer-client/localapi", false},
		{"project-server/internal/policy", "project-server/internal/store", false},
		{"project-server/internal/aggregate", "project-server/internal/scheduler", false},
		{"project-server/internal/aggregate", "project-server/internal/weights", true},
		{"project-server/internal/scheduler", "project-server/internal/policy", true},
	}
	for _, c := range cases {
		r := ruleFor(c.pkg)
		if ok := r.allows(c.imp); ok != c.allowed {
			t.Errorf("%s importing %s: allowed = %v, want %v (rule %q)", c.pkg, c.imp, ok, c.allowed, r.tree)
		}
	}
}
