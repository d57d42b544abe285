// Package migrations holds the project server's SQL schema as versioned migrations, one
// directory per database dialect (sqlite/, postgres/), each step a pair of files
// NNNN_name.up.sql and NNNN_name.down.sql. The schema is owned here: the server runs
// these at start and never lets its ORM create or alter tables.
package migrations

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"testing/fstest"
	"time"
)

//go:embed sqlite/*.sql postgres/*.sql
var FS embed.FS

// Dialects are the directory names under FS.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// Goose returns the migrations of one dialect as goose expects them: one file per
// version, NNNN_name.sql, with its up and down halves marked by "-- +goose Up" and
// "-- +goose Down". Every up file needs its down file.
func Goose(dialect string) (fs.FS, error) {
	entries, err := fs.ReadDir(FS, dialect)
	if err != nil {
		return nil, fmt.Errorf("migrations %s: %w", dialect, err)
	}
	ups := map[string][]byte{}
	downs := map[string][]byte{}
	for _, e := range entries {
		name := e.Name()
		b, err := fs.ReadFile(FS, path.Join(dialect, name))
		if err != nil {
			return nil, fmt.Errorf("migrations %s: %w", dialect, err)
		}
		switch {
		case strings.HasSuffix(name, ".up.sql"):
			ups[strings.TrimSuffix(name, ".up.sql")] = b
		case strings.HasSuffix(name, ".down.sql"):
			downs[strings.TrimSuffix(name, ".down.sql")] = b
		default:
			return nil, fmt.Errorf("migrations %s: %s is neither .up.sql nor .down.sql", dialect, name)
		}
	}
	if len(ups) == 0 {
		return nil, fmt.Errorf("migrations %s: no migrations", dialect)
	}
	names := make([]string, 0, len(ups))
	for n := range ups {
		names = append(names, n)
	}
	sort.Strings(names)
	out := fstest.MapFS{}
	for _, n := range names {
		down, ok := downs[n]
		if !ok {
			return nil, fmt.Errorf("migrations %s: %s.up.sql has no %s.down.sql", dialect, n, n)
		}
		var b bytes.Buffer
		b.WriteString("-- +goose Up\n")
		b.Write(ups[n])
		b.WriteString("\n-- +goose Down\n")
		b.Write(down)
		out[n+".sql"] = &fstest.MapFile{Data: b.Bytes(), Mode: 0o444, ModTime: time.Unix(0, 0)}
	}
	for n := range downs {
		if _, ok := ups[n]; !ok {
			return nil, fmt.Errorf("migrations %s: %s.down.sql has no %s.up.sql", dialect, n, n)
		}
	}
	return out, nil
}
