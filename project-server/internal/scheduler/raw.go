package scheduler

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"sync"

	"gorm.io/gorm"
)

// raw runs hand-written SQL on a gorm handle's connection (a transaction or a pool),
// skipping gorm's reflection on the hot paths (issuing work, recording results). Queries
// use "?" placeholders, rewritten to $n on PostgreSQL.
type raw struct {
	db *gorm.DB
	pg bool
}

func (s *Scheduler) raw(db *gorm.DB) raw { return raw{db: db, pg: s.db.Postgres} }

func (r raw) ctx() context.Context {
	if c := r.db.Statement.Context; c != nil {
		return c
	}
	return context.Background()
}

func (r raw) exec(query string, args ...any) (int64, error) {
	res, err := r.db.Statement.ConnPool.ExecContext(r.ctx(), rebind(r.pg, query), args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (r raw) row(query string, args ...any) *sql.Row {
	return r.db.Statement.ConnPool.QueryRowContext(r.ctx(), rebind(r.pg, query), args...)
}

var rebound sync.Map // query -> PostgreSQL form

// rebind turns ? placeholders into $1, $2, ... for PostgreSQL.
func rebind(pg bool, query string) string {
	if !pg {
		return query
	}
	if q, ok := rebound.Load(query); ok {
		return q.(string)
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	q := b.String()
	rebound.Store(query, q)
	return q
}
