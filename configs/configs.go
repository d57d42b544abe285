// Package configs embeds the shipped model specs and example configuration files, so
// binaries can offer them by name ("tcnn-small") without a checkout beside them.
package configs

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

//go:embed models/*.json
var models embed.FS

// Model returns the JSON of a shipped model spec by name, e.g. "tcnn-small".
func Model(name string) ([]byte, error) {
	b, err := models.ReadFile("models/" + name + ".json")
	if err != nil {
		return nil, fmt.Errorf("model spec %q is not shipped (have %s)", name, strings.Join(ModelNames(), ", "))
	}
	return b, nil
}

// ModelNames lists the shipped model specs, sorted.
func ModelNames() []string {
	ents, _ := fs.ReadDir(models, "models")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".json"))
	}
	sort.Strings(out)
	return out
}
