package store

import (
	"database/sql"
	"fmt"
	"strconv"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/migrator"
	"gorm.io/gorm/schema"
	"modernc.org/sqlite"
)

// sqliteDialector is gorm's view of a SQLite database served by modernc.org/sqlite
// (pure Go, no cgo). The driver keeps each prepared statement compiled for the life of
// its database/sql statement, so with gorm's PrepareStmt a hot query is parsed once per
// connection instead of on every call: parsing was the largest single cost of the
// server's dispatch path. Only what the server uses is implemented: the schema belongs
// to the migrations, so the migrator is gorm's generic one and never runs.
type sqliteDialector struct {
	dsn string
}

func (sqliteDialector) Name() string { return "sqlite" }

// Initialize opens the pool through the driver's connector (no sql.Register, so no
// process-global driver name) and installs gorm's callbacks with RETURNING, which
// every SQLite the driver ships (3.35 or later) supports.
func (d sqliteDialector) Initialize(db *gorm.DB) error {
	conn, err := sqlite.NewConnector(d.dsn)
	if err != nil {
		return fmt.Errorf("sqlite dsn: %w", err)
	}
	db.ConnPool = sql.OpenDB(conn)
	callbacks.RegisterDefaultCallbacks(db, &callbacks.Config{
		CreateClauses:        []string{"INSERT", "VALUES", "ON CONFLICT", "RETURNING"},
		UpdateClauses:        []string{"UPDATE", "SET", "FROM", "WHERE", "RETURNING"},
		DeleteClauses:        []string{"DELETE", "FROM", "WHERE", "RETURNING"},
		LastInsertIDReversed: true,
	})
	db.ClauseBuilders["LIMIT"] = sqliteLimit
	// SQLite has no row locks (its write transactions are exclusive): drop FOR UPDATE.
	db.ClauseBuilders["FOR"] = func(c clause.Clause, b clause.Builder) {
		if _, ok := c.Expression.(clause.Locking); !ok {
			c.Build(b)
		}
	}
	return nil
}

// sqliteLimit writes LIMIT n [OFFSET m]; SQLite needs a LIMIT (-1 for none) before an
// OFFSET.
func sqliteLimit(c clause.Clause, b clause.Builder) {
	l, ok := c.Expression.(clause.Limit)
	if !ok {
		c.Build(b)
		return
	}
	n := -1
	if l.Limit != nil && *l.Limit >= 0 {
		n = *l.Limit
	}
	if n >= 0 || l.Offset > 0 {
		b.WriteString("LIMIT " + strconv.Itoa(n))
	}
	if l.Offset > 0 {
		b.WriteString(" OFFSET " + strconv.Itoa(l.Offset))
	}
}

func (d sqliteDialector) Migrator(db *gorm.DB) gorm.Migrator {
	return migrator.Migrator{Config: migrator.Config{DB: db, Dialector: d, CreateIndexAfterCreateTable: true}}
}

func (sqliteDialector) DataTypeOf(f *schema.Field) string {
	switch f.DataType {
	case schema.Bool, schema.Int, schema.Uint:
		return "INTEGER"
	case schema.Float:
		return "REAL"
	case schema.String:
		return "TEXT"
	case schema.Time:
		return "DATETIME"
	case schema.Bytes:
		return "BLOB"
	}
	return string(f.DataType)
}

func (sqliteDialector) DefaultValueOf(f *schema.Field) clause.Expression {
	if f.AutoIncrement {
		return clause.Expr{SQL: "NULL"}
	}
	return clause.Expr{SQL: "DEFAULT"}
}

func (sqliteDialector) BindVarTo(w clause.Writer, _ *gorm.Statement, _ any) { w.WriteByte('?') }

// QuoteTo quotes an identifier, each part of a dotted name separately, doubling
// embedded quotes.
func (sqliteDialector) QuoteTo(w clause.Writer, name string) {
	for i, part := range strings.Split(name, ".") {
		if i > 0 {
			w.WriteByte('.')
		}
		w.WriteByte('"')
		w.WriteString(strings.ReplaceAll(part, `"`, `""`))
		w.WriteByte('"')
	}
}

func (sqliteDialector) Explain(sql string, vars ...any) string {
	return logger.ExplainSQL(sql, nil, `'`, vars...)
}

func (sqliteDialector) SavePoint(tx *gorm.DB, name string) error {
	return tx.Exec("SAVEPOINT " + name).Error
}

func (sqliteDialector) RollbackTo(tx *gorm.DB, name string) error {
	return tx.Exec("ROLLBACK TO SAVEPOINT " + name).Error
}
