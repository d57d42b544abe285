package scheduler

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"gorm.io/gorm"
)

// raw runs hand-written SQL on a gorm handle's connection (a transaction or a pool),
// skipping gorm's reflection on the hot paths (issuing work, recording results). Queries
// use "?" placeholders, rewritten to $n on PostgreSQL.
//
// Inside a transaction, a query registered with txQuery runs as the statement the
// scheduler prepared on the write pool at start (Prepare), bound to the transaction
// with Tx.StmtContext: database/sql then reuses the connection's compiled statement.
// Statements that gorm prepares inside a transaction are compiled again in every
// transaction, which cost the dispatch path more than executing them.
type raw struct {
	db    *gorm.DB
	pg    bool
	stmts *stmtCache
}

func (s *Scheduler) raw(db *gorm.DB) raw { return raw{db: db, pg: s.db.Postgres, stmts: &s.stmts} }

func (r raw) ctx() context.Context {
	if c := r.db.Statement.Context; c != nil {
		return c
	}
	return context.Background()
}

// txStmt returns query's prepared statement bound to the handle's transaction, or nil
// when the handle is not a transaction or the query was not prepared.
func (r raw) txStmt(query string) *sql.Stmt {
	st := r.stmts.get(query)
	if st == nil {
		return nil
	}
	var tx *sql.Tx
	switch p := r.db.Statement.ConnPool.(type) {
	case *gorm.PreparedStmtTX:
		tx, _ = p.Tx.(*sql.Tx)
	case *sql.Tx:
		tx = p
	}
	if tx == nil {
		return nil
	}
	return tx.StmtContext(r.ctx(), st)
}

func (r raw) exec(query string, args ...any) (int64, error) {
	var (
		res sql.Result
		err error
	)
	if st := r.txStmt(query); st != nil {
		res, err = st.ExecContext(r.ctx(), args...)
	} else {
		res, err = r.db.Statement.ConnPool.ExecContext(r.ctx(), rebind(r.pg, query), args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (r raw) row(query string, args ...any) *sql.Row {
	if st := r.txStmt(query); st != nil {
		return st.QueryRowContext(r.ctx(), args...)
	}
	return r.db.Statement.ConnPool.QueryRowContext(r.ctx(), rebind(r.pg, query), args...)
}

func (r raw) rows(query string, args ...any) (*sql.Rows, error) {
	if st := r.txStmt(query); st != nil {
		return st.QueryContext(r.ctx(), args...)
	}
	return r.db.Statement.ConnPool.QueryContext(r.ctx(), rebind(r.pg, query), args...)
}

// txQueries are the queries the hot transactions run, prepared by Prepare.
var txQueries []txq

type txq struct {
	query  string
	pgOnly bool // PostgreSQL syntax (FOR UPDATE): not prepared on SQLite
}

// txQuery registers a query that runs inside write transactions, to be prepared once.
func txQuery(q string) string {
	txQueries = append(txQueries, txq{query: q})
	return q
}

// txQueryPG registers a PostgreSQL-only query like txQuery.
func txQueryPG(q string) string {
	txQueries = append(txQueries, txq{query: q, pgOnly: true})
	return q
}

// stmtCache holds statements prepared on the write pool, by query text.
type stmtCache struct {
	mu sync.RWMutex
	m  map[string]*sql.Stmt
}

func (c *stmtCache) get(q string) *sql.Stmt {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.m[q]
}

// Prepare compiles the queries of the hot write transactions on the write pool. It
// must run outside any transaction (on SQLite the pool has one connection, which a
// transaction holds); Recover calls it. Without it every query still works, compiled
// per transaction.
func (s *Scheduler) Prepare(ctx context.Context) error {
	sqlDB, err := s.db.DB.DB()
	if err != nil {
		return fmt.Errorf("prepare statements: %w", err)
	}
	m := make(map[string]*sql.Stmt, len(txQueries))
	for _, tq := range txQueries {
		q := tq.query
		if m[q] != nil || tq.pgOnly && !s.db.Postgres {
			continue
		}
		st, err := sqlDB.PrepareContext(ctx, rebind(s.db.Postgres, q))
		if err != nil {
			for _, st := range m {
				st.Close()
			}
			return fmt.Errorf("prepare %q: %w", q, err)
		}
		m[q] = st
	}
	s.stmts.mu.Lock()
	old := s.stmts.m
	s.stmts.m = m
	s.stmts.mu.Unlock()
	for _, st := range old {
		st.Close()
	}
	return nil
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
